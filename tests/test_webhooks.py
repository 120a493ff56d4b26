"""Events and signed webhooks: each moment arrives once, signed, at a real receiver on
loopback; retries keep the webhook-id; nothing is lost to a crash or sent for a rollback; two
serving processes share the work; a hanging receiver slows no token call."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from authgateway_client import verify_webhook
from sqlalchemy import select
from standardwebhooks import Webhook

from authgateway import delivery, events, hookimpl, outbox, tokens
from authgateway.context import gateway
from authgateway.extensions import db
from authgateway.models import DELIVERED, FAILED, AuditEvent, WebhookDelivery
from authgateway.providers import TokenSet
from tests.conftest import ENCRYPTION_KEY, HEADERS, base_config
from tests.flow import connect, token
from tests.receiver import Receiver

FAST = {"WEBHOOK_RETRY_SECONDS": 0.05, "WEBHOOK_POLL_SECONDS": 0.05, "WEBHOOK_TIMEOUT": 2}
EXTRA_SCOPE = "https://www.googleapis.com/auth/drive.readonly"


class Heard:
    """A plugin that records the events it is told about."""

    def __init__(self) -> None:
        self.events: list[events.Event] = []

    @hookimpl
    def authgateway_event(self, event):
        self.events.append(event)


class Broken:
    @hookimpl
    def authgateway_event(self, event):
        raise RuntimeError("a plugin bug")


@pytest.fixture
def receiver():
    with Receiver() as fake:
        yield fake


@pytest.fixture
def hooked(make_app, receiver):
    """An app with a listening plugin, a broken one, and the receiver as an endpoint."""
    import authgateway_google

    heard = Heard()
    app = make_app(PLUGINS=[authgateway_google, Broken(), heard], **FAST)
    result = app.test_cli_runner().invoke(args=["webhooks", "add", receiver.url])
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip()
    assert secret.startswith("whsec_")
    return app, heard, secret


def deliver(app) -> int:
    with app.app_context():
        return delivery.deliver_due()


def verified(received, secret: str) -> list[dict]:
    """Every request's body, each checked with the standardwebhooks package."""
    return [Webhook(secret).verify(r.body, r.headers) for r in received]


def test_each_event_type_arrives_once_signed(hooked, receiver, google, caplog):
    app, heard, secret = hooked
    client = app.test_client()
    connect(client)                                          # connected
    connect(client, scopes=[EXTRA_SCOPE])                    # scopes_changed
    google.revoke_grant_for("ada@example.com")
    assert token(client, force_refresh=True).status_code == 401  # needs_reauth
    connect(client)                                          # recovered
    assert client.delete("/auth/revoke", headers=HEADERS, json={
        "provider": "google", "user_email": "ada@example.com"}).status_code == 200  # revoked
    google.deny_next = True
    flow = client.post("/auth/init", headers=HEADERS,
                       json={"provider": "google", "user_email": "ada@example.com"}).get_json()
    from tests.flow import consent
    assert client.get(consent(flow["auth_url"])).status_code == 400  # flow.failed

    expected = [events.CONNECTED, events.SCOPES_CHANGED, events.NEEDS_REAUTH, events.RECOVERED,
                events.REVOKED, events.FLOW_FAILED]
    assert [event.type for event in heard.events] == expected
    assert deliver(app) == 6
    received = receiver.wait_for(6)
    bodies = verified(received, secret)
    assert len(received) == 6
    assert sorted(body["type"] for body in bodies) == sorted(expected)
    assert {r.id for r in received} == {event.id for event in heard.events}
    for body in bodies:
        assert body["data"]["provider"] == "google"
        assert body["data"]["user_email"] == "ada@example.com"
        assert body["timestamp"].endswith("Z")
    by_type = {body["type"]: body["data"] for body in bodies}
    assert EXTRA_SCOPE in by_type[events.SCOPES_CHANGED]["scopes"]
    assert by_type[events.NEEDS_REAUTH]["error"] == "invalid_grant"
    assert by_type[events.FLOW_FAILED]["code"] == "access_denied"
    assert by_type[events.CONNECTED]["api_key"] == "bootstrap"
    # No token, secret or ciphertext in any body.
    text = b"".join(r.body for r in received).decode()
    assert "ya29" not in text and "encrypted" not in text and secret[6:] not in text
    assert secret[6:] not in caplog.text
    assert deliver(app) == 0  # delivered once, never again
    assert len(receiver.wait_for(7, timeout=0.3)) == 6
    # The client reads the same requests, with the standard library only.
    typed = {type(verify_webhook(r.body, r.headers, secret)).__name__ for r in received}
    assert typed == {"CredentialConnected", "CredentialScopesChanged", "CredentialNeedsReauth",
                     "CredentialRecovered", "CredentialRevoked", "FlowFailed"}


