"""authgateway_client against the real gateway served on loopback (the `live` fixture), both
clients, both database backends: every method, every error code a caller can reach, the retry
policy, the API key kept out of reprs, messages and logs, and the server package's
`authgateway.client` name for the same client."""

from __future__ import annotations

import asyncio
import importlib
import logging
import socket
import sys
import threading
import time
import uuid
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import authgateway_client
import pytest
import requests
from authgateway_client import (
    ApiKeyError,
    AsyncGatewayClient,
    AuthRequired,
    AuthTimeout,
    DecryptionFailed,
    GatewayClient,
    GatewayConnectionError,
    GatewayError,
    InsufficientScope,
    InvalidApiKey,
    InvalidRequest,
    MissingApiKey,
    NotAuthenticated,
    NotFound,
    ProviderMisconfigured,
    ProviderNotConfigured,
    ProviderUnavailable,
    RefreshFailed,
    SessionNotFound,
    Token,
    UnexpectedResponse,
    UnsupportedProvider,
)
from sqlalchemy import update

import authgateway
from authgateway.extensions import db
from authgateway.models import Credential
from tests.conftest import API_KEY, serve_wsgi

EMAIL = "ada@example.com"
CALENDAR = "https://www.googleapis.com/auth/calendar.readonly"
FAST = {"backoff": 0.01, "max_backoff": 0.05}


class AsyncAsSync:
    """An AsyncGatewayClient driven from synchronous test code, on one event loop of its own
    (so its connection pool stays on one loop)."""

    def __init__(self, client: AsyncGatewayClient) -> None:
        self.client, self._loop = client, asyncio.new_event_loop()

    def __getattr__(self, name):
        attr = getattr(self.client, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr
        return lambda *args, **kwargs: self._loop.run_until_complete(attr(*args, **kwargs))

    def __repr__(self) -> str:
        return repr(self.client)

    def close(self) -> None:
        self._loop.run_until_complete(self.client.aclose())
        self._loop.close()


@pytest.fixture(params=["sync", "async"])
def make_client(request, monkeypatch):
    """Build a client of this test's kind; closed at the end."""
    monkeypatch.delenv("AUTH_GATEWAY_URL", raising=False)
    monkeypatch.delenv("AUTH_GATEWAY_API_KEY", raising=False)
    made = []

    def make(url: str, api_key: str | None = API_KEY, **options):
        options = {**FAST, **options}
        if request.param == "sync":
            client = GatewayClient(url, api_key, **options)
        else:
            client = AsyncAsSync(AsyncGatewayClient(url, api_key, **options))
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def gw(live, make_client):
    return make_client(live.url)


def connect(gw, email: str = EMAIL, **extra) -> None:
    """The whole flow, the person's part played by following the fake Google's redirect."""
    flow = gw.start_auth("google", email, **extra)
    assert requests.get(flow.auth_url, timeout=10).status_code == 200
    assert gw.auth_status(flow.session_id).completed


def set_credential(live, email: str = EMAIL, **values) -> None:
    with live.app.app_context():
        db.session.execute(update(Credential).where(Credential.user_email == email)
                           .values(**values))
        db.session.commit()


def expire(live, email: str = EMAIL) -> None:
    set_credential(live, email, expires_at=datetime.now(UTC) - timedelta(minutes=1))


def assert_aware(value: datetime) -> None:
    assert value.tzinfo is not None and value.utcoffset() == timedelta(0)


@pytest.fixture
def client_log(caplog):
    """Everything logged, the client's and httpx's lines included."""
    caplog.set_level(logging.DEBUG)
    return caplog


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]




def serve(app) -> AbstractContextManager[str]:
    """Another gateway on loopback (for an app the `live` fixture does not build)."""
    return serve_wsgi(app, threads=2)


