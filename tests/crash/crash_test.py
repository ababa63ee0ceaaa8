#!/usr/bin/env python3
"""Crash test: acknowledged writes survive kill -9, and the invariants hold after every restart.

Starts the real binary, runs concurrent writers that register and delete agents, create and
revoke and rotate tokens, and create and delete URL configurations, recording every request that
got a 2xx.
Kills the process with SIGKILL at random moments, restarts it, and checks after each restart:
- every acknowledged write is present and intact, and every acknowledged delete is gone;
- no agent has more than two counted tokens plus one retiring (rotated) token, no revoked token is
  still usable, and no agent has more than one URL configuration;
- ids stay monotonic: a new agent gets an id above every id seen before.
A request that was in flight when the process died has an unknown outcome and is only checked
against the invariants.

With --database-url ADMIN_URL the service stores in PostgreSQL instead of sled: the script
creates a fresh database on that server, starts --replicas processes on it that share one
encryption key and KAS secret, and spreads the writers across them. Each cycle kills one replica
at random with SIGKILL and restarts it; every third cycle (and at least once when --kills >= 2)
it restarts PostgreSQL itself while the writers run instead. In this mode a 5xx is an unknown
outcome like a connection error, and the writers carry on through the outage. After each cycle every acknowledged write is checked
through every replica, so each record is also read through a replica that did not acknowledge
it. The database is dropped at the end (kept with --keep when something was lost).

Usage: crash_test.py [--binary PATH] [--kills N] [--writers N] [--seconds-per-cycle S] [--seed N]
                     [--database-url ADMIN_URL [--replicas N] [--postgres-restart-command CMD]]
Standard library only (PostgreSQL mode also needs psql). Exits non-zero on any loss or violation.
"""

import argparse
import base64
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT_TOKEN = "glpat-crash-test-root-token-0123456789"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, binary, data_dir, extra_args=()):
        self.binary = binary
        self.data_dir = data_dir
        self.extra_args = list(extra_args)
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
             "--http-addr", f"127.0.0.1:{self.http_port}", "--grpc-addr", f"127.0.0.1:{self.grpc_port}",
             *self.extra_args],
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

    def alive(self):
        return self.process is not None and self.process.poll() is None


class Unknown(Exception):
    """The request's outcome is unknown: the connection failed."""


class Unavailable(Exception):
    """The request's outcome is unknown: the server answered 5xx (PostgreSQL mode only)."""


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
        # Unknown outcomes that PostgreSQL mode tolerates, counted for its report.
        self.unavailable = 0       # 503 answers
        self.server_errors = []    # other 5xx answers
        self.connection_errors = 0

    def ack(self):
        self.acknowledged += 1