def test_a_receiver_that_fails_twice_gets_the_same_id_three_times(hooked, receiver):
    app, heard, secret = hooked
    receiver.fail_next = 2
    connect(app.test_client())
    worker = delivery.start_worker(app)
    try:
        received = receiver.wait_for(3)
    finally:
        worker.stop()
    assert len(received) == 3
    assert {r.id for r in received} == {heard.events[0].id}
    verified(received, secret)
    with app.app_context():
        row = db.session.scalar(select(WebhookDelivery))
        assert (row.state, row.attempts, row.last_status) == (DELIVERED, 3, 204)


def test_a_rolled_back_change_sends_nothing(hooked, receiver):
    app, heard, _secret = hooked

    def fail(_connection):
        raise RuntimeError("the flow's own write failed")

    with app.test_request_context(), pytest.raises(RuntimeError):
        tokens.store_credential("ada@example.com", "google", "sub-1",
                                TokenSet(access_token="a", refresh_token="r", expires_in=3600,
                                         scopes=["openid"]),
                                requested=["openid"], also=fail)
    with app.app_context():
        assert db.session.scalar(select(WebhookDelivery)) is None
    assert heard.events == []
    assert deliver(app) == 0
    assert receiver.received == []


def test_given_up_deliveries_are_audited_counted_listed_and_can_be_redelivered(
        make_app, receiver):
    app = make_app(WEBHOOK_RETRY_HOURS=0, **FAST)
    runner = app.test_cli_runner()
    secret = runner.invoke(args=["webhooks", "add", receiver.url]).stdout.strip()
    receiver.status = 503
    connect(app.test_client())
    assert deliver(app) == 0
    with app.app_context():
        row = db.session.scalar(select(WebhookDelivery))
        assert (row.state, row.last_status, row.last_error) == (FAILED, 503, "http_503")
        audited = db.session.scalar(select(AuditEvent).where(AuditEvent.action ==
                                                             "webhook_failed"))
        assert audited.user_email == "ada@example.com" and audited.outcome == "http_503"
    metrics = app.test_client().get("/metrics", headers=HEADERS).get_data(as_text=True)
    assert 'authgateway_webhook_attempts_total{outcome="failed"}' in metrics
    listed = runner.invoke(args=["webhooks", "deliveries", "--failed"])
    assert f"{row.id}" in listed.output and "http_503" in listed.output
    receiver.status = 200
    assert runner.invoke(args=["webhooks", "redeliver", str(row.id)]).exit_code == 0
    assert deliver(app) == 1
    received = receiver.wait_for(2)
    assert received[0].id == received[1].id
    verified(received[1:], secret)


