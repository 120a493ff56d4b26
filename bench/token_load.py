"""Benchmark of POST /auth/token, the gateway's hot path. Not a test, not in CI.

Sets up a fresh PostgreSQL database and a SQLite file, each with 1,000 active credentials
encrypted under the configured key and valid for hours (so nothing is refreshed); starts
`authgateway serve` on each and bench/bare_app.py (a bare Flask + waitress JSON route) with the
same waitress threads; drives them with wrk (bench/token.lua rotates the users and sends the API
key) at 16 connections and at 1, one target after the other in every round, and prints the
medians: requests/s, p50, p99, peak RSS of the serving process, and the ratio to the bare route.
With --breakdown, also where a request's time goes inside each server (bench/probe): queued in
waitress, in the application, and the worker's own CPU there.

Every server runs pinned to one CPU (the last) and wrk to another (the first), the same for all
of them, unless --no-pin: a load generator that competes with the server for its cores measures
itself, and a CPython server's threads pass the interpreter lock between cores at the price of
a cross-CPU wake-up each time (docs/scale-out.md). --no-pin shows the unpinned numbers too.

Then a refresh storm: 200 concurrent calls on 20 expired credentials, against the fake Google of
the tests with a small provider latency; it must cause exactly 20 upstream refreshes.

With --scoped, the PostgreSQL gateway is also driven with a scoped API key (one provider, a
user pattern, one operation), as a target of its own right after the unscoped one in every
round: the cost of the scope check, measured against the same process.

    .venv/bin/python bench/token_load.py [--rounds 3] [--seconds 10] [--threads N] [--no-pin]
                                         [--breakdown] [--no-storm] [--scoped]

Needs `wrk` (Debian: apt-get install wrk) and a PostgreSQL it may create a database on
(BENCH_DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import requests
from cryptography.fernet import Fernet
from sqlalchemy import insert, update

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests.fakes: the storm runs against the tests' fake Google

from authgateway import apikeys, create_app  # noqa: E402
from authgateway.config import DEFAULTS  # noqa: E402
from authgateway.crypto import KeyRing  # noqa: E402
from authgateway.extensions import db  # noqa: E402
from authgateway.models import Credential, utcnow  # noqa: E402
from tests.fakes.google import FakeGoogle  # noqa: E402

USERS = 1000
LUA = Path(__file__).with_name("token.lua")
BARE_APP = Path(__file__).with_name("bare_app.py")
PROBE = Path(__file__).with_name("probe")  # --breakdown: its sitecustomize times each request
REDIRECT_URI = "http://localhost/auth/callback/google"
STORM_CREDENTIALS, STORM_CALLS, STORM_PROVIDER_LATENCY = 20, 200, 0.2
credentials = Credential.__table__


# ---- databases ---------------------------------------------------------------------------

def create_pg_database(base: str) -> str:
    name = f"authgateway_bench_token_{os.getpid()}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    return urlsplit(base)._replace(path="/" + name).geturl()


def drop_pg_database(base: str, url: str) -> None:
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{urlsplit(url).path.lstrip("/")}" WITH (FORCE)')


def local_app(url: str, key: str, api_key: str, google: FakeGoogle):
    """An app in this process on the bench database: migrates, fills, and runs the flows."""
    return create_app({"DATABASE_URL": url, "ENCRYPTION_KEY": key, "API_KEY": api_key,
                       "LOG_LEVEL": "WARNING", "RATELIMIT_INIT": "0",
                       "GOOGLE_REDIRECT_URI": REDIRECT_URI, **google.settings()})


def migrate_and_fill(app, key: str) -> None:
    """The schema, then USERS active credentials valid for six hours, encrypted as the gateway
    encrypts them (its KeyRing under the configured key)."""
    from flask_migrate import upgrade

    ring, now = KeyRing(key), utcnow()
    rows = [
        dict(user_email=f"user{i}@example.com", provider="google", subject=str(i),
             access_token_encrypted=ring.encrypt(f"ya29.a0AfB_{i:08d}" + "x" * 200),
             refresh_token_encrypted=ring.encrypt(f"1//0g{i:08d}" + "y" * 90),
             key_id=ring.primary_id, expires_at=now + timedelta(hours=6),
             scopes="openid https://www.googleapis.com/auth/userinfo.email", status="active",
             authenticated_at=now, refresh_failures=0, created_at=now, updated_at=now)
        for i in range(USERS)
    ]
    with app.app_context():
        upgrade()
        with db.engine.begin() as connection:
            connection.execute(insert(credentials), rows)
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql("ANALYZE")
        db.engine.dispose()


def pg_counters(url: str) -> dict[str, int]:
    """Server-side counts for the bench database: transactions, and rows written per table."""
    with psycopg.connect(url, autocommit=True) as connection:
        xacts = connection.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database "
            "WHERE datname = current_database()").fetchone()[0]
        writes = dict(connection.execute(
            "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables"))
    # This connection's own statement is counted too: one transaction, no write.
    return {"transactions": xacts, **writes}


# ---- servers -----------------------------------------------------------------------------

def pin_to(cpu: int | None):
    """For subprocess' preexec_fn: run the child (and the threads it starts) on ``cpu`` only."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One serving process on a free loopback port, its output in a log file."""

    def __init__(self, name: str, command: list[str], env: dict, logs: Path,
                 cpu: int | None) -> None:
        self.name = name
        self.requests = 0  # answers counted by wrk, warm-up included
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = logs / f"{name.replace(' ', '_').replace('(', '').replace(')', '')}.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(  # noqa: S603 (our own argv)
                [*command, "--host", "127.0.0.1", "--port", str(self.port)],
                env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=pin_to(cpu))

    def wait_ready(self, timeout: float = 30) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"{self.name} exited with {self.process.returncode}:\n"
                         f"{self.log.read_text(errors='replace')[-3000:]}")
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        sys.exit(f"{self.name} never became healthy:\n{self.log.read_text(errors='replace')}")

    def peak_rss_mb(self) -> float:
        """VmHWM: the most memory the process has had resident since it started."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


class KeyedTarget:
    """A running server driven with another API key: a target of its own in the tables."""

    def __init__(self, name: str, server: Server, api_key: str) -> None:
        self.name, self.server, self.api_key = name, server, api_key
        self.url, self.log, self.requests = server.url, server.log, 0

    def wait_ready(self) -> KeyedTarget:
        return self

    def peak_rss_mb(self) -> float:
        return self.server.peak_rss_mb()

    def stop(self) -> None:
        """The server is stopped as itself."""


def gateway_env(url: str, key: str, api_key: str, threads: int, instance: Path,
                google: FakeGoogle) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AUTH_GATEWAY_", "GOOGLE_")) and k != "DATABASE_URL"}
    env.update(DATABASE_URL=url, AUTH_GATEWAY_ENCRYPTION_KEY=key, AUTH_GATEWAY_API_KEY=api_key,
               AUTH_GATEWAY_THREADS=str(threads), AUTH_GATEWAY_INSTANCE_PATH=str(instance),
               GOOGLE_REDIRECT_URI=REDIRECT_URI, **google.settings())
    return env


def gateway_command() -> list[str]:
    script = Path(sys.executable).with_name("authgateway")
    return [str(script), "serve"]


# ---- load --------------------------------------------------------------------------------

def run_wrk(server: Server, connections: int, seconds: int, api_key: str,
            cpu: int | None) -> dict:
    """One wrk run against POST /auth/token: requests/s, p50 and p99 in ms, error counts, and
    the wall-clock window it ran in (for --breakdown)."""
    started = time.time()
    done = subprocess.run(  # noqa: S603 (our own argv)
        [shutil.which("wrk") or "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
         "--timeout", "5s", "-s", str(LUA), server.url + "/auth/token", "--", api_key, str(USERS)],
        capture_output=True, text=True, check=True, preexec_fn=pin_to(cpu))
    line = next((line for line in done.stdout.splitlines() if line.startswith("BENCH ")), None)
    if line is None:
        sys.exit(f"wrk printed no summary:\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix("BENCH "))
    if raw["non_2xx"] or raw["socket_errors"]:
        print(f"  ! {server.name}: {raw['non_2xx']} non-2xx answers, {raw['socket_errors']} "
              f"socket errors (see {server.log})", file=sys.stderr)
    return {"rps": raw["requests"] / (raw["duration_us"] / 1e6), "p50": raw["p50_us"] / 1000,
            "p99": raw["p99_us"] / 1000, "requests": raw["requests"],
            "bad": raw["non_2xx"] + raw["socket_errors"], "window": (started, time.time())}


def load(servers: list[Server], rounds: int, seconds: int, warmup: int,
         api_key: str, cpu: int | None) -> dict[tuple[str, int], list[dict]]:
    """Every server in turn within each round (A B C A B C ...), 16 connections then 1."""
    for server in servers:  # fill the API key cache, the pool, the prepared statements
        server.requests += run_wrk(server, 16, warmup, getattr(server, "api_key", api_key),
                                   cpu)["requests"]
    results: dict[tuple[str, int], list[dict]] = {}
    for connections in (16, 1):
        for round_number in range(1, rounds + 1):
            for server in servers:
                result = run_wrk(server, connections, seconds,
                                 getattr(server, "api_key", api_key), cpu)
                server.requests += result["requests"]
                results.setdefault((server.name, connections), []).append(result)
                print(f"  round {round_number} c={connections:<2} {server.name:18} "
                      f"{result['rps']:7.0f} req/s  p50 {result['p50']:6.2f} ms  "
                      f"p99 {result['p99']:6.2f} ms", file=sys.stderr)
    return results


def table(results: dict[tuple[str, int], list[dict]], rss: dict[str, float], bare: str) -> str:
    lines = [f"{'target':18} {'conns':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
             f"{'peak RSS MB':>12} {'vs bare':>8}   (medians of {len(next(iter(results.values())))}"
             " rounds)"]
    for connections in (16, 1):
        bare_rps = statistics.median(r["rps"] for r in results[(bare, connections)])
        for (name, conns), runs in results.items():
            if conns != connections:
                continue
            rps = statistics.median(r["rps"] for r in runs)
            lines.append(
                f"{name:18} {conns:>5} {rps:8.0f} "
                f"{statistics.median(r['p50'] for r in runs):8.2f} "
                f"{statistics.median(r['p99'] for r in runs):8.2f} {rss[name]:12.1f} "
                f"{rps / bare_rps:8.2f}")
    return "\n".join(lines)


def goals(results: dict[tuple[str, int], list[dict]], rss: dict[str, float], bare: str,
          gateways: list[str]) -> str:
    """The speed goals for a valid cached token, each with its verdict."""
    def median(name: str, connections: int, key: str) -> float:
        return statistics.median(r[key] for r in results[(name, connections)])

    lines = []
    for name in gateways:
        ratio = median(name, 16, "rps") / median(bare, 16, "rps")
        checks = [
            (f"throughput at 16 connections {ratio:.2f} x bare", ratio >= 0.5, ">= 0.5"),
            (f"p50 at 1 connection {median(name, 1, 'p50'):.2f} ms",
             median(name, 1, "p50") < 2, "< 2 ms"),
            (f"p99 at 16 connections {median(name, 16, 'p99'):.1f} ms",
             median(name, 16, "p99") < 15, "< 15 ms"),
            (f"peak RSS {rss[name]:.0f} MB", rss[name] < 120, "< 120 MB"),
        ]
        lines += [f"{name:18} {text} (goal {goal}): {'ok' if met else 'NOT MET'}"
                  for text, met, goal in checks]
    return "\n".join(lines)


def breakdown(results: dict[tuple[str, int], list[dict]], probes: dict[str, Path]) -> str:
    """--breakdown: where a request's time went inside each serving process at 16 connections
    (bench/probe/sitecustomize.py wrote one line per request), next to what wrk saw."""
    def percentiles(values: list[float]) -> str:
        ordered = sorted(values)
        return " / ".join(f"{ordered[int(len(ordered) * p)] * 1000:5.2f}" for p in (0.5, 0.99))

    lines = [f"{'target':18} {'requests':>8}  {'queued p50/p99':>14}  {'in app p50/p99':>14}  "
             f"{'app CPU p50/p99':>15}  {'wrk p50/p99':>13}   (ms, 16 connections)"]
    for name, path in probes.items():
        runs = results[(name, 16)]
        windows = [run["window"] for run in runs]
        rows = [tuple(map(float, line.split())) for line in path.read_text().splitlines()]
        rows = [row for row in rows if any(start <= row[0] <= end for start, end in windows)]
        if not rows:
            lines.append(f"{name:18} no requests recorded")
            continue
        wrk = (f"{statistics.median(r['p50'] for r in runs):5.2f} / "
               f"{statistics.median(r['p99'] for r in runs):5.2f}")
        lines.append(f"{name:18} {len(rows):8}  {percentiles([r[1] for r in rows]):>14}  "
                     f"{percentiles([r[2] for r in rows]):>14}  "
                     f"{percentiles([r[3] for r in rows]):>15}  {wrk:>13}")
    return "\n".join(lines)


# ---- refresh storm -----------------------------------------------------------------------

def connect(client, email: str, api_key: str) -> None:
    """A whole flow, as a person and an MCP server make it: init, consent, callback."""
    init = client.post("/auth/init", json={"provider": "google", "user_email": email},
                       headers={"X-API-Key": api_key})
    assert init.status_code == 200, init.get_json()
    consent = requests.get(init.get_json()["auth_url"], allow_redirects=False, timeout=10)
    location = urlsplit(consent.headers["Location"])
    page = client.get(f"{location.path}?{location.query}")
    assert page.status_code == 200, page.get_data(as_text=True)


def refresh_storm(app, server: Server, google: FakeGoogle, api_key: str) -> dict:
    emails = [f"storm{i}@example.com" for i in range(STORM_CREDENTIALS)]
    client = app.test_client()
    for email in emails:
        connect(client, email, api_key)
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(update(credentials).where(credentials.c.user_email.in_(emails))
                           .values(expires_at=utcnow() - timedelta(seconds=60)))
    google.refresh_latency = STORM_PROVIDER_LATENCY
    before = google.refresh_count
    calls = [emails[i % len(emails)] for i in range(STORM_CALLS)]
    barrier = threading.Barrier(len(calls) + 1)
    answers: list = [None] * len(calls)

    def call(i: int, email: str) -> None:
        with requests.Session() as http:
            barrier.wait()
            answer = http.post(server.url + "/auth/token", timeout=60,
                               headers={"X-API-Key": api_key},
                               json={"provider": "google", "user_email": email})
            # Only what is needed: a kept Response keeps its connection open, and waitress
            # accepts no more than 100 open connections.
            answers[i] = (answer.status_code, answer.json().get("access_token"))

    threads = [threading.Thread(target=call, args=(i, email)) for i, email in enumerate(calls)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.monotonic()
    for thread in threads:
        thread.join(timeout=90)
    wall = time.monotonic() - started
    google.refresh_latency = 0.0
    tokens: dict[str, set] = {}
    for email, answer in zip(calls, answers, strict=True):
        if answer is not None and answer[0] == 200:
            tokens.setdefault(email, set()).add(answer[1])
    return {"wall": wall, "refreshes": google.refresh_count - before,
            "statuses": dict(Counter(a[0] if a is not None else "none" for a in answers)),
            "one_token_each": len(tokens) == len(emails) and all(
                len(t) == 1 for t in tokens.values())}


# ---- main --------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="per wrk run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load before rounds")
    parser.add_argument("--threads", type=int, default=int(DEFAULTS["THREADS"]),
                        help="waitress threads of every server (default: the gateway's)")
    parser.add_argument("--database-url", default=os.environ.get(
        "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="a database to connect to for CREATE DATABASE (the bench uses its own)")
    parser.add_argument("--no-storm", action="store_true", help="skip the refresh storm")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time each request inside the servers (bench/probe): queued, "
                             "in the app, CPU; it costs them a little throughput")
    parser.add_argument("--scoped", action="store_true",
                        help="also drive the PostgreSQL gateway with a scoped API key")
    parser.add_argument("--no-pin", action="store_true",
                        help="leave servers and wrk on any CPU (default: each on its own)")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, load_cpu = ((cpus[-1], cpus[0]) if len(cpus) > 1 and not args.no_pin
                            else (None, None))
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")

    key, api_key = Fernet.generate_key().decode(), "agw_bench_" + os.urandom(12).hex()
    work = Path(tempfile.mkdtemp(prefix="authgateway-bench-"))
    pg_url = create_pg_database(args.database_url)
    sqlite_url = "sqlite:///" + str(work / "gateway.sqlite")
    servers: list[Server] = []
    try:
        with FakeGoogle(redirect_uris=[REDIRECT_URI]) as google:
            apps = {url: local_app(url, key, api_key, google) for url in (pg_url, sqlite_url)}
            for app in apps.values():
                migrate_and_fill(app, key)
            if args.scoped:
                with apps[pg_url].app_context():
                    scoped_key = apikeys.create_key("bench-scoped", apikeys.Scope(
                        providers=frozenset({"google"}), users=("user*@example.com",),
                        operations=frozenset({"token"})))
                    db.engine.dispose()
            pinning = ("unpinned" if server_cpu is None else
                       f"servers on CPU {server_cpu}, wrk on CPU {load_cpu}")
            print(f"{USERS} credentials on PostgreSQL and SQLite; waitress threads: "
                  f"{args.threads}; {pinning}; logs in {work}", file=sys.stderr)

            probes: dict[str, Path] = {}

            def probed(name: str, env: dict) -> dict:
                """With --breakdown, ``env`` plus what loads bench/probe into the server."""
                if not args.breakdown:
                    return env
                probes[name] = work / f"{name.replace(' ', '_')}.probe"
                return {**env, "BENCH_PROBE_FILE": str(probes[name]), "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(PROBE), env.get("PYTHONPATH")]))}

            def gateway(name: str, url: str, *, probe: bool = False) -> Server:
                instance = work / name.replace(" ", "_")
                instance.mkdir(exist_ok=True)
                env = gateway_env(url, key, api_key, args.threads, instance, google)
                return Server(name, gateway_command(), probed(name, env) if probe else env, work,
                              server_cpu)

            pg_before = pg_counters(pg_url)
            servers = [gateway("gateway (PG)", pg_url, probe=True),
                       Server("bare Flask", [sys.executable, str(BARE_APP), "--threads",
                                             str(args.threads)],
                              probed("bare Flask", dict(os.environ)), work, server_cpu),
                       gateway("gateway (SQLite)", sqlite_url, probe=True)]
            if args.scoped:
                servers.insert(1, KeyedTarget("gateway (PG) scoped", servers[0], scoped_key))
            for server in servers:
                server.wait_ready()
            results = load(servers, args.rounds, args.seconds, args.warmup, api_key, load_cpu)
            rss = {server.name: server.peak_rss_mb() for server in servers}
            pg_requests = sum(server.requests for server in servers
                              if server.name.startswith("gateway (PG)"))
            for server in servers:
                server.stop()
            time.sleep(1)  # the gateway's backends flush their statistics as they exit
            pg_after = pg_counters(pg_url)

            print(f"\n{pinning}, waitress threads {args.threads}, {args.rounds} rounds of "
                  f"{args.seconds} s")
            print(table(results, rss, "bare Flask"))
            print()
            print(goals(results, rss, "bare Flask", [server.name for server in servers
                                                     if server.name.startswith("gateway")]))
            if probes:
                print("\nwhere the time goes inside each server (bench/probe): queued in waitress, "
                      "then in the app (wall), of which the worker's own CPU; the rest of wrk's "
                      "time passed before waitress's main thread had read the request")
                print(breakdown(results, probes))
            xacts = pg_after["transactions"] - pg_before["transactions"] - 1
            writes = {name: pg_after.get(name, 0) - pg_before.get(name, 0)
                      for name in pg_after if name != "transactions"}
            print(f"\nPostgreSQL, whole run of the PG gateway ({pg_requests} answers counted by "
                  f"wrk): {xacts / pg_requests:.3f} transactions per request (server's "
                  f"pg_stat_database; each autocommit statement is one)")
            print("rows written: " + ", ".join(f"{name} {n}" for name, n in sorted(writes.items()))
                  + " (audit_events: the batched token_served counts, one row per user every "
                  "AUDIT_FLUSH_SECONDS)")

            if not args.no_storm:
                print(f"\nrefresh storm: {STORM_CALLS} concurrent calls on {STORM_CREDENTIALS} "
                      f"expired credentials, provider latency {STORM_PROVIDER_LATENCY * 1000:.0f}"
                      " ms")
                for name, url in (("gateway (PG)", pg_url), ("gateway (SQLite)", sqlite_url)):
                    server = gateway(name + " storm", url).wait_ready()
                    servers.append(server)
                    outcome = refresh_storm(apps[url], server, google, api_key)
                    server.stop()
                    # The goal: under 2 s plus the provider's own latency, exactly one refresh
                    # per credential, every caller answered with its credential's one token.
                    verdict = "ok" if (outcome["refreshes"] == STORM_CREDENTIALS
                                       and outcome["statuses"] == {200: STORM_CALLS}
                                       and outcome["one_token_each"]
                                       and outcome["wall"] < 2 + STORM_PROVIDER_LATENCY
                                       ) else "NOT MET"
                    print(f"{name:18} wall {outcome['wall']:.2f} s, upstream refreshes "
                          f"{outcome['refreshes']} (expected {STORM_CREDENTIALS}), answers "
                          f"{outcome['statuses']}, one token per credential: "
                          f"{outcome['one_token_each']}  -> {verdict}")
            for app in apps.values():
                with app.app_context():
                    db.engine.dispose()
    finally:
        for server in servers:
            server.stop()
        drop_pg_database(args.database_url, pg_url)
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
