"""Facts about the oidc-provider peer that the gateway's interop tests rely on.

These tests exercise only the peer and the helpers (no gateway code), so a
failure here means the peer or its harness changed, not the gateway.
"""

from __future__ import annotations

import base64
import json
import secrets
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import pytest
import requests

from . import (
    OIDCPeer,
    OIDCPeerError,
    login_and_consent,
    node_available,
    pkce_pair,
    provider_version,
)

_reason = node_available()
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")

REDIRECT_URI = "http://127.0.0.1:9/callback"  # never requested by these tests
BASIC = {
    "client_id": "gw-basic",
    "client_secret": "basic-secret-0123456789",
    "redirect_uris": [REDIRECT_URI],
    "token_endpoint_auth_method": "client_secret_basic",
}
POST = {
    "client_id": "gw-post",
    "client_secret": "post-secret-0123456789",
    "redirect_uris": [REDIRECT_URI],
    "token_endpoint_auth_method": "client_secret_post",
}
ACCESS_TOKEN_TTL = 1234


@pytest.fixture(scope="module")
def peer():
    with OIDCPeer([BASIC, POST], access_token_ttl=ACCESS_TOKEN_TTL) as p:
        yield p


# -- helpers ----------------------------------------------------------------------


def auth_url(peer, client, *, scope="openid email", prompt=None, pkce=True, **extra):
    verifier, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": client["client_id"],
        "redirect_uri": REDIRECT_URI,
        "scope": scope,
        "state": secrets.token_urlsafe(16),
        "nonce": secrets.token_urlsafe(16),
    }
    if pkce:
        params.update(code_challenge=challenge, code_challenge_method="S256")
    if prompt:
        params["prompt"] = prompt
    params.update(extra)
    return peer.url("/auth") + "?" + urlencode(params), params, verifier


def query(url):
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def token_request(peer, client, data):
    data = dict(data)
    auth = None
    if client["token_endpoint_auth_method"] == "client_secret_basic":
        auth = (client["client_id"], client["client_secret"])
    else:
        data.update(client_id=client["client_id"], client_secret=client["client_secret"])
    return requests.post(peer.url("/token"), data=data, auth=auth, timeout=10)