def writer(server, project_id, ledger, stop, rng, prefix, tolerate_outage=False):
    """Writes until `stop`; records acknowledged writes and the agents of unknown outcomes.

    By default the first connection error ends the writer, because the server is dead. With
    `tolerate_outage` (PostgreSQL mode) a 5xx answer is an unknown outcome too, and the writer
    carries on through a database outage until its own server process is gone.
    """
    def call(method, url, body=None):
        status, payload = request(method, url, body)
        if tolerate_outage and status >= 500:
            raise Unavailable(status, payload)
        return status, payload

    counter = 0
    mine = []
    while not stop.is_set():
        counter += 1
        op = rng.choice(["agent", "agent", "token", "token", "revoke", "rotate", "config", "unconfig", "delete"])
        current = None
        try:
            if op == "agent" or not mine:
                name = f"{prefix}-{counter}"
                status, body = call("POST", f"{server.base}/projects/{project_id}/cluster_agents", {"name": name})
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
                status, body = call("POST", f"{agent_path}/tokens", {"name": f"t{counter}"})
                if status == 201:
                    with ledger.lock:
                        ledger.tokens[body["id"]] = (agent_id, "active")
                        ledger.ack()
            elif op == "revoke":
                with ledger.lock:
                    active = [t for t, (a, s) in ledger.tokens.items() if a == agent_id and s == "active"]
                if active:
                    token_id = rng.choice(active)
                    status, _ = call("DELETE", f"{agent_path}/tokens/{token_id}")
                    if status == 204:
                        with ledger.lock:
                            ledger.tokens[token_id] = (agent_id, "revoked")
                            ledger.ack()
            elif op == "rotate":
                with ledger.lock:
                    active = [t for t, (a, s) in ledger.tokens.items() if a == agent_id and s == "active"]
                if active:
                    token_id = rng.choice(active)
                    status, body = call("POST", f"{agent_path}/tokens/{token_id}/rotate", {"overlap_seconds": 3600})
                    if status == 201:
                        # The predecessor stays listed as active (retiring) for the overlap.
                        with ledger.lock:
                            ledger.tokens[body["id"]] = (agent_id, "active")
                            ledger.ack()
            elif op == "config":
                status, body = call("POST", f"{agent_path}/url_configurations", {"url": f"grpc://a{counter}.example.com"})
                if status == 201:
                    with ledger.lock:
                        ledger.configs[agent_id] = body["id"]
                        ledger.ack()
            elif op == "unconfig":
                with ledger.lock:
                    config_id = ledger.configs.get(agent_id)
                if config_id is not None:
                    status, _ = call("DELETE", f"{agent_path}/url_configurations/{config_id}")
                    if status == 204:
                        with ledger.lock:
                            ledger.configs.pop(agent_id, None)
                            ledger.deleted_configs[config_id] = agent_id
                            ledger.ack()
            elif op == "delete":
                status, _ = call("DELETE", agent_path)
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
        except (Unknown, Unavailable) as error:
            with ledger.lock:
                ledger.uncertain_agents.add(current if op != "agent" else None)
                if isinstance(error, Unknown):
                    ledger.connection_errors += 1
                elif error.args[0] == 503:
                    ledger.unavailable += 1
                else:
                    ledger.server_errors.append(f"{op} on {server.base}: {error.args[0]} {error.args[1]}")
            if not tolerate_outage or not server.alive():
                return
            time.sleep(0.05)


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
        retiring = [t for t in tokens if t.get("retiring_until")]
        if len(tokens) - len(retiring) > 2 or len(retiring) > 1:
            violations.append(
                f"agent {agent_id} has {len(tokens) - len(retiring)} counted and {len(retiring)} retiring usable tokens")
        revoked = list_all(f"{base}/{agent_id}/tokens?status=revoked")
        usable_ids = {t["id"] for t in tokens}
        for token in revoked:
            if token["id"] in usable_ids or not token.get("revoked_at"):
                violations.append(f"token {token['id']} of agent {agent_id} is usable after its revocation: {token}")
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
    parser.add_argument("--database-url", metavar="ADMIN_URL",
                        help="PostgreSQL mode: create a fresh database on this server (e.g. "
                             "postgres://postgres@127.0.0.1:5432/postgres), run there and drop it at the end")
    parser.add_argument("--replicas", type=int, default=None,
                        help="replicas sharing the database in PostgreSQL mode [default: 2]")
    parser.add_argument("--postgres-restart-command", default=None,
                        help="shell command that restarts PostgreSQL [default: pg_ctlcluster "
                             "--skip-systemctl-redirect VERSION main restart, VERSION from /etc/postgresql]")
    args = parser.parse_args()
    if args.database_url is None and (args.replicas is not None or args.postgres_restart_command is not None):
        parser.error("--replicas and --postgres-restart-command need --database-url")
    if args.database_url is not None:
        args.replicas = 2 if args.replicas is None else args.replicas
        if args.replicas < 1:
            parser.error("--replicas must be at least 1")
        args.postgres_restart_command = args.postgres_restart_command or default_postgres_restart_command()
        if args.postgres_restart_command is None and args.kills >= 2:
            parser.error("cannot tell how to restart PostgreSQL; pass --postgres-restart-command")
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed {seed}")
    if args.database_url is None:
        run_sled(args, rng)
    else:
        run_postgres(args, rng)


def run_sled(args, rng):
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
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
            print(f"data directory and server log kept in {args.keep}")
        if total_lost or total_violations:
            sys.exit(1)


# How long replicas may take to serve again after PostgreSQL restarted.
RECOVERY_SECONDS = 60