class FlakyProxy:
    """A reverse proxy in front of the gateway whose first `failures` answers are its own
    `status` page, as a load balancer answers while the gateway restarts."""

    def __init__(self, target: str, failures: int, status: int = 502) -> None:
        self.target, self.failures, self.status, self.seen = target, failures, status, 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _relay(self) -> None:
                proxy.seen += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.seen <= proxy.failures:
                    page = b"<html><body>Bad Gateway</body></html>"
                    self.send_response(proxy.status)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("content-type", "x-api-key", "authorization")}
                answer = requests.request(self.command, proxy.target + self.path,
                                          headers=headers, data=body, timeout=10)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("Content-Type", ""))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_DELETE = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FlakyProxy:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---- every method, happy path ------------------------------------------------------------------

def test_health(gw):
    health = gw.health()
    assert health.healthy and health.database == "connected"
    assert health.version == authgateway.__version__


def test_start_auth_and_status(gw, google):
    flow = gw.start_auth("google", "  Ada@Example.com ", scopes=[CALENDAR])
    assert flow.auth_url.startswith(google.base_url)
    assert "calendar.readonly" in flow.auth_url
    assert_aware(flow.expires_at)
    assert flow.expires_at > datetime.now(UTC)
    status = gw.auth_status(flow.session_id)
    assert status.pending and not status.completed and not status.failed
    assert (status.session_id, status.user_email, status.provider) == (
        flow.session_id, EMAIL, "google")
    assert status.expires_at == flow.expires_at


def test_wait_for_auth_polls_until_completed(gw):
    flow = gw.start_auth("google", EMAIL)
    person = threading.Timer(0.3, requests.get, args=(flow.auth_url,), kwargs={"timeout": 10})
    person.start()
    status = gw.wait_for_auth(flow.session_id, timeout=10, interval=0.05)
    person.join()
    assert status.completed and status.error is None


def test_wait_for_auth_returns_a_failed_flow(gw, google):
    google.deny_next = True
    flow = gw.start_auth("google", EMAIL)
    requests.get(flow.auth_url, timeout=10)
    status = gw.wait_for_auth(flow.session_id, timeout=5)
    assert status.failed and status.error == "access_denied"


def test_wait_for_auth_times_out(gw):
    flow = gw.start_auth("google", EMAIL)
    started = time.monotonic()
    with pytest.raises(AuthTimeout):
        gw.wait_for_auth(flow.session_id, timeout=0.3, interval=0.05)
    assert time.monotonic() - started < 5


def test_get_token_and_providers(gw, google):
    assert gw.providers(EMAIL).providers == ()
    connect(gw)
    token = gw.get_token("google", EMAIL)
    assert isinstance(token, Token) and google.token_is_live(token.access_token)
    assert token.token_type == "Bearer" and token.authorization.startswith("Bearer ya29.")
    assert_aware(token.expires_at)
    assert token.expires_at > datetime.now(UTC) + timedelta(minutes=50)
    assert "openid" in token.scopes and isinstance(token.scopes, tuple)
    assert token.access_token not in repr(token)
    connected = gw.providers("ADA@example.com")
    assert connected.user_email == EMAIL
    google_connection = connected.get("google")
    assert google_connection.status == "active" and not google_connection.needs_reauth
    assert google_connection.token_expires_at == token.expires_at
    assert_aware(google_connection.authenticated_at)
    assert connected.get("github") is None


def test_get_token_refreshes_for_min_valid_seconds_and_force(gw, google):
    connect(gw)
    first = gw.get_token("google", EMAIL)
    assert gw.get_token("google", EMAIL, min_valid_seconds=0).access_token == first.access_token
    assert google.refresh_count == 0
    second = gw.get_token("google", EMAIL, min_valid_seconds=7200)
    assert second.access_token != first.access_token and google.refresh_count == 1
    third = gw.get_token("google", EMAIL, force_refresh=True)
    assert third.access_token != second.access_token and google.refresh_count == 2


def test_revoke(gw, google):
    connect(gw)
    token = gw.get_token("google", EMAIL)
    result = gw.revoke("google", EMAIL)
    assert result.success and result.provider_revoked and result.message
    assert not google.token_is_live(token.access_token)
    assert gw.providers(EMAIL).providers == ()
    with pytest.raises(NotAuthenticated):
        gw.revoke("google", EMAIL)


