"""Refresh storms across real gateway processes: `authgateway serve` (waitress) subprocesses on
one PostgreSQL (or one SQLite file), the fake Google in this process. However many callers ask,
at once, on however many processes: one upstream refresh per credential, one shared answer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import select, update

from authgateway import create_app
from authgateway.context import gateway
from authgateway.extensions import db
from authgateway.models import Credential, utcnow
from tests.conftest import API_KEY, ENCRYPTION_KEY, HEADERS, base_config, empty_tables
from tests.fakes import FakeGoogle
from tests.flow import connect

REDIRECT_URI = "http://localhost/auth/callback/google"
# The gateways' upstream timeout. Not shorter: the fake's listen backlog is 5, so in a burst of
# connections some wait for a SYN retransmit (1 s) before the fake accepts them.
PROVIDER_TIMEOUT = 3.0
credentials = Credential.__table__


# ---- gateway processes -------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gateway_env(database_url: str, google: FakeGoogle, tmp: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AUTH_GATEWAY_", "GOOGLE_")) and k != "DATABASE_URL"}
    env.update(
        DATABASE_URL=database_url,
        AUTH_GATEWAY_ENCRYPTION_KEY=ENCRYPTION_KEY,
        AUTH_GATEWAY_API_KEY=API_KEY,
        AUTH_GATEWAY_LOAD_PLUGINS="1",  # the google plugin, found by its entry point
        AUTH_GATEWAY_PROVIDER_TIMEOUT=str(PROVIDER_TIMEOUT),
        AUTH_GATEWAY_INSTANCE_PATH=str(tmp),
        AUTH_GATEWAY_LOG_LEVEL="WARNING",
        GOOGLE_REDIRECT_URI=REDIRECT_URI,
        PYTHONUNBUFFERED="1",
        **google.settings(),
    )
    env.update(extra)
    return env


def authgateway_command(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("authgateway")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "authgateway", *args]


class GatewayProcess:
    """`authgateway serve` on a free loopback port, its output in a log file."""

    def __init__(self, env: dict, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                authgateway_command("serve", "--host", "127.0.0.1", "--port", str(self.port)),
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )

    def wait_healthy(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"gateway exited with {self.process.returncode}:\n{self.output()}")
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        pytest.fail(f"gateway on {self.url} never became healthy:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def start_gateways(count: int, env: dict, tmp: Path) -> list[GatewayProcess]:
    gateways = [GatewayProcess(env, tmp / f"gateway{i}.log") for i in range(count)]
    deadline = time.monotonic() + 30
    try:
        for gw in gateways:
            gw.wait_healthy(deadline)
    except BaseException:
        for gw in gateways:
            gw.stop()
        raise
    return gateways


# ---- fixtures ----------------------------------------------------------------------------

def migrated_app(database_url: str, google: FakeGoogle):
    """An app in this process on the same database: it runs the flows and reads rows."""
    app = create_app(base_config(database_url, **google.settings(),
                                 GOOGLE_REDIRECT_URI=REDIRECT_URI))
    with app.app_context():
        from flask_migrate import upgrade

        upgrade()
    return app


@pytest.fixture(scope="module")
def fake():
    with FakeGoogle(redirect_uris=[REDIRECT_URI]) as google:
        yield google


@pytest.fixture(scope="module")
def pg(postgres_url, fake, tmp_path_factory):
    """This process's app and two gateway processes, all on one PostgreSQL database."""
    app = migrated_app(postgres_url, fake)
    tmp = tmp_path_factory.mktemp("gateways")
    # Every storm here is at one provider on purpose, with every thread: its refresh bulkhead
    # is as wide as the thread pool, so nothing is turned away before the row lock decides.
    gateways = start_gateways(2, gateway_env(postgres_url, fake, tmp,
                                             AUTH_GATEWAY_THREADS="16",
                                             AUTH_GATEWAY_REFRESH_CONCURRENCY="16"), tmp)
    yield app, gateways
    for gw in gateways:
        gw.stop()
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def google(fake):
    """The module's fake, with its knobs back at their defaults for each test."""
    with fake._lock:
        fake.rotate_refresh_tokens = False
        fake.refresh_latency = 0.0
        fake.access_token_ttl = 3600
        fake.most_refreshes_in_flight = 0
        fake._failures.clear()
        fake._hangs.clear()
    yield fake
    with fake._lock:
        fake._failures.clear()
        fake._hangs.clear()


