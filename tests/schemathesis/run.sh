#!/usr/bin/env bash
# Runs schemathesis (from PyPI) against a freshly started agentreg binary, driven by the OpenAPI
# document the binary serves at /api/v4/openapi.json. It fails on any 5xx, on any response whose
# status, content type, headers or body the document does not allow, and if the server dies.
# Usage: tests/schemathesis/run.sh [path-to-agentreg-binary]   (default: target/debug/agentreg)
# Environment: SCHEMATHESIS_MAX_EXAMPLES (test cases per operation and phase, default 50),
# SCHEMATHESIS_SEED (to replay a run; the seed is printed), AGENTREG_SCHEMATHESIS_VENV (reuse a venv).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
binary=$(realpath "${1:-$root/target/debug/agentreg}")
work=$(mktemp -d)
venv=${AGENTREG_SCHEMATHESIS_VENV:-$work/venv}
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/tests/schemathesis/requirements.txt"
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
grpc_port=$(free_port)
token="glpat-schemathesis-$(date +%s%N)"
# The KAS secret is ours, so that the run can sign agent-server JWTs for the /internal routes.
python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())' > "$work/kas_secret"
# Schemathesis sends bad tokens on purpose; the failure throttle would turn them into 429s.
AGENTREG_ROOT_TOKEN=$token "$binary" serve --data-dir "$work/data" \
  --http-addr "127.0.0.1:$port" --grpc-addr "127.0.0.1:$grpc_port" \
  --kas-secret-file "$work/kas_secret" --auth-failures-per-minute 100000 \
  --log-format json > "$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$work"' EXIT
base="http://127.0.0.1:$port/api/v4"
for _ in $(seq 1 100); do
  if curl -fsS -o /dev/null 2>/dev/null -H "PRIVATE-TOKEN: $token" "$base/version"; then break; fi
  if ! kill -0 $server 2>/dev/null; then cat "$work/server.log"; exit 1; fi
  sleep 0.1
done

# Fixtures, so that operations with ids reach real records: the document's examples use id 1
# for the project, the agent, its token and its URL configuration. A second agent's token
# authenticates the agent-server routes.
create() {
  curl -fsS -X POST -H "PRIVATE-TOKEN: $token" -H 'Content-Type: application/json' \
    -d "$2" "$base/$1" | python3 -c "import json, sys; print(json.load(sys.stdin)['$3'])"
}
project=$(create projects '{"name": "schemathesis"}' id)
agent=$(create "projects/$project/cluster_agents" '{"name": "examples"}' id)
agent_token_id=$(create "projects/$project/cluster_agents/$agent/tokens" '{"name": "examples"}' id)
url_configuration=$(create "projects/$project/cluster_agents/$agent/url_configurations" \
  '{"url": "grpc://agent.example:8080"}' id)
kas_agent=$(create "projects/$project/cluster_agents" '{"name": "kas"}' id)
agent_token=$(create "projects/$project/cluster_agents/$kas_agent/tokens" '{"name": "kas"}' token)
create "projects/$project/cluster_agents/$kas_agent/url_configurations" \
  '{"url": "grpcs://kas-agent.example:443"}' id > /dev/null
if [ "$project/$agent/$agent_token_id/$url_configuration" != "1/1/1/1" ]; then
  echo "warning: fixtures got ids $project/$agent/$agent_token_id/$url_configuration, the examples use 1" >&2
fi
kas_jwt=$(python3 - "$work/kas_secret" <<'PY'
import base64, hashlib, hmac, json, sys, time
key = base64.b64decode(open(sys.argv[1]).read().strip())
def encode(data):
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
now = int(time.time())
signed = encode({"alg": "HS256", "typ": "JWT"}) + "." + encode(
    {"iss": "gitlab-kas", "aud": "gitlab", "iat": now, "exp": now + 3600})
signature = hmac.new(key, signed.encode(), hashlib.sha256).digest()
print(signed + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode())
PY
)

seed_option=()
if [ -n "${SCHEMATHESIS_SEED:-}" ]; then seed_option=(--seed "$SCHEMATHESIS_SEED"); fi
cd "$work"
status=0
timeout 900 "$venv/bin/schemathesis" run "$base/openapi.json" \
  --header "PRIVATE-TOKEN: $token" \
  --header "Gitlab-Kas-Api-Request: $kas_jwt" \
  --header "Gitlab-Agent-Api-Request: $agent_token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing,stateful \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-50}" \
  --generation-database none \
  --no-color "${seed_option[@]}" || status=$?
if ! kill -0 $server 2>/dev/null; then
  echo "agentreg died during the run" >&2
  status=1
fi
# A 5xx that schemathesis saw is already a failure; this also catches errors logged for
# requests whose response looked fine, and panics.
errors='"level":"ERROR"|^thread .* panicked at'
if grep -q -E "$errors" "$work/server.log"; then
  echo "agentreg logged errors during the run:" >&2
  grep -E "$errors" "$work/server.log" | head -20 >&2
  status=1
fi
exit $status