def test_endpoints_must_be_https_unless_loopback(make_app, receiver):
    app = make_app()
    runner = app.test_cli_runner()
    for url, why in [("http://example.com/hook", "https"), ("ftp://127.0.0.1/", "http(s)"),
                     ("https://10.1.2.3/hook", "private"), ("https://[fd00::1]/", "private"),
                     ("http://user:pw@127.0.0.1/hook", "password")]:
        result = runner.invoke(args=["webhooks", "add", url])
        assert result.exit_code == 1 and why in result.output, result.output
    assert runner.invoke(args=["webhooks", "add", receiver.url, "--events",
                               "flow.failed"]).exit_code == 0
    assert runner.invoke(args=["webhooks", "add", receiver.url]).exit_code == 1  # twice
    assert runner.invoke(args=["webhooks", "add", "http://127.0.0.1:9/",
                               "--events", "nonsense"]).exit_code == 2
    listed = runner.invoke(args=["webhooks", "list"]).output
    assert receiver.url in listed and "events=flow.failed" in listed
    # Filtered out: a connection sends nothing to an endpoint that wants only failed flows.
    connect(app.test_client())
    with app.app_context():
        assert db.session.scalar(select(WebhookDelivery)) is None
    assert runner.invoke(args=["webhooks", "test", receiver.url]).exit_code == 0
    assert receiver.wait_for(1)[0].json["type"] == "webhook.ping"
    assert runner.invoke(args=["webhooks", "remove", receiver.url]).exit_code == 0
    assert "No webhook endpoints" in runner.invoke(args=["webhooks", "list"]).output
    assert runner.invoke(args=["webhooks", "remove", receiver.url]).exit_code == 1
    private = make_app(WEBHOOK_ALLOW_PRIVATE="on")
    assert private.test_cli_runner().invoke(
        args=["webhooks", "add", "https://10.1.2.3/hook"]).exit_code == 0


def test_a_redirect_is_not_followed_and_the_answer_never_logged(make_app, receiver, caplog):
    app = make_app(**FAST)
    app.test_cli_runner().invoke(args=["webhooks", "add", receiver.url])
    with Receiver() as elsewhere:
        receiver.status = 307
        receiver.answer_headers = {"Location": elsewhere.url}
        receiver.answer_body = b"answer-body-marker"
        connect(app.test_client())
        assert deliver(app) == 0
        assert len(receiver.wait_for(1)) == 1
        assert elsewhere.wait_for(1, timeout=0.5) == []
    with app.app_context():
        assert db.session.scalar(select(WebhookDelivery)).last_error == "http_307"
    assert "http_307" in caplog.text and "answer-body-marker" not in caplog.text


def test_a_hanging_receiver_slows_neither_tokens_nor_other_endpoints(make_app, google):
    app = make_app(**{**FAST, "WEBHOOK_TIMEOUT": 3})
    runner = app.test_cli_runner()
    client = app.test_client()
    with Receiver() as hanging, Receiver() as healthy:
        hanging.hang_seconds = 10
        for receiver in (hanging, healthy):
            assert runner.invoke(args=["webhooks", "add", receiver.url]).exit_code == 0
        for n in range(5):
            connect(client, email=f"user{n}@example.com")
        worker = delivery.start_worker(app)
        try:
            assert len(hanging.wait_for(1)) == 1  # the worker is now stuck on it
            assert len(healthy.wait_for(5, timeout=2.5)) == 5  # before the hang times out
            slowest = 0.0
            for _ in range(20):
                started = time.perf_counter()
                assert token(client, email="user0@example.com").status_code == 200
                slowest = max(slowest, time.perf_counter() - started)
            assert slowest < 1.0, f"a token call took {slowest:.2f} s"
        finally:
            worker.stop()