def test_get_token_can_start_the_flow_for_the_caller(gw):
    with pytest.raises(NotAuthenticated) as caught:
        gw.get_token("google", EMAIL)
    assert caught.value.auth_url is None and caught.value.auth_required
    assert caught.value.user_message.startswith("Your Google account is not connected")
    assert caught.value.status == 404

    with pytest.raises(AuthRequired) as caught:
        gw.get_token("google", EMAIL, start_auth_if_needed=True, scopes=[CALENDAR])
    exc = caught.value
    assert isinstance(exc, NotAuthenticated) and exc.code == "not_authenticated"
    assert exc.user_message == f"Open this link to connect your Google account: {exc.auth_url}"
    assert "calendar.readonly" in exc.auth_url
    assert gw.auth_status(exc.session_id).pending
    requests.get(exc.auth_url, timeout=10)
    assert CALENDAR in gw.get_token("google", EMAIL).scopes


def test_get_token_for_scopes_the_grant_lacks_asks_for_more(gw, google):
    connect(gw)
    with pytest.raises(InsufficientScope) as caught:
        gw.get_token("google", EMAIL, scopes=[CALENDAR, "email"])
    exc = caught.value
    assert isinstance(exc, AuthRequired) and exc.reason == "insufficient_scope"
    assert exc.status == 403 and exc.missing_scopes == [CALENDAR] and exc.auth_url is None
    assert exc.provider_display_name == "Google"  # the gateway's name for people
    assert exc.user_message == ("This needs more access to your Google account than you have "
                                "granted.")
    refreshes = google.refresh_count

    with pytest.raises(InsufficientScope) as caught:
        gw.get_token("google", EMAIL, scopes=[CALENDAR], start_auth_if_needed=True)
    exc = caught.value
    assert exc.user_message == ("This needs more access to your Google account; open this link "
                                f"to grant it: {exc.auth_url}")
    assert "calendar.readonly" in exc.auth_url and "include_granted_scopes=true" in exc.auth_url
    assert gw.auth_status(exc.session_id).pending
    old = gw.get_token("google", EMAIL, scopes=["email"])  # the old grant works meanwhile
    assert CALENDAR not in old.scopes
    requests.get(exc.auth_url, timeout=10)
    assert gw.auth_status(exc.session_id).completed
    assert CALENDAR in gw.get_token("google", EMAIL, scopes=[CALENDAR]).scopes
    assert google.refresh_count == refreshes


def test_not_authenticated_names_the_provider_as_the_gateway_does(gw):
    with pytest.raises(NotAuthenticated) as caught:
        gw.get_token("google", EMAIL, scopes=[CALENDAR], start_auth_if_needed=True)
    exc = caught.value
    assert exc.reason == "not_authenticated" and exc.missing_scopes == []
    assert exc.provider_display_name == "Google" and exc.session_id


# ---- each error code ---------------------------------------------------------------------------

def test_invalid_request(gw):
    for call in (lambda: gw.start_auth("google", "not-an-email"),
                 lambda: gw.start_auth("google", EMAIL, scopes=["two words"]),
                 lambda: gw.get_token("google", EMAIL, min_valid_seconds=-1),
                 lambda: gw.providers("nobody")):
        with pytest.raises(InvalidRequest) as caught:
            call()
        assert caught.value.status == 400 and not caught.value.auth_required
        assert caught.value.message and "HTTP 400" in str(caught.value)


def test_unsupported_provider(gw):
    with pytest.raises(UnsupportedProvider) as caught:
        gw.start_auth("myspace", EMAIL)
    assert "google" in caught.value.message
    with pytest.raises(UnsupportedProvider):
        gw.get_token("myspace", EMAIL, start_auth_if_needed=True)


