"""The operator's commands of the gateway issue, through Flask's CLI runner."""

from __future__ import annotations

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
