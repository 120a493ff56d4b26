"""The gateway against a certified OpenID Connect server that nobody here wrote.

panva's oidc-provider (tests/oidc_peer) runs on loopback; the gateway reaches it through the
generic OIDC plugin configured only by settings (its endpoints come from discovery), and through
the Google plugin with its endpoint settings pointed at it. The person's side is played by
``login_and_consent``, which posts the peer's own login and consent forms.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from sqlalchemy import select

from authgateway.extensions import db
from authgateway.models import AuthSession, Credential
from tests.oidc_gateway import (
    CLIENT_SECRETS,
    DISPLAY_NAME,
    GOOGLE_CLIENT,
    PROVIDER,
    GatewayServer,
    oidc_settings,
    require,
    start_peer,
)
from tests.oidc_peer import login_and_consent, node_available, pkce_pair

ACCESS_TOKEN_TTL = 2
EMAIL = "ada@example.com"
METHODS = sorted(CLIENT_SECRETS)


@pytest.fixture(scope="module")
def server():
    server = GatewayServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def peer(server):
    peer = start_peer(server, access_token_ttl=ACCESS_TOKEN_TTL)
    yield peer
    peer.stop()


@pytest.fixture
def gateway(server, peer, make_app):
    """Build the app for this test from the OIDC settings (plus overrides) and serve it."""

    def build(method: str = "client_secret_basic", **overrides):
        config = {**oidc_settings(peer, server, method), **overrides}
        return server.serve(make_app(redirect_uri=server.callback("google"), **config))

    return build


# -- the MCP server's side and the person's side -------------------------------------------


def init(gw, provider: str = PROVIDER, email: str = EMAIL, **extra) -> dict:
    answer = gw.post("/auth/init", json={"provider": provider, "user_email": email, **extra})
    assert answer.status_code == 200, answer.text
    return answer.json()


def provider_redirect(flow: dict, login: str = EMAIL, deny: bool = False) -> str:
    """The person signs in at the peer; returns where the peer sends their browser."""
    return login_and_consent(flow["auth_url"], login, deny=deny)


def land(gw, callback_url: str) -> requests.Response:
    """The person's browser arrives at the gateway (no API key: it is a person)."""
    assert callback_url.startswith(gw.url + "/auth/callback/"), callback_url
    return requests.get(callback_url, timeout=30)


def connect(gw, provider: str = PROVIDER, email: str = EMAIL, **extra) -> dict:
    flow = init(gw, provider, email, **extra)
    page = land(gw, provider_redirect(flow, email))
    assert page.status_code == 200, page.text
    return flow


def token(gw, provider: str = PROVIDER, email: str = EMAIL, **extra) -> requests.Response:
    return gw.post("/auth/token", json={"provider": provider, "user_email": email, **extra})