def run_postgres(args, rng):
    """The crash test on PostgreSQL: replicas on one database, replica kills and PostgreSQL restarts."""
    # The name does not come from the seeded generator, so that reruns with a seed do not collide.
    database = f"agentreg_crash_{os.urandom(6).hex()}"
    database_url = with_database(args.database_url, database)
    psql(args.database_url, f"CREATE DATABASE {database}")
    print(f"database {database}, {args.replicas} replicas")
    replicas, keep_database, failed = [], False, False
    try:
        with tempfile.TemporaryDirectory() as work:
            # Replicas sharing a database must share the instance key and the KAS secret.
            shared = ["--database-url", database_url,
                      "--encryption-key-file", write_secret(os.path.join(work, "encryption_key")),
                      "--kas-secret-file", write_secret(os.path.join(work, "kas_secret"))]
            for replica_idx in range(args.replicas):
                os.makedirs(os.path.join(work, f"replica-{replica_idx}"))
                replicas.append(Server(os.path.abspath(args.binary),
                                       os.path.join(work, f"replica-{replica_idx}", "data"), shared))
            # One at a time, so that exactly one of them creates the root token.
            for server in replicas:
                server.start()
            status, project = request("POST", f"{replicas[0].base}/projects", {"name": "crash"})
            assert status == 201, project
            ledger = Ledger()
            total_lost, total_violations = [], []
            n_replica_kills, n_postgres_restarts = 0, 0
            for cycle in range(args.kills):
                restart_postgres = (cycle + 1) % 3 == 0 or (args.kills == 2 and cycle == 1)
                unknown_before = (ledger.unavailable, ledger.connection_errors, len(ledger.server_errors))
                stop = threading.Event()
                threads = [threading.Thread(target=writer,
                                            args=(replicas[(writer_idx + cycle) % len(replicas)], project["id"], ledger, stop,
                                                  random.Random(rng.random()), f"c{cycle}w{writer_idx}", True))
                           for writer_idx in range(args.writers)]
                for thread in threads:
                    thread.start()
                time.sleep(rng.uniform(0.3, args.seconds_per_cycle))
                violations, killed_idx = [], None
                if restart_postgres:
                    event = "PostgreSQL restart"
                    n_postgres_restarts += 1
                    outage_started = time.time()
                    subprocess.run(args.postgres_restart_command, shell=True, check=True,
                                   stdout=subprocess.DEVNULL)
                    restarted = time.time()
                    if all(wait_until_serving(server, project["id"]) for server in replicas):
                        event += (f" in {restarted - outage_started:.1f} s, "
                                  f"replicas serving {time.time() - restarted:.1f} s later")
                    # The writers carry on after the recovery, so some writes land on reconnected pools.
                    time.sleep(rng.uniform(0.5, 1.5))
                else:
                    killed_idx = rng.randrange(len(replicas))
                    event = f"replica {killed_idx}"
                    n_replica_kills += 1
                    replicas[killed_idx].kill()
                    # The other replicas keep serving while the dead one's sessions are cleaned up.
                    time.sleep(rng.uniform(0.0, 0.5))
                stop.set()
                for thread in threads:
                    thread.join()
                for replica_idx, server in enumerate(replicas):
                    if not server.alive():
                        if replica_idx != killed_idx:
                            violations.append(f"replica {replica_idx} exited by itself with {server.process.returncode}")
                        server.start()
                serving = True
                for replica_idx, server in enumerate(replicas):
                    if not wait_until_serving(server, project["id"]):
                        violations.append(f"replica {replica_idx} does not serve {RECOVERY_SECONDS} s after the {event}")
                        serving = False
                lost = []
                if serving:
                    # Every replica reads everything, so each record is also read through a replica
                    # that did not acknowledge it.
                    for replica_idx in rng.sample(range(len(replicas)), len(replicas)):
                        replica_lost, replica_violations = verify(replicas[replica_idx], project["id"], ledger)
                        lost += [f"replica {replica_idx}: {line}" for line in replica_lost]
                        violations += [f"replica {replica_idx}: {line}" for line in replica_violations]
                    resolve_uncertain(rng.choice(replicas), project["id"], ledger)
                total_lost += lost
                total_violations += violations
                unavailable = ledger.unavailable - unknown_before[0]
                connection_errors = ledger.connection_errors - unknown_before[1]
                server_errors = len(ledger.server_errors) - unknown_before[2]
                print(f"kill {cycle + 1} ({event}): acknowledged so far {ledger.acknowledged}, lost {len(lost)}, "
                      f"violations {len(violations)}; unknown outcomes: 503 {unavailable}, "
                      f"other 5xx {server_errors}, connection errors {connection_errors}")
                for line in lost + violations + ledger.server_errors[unknown_before[2]:][:5]:
                    print(f"  {line}")
                if not serving:
                    break
            for server in replicas:
                server.kill()
            print(f"{args.replicas} replicas, {n_replica_kills} replica kills, "
                  f"{n_postgres_restarts} PostgreSQL restarts; unknown outcomes: 503 {ledger.unavailable}, "
                  f"other 5xx {len(ledger.server_errors)}, connection errors {ledger.connection_errors}")
            print(f"acknowledged {ledger.acknowledged}, lost {len(total_lost)}, invariant violations {len(total_violations)}")
            failed = bool(total_lost or total_violations)
            if failed and args.keep:
                shutil.copytree(work, args.keep, dirs_exist_ok=True)
                keep_database = True
                print(f"replica data directories and logs kept in {args.keep}, database {database} kept")
    finally:
        for server in replicas:
            if server.alive():
                server.kill()
        if not keep_database:
            psql(args.database_url, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    if failed:
        sys.exit(1)


def default_postgres_restart_command():
    """Debian's command for the one local cluster, or None if there is not exactly one version."""
    try:
        versions = os.listdir("/etc/postgresql")
    except OSError:
        return None
    if len(versions) != 1:
        return None
    return f"pg_ctlcluster --skip-systemctl-redirect {versions[0]} main restart"


def psql(url, sql):
    subprocess.run(["psql", "--no-psqlrc", "--quiet", "--set", "ON_ERROR_STOP=1", "--dbname", url, "--command", sql],
                   check=True, stdout=subprocess.DEVNULL)


def with_database(url, database):
    """The server URL `url` with its database replaced by `database`."""
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(path=f"/{database}"))


def write_secret(path):
    """Writes standard base64 of 32 random bytes to a new file of mode 0600; returns the path."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as secret_file:
        secret_file.write(base64.b64encode(os.urandom(32)).decode() + "\n")
    return path


def wait_until_serving(server, project_id):
    """Whether `server` answers a database read with 200 within RECOVERY_SECONDS."""
    deadline = time.time() + RECOVERY_SECONDS
    while time.time() < deadline:
        try:
            status, _ = request("GET", f"{server.base}/projects/{project_id}/cluster_agents?per_page=1")
            if status == 200:
                return True
        except Unknown:
            pass
        time.sleep(0.1)
    return False


if __name__ == "__main__":
    main()