@pytest.fixture
def app(pg, google):
    app, _ = pg
    with app.app_context():
        empty_tables()
    return app


@pytest.fixture
def urls(pg) -> list[str]:
    return [gw.url for gw in pg[1]]


# ---- helpers -----------------------------------------------------------------------------

def expire(app, email: str | None = None) -> None:
    query = update(credentials).values(expires_at=utcnow() - timedelta(seconds=60))
    if email is not None:
        query = query.where(credentials.c.user_email == email)
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(query)


def connect_expired(app, emails: list[str]) -> None:
    """Each person signs in, then their access token expires."""
    client = app.test_client()
    for email in emails:
        connect(client, email)
    expire(app)


def read_row(app, email: str) -> dict:
    with app.app_context(), db.engine.connect() as connection:
        return connection.execute(
            select(credentials).where(credentials.c.user_email == email)).first()._asdict()


def stored_refresh_token(app, email: str) -> str:
    row = read_row(app, email)
    with app.app_context():
        return gateway().keyring.decrypt(row["refresh_token_encrypted"], row["key_id"])


def storm(calls: list[tuple[str, str]], **extra) -> tuple[list[requests.Response], float]:
    """POST /auth/token for each (gateway url, email) at once; the answers and the wall time
    from the release of all callers to the last answer."""
    barrier = threading.Barrier(len(calls) + 1)
    answers: list = [None] * len(calls)

    def call(i: int, url: str, email: str) -> None:
        with requests.Session() as http:
            barrier.wait()
            answers[i] = http.post(url + "/auth/token", headers=HEADERS, timeout=60,
                                   json={"provider": "google", "user_email": email, **extra})

    threads = [threading.Thread(target=call, args=(i, url, email))
               for i, (url, email) in enumerate(calls)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.monotonic()
    for thread in threads:
        thread.join(timeout=90)
    elapsed = time.monotonic() - started
    assert all(a is not None for a in answers), "a call never returned"
    return answers, elapsed


def report(name: str, **numbers) -> None:
    print(f"\n[storm] {name}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()))


# ---- PostgreSQL, two processes -----------------------------------------------------------

def test_fifty_calls_on_two_processes_cause_one_refresh(app, urls, google):
    connect_expired(app, ["ada@example.com"])
    google.refresh_latency = 0.3  # the race window is real: the refresh takes 300 ms
    before = google.refresh_count
    answers, elapsed = storm([(urls[i % 2], "ada@example.com") for i in range(50)])
    refreshes = google.refresh_count - before
    statuses = Counter(a.status_code for a in answers)
    tokens = {a.json()["access_token"] for a in answers if a.status_code == 200}
    report("1 credential x 50 calls, 2 processes", refreshes=refreshes,
           statuses=dict(statuses), distinct_tokens=len(tokens), wall_s=round(elapsed, 2))
    assert statuses == {200: 50}
    assert len(tokens) == 1 and google.token_is_live(tokens.pop())
    assert refreshes == 1
    assert elapsed < 15


def test_ten_credentials_at_once_cause_ten_refreshes(app, urls, google):
    emails = [f"user{i}@example.com" for i in range(10)]
    connect_expired(app, emails)
    google.refresh_latency = 0.3
    before = google.refresh_count
    calls = [(urls[(i + j) % 2], email) for j in range(10) for i, email in enumerate(emails)]
    answers, elapsed = storm(calls)
    refreshes = google.refresh_count - before
    statuses = Counter(a.status_code for a in answers)
    per_user: dict[str, set] = {email: set() for email in emails}
    for (_, email), answer in zip(calls, answers, strict=True):
        if answer.status_code == 200:
            per_user[email].add(answer.json()["access_token"])
    errors = Counter(read_row(app, email)["last_error"] for email in emails)
    report("10 credentials x 10 calls, 2 processes", refreshes=refreshes,
           statuses=dict(statuses), wall_s=round(elapsed, 2), errors=dict(errors))
    assert statuses == {200: 100}
    assert all(len(seen) == 1 for seen in per_user.values())
    assert len(set().union(*per_user.values())) == 10
    assert refreshes == 10


def test_rotating_refresh_tokens_hold_across_processes(app, urls, google):
    """The provider rotates refresh tokens and kills the grant when an old one comes back."""
    google.rotate_refresh_tokens = True
    google.refresh_latency = 0.1
    connect(app.test_client(), "ada@example.com")
    before = google.refresh_count
    seen = {stored_refresh_token(app, "ada@example.com")}
    for _cycle in range(5):
        expire(app)
        answers, _ = storm([(urls[i % 2], "ada@example.com") for i in range(20)])
        assert [a.status_code for a in answers] == [200] * 20, answers[0].text
        assert len({a.json()["access_token"] for a in answers}) == 1
        current = stored_refresh_token(app, "ada@example.com")
        assert current not in seen and google.token_is_live(current)
        seen.add(current)
    assert google.refresh_count - before == 5
    # Concurrent force_refresh on both processes: late callers may refresh again, in turn.
    answers, _ = storm([(urls[i % 2], "ada@example.com") for i in range(10)], force_refresh=True)
    assert [a.status_code for a in answers] == [200] * 10
    assert google.token_is_live(stored_refresh_token(app, "ada@example.com"))
    report("rotation: 5 expiry waves x 20 calls + 10 force_refresh", refreshes=google.refresh_count
           - before, invalid_grant=0)


def test_an_outage_storm_answers_fast_and_changes_nothing(app, urls, google):
    """Every upstream call hangs past the timeout: callers share one failed attempt instead of
    queueing one timeout each behind the row lock, the credential is untouched, and callers
    for a valid credential, mixed in, never wait."""
    client = app.test_client()
    connect(client, "ada@example.com")
    connect(client, "bob@example.com")
    expire(app, "ada@example.com")
    before_row = read_row(app, "ada@example.com")
    google.hang_next(PROVIDER_TIMEOUT + 2, times=50)
    before = google.refresh_count
    calls = [(urls[i % 2], "ada@example.com") for i in range(20)]
    calls += [(urls[i % 2], "bob@example.com") for i in range(10)]
    all_answers, elapsed = storm(calls)
    answers, valid = all_answers[:20], all_answers[20:]
    attempts = google.refresh_count - before
    statuses = Counter(a.status_code for a in answers)
    assert [a.status_code for a in valid] == [200] * 10
    slowest_valid = max(a.elapsed.total_seconds() for a in valid)
    assert slowest_valid < 1.5, slowest_valid
    report(f"outage: 20 calls, every upstream call hangs past the {PROVIDER_TIMEOUT} s timeout",
           attempts=attempts, statuses=dict(statuses), wall_s=round(elapsed, 2),
           slowest_valid_credential_s=round(slowest_valid, 2))
    assert statuses == {502: 20}
    assert {a.json()["detail"]["error"] for a in answers} == {"provider_unavailable"}
    assert elapsed < 2 * PROVIDER_TIMEOUT + 2  # not one timeout per caller: 20 x 3 s
    assert attempts <= 3
    after_row = read_row(app, "ada@example.com")
    bookkeeping = {"refresh_failures", "last_error", "last_error_kind", "last_error_at"}
    assert {k: v for k, v in after_row.items() if k not in bookkeeping} == {
        k: v for k, v in before_row.items() if k not in bookkeeping}
    assert after_row["last_error"] == "timeout"
    assert after_row["refresh_failures"] == before_row["refresh_failures"] + attempts


def test_a_dead_grant_in_a_storm_is_one_upstream_call_and_one_verdict(app, urls, google):
    connect_expired(app, ["ada@example.com"])
    google.refresh_latency = 0.3
    google.fail_next(400, "invalid_grant")
    before = google.refresh_count
    answers, _ = storm([(urls[i % 2], "ada@example.com") for i in range(30)])
    assert [a.status_code for a in answers] == [401] * 30
    assert {(a.json()["detail"]["error"], a.json()["detail"]["auth_required"])
            for a in answers} == {("refresh_failed", True)}
    assert google.refresh_count - before == 1
    row = read_row(app, "ada@example.com")
    assert row["status"] == "needs_reauth" and row["refresh_token_encrypted"] is None


def test_cron_on_two_hosts_refreshes_each_credential_once(app, pg, postgres_url, google,
                                                         tmp_path):
    client = app.test_client()
    for i in range(6):
        connect(client, f"user{i}@example.com")
    expire(app)
    google.refresh_latency = 0.2
    before = google.refresh_count
    env = gateway_env(postgres_url, google, tmp_path)
    command = authgateway_command("tokens", "refresh", "--expiring-within", "600")
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=60) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    summaries = [out.strip().splitlines()[-1] for out, _ in outputs]
    refreshed = sum(int(s.split(",")[0].split()[1]) for s in summaries)
    report("cron on two hosts, 6 expired credentials", refreshes=google.refresh_count - before,
           summaries=summaries)
    assert google.refresh_count - before == 6 and refreshed == 6


# ---- SQLite ------------------------------------------------------------------------------

@contextmanager
def sqlite_gateways(google: FakeGoogle, tmp_path: Path, processes: int,
                    threads: int) -> Iterator[tuple]:
    """This process's app and ``processes`` gateway processes on one new SQLite file."""
    url = "sqlite:///" + str(tmp_path / "gateway.sqlite")
    app = migrated_app(url, google)
    gateways = start_gateways(processes, gateway_env(
        url, google, tmp_path, AUTH_GATEWAY_THREADS=str(threads),
        AUTH_GATEWAY_REFRESH_CONCURRENCY=str(threads)), tmp_path)
    try:
        yield app, gateways
    finally:
        for gw in gateways:
            gw.stop()
        with app.app_context():
            db.engine.dispose()


@pytest.mark.parametrize("processes,threads", [(1, 20), (2, 10)])
def test_sqlite_storm_causes_one_refresh(google, tmp_path, processes, threads):
    with sqlite_gateways(google, tmp_path, processes, threads) as (app, gateways):
        connect_expired(app, ["ada@example.com"])
        google.refresh_latency = 0.3
        before = google.refresh_count
        answers, elapsed = storm([(gateways[i % processes].url, "ada@example.com")
                                  for i in range(20)])
    refreshes = google.refresh_count - before
    statuses = Counter(a.status_code for a in answers)
    report(f"SQLite: 20 calls, {processes} process(es) x {threads} threads", refreshes=refreshes,
           statuses=dict(statuses), wall_s=round(elapsed, 2))
    assert statuses == {200: 20}
    assert len({a.json()["access_token"] for a in answers}) == 1
    assert refreshes == 1


@pytest.mark.parametrize("processes", [1, 2])
def test_sqlite_refreshes_of_different_credentials_overlap(google, tmp_path, processes):
    """SQLite's one write lock is not held while the provider answers
    (storage.credential_transaction): ten credentials refresh at once, as on PostgreSQL, not
    one after another (not 20 x the provider's latency, as a queue of one at a time would take)."""
    emails = [f"user{i}@example.com" for i in range(10)]
    with sqlite_gateways(google, tmp_path, processes, threads=10) as (app, gateways):
        connect_expired(app, emails)
        google.refresh_latency = 1.0  # long enough for all ten to arrive on a busy machine
        before = google.refresh_count
        answers, elapsed = storm([(gateways[i % processes].url, email)
                                  for i, email in enumerate(emails)])
    report(f"SQLite: 10 credentials, {processes} process(es)", wall_s=round(elapsed, 2),
           most_in_flight=google.most_refreshes_in_flight)
    assert Counter(a.status_code for a in answers) == {200: 10}
    assert google.refresh_count - before == 10
    assert google.most_refreshes_in_flight == 10


def test_sqlite_a_gateway_killed_at_the_provider_leaves_the_credential_usable(google, tmp_path):
    """The credential's lock is the kernel's (flock), so it dies with the process that held it:
    another process refreshes at once, from the row the dead one never got to change."""
    with sqlite_gateways(google, tmp_path, 2, threads=4) as (app, (doomed, survivor)):
        connect_expired(app, ["ada@example.com"])
        before_row = read_row(app, "ada@example.com")
        google.hang_next(30)
        before = google.refresh_count
        outcome = {}

        def call_the_doomed() -> None:
            try:
                outcome["status"] = requests.post(
                    doomed.url + "/auth/token", headers=HEADERS, timeout=60,
                    json={"provider": "google", "user_email": "ada@example.com"}).status_code
            except requests.ConnectionError:
                outcome["status"] = "connection lost"

        caller = threading.Thread(target=call_the_doomed)
        caller.start()
        google.wait_for_refresh(before + 1)
        doomed.process.kill()
        doomed.process.wait(timeout=5)
        caller.join(timeout=10)
        assert outcome == {"status": "connection lost"}
        assert read_row(app, "ada@example.com") == before_row

        answer = requests.post(survivor.url + "/auth/token", headers=HEADERS, timeout=10,
                               json={"provider": "google", "user_email": "ada@example.com"})
    assert answer.status_code == 200, answer.text
    assert google.token_is_live(answer.json()["access_token"])
    assert google.refresh_count == before + 2
