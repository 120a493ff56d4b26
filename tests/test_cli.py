"""The operator's commands of the gateway issue, through Flask's CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import select

from authgateway.crypto import key_id
from authgateway.extensions import db
from authgateway.models import ApiKey


def test_init_db_is_idempotent_and_seed_registers_the_bootstrap_key(app, runner):
    first = runner.invoke(args=["init-db", "--seed"])
    assert first.exit_code == 0, first.output
    assert "Registered AUTH_GATEWAY_API_KEY" in first.output
    again = runner.invoke(args=["init-db", "--seed"])
    assert again.exit_code == 0 and "already registered" in again.output
    with app.app_context():
        keys = db.session.scalars(select(ApiKey)).all()
    assert [k.name for k in keys] == ["bootstrap"]
    assert keys[0].key_hash != app.config["API_KEY"]


def test_keys_generate_prints_settings_ready_to_paste(runner):
    result = runner.invoke(args=["keys", "generate"])
    assert result.exit_code == 0
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines())
    Fernet(lines["AUTH_GATEWAY_ENCRYPTION_KEY"].encode())  # a real key
    assert lines["AUTH_GATEWAY_API_KEY"].startswith("agw_")


def test_keys_generate_rotate_keeps_the_current_key(runner, monkeypatch):
    current = Fernet.generate_key().decode()
    monkeypatch.setenv("AUTH_GATEWAY_ENCRYPTION_KEY", current)
    result = runner.invoke(args=["keys", "generate", "--rotate"])
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert lines["AUTH_GATEWAY_ROTATION_KEYS"] == current
    assert key_id(lines["AUTH_GATEWAY_ENCRYPTION_KEY"]) != key_id(current)


def test_apikeys_create_shows_the_key_once_and_list_never(app, runner):
    created = runner.invoke(args=["apikeys", "create", "claude-mcp"])
    key = created.stdout.strip()
    assert created.exit_code == 0 and key.startswith("agw_")
    duplicate = runner.invoke(args=["apikeys", "create", "claude-mcp"])
    assert duplicate.exit_code != 0 and "already exists" in duplicate.output
    listed = runner.invoke(args=["apikeys", "list"]).output
    assert "claude-mcp" in listed and key[:12] in listed and key not in listed
    assert runner.invoke(args=["apikeys", "revoke", "claude-mcp"]).exit_code == 0
    assert runner.invoke(args=["apikeys", "revoke", "claude-mcp"]).exit_code != 0


def test_providers_list_says_what_is_missing(make_app):
    app = make_app(GOOGLE_CLIENT_ID="")
    output = app.test_cli_runner().invoke(args=["providers", "list"]).output
    assert "google" in output and "NOT CONFIGURED: set GOOGLE_CLIENT_ID" in output
    configured = make_app().test_cli_runner().invoke(args=["providers", "list"]).output
    assert "configured" in configured and "NOT" not in configured


def test_revoking_the_seeded_bootstrap_key_stops_it(app, runner):
    client = app.test_client()
    headers = {"X-API-Key": app.config["API_KEY"]}
    assert runner.invoke(args=["init-db", "--seed"]).exit_code == 0
    assert client.get("/auth/providers/a@b.co", headers=headers).status_code == 200
    assert runner.invoke(args=["apikeys", "revoke", "bootstrap"]).exit_code == 0
    app.extensions["authgateway"].api_keys._ttl = 0  # skip the cache's few seconds
    assert client.get("/auth/providers/a@b.co", headers=headers).status_code == 403


# ---- the commands as processes, as a person runs them after `make run` ----------------------

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


def command(*args: str, instance: Path, **extra: str) -> subprocess.CompletedProcess:
    """A command run with nothing but PATH and an instance folder in its environment."""
    env = {"PATH": os.environ["PATH"], "AUTH_GATEWAY_INSTANCE_PATH": str(instance), **extra}
    return subprocess.run(args, env=env, cwd=instance.parent, capture_output=True, text=True,
                          timeout=120)


def flask(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return command(str(BIN / "flask"), "--app", "authgateway", *args, **kwargs)


def dev_settings(instance: Path) -> str:
    """What `make run` writes: a key and an API key."""
    instance.mkdir()
    key = Fernet.generate_key().decode()
    (instance / "dev.env").write_text(f"AUTH_GATEWAY_ENCRYPTION_KEY={key}\n"
                                      "AUTH_GATEWAY_API_KEY=agw_dev\n")
    return key


def test_commands_read_the_development_settings_and_say_so(tmp_path):
    instance = tmp_path / "instance"
    key = dev_settings(instance)
    created = flask("init-db", instance=instance)
    assert created.returncode == 0, created.stderr
    assert "Using the development settings in instance/dev.env." in created.stderr
    status = command(str(BIN / "authgateway"), "keys", "status", instance=instance)
    assert status.returncode == 0, status.stderr
    assert key_id(key) in status.stdout
    assert "Using the development settings" in status.stderr


def test_the_environment_and_an_env_file_come_before_the_development_settings(tmp_path):
    instance = tmp_path / "instance"
    dev_settings(instance)
    env_file = tmp_path / "prod.env"
    env_file.write_text(f"AUTH_GATEWAY_ENCRYPTION_KEY={Fernet.generate_key().decode()}\n")
    for run in (flask("-e", str(env_file), "init-db", instance=instance),
                flask("init-db", instance=instance,
                      AUTH_GATEWAY_ENCRYPTION_KEY=Fernet.generate_key().decode())):
        assert run.returncode == 0, run.stderr
        assert "development settings" not in run.stderr


def test_without_a_key_what_needs_none_works_and_the_rest_says_so_in_one_line(tmp_path):
    instance = tmp_path / "instance"
    instance.mkdir()
    helped = command(str(BIN / "authgateway"), "--help", instance=instance)
    assert helped.returncode == 0 and "Traceback" not in helped.stderr
    assert "serve" in helped.stdout and "apikeys" in helped.stdout
    listed = flask("providers", "list", instance=instance)
    assert listed.returncode == 0 and "google" in listed.stdout, listed.stderr
    refused = flask("serve", instance=instance)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith(
        "Error: AUTH_GATEWAY_ENCRYPTION_KEY is not set")
    assert "Traceback" not in refused.stderr


def test_a_wrong_setting_is_one_sentence_from_every_entry_point(tmp_path):
    instance = tmp_path / "instance"
    dev_settings(instance)
    for args in ([str(BIN / "flask"), "--app", "authgateway", "--help"],
                 [str(BIN / "flask"), "--app", "authgateway", "init-db"],
                 [str(BIN / "authgateway"), "--help"],
                 [sys.executable, str(ROOT / "scripts" / "init_db.py")]):
        run = command(*args, instance=instance, PORT="eighty")
        assert run.returncode == 1, (args, run.stderr)
        assert "Traceback" not in run.stderr
        assert run.stderr.strip().splitlines()[-1] == (
            "Error: PORT must be a number between 1 and 65535, not 'eighty'.")


def test_a_missing_key_points_to_the_development_settings_not_to_a_new_key(tmp_path):
    instance = tmp_path / "instance"
    dev_settings(instance)
    run = command(sys.executable, "-c", "from authgateway import create_app; create_app()",
                  instance=instance)
    assert run.returncode != 0
    message = run.stderr.strip().splitlines()[-1]
    assert "AUTH_GATEWAY_ENCRYPTION_KEY is not set" in message
    assert str(instance / "dev.env") in message and "keys generate" not in message