def test_provider_not_configured(make_app, make_client):
    with serve(make_app(GOOGLE_CLIENT_ID="")) as url:
        gw = make_client(url)
        with pytest.raises(ProviderNotConfigured) as caught:
            gw.start_auth("google", EMAIL)
        assert caught.value.status == 503 and not caught.value.retryable
        # The flow cannot start, so the caller gets that error, not a link.
        with pytest.raises(ProviderNotConfigured):
            gw.get_token("google", EMAIL, start_auth_if_needed=True)


def test_missing_and_invalid_api_key(live, make_client):
    for key, kind, status in (("", MissingApiKey, 401), ("not-the-key-123", InvalidApiKey, 403)):
        gw = make_client(live.url, key)
        assert gw.health().healthy  # no key needed
        with pytest.raises(kind) as caught:
            gw.providers(EMAIL)
        assert isinstance(caught.value, ApiKeyError) and caught.value.status == status


def test_api_key_from_the_environment(live, make_client, monkeypatch):
    monkeypatch.setenv("AUTH_GATEWAY_URL", live.url + "/")
    monkeypatch.setenv("AUTH_GATEWAY_API_KEY", API_KEY)
    with GatewayClient() as gw:
        assert gw.url == live.url
        assert gw.providers(EMAIL).providers == ()
    monkeypatch.delenv("AUTH_GATEWAY_URL")
    with pytest.raises(ValueError, match="AUTH_GATEWAY_URL"):
        AsyncGatewayClient()
    with pytest.raises(ValueError, match="not in the URL"):
        GatewayClient(f"http://me:{API_KEY}@127.0.0.1:1")


def test_session_not_found(gw):
    for session_id in (str(uuid.uuid4()), "not-a-uuid", "../../health"):
        with pytest.raises(SessionNotFound) as caught:
            gw.auth_status(session_id)
        assert caught.value.status == 404


def test_not_found_when_the_url_is_wrong(live, make_client):
    with pytest.raises(NotFound):
        make_client(live.url + "/api/v1").auth_status(str(uuid.uuid4()))


def test_refresh_failed(gw, live, google):
    connect(gw)
    expire(live)
    google.fail_next(400, "invalid_grant")
    with pytest.raises(RefreshFailed) as caught:
        gw.get_token("google", EMAIL)
    assert caught.value.auth_required and caught.value.status == 401
    assert gw.providers(EMAIL).get("google").needs_reauth
    with pytest.raises(RefreshFailed) as caught:
        gw.get_token("google", EMAIL, start_auth_if_needed=True)
    assert caught.value.auth_url and caught.value.session_id
    requests.get(caught.value.auth_url, timeout=10)
    assert gw.get_token("google", EMAIL).access_token


def test_provider_unavailable_is_retried_then_raised(live, google, make_client):
    gw = make_client(live.url, max_retries=2)
    connect(gw)
    expire(live)
    google.fail_next(500, times=3)
    with pytest.raises(ProviderUnavailable) as caught:
        gw.get_token("google", EMAIL)
    exc = caught.value
    assert exc.retryable and not exc.auth_required and exc.status == 502
    assert not isinstance(exc, AuthRequired)
    assert google.refresh_count == 3  # one try and two retries
    assert gw.providers(EMAIL).get("google").status == "active"  # credential unchanged

    google.fail_next(500)
    assert gw.get_token("google", EMAIL).access_token  # the retry succeeds
    assert google.refresh_count == 5


def test_provider_unavailable_with_force_refresh_is_not_retried(gw, google):
    connect(gw)
    google.fail_next(500)
    with pytest.raises(ProviderUnavailable):
        gw.get_token("google", EMAIL, force_refresh=True, start_auth_if_needed=True)
    assert google.refresh_count == 1


def test_provider_misconfigured_is_not_retried(gw, live, google):
    connect(gw)
    expire(live)
    google.fail_next(401, "invalid_client", times=3)
    with pytest.raises(ProviderMisconfigured) as caught:
        gw.get_token("google", EMAIL, start_auth_if_needed=True)
    assert not caught.value.retryable and not caught.value.auth_required
    assert google.refresh_count == 1


