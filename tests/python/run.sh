#!/usr/bin/env bash
# Runs python-gitlab (from PyPI, unmodified) against a freshly started agentreg binary.
# Usage: tests/python/run.sh [path-to-agentreg-binary]   (default: target/debug/agentreg)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
binary=${1:-$root/target/debug/agentreg}
work=$(mktemp -d)
venv=${AGENTREG_PY_VENV:-$work/venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/tests/python/requirements.txt"
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
grpc_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
token="glpat-python-gitlab-compat-$(date +%s%N)"
AGENTREG_ROOT_TOKEN=$token "$binary" serve --data-dir "$work/data" \
  --http-addr "127.0.0.1:$port" --grpc-addr "127.0.0.1:$grpc_port" > "$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
  if curl -fsS -o /dev/null 2>/dev/null -H "PRIVATE-TOKEN: $token" "http://127.0.0.1:$port/api/v4/version"; then break; fi
  if ! kill -0 $server 2>/dev/null; then cat "$work/server.log"; exit 1; fi
  sleep 0.1
done
AGENTREG_URL="http://127.0.0.1:$port" AGENTREG_TOKEN=$token "$venv/bin/python" "$root/tests/python/test_python_gitlab.py"
