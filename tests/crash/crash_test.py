#!/usr/bin/env python3
"""Crash test: acknowledged writes survive kill -9, and the invariants hold after every restart.

Starts the real binary, runs concurrent writers that register and delete agents, create and
revoke tokens, and create and delete URL configurations, recording every request that got a 2xx.
Kills the process with SIGKILL at random moments, restarts it, and checks after each restart:
- every acknowledged write is present and intact, and every acknowledged delete is gone;
- no agent has more than two active tokens or more than one URL configuration;
- ids stay monotonic: a new agent gets an id above every id seen before.
A request that was in flight when the process died has an unknown outcome and is only checked
against the invariants.

Usage: crash_test.py [--binary PATH] [--kills N] [--writers N] [--seconds-per-cycle S] [--seed N]
Standard library only. Exits non-zero on any loss or violation.
"""

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT_TOKEN = "glpat-crash-test-root-token-0123456789"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, binary, data_dir):
        self.binary = binary
        self.data_dir = data_dir
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.process = None
        self.log = open(os.path.join(os.path.dirname(data_dir), "server.log"), "ab")

    @property
    def base(self):
        return f"http://127.0.0.1:{self.http_port}/api/v4"

    def start(self):
        env = dict(os.environ, AGENTREG_ROOT_TOKEN=ROOT_TOKEN, RUST_LOG="warn")
        self.process = subprocess.Popen(
            [self.binary, "serve", "--data-dir", self.data_dir,
             "--http-addr", f"127.0.0.1:{self.http_port}", "--grpc-addr", f"127.0.0.1:{self.grpc_port}"],
            env=env, stdout=self.log, stderr=self.log)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            try:
                status, _ = request("GET", f"{self.base}/version")
                if status == 200:
                    return
            except Unknown:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not become ready")

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


class Unknown(Exception):
    """The request's outcome is unknown: the connection failed."""


def request(method, url, body=None, timeout=10):
    data = None
    headers = {"PRIVATE-TOKEN": ROOT_TOKEN}
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            raw = response.read()
            return response.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            return error.code, json.loads(raw) if raw else None
        except ValueError:
            return error.code, raw.decode(errors="replace")
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as error:
        raise Unknown(str(error)) from error


class Ledger:
    """What the writers were told succeeded, and what is uncertain."""

    def __init__(self):
        self.lock = threading.Lock()
        self.acknowledged = 0
        self.agents = {}        # id -> name, acknowledged and not acknowledged-deleted
        self.deleted_agents = set()
        self.tokens = {}        # token id -> (agent id, "active" | "revoked")
        self.configs = {}       # agent id -> config id
        self.deleted_configs = {}  # config id -> agent id
        self.uncertain_agents = set()  # agents with an in-flight write of unknown outcome
        self.max_id = 0

    def ack(self):
        self.acknowledged += 1