def status(gw, flow: dict) -> dict:
    answer = gw.get(f"/auth/status/{flow['session_id']}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def query(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def with_query(url: str, params: dict) -> str:
    return url.split("?", 1)[0] + "?" + urlencode(params)


# -- the peer's side -----------------------------------------------------------------------


def userinfo(peer, access_token: str) -> requests.Response:
    return requests.get(peer.url("/me"), headers={"Authorization": f"Bearer {access_token}"},
                        timeout=10)


def peer_post(peer, path: str, method: str, data: dict, client: tuple[str, str] | None = None):
    client_id, secret = client or (f"gw-{method}", CLIENT_SECRETS[method])
    if method == "client_secret_basic":
        return requests.post(peer.url(path), data=data, auth=(client_id, secret), timeout=10)
    return requests.post(peer.url(path), data={**data, "client_id": client_id,
                                               "client_secret": secret}, timeout=10)


def stored(gw, provider: str = PROVIDER, email: str = EMAIL) -> tuple[Credential, str | None]:
    """The credential row and its refresh token in clear, as only the gateway sees them."""
    with gw.app.app_context():
        row = db.session.scalar(select(Credential).where(Credential.user_email == email,
                                                         Credential.provider == provider))
        assert row is not None
        refresh_token = None
        if row.refresh_token_encrypted:
            refresh_token = gw.app.extensions["authgateway"].keyring.decrypt(
                row.refresh_token_encrypted, row.key_id)
        db.session.expunge(row)
    return row, refresh_token


# -- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_full_flow(gateway, peer, method):
    """init, sign-in and consent at the peer, callback, status, token, providers, revoke.
    (oidc-provider 9 accepts either secret method from a client registered with one, so that
    the configured method is the one sent is checked in plugins/oidc/tests.)"""
    gw = gateway(method)
    flow = init(gw)
    sent = query(flow["auth_url"])
    assert flow["auth_url"].startswith(peer.url("/auth?"))  # from the discovery document
    assert sent["client_id"] == f"gw-{method}"
    assert sent["redirect_uri"] == gw.url + "/auth/callback/peer"
    assert sent["code_challenge_method"] == "S256" and sent["prompt"] == "consent"
    assert sent["scope"].split() == ["openid", "email", "offline_access"]
    assert status(gw, flow)["status"] == "pending"

    callback = provider_redirect(flow)
    assert query(callback)["iss"] == peer.issuer
    page = land(gw, callback)
    assert page.status_code == 200, page.text
    assert f"{DISPLAY_NAME} is connected" in page.text and EMAIL in page.text
    assert status(gw, flow)["status"] == "completed"

    answer = token(gw)
    assert answer.status_code == 200, answer.text
    access_token = answer.json()["access_token"]
    assert userinfo(peer, access_token).json()["email"] == EMAIL
    assert "offline_access" in answer.json()["scopes"]

    connected = gw.get(f"/auth/providers/{EMAIL}").json()["providers"]
    assert [(p["provider"], p["status"]) for p in connected] == [(PROVIDER, "active")]
    _, refresh_token = stored(gw)
    assert refresh_token

    revoked = gw.delete("/auth/revoke", json={"provider": PROVIDER, "user_email": EMAIL})
    assert revoked.status_code == 200 and revoked.json()["provider_revoked"] is True
    dead = peer_post(peer, "/token", method,
                     {"grant_type": "refresh_token", "refresh_token": refresh_token})
    assert dead.status_code == 400 and dead.json()["error"] == "invalid_grant"
    assert token(gw).status_code == 404
    assert gw.get(f"/auth/providers/{EMAIL}").json()["providers"] == []


def test_refresh_with_rotation_over_many_cycles(gateway, peer):
    """Each cycle: the 2-second access token really expires at the peer, four callers ask for a
    token at once, exactly one refresh happens (a second one would reuse a rotated refresh
    token, which makes the peer revoke the whole grant), and everyone gets the new token."""
    gw = gateway()
    connect(gw)
    current = token(gw, min_valid_seconds=0).json()
    refresh_tokens = [stored(gw)[1]]
    for _ in range(8):
        expires_at = datetime.fromisoformat(current["expires_at"])
        time.sleep(max(0.0, expires_at.timestamp() - time.time()) + 0.3)
        assert userinfo(peer, current["access_token"]).status_code == 401  # expired there
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: token(gw, min_valid_seconds=0), range(4)))
        assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
        assert len({a.json()["access_token"] for a in answers}) == 1
        fresh = answers[0].json()
        assert fresh["access_token"] != current["access_token"]
        assert userinfo(peer, fresh["access_token"]).status_code == 200
        refresh_tokens.append(stored(gw)[1])
        current = fresh
    assert len(set(refresh_tokens)) == 9  # rotated every time, and the rotation was kept
    row, _ = stored(gw)
    assert row.status == "active" and row.refresh_failures == 0 and row.last_error is None


def test_revocation_at_the_provider_means_reauthorize(gateway, peer):
    gw = gateway()
    connect(gw)
    _, refresh_token = stored(gw)
    revoked = peer_post(peer, "/token/revocation", "client_secret_basic",
                        {"token": refresh_token, "token_type_hint": "refresh_token"})
    assert revoked.status_code == 200

    answer = token(gw, force_refresh=True)
    assert answer.status_code == 401, answer.text
    assert answer.json()["detail"]["error"] == "refresh_failed"
    assert answer.json()["detail"]["auth_required"] is True
    connected = gw.get(f"/auth/providers/{EMAIL}").json()["providers"]
    assert connected[0]["status"] == "needs_reauth"
    assert token(gw).status_code == 401  # and it stays so, without asking the peer again


def test_pkce_is_checked_by_the_peer(gateway):
    gw = gateway()
    flow = init(gw)
    with gw.app.app_context():  # someone swaps the verifier the gateway will present
        session = db.session.get(AuthSession, flow["session_id"])
        session.code_verifier_encrypted = gw.app.extensions["authgateway"].keyring.encrypt(
            pkce_pair()[0])
        db.session.commit()
    page = land(gw, provider_redirect(flow))
    assert page.status_code == 502, page.text
    assert "did not complete the sign-in" in page.text
    assert (status(gw, flow)["status"], status(gw, flow)["error"]) == ("failed", "exchange_failed")
    assert token(gw).status_code == 404


