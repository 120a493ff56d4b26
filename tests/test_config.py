"""Settings: the seed's variable names, clear sentences for bad ones, safe defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from authgateway import create_app
from authgateway.config import database_url, from_environ
from authgateway.errors import ConfigError
from tests.conftest import base_config


def test_the_seed_names_and_the_prefixed_names_are_read():
    values = from_environ({
        "DATABASE_URL": "postgresql://x/y", "SESSION_EXPIRY_MINUTES": "5",
        "TOKEN_REFRESH_BUFFER_SECONDS": "60", "HOST": "0.0.0.0", "PORT": "9000",
        "LOG_LEVEL": "debug", "AUTH_GATEWAY_ENCRYPTION_KEY": "k", "AUTH_GATEWAY_API_KEY": "a",
        "AUTH_GATEWAY_ROTATION_KEYS": "r1,r2", "AUTH_GATEWAY_PROVIDER_TIMEOUT": "3",
        "UNRELATED": "x",
    })
    assert values == {
        "DATABASE_URL": "postgresql://x/y", "SESSION_EXPIRY_MINUTES": "5",
        "TOKEN_REFRESH_BUFFER_SECONDS": "60", "HOST": "0.0.0.0", "PORT": "9000",
        "LOG_LEVEL": "debug", "ENCRYPTION_KEY": "k", "API_KEY": "a", "ROTATION_KEYS": "r1,r2",
        "PROVIDER_TIMEOUT": "3",
    }


@pytest.mark.parametrize("url", [
    "postgresql+asyncpg://u:p@db:5432/gw", "postgresql://u:p@db:5432/gw",
    "postgres://u:p@db:5432/gw",
])
def test_seed_database_urls_are_served_by_psycopg(url):
    assert database_url(url, "/i") == "postgresql+psycopg://u:p@db:5432/gw"


def test_the_default_database_is_sqlite_in_the_instance_folder():
    assert database_url(None, "/srv/instance") == "sqlite:////srv/instance/authgateway.sqlite"


@pytest.mark.parametrize("overrides,names", [
    ({"ENCRYPTION_KEY": None}, "AUTH_GATEWAY_ENCRYPTION_KEY is not set"),
    ({"ENCRYPTION_KEY": "not-a-key"}, "not a Fernet key"),
    ({"ROTATION_KEYS": "also-bad"}, "rotation key #1 is not a Fernet key"),
    ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL uses the unsupported scheme 'mysql'"),
    ({"SESSION_EXPIRY_MINUTES": "ten"}, "SESSION_EXPIRY_MINUTES must be a number"),
    ({"TOKEN_REFRESH_BUFFER_SECONDS": "-1"}, "TOKEN_REFRESH_BUFFER_SECONDS must be a number"),
    ({"PORT": "70000"}, "PORT must be a number between 1 and 65535"),
    ({"PROVIDER_TIMEOUT": "0"}, "AUTH_GATEWAY_PROVIDER_TIMEOUT must be a number"),
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be one of"),
    ({"CONNECTION_LIMIT": "5"}, "AUTH_GATEWAY_CONNECTION_LIMIT must be a number between 10 and"),
    ({"IDLE_TIMEOUT": "0"}, "AUTH_GATEWAY_IDLE_TIMEOUT must be a number between 1 and 3600"),
    ({"MAX_CONTENT_LENGTH": "64k"}, "AUTH_GATEWAY_MAX_CONTENT_LENGTH must be a number"),
    ({"DB_TIMEOUT": "0"}, "AUTH_GATEWAY_DB_TIMEOUT must be a number between 0.5 and 300"),
    ({"REFRESH_CONCURRENCY": "0"}, "AUTH_GATEWAY_REFRESH_CONCURRENCY must be a number"),
    ({"BREAKER_FAILURES": "many"}, "AUTH_GATEWAY_BREAKER_FAILURES must be a number"),
    ({"BREAKER_COOLDOWN_SECONDS": "-1"}, "AUTH_GATEWAY_BREAKER_COOLDOWN_SECONDS must be a"),
])
def test_bad_settings_stop_startup_with_one_clear_sentence(tmp_path, overrides, names):
    config = base_config(f"sqlite:///{tmp_path}/x.sqlite", **overrides)
    with pytest.raises(ConfigError, match=names):
        create_app(config)


@pytest.mark.parametrize("threads,concurrency", [(8, 2), (3, 1), (64, 16)])
def test_refreshes_per_provider_default_to_a_quarter_of_the_threads(tmp_path, threads,
                                                                    concurrency):
    config = base_config(f"sqlite:///{tmp_path}/x.sqlite", THREADS=threads,
                         REFRESH_CONCURRENCY=None)
    assert create_app(config).config["REFRESH_CONCURRENCY"] == concurrency


def test_a_duplicate_key_stops_startup(tmp_path):
    key = Fernet.generate_key().decode()
    with pytest.raises(ConfigError, match="listed twice"):
        create_app(base_config(f"sqlite:///{tmp_path}/x.sqlite", ENCRYPTION_KEY=key,
                               ROTATION_KEYS=key))


def test_a_provider_without_settings_does_not_stop_startup(tmp_path):
    app = create_app(base_config(f"sqlite:///{tmp_path}/x.sqlite"))
    facade = app.extensions["authgateway"].providers
    assert facade.names() == ["google"]
    assert facade.missing_settings("google") == [
        "GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET", "GOOGLE_REDIRECT_URI"]


def test_startup_reads_the_environment(tmp_path):
    """A real process with only environment variables, as an operator starts it."""
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": f"sqlite:///{tmp_path}/env.sqlite",
        "AUTH_GATEWAY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "AUTH_GATEWAY_API_KEY": "from-env",
        "GOOGLE_CLIENT_ID": "cid", "GOOGLE_CLIENT_SECRET": "secret",
        "GOOGLE_REDIRECT_URI": "https://gw.example/auth/callback/google",
        "SESSION_EXPIRY_MINUTES": "7", "TOKEN_REFRESH_BUFFER_SECONDS": "120",
    }
    code = (
        "from authgateway import create_app; app = create_app(); "
        "p = app.extensions['authgateway'].providers; "
        "print(app.config['SESSION_EXPIRY_MINUTES'], app.config['TOKEN_REFRESH_BUFFER_SECONDS'],"
        " p.missing_settings('google'),"
        " app.config['SQLALCHEMY_DATABASE_URI'].endswith('env.sqlite'))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "7 120 [] True"


def test_a_missing_key_fails_the_process_with_the_sentence(tmp_path):
    # An instance folder without development settings: no key anywhere.
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite",
           "AUTH_GATEWAY_INSTANCE_PATH": str(tmp_path)}
    command = str(Path(sys.executable).parent / "authgateway")
    out = subprocess.run([command, "serve"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "AUTH_GATEWAY_ENCRYPTION_KEY is not set" in out.stderr
    assert "Traceback" not in out.stderr
