"""The image, built from the Dockerfile with podman (on the stand-in base made from Debian's
packages, scripts/build_base_image.sh) and run as an operator runs it: against PostgreSQL,
migrating on start, and asked from outside the container, with the fake Google on loopback.
Rootful podman on the host's network, so the container reaches 127.0.0.1 like the tests do."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import requests
from cryptography.fernet import Fernet

from tests.conftest import (
    API_KEY,
    CALLBACK_PATH,
    HEADERS,
    empty_postgres_database,
    free_port,
    in_ci,
)
from tests.fakes import FakeGoogle
from tests.flow import consent
from tests.test_deploy import healthcheck_command

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "localhost/authgateway:test"
USER_EMAIL = "ada@example.com"
SBIN_PATH = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"


def missing_tools() -> str | None:
    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install podman runc debootstrap)"
    if os.geteuid() != 0:
        return "the image test runs rootful podman and needs root"
    if shutil.which("debootstrap", path=SBIN_PATH) is None and not os.environ.get("PYTHON_IMAGE"):
        return "debootstrap is not installed (it makes the base image from Debian's packages)"
    return None


@pytest.fixture(scope="module")
def image() -> str:
    """The image, built by `make image`'s script with podman; the engine's layer cache and the
    base image's cache make a rebuild of unchanged sources take seconds."""
    reason = missing_tools()
    if reason:
        if in_ci():
            pytest.fail(reason + "; CI requires it")
        pytest.skip(reason)
    built = subprocess.run([str(ROOT / "scripts" / "build_image.sh")], cwd=ROOT,
                           env={**os.environ, "PATH": SBIN_PATH, "CONTAINER_ENGINE": "podman",
                                "IMAGE": IMAGE},
                           capture_output=True, text=True, timeout=1200)
    assert built.returncode == 0, (built.stdout + built.stderr)[-5000:]
    return IMAGE


def podman(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)


@dataclass
class Container:
    name: str
    url: str
    database_url: str
    google: FakeGoogle
    tokens_served: int = 0

    def logs(self) -> str:
        done = podman("logs", self.name)
        return (done.stdout + done.stderr)[-5000:]

    def state(self, template: str) -> str:
        return podman("inspect", "--format", template, self.name).stdout.strip()

    def ask_token(self) -> requests.Response:
        answer = requests.post(self.url + "/auth/token", headers=HEADERS, timeout=30,
                               json={"provider": "google", "user_email": USER_EMAIL})
        self.tokens_served += answer.status_code == 200
        return answer


@pytest.fixture(scope="module")
def container(image, postgres_url, tmp_path_factory) -> Iterator[Container]:
    """The image serving on a free loopback port, on a new empty database, migrating on start.
    Token counts are written to the audit trail only at exit (the interval is an hour)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    name = f"authgateway-test-{os.getpid()}"
    with empty_postgres_database(postgres_url, "image") as database_url, \
            FakeGoogle(redirect_uris=[url + CALLBACK_PATH]) as google:
        env = {
            "DATABASE_URL": database_url,
            "AUTH_GATEWAY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "AUTH_GATEWAY_API_KEY": API_KEY,
            "AUTH_GATEWAY_MIGRATE_ON_START": "1",
            "AUTH_GATEWAY_AUDIT_FLUSH_SECONDS": "3600",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            **google.settings(),
            "GOOGLE_REDIRECT_URI": url + CALLBACK_PATH,
        }
        env_file = tmp_path_factory.mktemp("image") / "gateway.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        env_file.chmod(0o600)
        podman("rm", "--force", name)
        started = podman("run", "--detach", "--name", name, "--network", "host",
                         "--env-file", str(env_file), image)
        assert started.returncode == 0, started.stderr
        running = Container(name, url, database_url, google)
        try:
            deadline = time.monotonic() + 90
            while True:
                assert running.state("{{.State.Running}}") == "true", \
                    "the container exited:\n" + running.logs()
                assert time.monotonic() < deadline, "no healthy /health in 90 s:\n" + \
                    running.logs()
                try:
                    if requests.get(url + "/health", timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                time.sleep(0.5)
            yield running
        finally:
            podman("rm", "--force", "--time", "0", name)


@pytest.fixture(scope="module")
def connected(container) -> Container:
    """A person has connected their Google account through the container, as in the browser."""
    init = requests.post(container.url + "/auth/init", headers=HEADERS, timeout=30,
                         json={"provider": "google", "user_email": USER_EMAIL})
    assert init.status_code == 200, init.text
    page = requests.get(container.url + consent(init.json()["auth_url"]), timeout=30)
    assert page.status_code == 200, page.text + container.logs()
    return container


def test_the_container_migrates_the_empty_database_and_answers_health(container):
    health = requests.get(container.url + "/health", timeout=5)
    assert health.status_code == 200
    assert health.json()["database"] == "connected"
    with psycopg.connect(container.database_url) as conn:
        tables = {row[0] for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"credentials", "auth_sessions", "audit_events", "alembic_version"} <= tables
    assert "applying database migrations" in container.logs()


def test_a_whole_flow_through_the_container_ends_in_a_live_token(connected):
    answer = connected.ask_token()
    assert answer.status_code == 200, answer.text
    token = answer.json()["access_token"]
    assert connected.google.token_is_live(token)
    assert connected.google.exchange_count == 1
    assert token not in connected.logs()
    # A second ask is served from the stored token, without the provider.
    assert connected.ask_token().json()["access_token"] == token
    assert connected.google.exchange_count == 1 and connected.google.refresh_count == 0


def test_the_gateway_process_runs_as_uid_10001(container):
    pid = int(container.state("{{.State.Pid}}"))
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert uids == ["10001"] * 4, status
    command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"authgateway" in command[1] and b"serve" in command, command


def test_the_dockerfile_healthcheck_passes_inside_the_container(container):
    checked = podman("exec", container.name, *healthcheck_command())
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The image carries the HEALTHCHECK itself (docker format), and podman runs it.
    assert "/health" in container.state("{{json .Config.Healthcheck}}")
    run = podman("healthcheck", "run", container.name)
    assert run.returncode == 0, run.stdout + run.stderr


def test_sigterm_stops_it_within_10_seconds_and_the_token_counts_are_written(connected):
    for _ in range(3):
        assert connected.ask_token().status_code == 200
    with psycopg.connect(connected.database_url) as conn:
        query = "SELECT detail FROM audit_events WHERE action = 'token_served'"
        assert conn.execute(query).fetchall() == [], "counts were written before exit"
    started = time.monotonic()
    stopped = podman("stop", "--time", "10", connected.name, timeout=30)
    elapsed = time.monotonic() - started
    assert stopped.returncode == 0, stopped.stderr
    assert elapsed < 10, f"took {elapsed:.1f} s: killed, not stopped"
    assert connected.state("{{.State.ExitCode}}") == "0", connected.logs()
    with psycopg.connect(connected.database_url) as conn:
        rows = conn.execute(query + " AND user_email = %s", (USER_EMAIL,)).fetchall()
    counts = [int(detail.split()[0].removeprefix("count=")) for (detail,) in rows]
    assert sum(counts) == connected.tokens_served, connected.logs()