@pytest.mark.parametrize("forgery", ["forged", "missing"])
def test_callback_iss_is_enforced(gateway, forgery):
    """The peer advertises authorization_response_iss_parameter_supported, so an answer with
    another issuer, or with none, is refused before any code exchange (RFC 9207)."""
    gw = gateway()
    flow = init(gw)
    params = query(provider_redirect(flow))
    if forgery == "forged":
        params["iss"] = "https://idp.attacker.example"
    else:
        del params["iss"]
    page = land(gw, with_query(gw.url + "/auth/callback/peer", params))
    assert page.status_code == 400, page.text
    assert "did not come from the expected provider" in page.text
    assert status(gw, flow)["error"] == "iss_mismatch"
    assert token(gw).status_code == 404


def test_refusal_at_the_provider(gateway):
    gw = gateway()
    flow = init(gw)
    callback = provider_redirect(flow, deny=True)
    assert query(callback)["error"] == "access_denied"
    page = land(gw, callback)
    assert page.status_code == 400
    assert f"The sign-in at {DISPLAY_NAME} was cancelled" in page.text
    assert (status(gw, flow)["status"], status(gw, flow)["error"]) == ("failed", "access_denied")


def test_another_account_is_not_stored(gateway):
    gw = gateway()
    flow = init(gw)
    page = land(gw, provider_redirect(flow, login="mallory@example.com"))
    assert page.status_code == 403
    assert status(gw, flow)["error"] == "email_mismatch"
    assert token(gw).status_code == 404


def test_google_plugin_against_the_peer(gateway, peer):
    """The Google plugin, unchanged, with its endpoint settings pointed at the peer."""
    gw = gateway(
        GOOGLE_AUTHORIZE_URL=peer.url("/auth"),
        GOOGLE_TOKEN_URL=peer.url("/token"),
        GOOGLE_REVOKE_URL=peer.url("/token/revocation"),
        GOOGLE_USERINFO_URL=peer.url("/me"),
        GOOGLE_JWKS_URL=peer.url("/jwks"),
        GOOGLE_ISSUER=peer.issuer,
        GOOGLE_CLIENT_ID=GOOGLE_CLIENT[0],
        GOOGLE_CLIENT_SECRET=GOOGLE_CLIENT[1],
    )
    # The peer issues refresh tokens only for offline_access (Google: access_type=offline).
    flow = init(gw, "google", scopes=["openid", "email", "offline_access"])
    sent = query(flow["auth_url"])
    assert sent["access_type"] == "offline" and sent["prompt"] == "consent"
    assert sent["login_hint"] == EMAIL
    callback = provider_redirect(flow)
    page = land(gw, callback)
    assert page.status_code == 200, page.text
    assert "Google is connected" in page.text
    assert status(gw, flow)["status"] == "completed"

    first = token(gw, "google", min_valid_seconds=0)
    assert first.status_code == 200, first.text
    again = token(gw, "google", force_refresh=True)
    assert again.status_code == 200, again.text
    assert again.json()["access_token"] != first.json()["access_token"]
    assert userinfo(peer, again.json()["access_token"]).json()["email"] == EMAIL
    connected = gw.get(f"/auth/providers/{EMAIL}").json()["providers"]
    assert [(p["provider"], p["status"]) for p in connected] == [("google", "active")]

    _, refresh_token = stored(gw, "google")
    revoked = gw.delete("/auth/revoke", json={"provider": "google", "user_email": EMAIL})
    assert revoked.status_code == 200 and revoked.json()["provider_revoked"] is True
    dead = peer_post(peer, "/token", "client_secret_post",
                     {"grant_type": "refresh_token", "refresh_token": refresh_token},
                     client=GOOGLE_CLIENT)
    assert dead.json()["error"] == "invalid_grant"


def test_make_try_prints_three_steps_that_work():
    """scripts/try.sh (``make try``): its printed curl commands, run as printed, and a sign-in
    at its server give the user a token."""
    require(node_available())
    require(None if shutil.which("curl") else "curl is not on PATH (the steps use it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        ["bash", str(root / "scripts" / "try.sh")], cwd=root, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "VENV": sys.prefix, "TRY_PORT": str(port), "TRY_EMAIL": EMAIL})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not any(line.lstrip().startswith("More:") for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        commands = re.findall(r"^ *(curl .*?[^\\])$", "".join(lines), re.S | re.M)
        assert [c.split()[4].rsplit("/", 2)[-2:] for c in commands] == [["auth", "init"],
                                                                        ["auth", "token"]]

        def run(command: str) -> dict:
            out = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                                 timeout=30, check=True)
            return json.loads(out.stdout)

        flow = run(commands[0])
        page = requests.get(login_and_consent(flow["auth_url"], EMAIL), timeout=30)
        assert page.status_code == 200 and "Demo OpenID server is connected" in page.text
        assert run(commands[1])["token_type"] == "Bearer"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
