"""The operator's commands around rotation and access: keys status, tokens reencrypt
(--dry-run, progress, summary, audit), sessions purge, API keys, and the seed's scripts run as
real processes. On SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import event, insert, select, update

from authgateway.apikeys import VISIBLE_PREFIX_LENGTH
from authgateway.crypto import KeyRing, key_id
from authgateway.extensions import db
from authgateway.models import COMPLETED, PENDING, ApiKey, AuditEvent, AuthSession, utcnow
from tests.conftest import API_KEY, HEADERS
from tests.test_rotation import (
    OLD_KEY,
    cli_env,
    fill,
    gateway_logs_enabled,  # noqa: F401  (an autouse fixture, shared)
    key_ids,
    new_key,
    plaintexts,
)

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def run_script(name: str, *args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / name), *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def lines_starting(output: str, prefix: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(prefix)]


# ---- keys status and tokens reencrypt ------------------------------------------------------

def test_keys_status_names_each_key_and_says_when_one_can_go(make_app):
    new, gone = new_key(), new_key()
    app = make_app(ENCRYPTION_KEY=new, ROTATION_KEYS=OLD_KEY)
    fill(app, KeyRing(OLD_KEY), 3, sessions=2)
    fill(app, KeyRing(new), 1)
    fill(app, KeyRing(gone), 2)
    runner = app.test_cli_runner()

    output = runner.invoke(args=["keys", "status"]).output
    assert "primary" in lines_starting(output, key_id(new))[0]
    [old_line] = lines_starting(output, key_id(OLD_KEY))
    assert old_line.split()[1:4] == ["rotation", "3", "2"] and "still in use" in old_line
    [gone_line] = lines_starting(output, key_id(gone))
    assert gone_line.split()[1:4] == ["UNKNOWN", "2", "0"]
    assert "Credentials whose key is not configured" in output

    with app.app_context(), db.engine.begin() as connection:  # the lost key's rows are deleted
        connection.execute(db.metadata.tables["credentials"].delete().where(
            db.metadata.tables["credentials"].c.key_id == key_id(gone)))
    assert runner.invoke(args=["tokens", "reencrypt"]).exit_code == 0
    output = runner.invoke(args=["keys", "status"]).output
    [old_line] = lines_starting(output, key_id(OLD_KEY))
    assert old_line.split()[1:4] == ["rotation", "0", "0"]
    assert "no rows left: remove it from AUTH_GATEWAY_ROTATION_KEYS" in old_line
    assert "Every row is under the primary key" in output


def test_reencrypt_dry_run_counts_and_writes_nothing(make_app):
    new, lost = new_key(), new_key()
    app = make_app(ENCRYPTION_KEY=new, ROTATION_KEYS=OLD_KEY)
    fill(app, KeyRing(OLD_KEY), 7, sessions=2)
    fill(app, KeyRing(lost), 1)
    before = key_ids(app)

    result = app.test_cli_runner().invoke(args=["tokens", "reencrypt", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"Would re-encrypt 7 credentials under key {key_id(new)}." in result.output
    assert "Would re-encrypt 2 pending sessions" in result.output
    assert f"Would leave 1 credentials under key {key_id(lost)}" in result.output
    assert key_ids(app) == before
    with app.app_context():
        assert db.session.scalars(select(AuditEvent)
                                  .where(AuditEvent.action == "reencrypted")).all() == []


def test_reencrypt_shows_progress_a_summary_and_audits_each_batch(make_app):
    new = new_key()
    app = make_app(ENCRYPTION_KEY=new, ROTATION_KEYS=OLD_KEY)
    expected = fill(app, KeyRing(OLD_KEY), 7, sessions=2)
    _session(app, KeyRing(OLD_KEY), status=COMPLETED)  # a finished flow is left alone
    runner = app.test_cli_runner()

    result = runner.invoke(args=["tokens", "reencrypt", "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    assert "Re-encrypting" in result.stderr  # the progress bar
    assert (f"Re-encrypted 7 credentials and 2 pending sessions under key {key_id(new)} in 4 "
            "batches") in result.stdout
    assert key_ids(app) == {key_id(new): 9, key_id(OLD_KEY): 1}
    assert {k: v for k, v in plaintexts(app, KeyRing(new, [OLD_KEY])).items()
            if k in expected} == expected
    with app.app_context():
        events = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "reencrypted")
                                    .order_by(AuditEvent.id)).all()
    assert len(events) == 4 and all(e.actor == "cli" and e.user_email is None for e in events)
    assert events[0].detail.startswith("3 credentials (ids ")
    assert all(key_id(new) in e.detail and "access-" not in e.detail for e in events)

    again = runner.invoke(args=["tokens", "reencrypt"])
    assert "Re-encrypted 0 credentials and 0 pending sessions" in again.stdout
    assert "in 0 batches" in again.stdout


def _session(app, keyring: KeyRing, *, status: str = PENDING, expires_in: timedelta =
             timedelta(minutes=10)) -> str:
    session_id = str(uuid.uuid4())
    now = utcnow()
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(insert(AuthSession.__table__).values(
            id=session_id, state_hash=hashlib.sha256(session_id.encode()).hexdigest(),
            code_verifier_encrypted=keyring.encrypt("verifier"), key_id=keyring.primary_id,
            user_email="someone@example.com", provider="google", scopes="", status=status,
            created_at=now, expires_at=now + expires_in))
    return session_id


# ---- sessions purge ------------------------------------------------------------------------

def test_sessions_purge_deletes_flows_expired_over_a_day_ago(app):
    ring = KeyRing(OLD_KEY)
    old_pending = _session(app, ring, expires_in=-timedelta(days=2))
    old_done = _session(app, ring, status=COMPLETED, expires_in=-timedelta(hours=25))
    recent = _session(app, ring, expires_in=-timedelta(hours=1))
    live = _session(app, ring)

    result = app.test_cli_runner().invoke(args=["sessions", "purge"])
    assert result.exit_code == 0, result.output
    assert "Purged 2 flows" in result.output
    with app.app_context():
        left = set(db.session.scalars(select(AuthSession.id)))
    assert left == {recent, live} and not left & {old_pending, old_done}
    assert "Purged 0 flows" in app.test_cli_runner().invoke(args=["sessions", "purge"]).output


# ---- API keys ------------------------------------------------------------------------------

def columns(row: str) -> list[str]:
    """The cells of a row of `apikeys list` (two spaces or more between them)."""
    return re.split(r"\s{2,}", row.strip())


def _authenticated(client, key: str) -> int:
    return client.get("/auth/providers/nobody@example.com", headers={"X-API-Key": key}).status_code


def test_apikeys_list_shows_each_key_and_last_use_is_written_once_a_minute(make_app):
    app = make_app(APIKEY_CACHE_SECONDS=0)  # every request reads the key again
    runner, client = app.test_cli_runner(), app.test_client()
    created = runner.invoke(args=["apikeys", "create", "mcp-drive"])
    key = created.stdout.strip()
    assert created.exit_code == 0 and "shown only now" in created.stderr

    [row] = lines_starting(runner.invoke(args=["apikeys", "list"]).output, "mcp-drive")
    name, prefix, created, last_used, expires, state, scope = columns(row)
    assert prefix == key[:VISIBLE_PREFIX_LENGTH] + "…" and key not in row
    assert time.strptime(created, "%Y-%m-%d %H:%M:%S")
    assert (last_used, expires, state, scope) == ("-", "-", "active", "full access")

    writes = []
    with app.app_context():
        engine = db.engine

    def count_writes(conn, cursor, statement, *args):
        if statement.startswith("UPDATE api_keys SET last_used_at") and "api_keys.id" in statement:
            writes.append(statement)

    event.listen(engine, "before_cursor_execute", count_writes)
    try:
        assert [_authenticated(client, key) for _ in range(10)] == [200] * 10
        assert len(writes) == 1
        with app.app_context():  # a minute and more later
            db.session.execute(update(ApiKey).where(ApiKey.name == "mcp-drive").values(
                last_used_at=utcnow() - timedelta(minutes=2)))
            db.session.commit()
        assert [_authenticated(client, key) for _ in range(5)] == [200] * 5
        assert len(writes) == 2
    finally:
        event.remove(engine, "before_cursor_execute", count_writes)
    [row] = lines_starting(runner.invoke(args=["apikeys", "list"]).output, "mcp-drive")
    assert time.strptime(columns(row)[3], "%Y-%m-%d %H:%M:%S")

    assert runner.invoke(args=["apikeys", "revoke", "mcp-drive"]).exit_code == 0
    [row] = lines_starting(runner.invoke(args=["apikeys", "list"]).output, "mcp-drive")
    assert columns(row)[5] == "revoked"
    assert runner.invoke(args=["apikeys", "revoke", "mcp-drive"]).exit_code == 1


def test_revoke_reaches_every_process_within_the_cache_ttl(make_app):
    ttl = 1.0
    first, second = make_app(APIKEY_CACHE_SECONDS=ttl), make_app(APIKEY_CACHE_SECONDS=ttl)
    key = first.test_cli_runner().invoke(args=["apikeys", "create", "mcp-mail"]).stdout.strip()
    clients = [first.test_client(), second.test_client()]
    assert [_authenticated(c, key) for c in clients] == [200, 200]  # both caches hold it now

    assert first.test_cli_runner().invoke(args=["apikeys", "revoke", "mcp-mail"]).exit_code == 0
    revoked_at = time.monotonic()
    refused_after = []
    for client in clients:
        while _authenticated(client, key) == 200 and time.monotonic() - revoked_at < 5:
            time.sleep(0.02)
        refused_after.append(time.monotonic() - revoked_at)
    assert max(refused_after) <= ttl + 1.0, refused_after  # the ttl, plus a slow request or two
    assert [_authenticated(c, key) for c in clients] == [403, 403]
    # The bootstrap key is not a stored key: it keeps working throughout.
    assert [c.get("/auth/providers/x@example.com", headers=HEADERS).status_code
            for c in clients] == [200, 200]


def test_the_bootstrap_key_keeps_working_once_seeded_and_beside_created_keys(app, client):
    runner = app.test_cli_runner()
    assert _authenticated(client, API_KEY) == 200
    seeded = runner.invoke(args=["init-db", "--seed"])
    assert seeded.exit_code == 0 and "Registered AUTH_GATEWAY_API_KEY" in seeded.output
    assert lines_starting(runner.invoke(args=["apikeys", "list"]).output, "bootstrap")
    other = runner.invoke(args=["apikeys", "create", "mcp-other"]).stdout.strip()
    assert _authenticated(client, API_KEY) == 200
    assert client.get("/auth/providers/x@example.com",
                      headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
    assert _authenticated(client, other) == 200


# ---- the seed's scripts, as processes ------------------------------------------------------

def test_generate_keys_script(tmp_path):
    env = cli_env("sqlite:///" + str(tmp_path / "unused.sqlite"), tmp_path, OLD_KEY)
    rotated = run_script("generate_keys.py", "--rotate", env=env, cwd=tmp_path)
    assert rotated.returncode == 0, rotated.stderr
    settings = dict(line.split("=", 1) for line in rotated.stdout.splitlines())
    Fernet(settings["AUTH_GATEWAY_ENCRYPTION_KEY"])
    assert settings["AUTH_GATEWAY_ROTATION_KEYS"] == OLD_KEY
    assert "tokens reencrypt" in rotated.stderr


def test_init_db_script_creates_the_schema_and_seeds(tmp_path):
    env = cli_env("sqlite:///" + str(tmp_path / "fresh.sqlite"), tmp_path, OLD_KEY)
    first = run_script("init_db.py", "--seed", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Database schema is up to date." in first.stdout
    assert "Registered AUTH_GATEWAY_API_KEY" in first.stdout
    assert "Running upgrade  -> 0001" in first.stderr


def test_init_db_script_seeds_an_existing_database(tmp_path, database_url, make_app):
    app = make_app()
    run = run_script("init_db.py", "--seed", env=cli_env(database_url, tmp_path, OLD_KEY),
                     cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Database schema is up to date." in run.stdout
    assert "Registered AUTH_GATEWAY_API_KEY" in run.stdout
    with app.app_context():
        assert db.session.scalars(select(ApiKey.name)).all() == ["bootstrap"]


def test_reencrypt_tokens_script(tmp_path, database_url, make_app):
    new = new_key()
    app = make_app(ENCRYPTION_KEY=new, ROTATION_KEYS=OLD_KEY)
    expected = fill(app, KeyRing(OLD_KEY), 5, sessions=1)

    done = run_script("reencrypt_tokens.py", "--batch-size", "2", env=cli_env(
        database_url, tmp_path, new, OLD_KEY), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Re-encrypted 5 credentials and 1 pending sessions" in done.stdout
    assert "in 4 batches" in done.stdout
    assert key_ids(app) == {key_id(new): 6}
    assert plaintexts(app, KeyRing(new)) == expected