def writer(server, project_id, ledger, stop, rng, prefix):
    counter = 0
    mine = []
    while not stop.is_set():
        counter += 1
        op = rng.choice(["agent", "agent", "token", "token", "revoke", "config", "unconfig", "delete"])
        try:
            if op == "agent" or not mine:
                name = f"{prefix}-{counter}"
                status, body = request("POST", f"{server.base}/projects/{project_id}/cluster_agents", {"name": name})
                if status == 201:
                    with ledger.lock:
                        ledger.agents[body["id"]] = name
                        ledger.max_id = max(ledger.max_id, body["id"])
                        ledger.ack()
                    mine.append(body["id"])
                continue
            agent_id = rng.choice(mine)
            agent_path = f"{server.base}/projects/{project_id}/cluster_agents/{agent_id}"
            current = agent_id
            if op == "token":
                status, body = request("POST", f"{agent_path}/tokens", {"name": f"t{counter}"})
                if status == 201:
                    with ledger.lock:
                        ledger.tokens[body["id"]] = (agent_id, "active")
                        ledger.ack()
            elif op == "revoke":
                with ledger.lock:
                    active = [t for t, (a, s) in ledger.tokens.items() if a == agent_id and s == "active"]
                if active:
                    token_id = rng.choice(active)
                    status, _ = request("DELETE", f"{agent_path}/tokens/{token_id}")
                    if status == 204:
                        with ledger.lock:
                            ledger.tokens[token_id] = (agent_id, "revoked")
                            ledger.ack()
            elif op == "config":
                status, body = request("POST", f"{agent_path}/url_configurations", {"url": f"grpc://a{counter}.example.com"})
                if status == 201:
                    with ledger.lock:
                        ledger.configs[agent_id] = body["id"]
                        ledger.ack()
            elif op == "unconfig":
                with ledger.lock:
                    config_id = ledger.configs.get(agent_id)
                if config_id is not None:
                    status, _ = request("DELETE", f"{agent_path}/url_configurations/{config_id}")
                    if status == 204:
                        with ledger.lock:
                            ledger.configs.pop(agent_id, None)
                            ledger.deleted_configs[config_id] = agent_id
                            ledger.ack()
            elif op == "delete":
                status, _ = request("DELETE", agent_path)
                if status == 204:
                    with ledger.lock:
                        ledger.agents.pop(agent_id, None)
                        ledger.deleted_agents.add(agent_id)
                        ledger.configs.pop(agent_id, None)
                        for token_id, (owner, _) in list(ledger.tokens.items()):
                            if owner == agent_id:
                                del ledger.tokens[token_id]
                        ledger.ack()
                    mine.remove(agent_id)
        except Unknown:
            with ledger.lock:
                ledger.uncertain_agents.add(current if op != "agent" else None)
            return


def list_all(url):
    items, page = [], 1
    while True:
        status, body = request("GET", f"{url}{'&' if '?' in url else '?'}per_page=100&page={page}")
        if status != 200:
            raise RuntimeError(f"listing {url}: {status} {body}")
        items.extend(body)
        if len(body) < 100:
            return items
        page += 1


def verify(server, project_id, ledger):
    lost, violations = [], []
    base = f"{server.base}/projects/{project_id}/cluster_agents"
    listed = {agent["id"]: agent for agent in list_all(base)}
    for agent_id, name in ledger.agents.items():
        agent = listed.get(agent_id)
        if agent is None and agent_id not in ledger.uncertain_agents:
            status, direct = request("GET", f"{base}/{agent_id}")
            where = "record present but missing from the list" if status == 200 else f"GET {status}"
            lost.append(f"agent {agent_id} ({name}): {where}")
        elif agent is not None and agent["name"] != name:
            lost.append(f"agent {agent_id} changed name to {agent['name']}")
    for agent_id in ledger.deleted_agents:
        if agent_id in listed:
            lost.append(f"deleted agent {agent_id} is back")
    for agent_id, agent in listed.items():
        tokens = list_all(f"{base}/{agent_id}/tokens")
        if len(tokens) > 2:
            violations.append(f"agent {agent_id} has {len(tokens)} active tokens")
        status, configs = request("GET", f"{base}/{agent_id}/url_configurations")
        if status != 200 or len(configs) > 1:
            violations.append(f"agent {agent_id} has configurations {configs}")
        if bool(configs) != agent["is_receptive"]:
            violations.append(f"agent {agent_id} is_receptive={agent['is_receptive']} with {len(configs)} configurations")
        uncertain = agent_id in ledger.uncertain_agents
        expected_config = ledger.configs.get(agent_id)
        if expected_config is not None and not uncertain and [c["id"] for c in configs] != [expected_config]:
            lost.append(f"configuration {expected_config} of agent {agent_id}")
        active_ids = {t["id"] for t in tokens}
        for token_id, (owner, state) in ledger.tokens.items():
            if owner != agent_id or uncertain:
                continue
            if state == "active" and token_id not in active_ids:
                lost.append(f"active token {token_id} of agent {agent_id}")
            if state == "revoked" and token_id in active_ids:
                lost.append(f"revocation of token {token_id}")
    for config_id, agent_id in ledger.deleted_configs.items():
        if agent_id in listed and agent_id not in ledger.uncertain_agents:
            status, _ = request("GET", f"{base}/{agent_id}/url_configurations/{config_id}")
            if status != 404:
                lost.append(f"deleted configuration {config_id} is back")
    status, probe = request("POST", base, {"name": f"probe-{time.time_ns()}"})
    if status != 201:
        violations.append(f"cannot register after restart: {status} {probe}")
    else:
        if probe["id"] <= ledger.max_id:
            violations.append(f"id {probe['id']} is not above {ledger.max_id}")
        ledger.max_id = probe["id"]
        request("DELETE", f"{base}/{probe['id']}")
    return lost, violations