def code_flow(peer, client, login="alice@example.com", **kw):
    url, params, verifier = auth_url(peer, client, **kw)
    redirect = login_and_consent(url, login)
    q = query(redirect)
    assert "code" in q, redirect
    assert q["state"] == params["state"]
    resp = token_request(
        peer,
        client,
        {
            "grant_type": "authorization_code",
            "code": q["code"],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
    )
    assert resp.status_code == 200, resp.text
    return resp.json(), params, q


def jwt_claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def refresh(peer, client, refresh_token):
    return token_request(
        peer, client, {"grant_type": "refresh_token", "refresh_token": refresh_token}
    )


# -- tests ------------------------------------------------------------------------------


def test_version_and_startup(peer):
    assert provider_version().startswith("9.")
    assert peer.issuer.startswith("http://127.0.0.1:")
    assert peer.startup_seconds < 20


def test_discovery(peer):
    d = peer.discovery()
    assert d["issuer"] == peer.issuer
    assert d["authorization_endpoint"] == peer.issuer + "/auth"
    assert d["token_endpoint"] == peer.issuer + "/token"
    assert d["revocation_endpoint"] == peer.issuer + "/token/revocation"
    assert d["userinfo_endpoint"] == peer.issuer + "/me"
    assert d["jwks_uri"] == peer.issuer + "/jwks"
    # RFC 9207: always on in oidc-provider 9 (no feature flag).
    assert d["authorization_response_iss_parameter_supported"] is True
    assert d["code_challenge_methods_supported"] == ["S256"]
    assert {"client_secret_basic", "client_secret_post"} <= set(
        d["token_endpoint_auth_methods_supported"]
    )
    assert {"openid", "email", "profile", "offline_access"} <= set(d["scopes_supported"])
    assert {"authorization_code", "refresh_token"} <= set(d["grant_types_supported"])
    assert "email" in d["claims_supported"]
    jwks = requests.get(d["jwks_uri"], timeout=10).json()
    assert [k["kty"] for k in jwks["keys"]] == ["RSA"]


@pytest.mark.parametrize("client", [BASIC, POST], ids=["client_secret_basic", "client_secret_post"])
def test_code_flow_with_pkce(peer, client):
    tokens, params, q = code_flow(peer, client, login="alice@example.com")
    assert q["iss"] == peer.issuer  # RFC 9207 iss in the redirect
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == ACCESS_TOKEN_TTL
    assert "refresh_token" not in tokens  # no offline_access asked
    claims = jwt_claims(tokens["id_token"])
    assert claims["iss"] == peer.issuer
    assert claims["aud"] == client["client_id"]
    assert claims["sub"] == "alice@example.com"
    assert claims["email"] == "alice@example.com"  # conformIdTokenClaims: false
    assert claims["email_verified"] is True
    assert claims["nonce"] == params["nonce"]

    me = requests.get(
        peer.url("/me"), headers={"Authorization": "Bearer " + tokens["access_token"]}, timeout=10
    )
    assert me.status_code == 200, me.text
    assert me.json() == {
        "sub": "alice@example.com",
        "email": "alice@example.com",
        "email_verified": True,
    }


def test_wrong_client_secret_rejected(peer):
    url, _, verifier = auth_url(peer, BASIC)
    code = query(login_and_consent(url, "bob@example.com"))["code"]
    resp = token_request(
        peer,
        {**BASIC, "client_secret": "wrong"},
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
    )
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"


def test_code_is_single_use(peer):
    url, _, verifier = auth_url(peer, BASIC)
    code = query(login_and_consent(url, "carol@example.com"))["code"]
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }
    assert token_request(peer, BASIC, data).status_code == 200
    again = token_request(peer, BASIC, data)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_offline_access_without_prompt_consent_gives_no_refresh_token(peer):
    tokens, _, _ = code_flow(peer, BASIC, scope="openid email offline_access")
    assert "refresh_token" not in tokens
    assert "offline_access" not in tokens["scope"].split()


@pytest.mark.parametrize("client", [BASIC, POST], ids=["client_secret_basic", "client_secret_post"])
def test_refresh_token_with_offline_access_and_prompt_consent(peer, client):
    tokens, _, _ = code_flow(
        peer,
        client,
        login="dave@example.com",
        scope="openid email offline_access",
        prompt="consent",
    )
    assert tokens["refresh_token"]
    assert "offline_access" in tokens["scope"].split()
    resp = refresh(peer, client, tokens["refresh_token"])
    assert resp.status_code == 200, resp.text
    new = resp.json()
    assert new["access_token"] != tokens["access_token"]
    assert jwt_claims(new["id_token"])["email"] == "dave@example.com"


def test_refresh_rotation_reuse_revokes_grant(peer):
    tokens, _, _ = code_flow(
        peer, BASIC, login="erin@example.com", scope="openid email offline_access", prompt="consent"
    )
    rt1 = tokens["refresh_token"]

    first = refresh(peer, BASIC, rt1)
    assert first.status_code == 200, first.text
    rt2 = first.json()["refresh_token"]
    assert rt2 != rt1  # rotated
    new_at = first.json()["access_token"]
    me = requests.get(peer.url("/me"), headers={"Authorization": "Bearer " + new_at}, timeout=10)
    assert me.status_code == 200

    reuse = refresh(peer, BASIC, rt1)
    assert reuse.status_code == 400
    assert reuse.json()["error"] == "invalid_grant"
    assert reuse.json()["error_description"] == "grant request is invalid"

    dead = refresh(peer, BASIC, rt2)  # the whole grant was revoked
    assert dead.status_code == 400
    assert dead.json()["error"] == "invalid_grant"
    me = requests.get(peer.url("/me"), headers={"Authorization": "Bearer " + new_at}, timeout=10)
    assert me.status_code == 401


def test_no_rotation_when_disabled():
    with OIDCPeer([BASIC], rotate_refresh_token=False) as p:
        tokens, _, _ = code_flow(p, BASIC, scope="openid email offline_access", prompt="consent")
        rt = tokens["refresh_token"]
        for _ in range(2):
            resp = refresh(p, BASIC, rt)
            assert resp.status_code == 200, resp.text
            assert resp.json().get("refresh_token", rt) == rt


