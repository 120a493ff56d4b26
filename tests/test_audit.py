"""The audit trail: every flow, refresh, failure, revocation and re-encryption is a row naming
the API key; tokens served are counted in memory and written in bulk; `flask audit tail`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import requests
from cryptography.fernet import Fernet
from sqlalchemy import select

from authgateway import audit, create_app
from authgateway.extensions import db
from authgateway.models import AuditEvent
from tests.conftest import ENCRYPTION_KEY, HEADERS, base_config
from tests.flow import connect, consent, start, token
from tests.wire import WRITE, Wire


def events(app, action: str | None = None) -> list[tuple]:
    with app.app_context():
        query = select(AuditEvent).order_by(AuditEvent.id)
        if action:
            query = query.where(AuditEvent.action == action)
        return [(e.action, e.actor, e.user_email, e.provider, e.outcome)
                for e in db.session.scalars(query)]


def test_a_flow_started_and_completed(app, client, google):
    connect(client)
    assert events(app) == [
        ("flow_started", "bootstrap", "ada@example.com", "google", "ok"),
        ("flow_completed", "bootstrap", "ada@example.com", "google", "ok"),
    ]


def test_a_flow_refused_at_the_provider(app, client, google):
    google.deny_next = True
    flow = start(client)
    assert client.get(consent(flow["auth_url"])).status_code == 400
    assert events(app, "flow_failed") == [
        ("flow_failed", "bootstrap", "ada@example.com", "google", "access_denied")]


def test_refreshes_and_their_failures_name_the_api_key(app, client, google):
    connect(client)
    assert token(client, force_refresh=True).status_code == 200
    google.fail_next(503)
    assert token(client, force_refresh=True).status_code == 502
    google.fail_next(400, "invalid_grant")
    assert token(client, force_refresh=True).status_code == 401
    refreshes = [e for e in events(app) if e[0] in ("token_refreshed", "refresh_failed")]
    assert [(action, actor) for action, actor, *_ in refreshes] == [
        ("token_refreshed", "bootstrap"), ("refresh_failed", "bootstrap"),
        ("refresh_failed", "bootstrap")]
    assert refreshes[-1][-1] == "invalid_grant" and refreshes[1][-1] != "ok"


def test_a_revocation(app, client, google):
    connect(client)
    answer = client.delete("/auth/revoke", json={"provider": "google",
                                                 "user_email": "ada@example.com"},
                           headers=HEADERS)
    assert answer.status_code == 200
    assert events(app, "revoked") == [("revoked", "bootstrap", "ada@example.com", "google", "ok")]


def test_a_reencryption(client, google, database_url):
    connect(client)
    rotated = create_app(base_config(database_url, ENCRYPTION_KEY=Fernet.generate_key().decode(),
                                     ROTATION_KEYS=ENCRYPTION_KEY))
    try:
        result = rotated.test_cli_runner().invoke(args=["tokens", "reencrypt"])
        assert result.exit_code == 0, result.output
        moved = events(rotated, "reencrypted")
    finally:
        with rotated.app_context():
            db.engine.dispose()
    assert moved and all(actor == "cli" for _, actor, *_ in moved)


def test_tokens_served_are_counted_and_written_in_bulk(make_app, google):
    # Unprepared statements, so that PostgreSQL's wire shows the text of every one of them.
    app = make_app(AUDIT_FLUSH_SECONDS=3600, DB_PREPARE_THRESHOLD="none")
    client = app.test_client()
    connect(client)
    connect(client, "bob@example.com")
    with app.app_context():
        wire = Wire(db.engine)
    with wire:  # requests outside this app context, each in its own as in production
        for _ in range(5):
            assert token(client).status_code == 200
        assert token(client, "bob@example.com").status_code == 200
        statements = wire.take_statements()
    assert any(" FROM credentials " in sql for sql in statements), statements  # watched
    writes = [sql for sql in statements if WRITE.match(sql)]
    assert writes == []  # the hot path wrote nothing
    assert events(app, "token_served") == []
    assert audit.served_tokens(app).flush() == 2
    with app.app_context():
        served = {e.user_email: e for e in db.session.scalars(
            select(AuditEvent).where(AuditEvent.action == "token_served"))}
    assert set(served) == {"ada@example.com", "bob@example.com"}
    assert served["ada@example.com"].actor == "bootstrap"
    assert served["ada@example.com"].detail.startswith("count=5 first=")
    assert served["bob@example.com"].detail.startswith("count=1 first=")
    assert audit.served_tokens(app).flush() == 0  # nothing twice


def test_tokens_served_are_flushed_every_few_seconds(make_app, google):
    app = make_app(AUDIT_FLUSH_SECONDS=0.2)
    client = app.test_client()
    connect(client)
    assert token(client).status_code == 200
    assert token(client).status_code == 200
    deadline = time.monotonic() + 10
    while not events(app, "token_served") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert events(app, "token_served") == [
        ("token_served", "bootstrap", "ada@example.com", "google", "ok")]


EXIT_WITHOUT_FLUSHING = textwrap.dedent("""
    from authgateway import audit, create_app
    app = create_app()
    with app.app_context():
        audit.served_tokens(app).add("mcp-one", "ada@example.com", "google")
        audit.served_tokens(app).add("mcp-one", "ada@example.com", "google")
