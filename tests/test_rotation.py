"""Key rotation while serving: re-encryption in locked batches, killed and resumed, racing
refreshes, and an old key removed too early. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet
from sqlalchemy import func, insert, select

from authgateway import create_app, rotation
from authgateway.cli import keys
from authgateway.context import gateway
from authgateway.crypto import KeyRing, key_id
from authgateway.extensions import db
from authgateway.models import PENDING, AuthSession, Credential, utcnow
from tests import flow
from tests.conftest import API_KEY, CALLBACK_PATH, ENCRYPTION_KEY, base_config

OLD_KEY = ENCRYPTION_KEY
credentials = Credential.__table__
auth_sessions = AuthSession.__table__


@pytest.fixture(autouse=True)
def gateway_logs_enabled(monkeypatch):
    """migrations/env.py's fileConfig() disables every logger that exists when a migration
    runs in-process (as the database fixture does): let the gateway's speak again."""
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if name.startswith("authgateway") and isinstance(logger, logging.Logger):
            monkeypatch.setattr(logger, "disabled", False)


def new_key() -> str:
    return Fernet.generate_key().decode()


def fill(app, keyring: KeyRing, count: int, sessions: int = 0) -> dict:
    """Insert ``count`` credentials and ``sessions`` pending flows encrypted under ``keyring``'s
    primary key; return {(table, id): plaintexts} to check them against later."""
    tag = uuid.uuid4().hex[:8]
    now = utcnow()
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(insert(credentials), [
            dict(user_email=f"filler-{tag}-{i}@example.com", provider="google", subject=str(i),
                 access_token_encrypted=keyring.encrypt(f"access-{tag}-{i}"),
                 refresh_token_encrypted=keyring.encrypt(f"refresh-{tag}-{i}"),
                 key_id=keyring.primary_id, expires_at=now + timedelta(hours=1), scopes="",
                 status="active", authenticated_at=now, refresh_failures=0, created_at=now,
                 updated_at=now)
            for i in range(count)
        ])
        if sessions:
            connection.execute(insert(auth_sessions), [
                dict(id=str(uuid.uuid4()), state_hash=hashlib.sha256(f"{tag}-{i}".encode())
                     .hexdigest(), code_verifier_encrypted=keyring.encrypt(f"verifier-{tag}-{i}"),
                     key_id=keyring.primary_id, user_email=f"filler-{tag}-{i}@example.com",
                     provider="google", scopes="", status=PENDING, created_at=now,
                     expires_at=now + timedelta(minutes=10))
                for i in range(sessions)
            ])
    return plaintexts(app, keyring, f"filler-{tag}-%")


def plaintexts(app, keyring: KeyRing, user_email_like: str = "%") -> dict:
    """The stored secrets (of the users matching the pattern), decrypted with ``keyring``:
    {(table, id): (plaintext, ...)}."""
    found = {}
    with app.app_context(), db.engine.connect() as connection:
        for row in connection.execute(select(credentials).where(
                credentials.c.user_email.like(user_email_like))):
            found["credentials", row.id] = (
                keyring.decrypt(row.access_token_encrypted, row.key_id),
                keyring.decrypt(row.refresh_token_encrypted, row.key_id),
            )
        for row in connection.execute(select(auth_sessions).where(
                auth_sessions.c.user_email.like(user_email_like))):
            found["auth_sessions", row.id] = (
                keyring.decrypt(row.code_verifier_encrypted, row.key_id),)
    return found


def key_ids(app) -> dict[str, int]:
    """How many rows of both tables each key id protects."""
    counts: dict[str, int] = {}
    with app.app_context(), db.engine.connect() as connection:
        for table in (credentials, auth_sessions):
            for kid, n in connection.execute(select(table.c.key_id, func.count())
                                             .group_by(table.c.key_id)):
                counts[kid] = counts.get(kid, 0) + n
    return counts


def raw_credential(app, email: str):
    with app.app_context(), db.engine.connect() as connection:
        return connection.execute(select(credentials)
                                  .where(credentials.c.user_email == email)).one()