def test_key_rotation_reencrypts_webhook_secrets(make_app, receiver, database_url):
    from cryptography.fernet import Fernet

    from authgateway import create_app

    app = make_app()
    secret = app.test_cli_runner().invoke(args=["webhooks", "add", receiver.url]).stdout.strip()
    new_key = Fernet.generate_key().decode()
    rotated = create_app(base_config(database_url, ENCRYPTION_KEY=new_key,
                                     ROTATION_KEYS=ENCRYPTION_KEY))
    runner = rotated.test_cli_runner()
    status = runner.invoke(args=["keys", "status"]).output
    assert "WEBHOOK SECRETS" in status and "still in use" in status, status
    done = runner.invoke(args=["tokens", "reencrypt"])
    assert "Re-encrypted 1 webhook signing secrets." in done.output, done.output
    assert "no rows left" in runner.invoke(args=["keys", "status"]).output
    only_new = create_app(base_config(database_url, ENCRYPTION_KEY=new_key))
    pinged = only_new.test_cli_runner().invoke(args=["webhooks", "test", receiver.url])
    assert pinged.exit_code == 0, pinged.output
    assert verified(receiver.wait_for(1), secret)[0]["type"] == "webhook.ping"
    for each in (rotated, only_new):
        with each.app_context():
            db.engine.dispose()