""")


def test_tokens_served_are_written_at_exit(database_url, tmp_path):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DATABASE_URL": database_url,
           "AUTH_GATEWAY_ENCRYPTION_KEY": ENCRYPTION_KEY, "AUTH_GATEWAY_LOAD_PLUGINS": "0",
           "AUTH_GATEWAY_AUDIT_FLUSH_SECONDS": "3600"}
    run = subprocess.run([sys.executable, "-c", EXIT_WITHOUT_FLUSHING], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    app = create_app(base_config(database_url))
    with app.app_context():
        rows = db.session.scalars(select(AuditEvent).where(
            AuditEvent.actor == "mcp-one", AuditEvent.action == "token_served")).all()
        assert [row.detail.split()[0] for row in rows] == ["count=2"]
        db.session.delete(rows[0])
        db.session.commit()
        db.engine.dispose()


def test_a_served_gateway_writes_its_counts_when_stopped(database_url, google, tmp_path):
    """`authgateway serve` under SIGTERM (docker stop, systemd) exits through atexit."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    google.redirect_uris = [url + "/auth/callback/google"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DATABASE_URL": database_url,
           "AUTH_GATEWAY_ENCRYPTION_KEY": ENCRYPTION_KEY, "AUTH_GATEWAY_API_KEY": "served-key",
           "AUTH_GATEWAY_AUDIT_FLUSH_SECONDS": "3600", "PORT": str(port),
           "AUTH_GATEWAY_BLOCK_PLUGINS": "oidc", **google.settings(),
           "GOOGLE_REDIRECT_URI": url + "/auth/callback/google"}
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "authgateway"),
                               "serve"], env=env, cwd=tmp_path, stderr=subprocess.PIPE)
    try:
        http = requests.Session()
        http.headers["X-API-Key"] = "served-key"
        deadline = time.monotonic() + 30
        while True:
            try:
                http.get(url + "/health", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and server.poll() is None, "not serving"
                time.sleep(0.1)
        body = {"provider": "google", "user_email": "served@example.com"}
        flow = http.post(url + "/auth/init", json=body, timeout=10).json()
        assert requests.get(flow["auth_url"], timeout=10).status_code == 200  # via the callback
        for _ in range(3):
            assert http.post(url + "/auth/token", json=body, timeout=10).status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=30)
    assert server.returncode == 0, stderr.decode()
    app = create_app(base_config(database_url))
    with app.app_context():
        served = db.session.scalars(select(AuditEvent).where(
            AuditEvent.action == "token_served",
            AuditEvent.user_email == "served@example.com")).all()
        db.engine.dispose()
    assert [(e.actor, e.detail.split()[0]) for e in served] == [("bootstrap", "count=3")]


def test_audit_tail(app, client, google, runner):
    connect(client)
    connect(client, "bob@example.com")
    token(client)
    audit.served_tokens(app).flush()
    everything = runner.invoke(args=["audit", "tail"])
    assert everything.exit_code == 0, everything.output
    lines = everything.output.splitlines()
    assert len(lines) == 5 and "flow_started" in lines[0] and "token_served" in lines[-1]
    assert "actor=bootstrap" in lines[-1] and "count=1" in lines[-1]
    bob = runner.invoke(args=["audit", "tail", "--user", "BOB@example.com", "--since", "10m"])
    assert len(bob.output.splitlines()) == 2 and "ada@" not in bob.output
    last = runner.invoke(args=["audit", "tail", "-n", "1", "--since", "2020-01-01T00:00:00"])
    assert last.output.splitlines() == [lines[-1]]
    assert "No audit events match" in runner.invoke(
        args=["audit", "tail", "--since", "2999-01-01T00:00:00+00:00"]).output
    wrong = runner.invoke(args=["audit", "tail", "--since", "yesterday"])
    assert wrong.exit_code == 2 and "--since" in wrong.output


def test_no_token_in_the_audit_trail(app, client, google):
    connect(client)
    served = token(client, force_refresh=True).get_json()["access_token"]
    audit.served_tokens(app).flush()
    with app.app_context():
        text = " ".join(str(v) for e in db.session.scalars(select(AuditEvent))
                        for v in vars(e).values())
    for secret in [served, *google._by_access, *google._by_refresh, *google._codes]:
        assert secret not in text