def resolve_uncertain(server, project_id, ledger):
    """Learns the outcome of the requests that were in flight at the kill.

    Either outcome is correct, so the ledger adopts what the restarted server holds for those
    agents; from then on they are checked like any other.
    """
    base = f"{server.base}/projects/{project_id}/cluster_agents"
    for agent_id in [a for a in ledger.uncertain_agents if a is not None]:
        status, _ = request("GET", f"{base}/{agent_id}")
        if status == 404:
            ledger.agents.pop(agent_id, None)
            ledger.deleted_agents.add(agent_id)
            ledger.configs.pop(agent_id, None)
            for token_id, (owner, _) in list(ledger.tokens.items()):
                if owner == agent_id:
                    del ledger.tokens[token_id]
            continue
        active = {t["id"] for t in list_all(f"{base}/{agent_id}/tokens")}
        for token_id, (owner, _) in list(ledger.tokens.items()):
            if owner == agent_id:
                ledger.tokens[token_id] = (agent_id, "active" if token_id in active else "revoked")
        for token_id in active:
            ledger.tokens.setdefault(token_id, (agent_id, "active"))
        _, configs = request("GET", f"{base}/{agent_id}/url_configurations")
        if configs:
            ledger.configs[agent_id] = configs[0]["id"]
        else:
            ledger.configs.pop(agent_id, None)
    ledger.uncertain_agents.clear()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default="target/release/agentreg")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--seconds-per-cycle", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", help="copy the data directory here when something is lost")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed {seed}")

    with tempfile.TemporaryDirectory() as work:
        server = Server(os.path.abspath(args.binary), os.path.join(work, "data"))
        server.start()
        status, project = request("POST", f"{server.base}/projects", {"name": "crash"})
        assert status == 201, project
        ledger = Ledger()
        total_lost, total_violations = [], []
        for cycle in range(args.kills):
            stop = threading.Event()
            threads = [threading.Thread(target=writer,
                                        args=(server, project["id"], ledger, stop, random.Random(rng.random()), f"c{cycle}w{i}"))
                       for i in range(args.writers)]
            for thread in threads:
                thread.start()
            time.sleep(rng.uniform(0.3, args.seconds_per_cycle))
            server.kill()
            stop.set()
            for thread in threads:
                thread.join()
            server.start()
            lost, violations = verify(server, project["id"], ledger)
            resolve_uncertain(server, project["id"], ledger)
            total_lost += lost
            total_violations += violations
            print(f"kill {cycle + 1}: acknowledged so far {ledger.acknowledged}, lost {len(lost)}, violations {len(violations)}")
            for line in lost + violations:
                print(f"  {line}")
        server.kill()
        print(f"acknowledged {ledger.acknowledged}, lost {len(total_lost)}, invariant violations {len(total_violations)}")
        if (total_lost or total_violations) and args.keep:
            import shutil
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
            print(f"data directory and server log kept in {args.keep}")
        if total_lost or total_violations:
            sys.exit(1)


if __name__ == "__main__":
    main()