# ---- several processes, and a crash --------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(database_url: str, port: int) -> subprocess.Popen:
    env = {"PATH": os.environ["PATH"], "DATABASE_URL": database_url,
           "AUTH_GATEWAY_ENCRYPTION_KEY": ENCRYPTION_KEY, "AUTH_GATEWAY_LOAD_PLUGINS": "off",
           "AUTH_GATEWAY_PORT": str(port), "AUTH_GATEWAY_WEBHOOK_POLL_SECONDS": "0.05",
           "AUTH_GATEWAY_WEBHOOK_RETRY_SECONDS": "0.05", "AUTH_GATEWAY_LOG_LEVEL": "WARNING"}
    return subprocess.Popen([str(Path(sys.executable).parent / "authgateway"), "serve"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_serving(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise AssertionError("the gateway did not start")


def test_two_serving_processes_deliver_100_events_once_each(make_app, receiver, database_url):
    app = make_app()
    app.test_cli_runner().invoke(args=["webhooks", "add", receiver.url])
    with app.app_context():
        db.engine.dispose()
    ports = [free_port(), free_port()]
    servers = [serve(database_url, port) for port in ports]
    try:
        for port, server in zip(ports, servers, strict=True):
            wait_serving(port, server)
        sent = []
        with app.app_context():
            for batch in range(10):
                with outbox.announced(), db.engine.begin() as connection:
                    for n in range(10):
                        event = events.Event(events.CONNECTED, "google",
                                             f"user{batch * 10 + n}@example.com")
                        outbox.record(event, connection)
                        sent.append(event.id)
        received = receiver.wait_for(100, timeout=30)
        time.sleep(0.5)  # room for a duplicate to arrive
        ids = [r.id for r in receiver.received]
        assert sorted(set(ids)) == sorted(sent), f"{len(set(ids))} of 100 arrived"
        assert len(ids) == 100, f"{len(ids) - len(set(ids))} duplicates"
        del received
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)


KILLED_AFTER_COMMIT = """
import json, os, signal, sys
import authgateway_google
from authgateway import create_app, hookimpl, tokens

class Die:
    @hookimpl
    def authgateway_event(self, event):
        # The change has committed; the webhook has not been sent.
        os.kill(os.getpid(), signal.SIGKILL)

config = json.loads(sys.argv[1])
config["PLUGINS"] = [authgateway_google, Die()]
app = create_app(config)
with app.app_context():
    tokens.revoke("ada@example.com", "google", None)
print("not killed")
"""


def test_sigkill_after_the_commit_and_before_the_send_loses_nothing(
        make_app, receiver, google, database_url):
    app = make_app(**FAST)
    secret = app.test_cli_runner().invoke(args=["webhooks", "add", receiver.url]).stdout.strip()
    connect(app.test_client())
    assert deliver(app) == 1  # credential.connected
    receiver.wait_for(1)
    config = {key: value for key, value in base_config(
        database_url, **google.settings(),
        GOOGLE_REDIRECT_URI="http://localhost/auth/callback/google").items() if key != "PLUGINS"}
    config["WEBHOOK_WORKER"] = False
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_COMMIT, json.dumps(config)],
                            capture_output=True, text=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert len(receiver.received) == 1
    with app.app_context():
        assert gateway().keyring  # the app is intact
    assert deliver(app) == 1  # after the restart
    revoked = receiver.wait_for(2)[1]
    assert verified([revoked], secret)[0]["type"] == events.REVOKED


KILLED_WHILE_SENDING = """
import json, sys
from authgateway import create_app, delivery

app = create_app(json.loads(sys.argv[1]))
with app.app_context():
    delivery.deliver_due()
"""


def test_sigkill_while_sending_sends_again_once_the_claim_lapses(
        make_app, receiver, database_url):
    app = make_app(**FAST)
    secret = app.test_cli_runner().invoke(args=["webhooks", "add", receiver.url]).stdout.strip()
    connect(app.test_client())
    receiver.hang_seconds = 30
    config = {key: value for key, value in base_config(database_url, WEBHOOK_TIMEOUT=0.5,
                                                       WEBHOOK_WORKER=False).items()
              if key != "PLUGINS"}
    sender = subprocess.Popen([sys.executable, "-c", KILLED_WHILE_SENDING, json.dumps(config)])
    try:
        assert len(receiver.wait_for(1, timeout=30)) == 1  # the request is in flight
        receiver.hang_seconds = 0
    finally:
        sender.send_signal(signal.SIGKILL)
        sender.wait(10)
    assert deliver(app) == 0  # still claimed by the dead process: nobody sends it twice at once
    deadline = time.monotonic() + 20
    while deliver(app) == 0:
        assert time.monotonic() < deadline, "the claim never lapsed"
        time.sleep(0.5)
    received = receiver.wait_for(2)
    assert len(received) == 2 and received[0].id == received[1].id
    verified(received[1:], secret)


def test_a_refresh_that_narrows_the_grant_says_so(hooked, receiver, google):
    """The person removed a permission at the provider: the next refresh answers fewer scopes."""
    app, heard, secret = hooked
    client = app.test_client()
    connect(client, scopes=[EXTRA_SCOPE])
    for grant in google._grants:
        grant.scopes = [scope for scope in grant.scopes if scope != EXTRA_SCOPE]
    assert token(client, force_refresh=True).status_code == 200
    assert [event.type for event in heard.events] == [events.CONNECTED, events.SCOPES_CHANGED]
    changed = heard.events[1].data
    assert EXTRA_SCOPE in changed["previous_scopes"] and EXTRA_SCOPE not in changed["scopes"]
    assert deliver(app) == 2
    assert [body["type"] for body in verified(receiver.wait_for(2), secret)] == [
        events.CONNECTED, events.SCOPES_CHANGED]
    assert token(client, force_refresh=True).status_code == 200  # unchanged: no event
    assert len(heard.events) == 2


def test_purge_keeps_what_is_pending_and_what_is_recent(make_app, receiver):
    app = make_app(**FAST)
    runner = app.test_cli_runner()
    runner.invoke(args=["webhooks", "add", receiver.url + "?token=receiver-secret"])
    connect(app.test_client())
    connect(app.test_client(), email="grace@example.com")
    assert deliver(app) == 2
    connect(app.test_client(), email="lin@example.com")  # pending
    with app.app_context():
        old = db.session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).first()
        old.finished_at = old.finished_at - timedelta(days=8)
        db.session.commit()
    assert "Purged 1 deliveries older than 7 days" in runner.invoke(
        args=["webhooks", "purge"]).output
    assert "Purged 0" in runner.invoke(args=["webhooks", "purge"]).output
    with app.app_context():
        states = sorted(row.state for row in db.session.scalars(select(WebhookDelivery)))
        assert states == ["delivered", "pending"]
        trail = " ".join(row.detail or "" for row in db.session.scalars(select(AuditEvent)))
        assert "receiver-secret" not in trail and receiver.url in trail
