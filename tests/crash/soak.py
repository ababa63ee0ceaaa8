#!/usr/bin/env python3
"""Soak: minutes of mixed load from several clients against the real binary.

Clients register and delete agents, create and revoke tokens, create and delete URL
configurations, list and read everything, and authenticate agents on the agent-server route.
At the end: no 5xx, resident memory grew less than the stated bound after warm-up, and the
invariants of crash_test.py hold.

Usage: soak.py [--binary PATH] [--minutes M] [--clients N] [--max-growth-mib MIB]
Standard library only. Exits non-zero on any 5xx, violation or excess growth.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import random
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from crash_test import Ledger, Server, Unknown, request, verify  # noqa: E402


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def kas_jwt(secret):
    now = int(time.time())
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps({"iss": "gitlab-kas", "aud": "gitlab", "iat": now, "exp": now + 3600}).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.server_errors = []

    def record(self, method, path, status, body):
        with self.lock:
            self.requests += 1
            if status >= 500:
                self.server_errors.append(f"{method} {path}: {status} {body}")


def client(server, project_id, ledger, stats, stop, rng, name, jwt):
    import urllib.request
    mine, secrets, counter = [], [], 0
    base = f"{server.base}/projects/{project_id}/cluster_agents"

    def call(method, url, body=None):
        status, payload = request(method, url, body)
        stats.record(method, url, status, payload)
        return status, payload

    while not stop.is_set():
        counter += 1
        roll = rng.random()
        try:
            if roll < 0.15 or not mine:
                status, agent = call("POST", base, {"name": f"{name}-{counter}"})
                if status == 201:
                    mine.append(agent["id"])
                    with ledger.lock:
                        ledger.agents[agent["id"]] = agent["name"]
                        ledger.max_id = max(ledger.max_id, agent["id"])
            elif roll < 0.30:
                agent_id = rng.choice(mine)
                status, token = call("POST", f"{base}/{agent_id}/tokens", {"name": "t"})
                if status == 201:
                    secrets.append(token["token"])
                    with ledger.lock:
                        ledger.tokens[token["id"]] = (agent_id, "active")
                elif status == 400:
                    status, tokens = call("GET", f"{base}/{agent_id}/tokens")
                    if tokens:
                        token_id = tokens[-1]["id"]
                        if call("DELETE", f"{base}/{agent_id}/tokens/{token_id}")[0] == 204:
                            with ledger.lock:
                                ledger.tokens[token_id] = (agent_id, "revoked")
            elif roll < 0.40:
                agent_id = rng.choice(mine)
                status, config = call("POST", f"{base}/{agent_id}/url_configurations", {"url": "grpc://soak.example.com"})
                if status == 201:
                    with ledger.lock:
                        ledger.configs[agent_id] = config["id"]
                elif status == 400:
                    with ledger.lock:
                        config_id = ledger.configs.get(agent_id)
                    if config_id and call("DELETE", f"{base}/{agent_id}/url_configurations/{config_id}")[0] == 204:
                        with ledger.lock:
                            ledger.configs.pop(agent_id, None)
            elif roll < 0.45 and len(mine) > 3:
                agent_id = mine.pop(0)
                if call("DELETE", f"{base}/{agent_id}")[0] == 204:
                    with ledger.lock:
                        ledger.agents.pop(agent_id, None)
                        ledger.deleted_agents.add(agent_id)
                        ledger.configs.pop(agent_id, None)
                        for token_id, (owner, _) in list(ledger.tokens.items()):
                            if owner == agent_id:
                                del ledger.tokens[token_id]
            elif roll < 0.70 and secrets:
                req = urllib.request.Request(
                    f"{server.base}/internal/agents/agentk/agent_info",
                    headers={"Gitlab-Kas-Api-Request": jwt, "Gitlab-Agent-Api-Request": rng.choice(secrets)})
                try:
                    with urllib.request.urlopen(req, timeout=10) as response:
                        stats.record("GET", "agent_info", response.status, None)
                except urllib.error.HTTPError as error:
                    # 401 is expected for tokens revoked or deleted meanwhile.
                    stats.record("GET", "agent_info", error.code, error.read())
            else:
                call("GET", f"{base}?per_page={rng.choice([5, 20, 100])}&page={rng.randint(1, 3)}")
                if mine:
                    call("GET", f"{base}/{rng.choice(mine)}")
        except Unknown as error:
            stats.record("?", "connection", 599, str(error))
            return


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default="target/release/agentreg")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--max-growth-mib", type=float, default=64.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        server = Server(os.path.abspath(args.binary), os.path.join(work, "data"))
        server.start()
        with open(os.path.join(server.data_dir, "kas_secret")) as secret_file:
            jwt = kas_jwt(base64.b64decode(secret_file.read().strip()))
        status, project = request("POST", f"{server.base}/projects", {"name": "soak"})
        assert status == 201, project
        ledger, stats, stop = Ledger(), Stats(), threading.Event()
        threads = [threading.Thread(target=client, args=(server, project["id"], ledger, stats, stop, random.Random(i), f"c{i}", jwt))
                   for i in range(args.clients)]
        started = time.time()
        for thread in threads:
            thread.start()
        duration = args.minutes * 60
        warm_up = min(30.0, duration / 4)
        time.sleep(warm_up)
        baseline_kib = rss_kib(server.process.pid)
        samples = []
        while time.time() - started < duration:
            time.sleep(5)
            samples.append(rss_kib(server.process.pid))
        stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.time() - started
        lost, violations = verify(server, project["id"], ledger)
        peak_kib = max(samples + [baseline_kib])
        final_kib = rss_kib(server.process.pid)
        growth_mib = (final_kib - baseline_kib) / 1024
        server.kill()
        print(f"{stats.requests} requests in {elapsed:.0f} s ({stats.requests / elapsed:.0f} req/s) from {args.clients} clients")
        print(f"5xx {len(stats.server_errors)}, lost {len(lost)}, invariant violations {len(violations)}")
        print(f"RSS after warm-up {baseline_kib / 1024:.1f} MiB, peak {peak_kib / 1024:.1f} MiB, "
              f"final {final_kib / 1024:.1f} MiB, growth {growth_mib:.1f} MiB (bound {args.max_growth_mib} MiB)")
        for line in stats.server_errors[:10] + lost + violations:
            print(f"  {line}")
        if stats.server_errors or lost or violations or growth_mib > args.max_growth_mib:
            sys.exit(1)


if __name__ == "__main__":
    main()