def test_pkce_required_at_authorization(peer):
    url, params, _ = auth_url(peer, BASIC, pkce=False)
    redirect = login_and_consent(url, "frank@example.com")  # rejected before any page
    q = query(redirect)
    assert q["error"] == "invalid_request"
    assert "PKCE" in q["error_description"]
    assert q["state"] == params["state"]
    assert q["iss"] == peer.issuer


def test_pkce_verifier_required_at_token(peer):
    url, _, verifier = auth_url(peer, BASIC)
    code = query(login_and_consent(url, "grace@example.com"))["code"]
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
    missing = token_request(peer, BASIC, data)
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid_grant"
    wrong = token_request(peer, BASIC, {**data, "code_verifier": pkce_pair()[0]})
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"


def test_revocation(peer):
    tokens, _, _ = code_flow(peer, BASIC, scope="openid email offline_access", prompt="consent")
    url = peer.url("/token/revocation")
    auth = (BASIC["client_id"], BASIC["client_secret"])

    resp = requests.post(
        url,
        data={"token": tokens["access_token"], "token_type_hint": "access_token"},
        auth=auth,
        timeout=10,
    )
    assert resp.status_code == 200
    me = requests.get(
        peer.url("/me"), headers={"Authorization": "Bearer " + tokens["access_token"]}, timeout=10
    )
    assert me.status_code == 401

    resp = requests.post(
        url,
        data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
        auth=auth,
        timeout=10,
    )
    assert resp.status_code == 200
    after = refresh(peer, BASIC, tokens["refresh_token"])
    assert after.status_code == 400
    assert after.json()["error"] == "invalid_grant"

    # RFC 7009: unknown tokens are answered 200 too.
    resp = requests.post(url, data={"token": "not-a-token"}, auth=auth, timeout=10)
    assert resp.status_code == 200


def test_deny_on_login_page(peer):
    url, params, _ = auth_url(peer, BASIC)
    redirect = login_and_consent(url, "heidi@example.com", deny=True)
    assert redirect.startswith(REDIRECT_URI + "?")
    q = query(redirect)
    assert q["error"] == "access_denied"
    assert q["state"] == params["state"]
    assert q["iss"] == peer.issuer
    assert "code" not in q


def test_deny_on_consent_page_with_existing_session(peer):
    s = requests.Session()
    url, _, _ = auth_url(peer, BASIC)
    assert "code" in query(login_and_consent(url, "ivan@example.com", session=s))
    # Logged in already: the first page is now the consent page.
    url, params, _ = auth_url(peer, BASIC, scope="openid email offline_access", prompt="consent")
    first = s.get(url, allow_redirects=False, timeout=10)
    page = s.get(urljoin(url, first.headers["Location"]), timeout=10)
    assert 'name="prompt" value="consent"' in page.text
    assert "/abort" in page.text
    q = query(login_and_consent(url, "ivan@example.com", deny=True, session=s))
    assert q["error"] == "access_denied"
    assert q["state"] == params["state"]


def test_session_reused_without_prompt(peer):
    """A logged-in session with an existing grant goes straight back to the client."""
    s = requests.Session()
    url, _, _ = auth_url(peer, BASIC)
    login_and_consent(url, "judy@example.com", session=s)
    url, _, _ = auth_url(peer, BASIC)
    first = s.get(url, allow_redirects=False, timeout=10)
    assert first.status_code in (302, 303)
    assert first.headers["Location"].startswith(REDIRECT_URI + "?")
    assert "code" in query(first.headers["Location"])


def test_start_failure_is_reported():
    # client_secret missing for a client_secret_basic client: the server looks
    # every client up before it reports ready, so this fails the start.
    peer = OIDCPeer(
        [
            {
                "client_id": "bad",
                "redirect_uris": [REDIRECT_URI],
                "token_endpoint_auth_method": "client_secret_basic",
            }
        ]
    )
    with pytest.raises(OIDCPeerError) as exc:
        peer.start()
    assert "client_secret is mandatory" in str(exc.value)
    assert peer.issuer is None
