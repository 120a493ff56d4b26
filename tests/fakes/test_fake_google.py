"""Tests of the fake Google provider itself, spoken to over real HTTP with `requests`."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from .google import EMAIL_SCOPE, PROFILE_SCOPE, Account, FakeGoogle, stable_sub

REDIRECT = "http://127.0.0.1:5999/oauth/google/callback"
CLIENT = ("test-client-id", "test-client-secret")


@pytest.fixture
def google():
    with FakeGoogle(redirect_uris=[REDIRECT]) as fake:
        yield fake


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    return verifier, challenge


def authorize(google: FakeGoogle, challenge: str | None = None, **overrides) -> requests.Response:
    params = {
        "client_id": CLIENT[0],
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "openid email",
        "state": "st-" + secrets.token_urlsafe(16),
        "code_challenge": challenge or pkce()[1],
        "code_challenge_method": "S256",
        "access_type": "offline",
        "prompt": "consent",
        "login_hint": "alice@example.com",
    }
    params.update(overrides)
    params = {k: v for k, v in params.items() if v is not None}
    return requests.get(
        google.settings()["GOOGLE_AUTHORIZE_URL"], params=params, allow_redirects=False, timeout=5
    )


def callback_params(resp: requests.Response) -> dict[str, str]:
    assert resp.status_code == 302, resp.text
    loc = urlsplit(resp.headers["Location"])
    assert f"{loc.scheme}://{loc.netloc}{loc.path}" == REDIRECT
    return {k: v[0] for k, v in parse_qs(loc.query).items()}


def token(google: FakeGoogle, auth=None, **form) -> requests.Response:
    if auth is None:
        form.setdefault("client_id", CLIENT[0])
        form.setdefault("client_secret", CLIENT[1])
    return requests.post(google.settings()["GOOGLE_TOKEN_URL"], data=form, auth=auth, timeout=10)


def sign_in(google: FakeGoogle, **overrides) -> dict:
    """The whole flow: authorize, then exchange the code; returns the token response JSON."""
    verifier, challenge = pkce()
    cb = callback_params(authorize(google, challenge, **overrides))
    resp = token(
        google,
        grant_type="authorization_code",
        code=cb["code"],
        redirect_uri=REDIRECT,
        code_verifier=verifier,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def refresh(google: FakeGoogle, refresh_token: str, **extra) -> requests.Response:
    return token(google, grant_type="refresh_token", refresh_token=refresh_token, **extra)


def userinfo(google: FakeGoogle, access: str) -> requests.Response:
    return requests.get(
        google.settings()["GOOGLE_USERINFO_URL"],
        headers={"Authorization": f"Bearer {access}"},
        timeout=5,
    )


def assert_error(
    resp: requests.Response, status: int, error: str, description: str | None = None
) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    body = resp.json()
    assert body["error"] == error
    if description is not None:
        assert body["error_description"] == description


# ---- discovery, settings, keys -----------------------------------------------------------


def test_settings_and_discovery(google):
    s = google.settings()
    assert google.base_url.startswith("http://127.0.0.1:")
    assert s["GOOGLE_ISSUER"] == google.issuer == google.base_url
    assert set(s) == {
        "GOOGLE_CLIENT_ID",
        "GOOGLE_CLIENT_SECRET",
        "GOOGLE_AUTHORIZE_URL",
        "GOOGLE_TOKEN_URL",
        "GOOGLE_REVOKE_URL",
        "GOOGLE_USERINFO_URL",
        "GOOGLE_JWKS_URL",
        "GOOGLE_ISSUER",
    }
    doc = requests.get(google.base_url + "/.well-known/openid-configuration", timeout=5)
    assert doc.headers["Content-Type"] == "application/json; charset=utf-8"
    d = doc.json()
    assert d["issuer"] == google.issuer
    assert d["authorization_endpoint"] == s["GOOGLE_AUTHORIZE_URL"]
    assert d["token_endpoint"] == s["GOOGLE_TOKEN_URL"]
    assert d["jwks_uri"] == s["GOOGLE_JWKS_URL"]
    assert d["revocation_endpoint"] == s["GOOGLE_REVOKE_URL"]
    assert d["userinfo_endpoint"] == s["GOOGLE_USERINFO_URL"]
    assert d["code_challenge_methods_supported"] == ["S256"]


def test_custom_issuer():
    with FakeGoogle(issuer="https://accounts.google.com") as fake:
        assert fake.settings()["GOOGLE_ISSUER"] == "https://accounts.google.com"
        cb = callback_params(authorize(fake, redirect_uri=REDIRECT))
        assert cb["iss"] == "https://accounts.google.com"


def test_jwks_cache_control(google):
    resp = requests.get(google.settings()["GOOGLE_JWKS_URL"], timeout=5)
    assert resp.headers["Cache-Control"] == "public, max-age=3600"
    (key,) = resp.json()["keys"]
    assert key["kty"] == "RSA" and key["kid"] and "d" not in key


# ---- authorize -----------------------------------------------------------------------------


def test_authorize_redirects_like_consenting_person(google):
    verifier, challenge = pkce()
    resp = authorize(google, challenge, scope="openid email profile", state="s1")
    cb = callback_params(resp)
    assert cb["state"] == "s1"
    assert cb["code"].startswith("4/")
    assert cb["scope"].split() == ["openid", EMAIL_SCOPE, PROFILE_SCOPE]
    assert cb["authuser"] == "0" and cb["prompt"] == "consent"
    assert cb["iss"] == google.issuer
    assert google.last_authorize_params["code_challenge"] == challenge
    assert google.last_authorize_params["login_hint"] == "alice@example.com"
    assert ("GET", "/o/oauth2/v2/auth") in google.requests


@pytest.mark.parametrize(
    "override, error",
    [
        ({"client_id": "someone-else"}, "invalid_client"),
        ({"redirect_uri": REDIRECT + "/"}, "redirect_uri_mismatch"),
        ({"redirect_uri": REDIRECT.upper()}, "redirect_uri_mismatch"),
        ({"redirect_uri": "https://evil.example/cb"}, "redirect_uri_mismatch"),
        ({"redirect_uri": None}, "redirect_uri_mismatch"),
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"state": None}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
    ],
)
def test_authorize_errors_never_redirect(google, override, error):
    resp = authorize(google, **override)
    assert resp.status_code == 400
    assert "Location" not in resp.headers
    assert error in resp.text


def test_any_redirect_uri_when_none_registered():
    with FakeGoogle() as fake:
        assert callback_params(authorize(fake))["code"]


def test_deny_next_and_callback_iss(google):
    google.deny_next = True
    cb = callback_params(authorize(google, state="s2"))
    assert cb == {"error": "access_denied", "state": "s2", "iss": google.issuer}
    assert "code" in callback_params(authorize(google))  # consumed
    google.callback_iss = ""
    assert "iss" not in callback_params(authorize(google))
    google.callback_iss = "https://attacker.example"
    assert callback_params(authorize(google))["iss"] == "https://attacker.example"


def test_accounts_and_granted_scopes(google):
    first = jwt.decode(
        sign_in(google)["id_token"],
        KeySet.import_key_set(requests.get(google.settings()["GOOGLE_JWKS_URL"], timeout=5).json()),
    ).claims
    assert first["email"] == "alice@example.com" and first["sub"] == stable_sub("alice@example.com")
    google.next_account = Account(
        email="bob@corp.example", sub="42", email_verified=False, hd="corp.example"
    )
    tokens = sign_in(google)
    info = userinfo(google, tokens["access_token"]).json()
    assert info == {
        "sub": "42",
        "email": "bob@corp.example",
        "email_verified": False,
        "name": "Test User",
        "hd": "corp.example",
    }
    assert google.next_account is None
    google.next_granted_scopes = ["openid"]  # granular consent: fewer than asked
    assert sign_in(google, scope="openid email")["scope"] == "openid"
    both = sign_in(
        google, scope="https://www.googleapis.com/auth/drive.file", include_granted_scopes="true"
    )
    assert set(both["scope"].split()) == {
        "openid",
        EMAIL_SCOPE,
        "https://www.googleapis.com/auth/drive.file",
    }


# ---- code exchange ------------------------------------------------------------------------


def test_code_exchange_with_pkce_and_id_token(google):
    verifier, challenge = pkce()
    cb = callback_params(authorize(google, challenge, scope="openid email profile", nonce="n-1"))
    resp = token(
        google,
        grant_type="authorization_code",
        code=cb["code"],
        redirect_uri=REDIRECT,
        code_verifier=verifier,
    )
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    body = resp.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["scope"].split() == ["openid", EMAIL_SCOPE, PROFILE_SCOPE]
    assert google.token_is_live(body["access_token"]) and google.token_is_live(
        body["refresh_token"]
    )
    assert google.exchange_count == 1

    jwks = requests.get(google.settings()["GOOGLE_JWKS_URL"], timeout=5).json()
    decoded = jwt.decode(body["id_token"], KeySet.import_key_set(jwks), algorithms=["RS256"])
    assert decoded.header["kid"] == jwks["keys"][0]["kid"]
    claims = decoded.claims
    assert claims["iss"] == google.issuer
    assert claims["aud"] == claims["azp"] == CLIENT[0]
    assert claims["email"] == "alice@example.com" and claims["email_verified"] is True
    assert claims["nonce"] == "n-1" and claims["name"] == "Test User"
    assert claims["exp"] - claims["iat"] == 3600
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": google.issuer}, aud={"essential": True, "value": CLIENT[0]}
    ).validate(claims)


def test_exchange_without_offline_or_openid(google):
    body = sign_in(google, access_type=None, scope="https://www.googleapis.com/auth/drive.file")
    assert "refresh_token" not in body and "id_token" not in body
    assert body["scope"] == "https://www.googleapis.com/auth/drive.file"
    assert "id_token" in sign_in(google, scope="email")


def test_http_basic_client_auth(google):
    verifier, challenge = pkce()
    cb = callback_params(authorize(google, challenge))
    resp = token(
        google,
        auth=CLIENT,
        grant_type="authorization_code",
        code=cb["code"],
        redirect_uri=REDIRECT,
        code_verifier=verifier,
    )
    assert resp.status_code == 200
    assert refresh(google, resp.json()["refresh_token"]).status_code == 200
    assert (
        token(
            google,
            auth=CLIENT,
            grant_type="refresh_token",
            refresh_token=resp.json()["refresh_token"],
        ).status_code
        == 200
    )


@pytest.mark.parametrize(
    "creds",
    [
        {"client_secret": "wrong"},
        {"client_id": "other"},
        {"client_id": "", "client_secret": ""},
        {"auth": ("x", "y")},
    ],
)
def test_bad_client_auth(google, creds):
    verifier, challenge = pkce()
    cb = callback_params(authorize(google, challenge))
    resp = token(
        google,
        grant_type="authorization_code",
        code=cb["code"],
        redirect_uri=REDIRECT,
        code_verifier=verifier,
        **creds,
    )
    assert_error(resp, 401, "invalid_client", "The OAuth client was not found.")


def test_wrong_missing_verifier_and_code_reuse(google):
    verifier, challenge = pkce()
    code = callback_params(authorize(google, challenge))["code"]
    base = dict(grant_type="authorization_code", code=code, redirect_uri=REDIRECT)
    assert_error(token(google, **base), 400, "invalid_grant", "Missing code verifier.")
    assert_error(
        token(google, **base, code_verifier=pkce()[0]),
        400,
        "invalid_grant",
        "Invalid code verifier.",
    )
    assert_error(
        token(google, **base, code_verifier=challenge),
        400,
        "invalid_grant",
        "Invalid code verifier.",
    )
    assert_error(
        token(google, **{**base, "redirect_uri": REDIRECT + "/"}, code_verifier=verifier),
        400,
        "redirect_uri_mismatch",
    )
    assert token(google, **base, code_verifier=verifier).status_code == 200
    assert_error(
        token(google, **base, code_verifier=verifier),
        400,
        "invalid_grant",
        "Code was already redeemed.",
    )
    assert_error(
        token(google, **{**base, "code": "4/nope"}, code_verifier=verifier),
        400,
        "invalid_grant",
        "Malformed auth code.",
    )
    assert google.exchange_count == 7


def test_expired_code(google):
    google.code_ttl = 0.05
    verifier, challenge = pkce()
    code = callback_params(authorize(google, challenge))["code"]
    time.sleep(0.1)
    assert_error(
        token(
            google,
            grant_type="authorization_code",
            code=code,
            redirect_uri=REDIRECT,
            code_verifier=verifier,
        ),
        400,
        "invalid_grant",
        "Malformed auth code.",
    )


def test_bad_requests_at_token_endpoint(google):
    assert_error(token(google, grant_type="password"), 400, "unsupported_grant_type")
    resp = requests.post(
        google.settings()["GOOGLE_TOKEN_URL"], json={"grant_type": "refresh_token"}, timeout=5
    )
    assert_error(resp, 400, "invalid_request")
    resp = requests.post(
        google.settings()["GOOGLE_TOKEN_URL"],
        timeout=5,
        data=[("grant_type", "refresh_token"), ("grant_type", "authorization_code")],
    )
    assert_error(resp, 400, "invalid_request")


# ---- refresh --------------------------------------------------------------------------------


def test_refresh(google):
    tokens = sign_in(google)
    resp = refresh(google, tokens["refresh_token"])
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {"access_token", "expires_in", "scope", "token_type"}
    assert body["access_token"] != tokens["access_token"]
    assert userinfo(google, body["access_token"]).status_code == 200
    assert google.token_is_live(tokens["refresh_token"])
    assert google.refresh_count == 1 and google.refresh_requests_with_scope == 0
    assert refresh(google, tokens["refresh_token"], scope="openid").status_code == 200
    assert google.refresh_requests_with_scope == 1
    assert_error(
        refresh(google, "1//unknown"), 400, "invalid_grant", "Token has been expired or revoked."
    )
    assert_error(
        refresh(google, tokens["refresh_token"], client_secret="bad"), 401, "invalid_client"
    )
    assert google.refresh_count == 4


def test_rotation_and_reuse_revokes_grant(google):
    google.rotate_refresh_tokens = True
    tokens = sign_in(google)
    r1 = tokens["refresh_token"]
    first = refresh(google, r1).json()
    r2 = first["refresh_token"]
    assert r2 != r1
    assert not google.token_is_live(r1) and google.token_is_live(r2)
    second = refresh(google, r2).json()
    r3 = second["refresh_token"]
    # replaying r1 kills the whole grant: r3 and every access token die
    assert_error(refresh(google, r1), 400, "invalid_grant", "Token has been expired or revoked.")
    for tok in (r3, tokens["access_token"], first["access_token"], second["access_token"]):
        assert not google.token_is_live(tok)
    assert_error(refresh(google, r3), 400, "invalid_grant")
    assert userinfo(google, second["access_token"]).status_code == 401


def test_racing_refreshes_with_rotation_kill_the_grant(google):
    google.rotate_refresh_tokens = True
    google.refresh_latency = 0.2
    rt = sign_in(google)["refresh_token"]
    results: list[requests.Response] = []
    threads = [
        threading.Thread(target=lambda: results.append(refresh(google, rt))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in results) == [200, 400]
    new_rt = next(r for r in results if r.status_code == 200).json()["refresh_token"]
    assert not google.token_is_live(new_rt)
    assert google.refresh_count == 2


def test_fail_next(google):
    tokens = sign_in(google)
    rt = tokens["refresh_token"]
    google.fail_next(400, "invalid_grant")
    assert_error(refresh(google, rt), 400, "invalid_grant", "Token has been expired or revoked.")
    assert refresh(google, rt).status_code == 200  # injected failure does not kill the grant

    google.fail_next(500, times=2)
    for _ in range(2):
        resp = refresh(google, rt)
        assert resp.status_code == 500 and resp.headers["Content-Type"].startswith("text/html")
    assert refresh(google, rt).status_code == 200

    google.fail_next(429, None, body='{"error": "rate_limit_exceeded"}')
    resp = refresh(google, rt)
    assert resp.status_code == 429 and resp.json() == {"error": "rate_limit_exceeded"}
    google.fail_next(401, "invalid_client")
    assert_error(refresh(google, rt), 401, "invalid_client")

    google.fail_next(500)  # only refresh grants are affected
    sign_in(google)
    assert refresh(google, rt).status_code == 500
    assert google.refresh_count == 8


def test_hang_next(google):
    rt = sign_in(google)["refresh_token"]
    google.hang_next(0.5)
    start = time.monotonic()
    assert refresh(google, rt).status_code == 200
    assert time.monotonic() - start >= 0.5
    google.hang_next(2)
    with pytest.raises(requests.Timeout):
        requests.post(
            google.settings()["GOOGLE_TOKEN_URL"],
            timeout=0.3,
            data={
                "grant_type": "refresh_token",
                "refresh_token": rt,
                "client_id": CLIENT[0],
                "client_secret": CLIENT[1],
            },
        )
    start = time.monotonic()
    assert refresh(google, rt).status_code == 200
    assert time.monotonic() - start < 0.5


# ---- revoke, userinfo ---------------------------------------------------------------------


def revoke(google: FakeGoogle, tok: str) -> requests.Response:
    return requests.post(google.settings()["GOOGLE_REVOKE_URL"], data={"token": tok}, timeout=5)


@pytest.mark.parametrize("which", ["access_token", "refresh_token"])
def test_revoke_kills_whole_grant(google, which):
    tokens = sign_in(google)
    other = sign_in(google)
    resp = revoke(google, tokens[which])
    assert resp.status_code == 200 and resp.json() == {}
    assert not google.token_is_live(tokens["access_token"])
    assert not google.token_is_live(tokens["refresh_token"])
    assert_error(refresh(google, tokens["refresh_token"]), 400, "invalid_grant")
    assert userinfo(google, tokens["access_token"]).status_code == 401
    assert google.token_is_live(other["refresh_token"])  # other grants untouched
    assert_error(revoke(google, tokens[which]), 400, "invalid_token", "Token expired or revoked")
    assert_error(revoke(google, "ya29.unknown"), 400, "invalid_token")
    assert google.revoked == [tokens[which], tokens[which], "ya29.unknown"]


def test_held_revocations_wait_for_the_gate(google):
    tokens = sign_in(google)
    gate = google.hold_revocations()
    answer: dict = {}
    caller = threading.Thread(
        target=lambda: answer.update(response=revoke(google, tokens["refresh_token"])))
    caller.start()
    google.wait_for_revocation(1)
    caller.join(timeout=0.2)
    assert "response" not in answer and google.token_is_live(tokens["refresh_token"])
    gate.set()
    caller.join(timeout=5)
    assert answer["response"].status_code == 200
    assert not google.token_is_live(tokens["refresh_token"])


def test_same_grant(google):
    one, two = sign_in(google), sign_in(google)
    assert google.same_grant(one["access_token"], one["refresh_token"])
    assert not google.same_grant(one["access_token"], two["refresh_token"])


def test_userinfo(google):
    tokens = sign_in(google)
    resp = userinfo(google, tokens["access_token"])
    assert resp.status_code == 200
    assert resp.json() == {
        "sub": stable_sub("alice@example.com"),
        "email": "alice@example.com",
        "email_verified": True,
        "name": "Test User",
    }
    assert_error(userinfo(google, "ya29.bogus"), 401, "invalid_request")
    assert_error(
        requests.get(google.settings()["GOOGLE_USERINFO_URL"], timeout=5), 401, "invalid_request"
    )


def test_expire_access_tokens_and_revoke_grant_for(google):
    tokens = sign_in(google)
    google.expire_access_tokens()
    assert userinfo(google, tokens["access_token"]).status_code == 401
    fresh = refresh(google, tokens["refresh_token"]).json()["access_token"]
    assert userinfo(google, fresh).status_code == 200
    assert google.revoke_grant_for("ALICE@example.com") == 1
    assert_error(
        refresh(google, tokens["refresh_token"]),
        400,
        "invalid_grant",
        "Token has been expired or revoked.",
    )
    assert userinfo(google, fresh).status_code == 401


def test_access_token_ttl():
    with FakeGoogle(access_token_ttl=1) as fake:
        tokens = sign_in(fake)
        assert tokens["expires_in"] == 1
        time.sleep(1.1)
        assert userinfo(fake, tokens["access_token"]).status_code == 401


# ---- server behaviour -----------------------------------------------------------------------


def test_key_rotation_keeps_old_key_in_jwks(google):
    old_token = sign_in(google)["id_token"]
    google.rotate_signing_key()
    jwks = KeySet.import_key_set(
        requests.get(google.settings()["GOOGLE_JWKS_URL"], timeout=5).json()
    )
    assert len(jwks.keys) == 2
    jwt.decode(old_token, jwks)
    jwt.decode(sign_in(google)["id_token"], jwks)


def test_two_instances_and_quiet_server(capfd):
    with FakeGoogle() as a, FakeGoogle() as b:
        assert a.base_url != b.base_url
        tokens = sign_in(a)
        assert userinfo(b, tokens["access_token"]).status_code == 401
        requests.get(a.base_url + "/nope", timeout=5)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert ("GET", "/nope") in a.requests


def test_stop_is_clean():
    fake = FakeGoogle().start()
    url = fake.settings()["GOOGLE_JWKS_URL"]
    assert requests.get(url, timeout=5).status_code == 200
    fake.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=2)