def cli_env(database_url: str, tmp_path: Path, encryption_key: str, rotation_keys: str = ""):
    """The environment of an operator's shell pointed at this test's database."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("AUTH_GATEWAY_", "FLASK_")) and name != "DATABASE_URL"}
    env.update(DATABASE_URL=database_url, AUTH_GATEWAY_ENCRYPTION_KEY=encryption_key,
               AUTH_GATEWAY_ROTATION_KEYS=rotation_keys, AUTH_GATEWAY_API_KEY=API_KEY,
               AUTH_GATEWAY_LOAD_PLUGINS="0", AUTH_GATEWAY_INSTANCE_PATH=str(tmp_path),
               AUTH_GATEWAY_LOG_LEVEL="WARNING")
    return env


def flask_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", "authgateway", *args]


def connect_users(app, emails) -> None:
    client = app.test_client()
    for email in emails:
        flow.connect(client, email)


def test_full_rotation_while_serving(make_app, database_url, google, tmp_path):
    generated = CliRunner().invoke(keys, ["generate", "--rotate"],
                                   env={"AUTH_GATEWAY_ENCRYPTION_KEY": OLD_KEY,
                                        "AUTH_GATEWAY_ROTATION_KEYS": None})
    assert generated.exit_code == 0, generated.output
    settings = dict(line.split("=", 1) for line in generated.stdout.splitlines())
    assert settings.keys() == {"AUTH_GATEWAY_ENCRYPTION_KEY", "AUTH_GATEWAY_ROTATION_KEYS"}
    assert settings["AUTH_GATEWAY_ROTATION_KEYS"] == OLD_KEY
    assert "tokens reencrypt" in generated.stderr and "keys status" in generated.stderr
    new = settings["AUTH_GATEWAY_ENCRYPTION_KEY"]

    old_app = make_app()
    new_app = make_app(ENCRYPTION_KEY=new, ROTATION_KEYS=settings["AUTH_GATEWAY_ROTATION_KEYS"])
    users = [f"user{i}@example.com" for i in range(5)]
    connect_users(old_app, users)
    pending = flow.start(old_app.test_client(), "late@example.com")
    fill(old_app, KeyRing(OLD_KEY), 300)
    new_client = new_app.test_client()
    before = {email: flow.token(new_client, email).get_json()["access_token"] for email in users}

    stop, failures, served = threading.Event(), [], []

    def keep_asking() -> None:
        client = new_app.test_client()
        while not stop.is_set():
            for email in users:
                response = flow.token(client, email)
                served.append(email)
                if response.status_code != 200 or (
                        response.get_json()["access_token"] != before[email]):
                    failures.append((email, response.status_code, response.get_data()))
            stop.wait(0.002)  # leave the CPU to the re-encryption too: this box has 2 cores

    workers = [threading.Thread(target=keep_asking) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        done = subprocess.run(
            flask_command("tokens", "reencrypt", "--batch-size", "5"), cwd=tmp_path,
            env=cli_env(database_url, tmp_path, new, settings["AUTH_GATEWAY_ROTATION_KEYS"]),
            capture_output=True, text=True, timeout=60)
        during = len(served)
        time.sleep(0.2)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=10)
    assert done.returncode == 0, done.stderr
    assert "Re-encrypted 305 credentials and 1 pending sessions" in done.stdout
    assert failures == []
    assert during > 20, "the requests did not overlap the re-encryption"
    assert key_ids(old_app)[key_id(new)] == 306
    assert _only_finished_flows_left(old_app)

    status = new_app.test_cli_runner().invoke(args=["keys", "status"])
    old_line = next(line for line in status.output.splitlines()
                    if line.startswith(key_id(OLD_KEY)))
    assert "rotation" in old_line and "no rows left: remove it" in old_line

    # The old key gone for good: every token is what it was, and the flow started before the
    # rotation still completes (its PKCE verifier was moved too).
    final = create_app(base_config(database_url, **google.settings(), ENCRYPTION_KEY=new,
                                   GOOGLE_REDIRECT_URI="http://localhost" + CALLBACK_PATH))
    try:
        final_client = final.test_client()
        for email in users:
            assert flow.token(final_client, email).get_json()["access_token"] == before[email]
        assert final_client.get(flow.consent(pending["auth_url"])).status_code == 200
        assert flow.token(final_client, "late@example.com").status_code == 200
    finally:
        with final.app_context():
            db.engine.dispose()


def _only_finished_flows_left(app) -> bool:
    with app.app_context(), db.engine.connect() as connection:
        return not connection.scalar(select(func.count()).select_from(auth_sessions).where(
            auth_sessions.c.key_id == key_id(OLD_KEY), auth_sessions.c.status == PENDING))


def test_reencrypt_killed_midway_then_rerun_finishes(make_app, database_url, tmp_path):
    new = new_key()
    app = make_app(ENCRYPTION_KEY=new, ROTATION_KEYS=OLD_KEY)
    expected = fill(app, KeyRing(OLD_KEY), 1500, sessions=40)
    env = cli_env(database_url, tmp_path, new, OLD_KEY)

    process = subprocess.Popen(flask_command("tokens", "reencrypt", "--batch-size", "2"),
                               cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while key_ids(app).get(key_id(new), 0) < 50 and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    moved = key_ids(app).get(key_id(new), 0)
    assert 50 <= moved < 1500, "the kill did not land half-way"
    # Every row is whole: under one key or the other, and decrypts to what it was.
    both = KeyRing(new, [OLD_KEY])
    assert plaintexts(app, both) == expected

    rerun = subprocess.run(flask_command("tokens", "reencrypt", "--batch-size", "50"),
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    assert f"Re-encrypted {1500 - moved} credentials and 40 pending sessions" in rerun.stdout
    assert key_ids(app) == {key_id(new): 1540}
    assert plaintexts(app, KeyRing(new)) == expected


def test_refresh_racing_the_reencryption_of_its_row_loses_nothing(make_app, google):
    new = new_key()
    old_app = make_app()
    new_app = make_app(ENCRYPTION_KEY=new, ROTATION_KEYS=OLD_KEY)
    google.rotate_refresh_tokens = True
    connect_users(old_app, ["ada@example.com", "bob@example.com"])
    bob_before = flow.token(new_app.test_client(), "bob@example.com").get_json()["access_token"]

    google.refresh_latency = 1.0
    refreshes = google.refresh_count
    answer = {}
    racer = threading.Thread(target=lambda: answer.update(response=flow.token(
        new_app.test_client(), "ada@example.com", force_refresh=True)))
    racer.start()
    google.wait_for_refresh(refreshes + 1)
    # The refresh is upstream now, holding ada's lock; re-encryption starts meanwhile.
    result = new_app.test_cli_runner().invoke(args=["tokens", "reencrypt", "--batch-size", "1"])
    still_refreshing = racer.is_alive()
    racer.join(timeout=10)
    google.refresh_latency = 0.0

    assert result.exit_code == 0, result.output
    assert answer["response"].status_code == 200, answer["response"].get_data(as_text=True)
    if new_app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        # SQLite's write lock is not held across the provider call
        # (storage.credential_transaction): the re-encryption did not wait, it moved ada's old
        # tokens, and the refresh's write, after it, replaced them.
        assert still_refreshing
        assert "Re-encrypted 2 credentials" in result.output
    else:
        # The row lock made the re-encryption wait, and it found the row already moved.
        assert "Re-encrypted 1 credentials" in result.output
        assert "1 rows were refreshed or deleted meanwhile" in result.output
    ring = KeyRing(new)
    ada = raw_credential(new_app, "ada@example.com")
    assert ada.key_id == ring.primary_id
    assert (ring.decrypt(ada.access_token_encrypted, ada.key_id)
            == answer["response"].get_json()["access_token"])
    # The refresh token the provider rotated to is the one stored; the old one would kill the
    # grant on its next use.
    assert google.token_is_live(ring.decrypt(ada.refresh_token_encrypted, ada.key_id))
    final = new_app.test_client()
    assert flow.token(final, "ada@example.com", force_refresh=True).status_code == 200
    assert flow.token(final, "bob@example.com").get_json()["access_token"] == bob_before


def test_old_key_removed_too_early(make_app, google, caplog):
    new = new_key()
    old_app = make_app()
    rotating = make_app(ENCRYPTION_KEY=new, ROTATION_KEYS=OLD_KEY)
    early = make_app(ENCRYPTION_KEY=new)
    users = ["ada@example.com", "bob@example.com", "cy@example.com"]
    connect_users(old_app, users)
    before = {email: flow.token(old_app.test_client(), email).get_json()["access_token"]
              for email in users}
    with rotating.app_context():  # one batch of one row: ada's credential alone is moved
        rotation.reencrypt_batch(rotation.CREDENTIALS, gateway().keyring, None, 1)
    stranded = {email: raw_credential(old_app, email) for email in users[1:]}

    client = early.test_client()
    with caplog.at_level(logging.ERROR, logger="authgateway"):
        assert flow.token(client, "ada@example.com").get_json()["access_token"] == before[
            "ada@example.com"]
        for email, row in stranded.items():
            for force in (False, True):
                response = flow.token(client, email, force_refresh=force)
                assert response.status_code == 500
                assert response.get_json()["detail"]["error"] == "decryption_failed"
            assert f"credential {row.id} " in caplog.text

    status = early.test_cli_runner().invoke(args=["keys", "status"])
    assert status.exit_code == 0
    old_line = next(line for line in status.output.splitlines()
                    if line.startswith(key_id(OLD_KEY)))
    assert "UNKNOWN" in old_line and " 2 " in old_line
    ids = ", ".join(str(row.id) for row in stranded.values())
    assert f"decryption_failed): {ids}." in status.output

    again = early.test_cli_runner().invoke(args=["tokens", "reencrypt"])
    assert again.exit_code == 1
    assert f"NOT re-encrypted: credentials {ids}" in again.output
    # Never dropped, never overwritten: with the key back, the tokens are what they were.
    for email, row in stranded.items():
        assert raw_credential(old_app, email) == row
        assert flow.token(rotating.test_client(), email).get_json()["access_token"] == before[
            email]
