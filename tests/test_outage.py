"""A database outage under load: `authgateway serve` on a private PostgreSQL cluster that the
test stops (`pg_ctl stop -m immediate` and `-m fast`) and starts again while callers keep
asking for tokens. Every answer meanwhile is a quick 503 database_unavailable, the log says it
once and says once that the database is back, and the same process serves 200s again within
seconds of the restart."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import requests

from authgateway import create_app
from authgateway.extensions import db
from tests.conftest import (
    API_KEY,
    ENCRYPTION_KEY,
    HEADERS,
    base_config,
    free_port,
    in_ci,
    served_process,
)
from tests.fakes import FakeGoogle
from tests.flow import connect

REDIRECT_URI = "http://localhost/auth/callback/google"
DB_TIMEOUT = 3.0
USERS = [f"user{i}@example.com" for i in range(4)]
CALLERS = 4


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class Cluster:
    """A PostgreSQL cluster of the test's own, on a free port; run as the postgres account
    when the test runs as root, which initdb refuses."""

    def __init__(self, binaries: Path, folder: Path) -> None:
        self.binaries, self.folder = binaries, folder
        self.data, self.port = folder / "data", free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/gateway"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def run(self, *command: str) -> None:
        subprocess.run([*self._as, str(self.binaries / command[0]), *command[1:]], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def init(self) -> None:
        self.run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.start()
        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
            connection.execute("CREATE DATABASE gateway")

    def start(self) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "postgres.log"), "-w",
                 "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1",
                 "start")

    def stop(self, mode: str) -> None:
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    binaries = _binaries()
    if binaries is None or (os.geteuid() == 0 and shutil.which("runuser") is None):
        message = "initdb/pg_ctl (PostgreSQL's server binaries) are not installed"
        if in_ci():
            pytest.fail(message + "; CI requires them")
        pytest.skip(message)
    folder = Path(tempfile.mkdtemp(prefix="outage-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(folder, account.pw_uid, account.pw_gid)
    cluster = Cluster(binaries, folder)
    cluster.init()
    try:
        yield cluster
    finally:
        try:
            cluster.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def served(cluster, tmp_path) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """The gateway served by `authgateway serve` on the cluster, with users connected."""
    with FakeGoogle(redirect_uris=[REDIRECT_URI]) as google:
        app = create_app(base_config(cluster.url, **google.settings(),
                                     GOOGLE_REDIRECT_URI=REDIRECT_URI))
        with app.app_context():
            from flask_migrate import upgrade

            upgrade()
            client = app.test_client()
            for email in USERS:
                connect(client, email)
            db.engine.dispose()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AUTH_GATEWAY_", "GOOGLE_")) and k != "DATABASE_URL"}
        env.update(DATABASE_URL=cluster.url, AUTH_GATEWAY_ENCRYPTION_KEY=ENCRYPTION_KEY,
                   AUTH_GATEWAY_API_KEY=API_KEY, AUTH_GATEWAY_LOAD_PLUGINS="1",
                   AUTH_GATEWAY_INSTANCE_PATH=str(tmp_path), AUTH_GATEWAY_LOG_LEVEL="INFO",
                   AUTH_GATEWAY_DB_TIMEOUT=str(DB_TIMEOUT), AUTH_GATEWAY_APIKEY_CACHE_SECONDS="1",
                   AUTH_GATEWAY_AUDIT_FLUSH_SECONDS="0.5", HOST="127.0.0.1",
                   PORT=str(free_port()), GOOGLE_REDIRECT_URI=REDIRECT_URI, PYTHONUNBUFFERED="1",
                   **google.settings())
        script = Path(sys.executable).with_name("authgateway")
        command = [str(script), "serve"] if script.exists() else [
            sys.executable, "-m", "authgateway", "serve"]
        log = tmp_path / "gateway.log"
        with served_process(command, env, log) as (url, process):
            yield url, process, log


@dataclass
class Answer:
    started: float
    ended: float
    status: int
    error: str | None
    retry_after: str | None
    detail_retry_after: object


def ask_continuously(url: str, stop: threading.Event, answers: list[Answer],
                     index: int) -> None:
    with requests.Session() as http:
        http.headers.update(HEADERS)
        i = index
        while not stop.is_set():
            started = time.monotonic()
            response = http.post(url + "/auth/token", timeout=30,
                                 json={"provider": "google", "user_email": USERS[i % len(USERS)]})
            ended = time.monotonic()
            body = response.json()
            detail = body.get("detail", {}) if isinstance(body, dict) else {}
            answers.append(Answer(started, ended, response.status_code, detail.get("error"),
                                  response.headers.get("Retry-After"), detail.get("retry_after")))
            i += 1
            time.sleep(0.01)


@pytest.mark.parametrize("mode", ["immediate", "fast"])
def test_an_outage_answers_503_quickly_logs_twice_and_recovers(cluster, served, mode):
    url, process, log = served
    answers: list[Answer] = []
    stop = threading.Event()
    callers = [threading.Thread(target=ask_continuously, args=(url, stop, answers, i))
               for i in range(CALLERS)]
    for caller in callers:
        caller.start()
    try:
        time.sleep(1.5)
        log_before = log.read_text(errors="replace")
        stopping = time.monotonic()
        cluster.stop(mode)
        stopped = time.monotonic()
        time.sleep(1.0)
        health = requests.get(url + "/health", timeout=DB_TIMEOUT + 2)
        time.sleep(1.0)
        restarting = time.monotonic()
        cluster.start()
        restarted = time.monotonic()
        time.sleep(6.0)
    finally:
        stop.set()
        for caller in callers:
            caller.join(timeout=DB_TIMEOUT + 10)
    outage_log = log.read_text(errors="replace")[len(log_before):]
    lines = [line for line in outage_log.splitlines() if line.strip()]

    assert health.status_code == 503 and health.json()["status"] == "degraded"
    assert health.json()["database"] == "unavailable"
    statuses = Counter(a.status for a in answers)
    assert set(statuses) <= {200, 503}, statuses
    refused = [a for a in answers if a.status == 503]
    assert {a.error for a in refused} == {"database_unavailable"}
    assert all(a.retry_after and int(a.retry_after) >= 1 and a.detail_retry_after ==
               int(a.retry_after) for a in refused)
    during = [a for a in answers if a.started > stopped and a.ended < restarting]
    assert len(during) >= 10 and {a.status for a in during} == {503}
    slowest = max(a.ended - a.started for a in answers if a.started > stopping)
    assert slowest < DB_TIMEOUT + 1, slowest
    first_back = min(a.ended for a in answers if a.status == 200 and a.started > restarting)
    assert first_back - restarted < 5, first_back - restarted
    settled = [a for a in answers if a.started > first_back + 1]
    assert settled and {a.status for a in settled} == {200}

    assert len(lines) < 10, outage_log
    assert "Traceback" not in outage_log
    assert sum("database unavailable" in line for line in lines) == 1, outage_log
    assert sum("database available again" in line for line in lines) == 1, outage_log
    assert process.poll() is None  # the same process throughout
    print(f"\n[outage -m {mode}] answers={dict(statuses)} during_outage={len(during)} "
          f"slowest_503_s={max(a.ended - a.started for a in refused):.3f} "
          f"first_200_after_restart_s={first_back - restarted:.2f} log_lines={len(lines)}\n"
          + "\n".join(lines))


# ---- without a cluster of its own: a database that is not there at all ------------------------

@pytest.fixture(params=["postgresql", "sqlite"])
def unreachable(request, google, tmp_path):
    """An app whose database is nowhere: PostgreSQL on a loopback port nobody listens on, or
    a SQLite file in a folder that does not exist."""
    url = (f"postgresql://postgres@127.0.0.1:{free_port()}/gateway"
           if request.param == "postgresql" else f"sqlite:///{tmp_path}/missing/gateway.sqlite")
    return create_app(base_config(url, **google.settings(), GOOGLE_REDIRECT_URI=REDIRECT_URI,
                                  DB_TIMEOUT=2))


def test_every_kind_of_answer_says_the_database_is_unavailable(unreachable, caplog):
    client = unreachable.test_client()
    caplog.set_level("INFO", logger="authgateway")
    started = time.monotonic()
    answers = [client.post("/auth/token", headers=HEADERS,
                           json={"provider": "google", "user_email": "ada@example.com"}),
               client.post("/auth/init", headers=HEADERS,
                           json={"provider": "google", "user_email": "ada@example.com"}),
               client.get("/auth/providers/ada@example.com", headers=HEADERS)]
    for answer in answers:
        assert answer.status_code == 503
        detail = answer.get_json()["detail"]
        assert detail["error"] == "database_unavailable" and detail["auth_required"] is False
        assert answer.headers["Retry-After"] == str(detail["retry_after"]) == "2"
    page = client.get("/auth/callback/google?state=s&code=c")
    assert page.status_code == 503 and page.headers["Retry-After"] == "2"
    assert page.mimetype == "text/html"
    assert "briefly unavailable" in page.get_data(as_text=True)
    assert "Reload this page" in page.get_data(as_text=True)
    health = client.get("/health")
    assert health.status_code == 503
    assert health.get_json()["database"] == "unavailable"
    assert health.get_json()["providers"] == {"google": "closed"}
    assert time.monotonic() - started < 5
    records = [r for r in caplog.records if r.name.startswith("authgateway")
               and r.levelname != "DEBUG"]
    assert [r.getMessage().split(" (")[0] for r in records] == ["database unavailable"]
    assert not any(r.exc_info for r in records)


def test_postgresql_sessions_carry_the_statement_timeout(postgres_url, google):
    app = create_app(base_config(postgres_url, **google.settings(), DB_TIMEOUT=2.5))
    with app.app_context():
        with db.engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == "2500ms"
            with pytest.raises(Exception) as stuck:
                connection.exec_driver_sql("SELECT pg_sleep(10)")
        db.engine.dispose()
    assert "statement timeout" in str(stuck.value)