def test_decryption_failed(gw, live):
    connect(gw)
    set_credential(live, key_id="gone")
    with pytest.raises(DecryptionFailed) as caught:
        gw.get_token("google", EMAIL)
    assert caught.value.status == 500


# ---- retries, timeouts, secrets ----------------------------------------------------------------

def test_connection_refused_is_retried_then_raised(make_client, client_log):
    gw = make_client(f"http://127.0.0.1:{closed_port()}", max_retries=2)
    with pytest.raises(GatewayConnectionError) as caught:
        gw.providers(EMAIL)
    assert caught.value.retryable and caught.value.status is None
    retries = [r.getMessage() for r in client_log.records if r.name == "authgateway_client"]
    assert len(retries) == 2
    assert retries[0].startswith("gateway call providers failed (ConnectError); retry 1 of 2")
    client_log.clear()
    with pytest.raises(GatewayConnectionError):
        gw.start_auth("google", EMAIL)  # never retried
    assert not [r for r in client_log.records if r.name == "authgateway_client"]


def test_502_from_a_proxy_is_retried_on_reads_only(live, make_client):
    with FlakyProxy(live.url, failures=2) as proxy:
        gw = make_client(proxy.url, max_retries=2)
        assert gw.providers(EMAIL).providers == ()
        assert proxy.seen == 3
    with FlakyProxy(live.url, failures=1, status=503) as proxy:
        with pytest.raises(UnexpectedResponse) as caught:
            make_client(proxy.url).start_auth("google", EMAIL)
        assert caught.value.status == 503 and proxy.seen == 1
    with FlakyProxy(live.url, failures=5) as proxy:
        with pytest.raises(UnexpectedResponse) as caught:
            make_client(proxy.url, max_retries=1).health()
        assert caught.value.status == 502 and proxy.seen == 2


def test_read_timeout_is_raised_not_retried(live, google, make_client):
    # The flow with the default timeout: on a busy machine it can take longer than 0.5 s.
    connect(make_client(live.url))
    gw = make_client(live.url, timeout=0.5)
    google.hang_next(1.5)
    with pytest.raises(GatewayConnectionError) as caught:
        gw.get_token("google", EMAIL, force_refresh=True)
    assert caught.value.code == "timeout"
    assert google.refresh_count == 1


def test_api_key_never_leaks(live, make_client, client_log):
    wrong = "wrong-secret-key-0123456789"
    clients = [make_client(live.url, wrong), make_client(f"http://127.0.0.1:{closed_port()}",
                                                         API_KEY)]
    seen = [repr(c) for c in clients] + [str(c) for c in clients]
    for gw in clients:
        for method, args in (("providers", (EMAIL,)), ("get_token", ("google", EMAIL)),
                             ("start_auth", ("google", EMAIL))):
            with pytest.raises(GatewayError) as caught:
                getattr(gw, method)(*args)
            seen += [str(caught.value), repr(caught.value), repr(caught.value.args),
                     str(caught.value.__cause__), str(caught.value.__context__)]
    seen.append(client_log.text)
    assert "retry" in client_log.text and "HTTP Request" in client_log.text  # captured
    for text in seen:
        assert wrong not in text and API_KEY not in text


# ---- the server package's name for the client -------------------------------------------------

def test_authgateway_client_is_the_same_client(live):
    from authgateway.client import GatewayClient as OldName
    from authgateway.client import NotAuthenticated as OldNotAuthenticated

    legacy = importlib.import_module("authgateway.client")
    assert legacy.__all__ == authgateway_client.__all__
    for name in authgateway_client.__all__:
        assert getattr(legacy, name) is getattr(authgateway_client, name), name
    with OldName(live.url, API_KEY) as gw:
        with pytest.raises(OldNotAuthenticated):
            gw.get_token("google", EMAIL)


def test_authgateway_client_without_the_client_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "authgateway_client", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "authgateway.client", raising=False)
    with pytest.raises(ImportError, match=r"`pip install \./client`") as caught:
        importlib.import_module("authgateway.client")
    assert caught.value.name == "authgateway_client"
