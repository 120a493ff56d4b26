"""A fake Google OAuth 2.0 / OpenID Connect provider for tests.

It is a real HTTP server on 127.0.0.1 (a free port), served by a daemon thread, so any
HTTP client in any process can talk to it; nothing is patched.  All state sits behind one
lock, so concurrent gateway workers can hit it at once.  Behaviour follows
/work/shared/PROVIDERS.md: PKCE S256 is mandatory, redirect URIs match exactly, codes are
single use, refresh tokens may rotate (reuse of a rotated one kills the whole grant), and
revoking either token of a grant revokes both.

    with FakeGoogle(redirect_uris=["http://127.0.0.1:5000/oauth/callback"]) as google:
        app.config.update(google.settings())
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote_plus, urlencode

from joserfc import jwt
from joserfc.jwk import RSAKey

AUTHORIZE_PATH = "/o/oauth2/v2/auth"
TOKEN_PATH = "/token"
REVOKE_PATH = "/revoke"
USERINFO_PATH = "/v1/userinfo"
DRIVE_ABOUT_PATH = "/drive/v3/about"
#: Either lets a token read Drive's "about" (the user and the storage quota).
DRIVE_READ_SCOPES = {"https://www.googleapis.com/auth/drive",
                     "https://www.googleapis.com/auth/drive.readonly"}
JWKS_PATH = "/oauth2/v3/certs"
DISCOVERY_PATH = "/.well-known/openid-configuration"

EMAIL_SCOPE = "https://www.googleapis.com/auth/userinfo.email"
PROFILE_SCOPE = "https://www.googleapis.com/auth/userinfo.profile"
SCOPE_ALIASES = {"email": EMAIL_SCOPE, "profile": PROFILE_SCOPE}
OIDC_SCOPES = {"openid", EMAIL_SCOPE, PROFILE_SCOPE}
JSON_TYPE = "application/json; charset=utf-8"
REVOKED_GRANT = "Token has been expired or revoked."
_PKCE_RE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


@dataclass
class Account:
    """The Google account the simulated person signs in with."""

    email: str
    sub: str
    email_verified: bool = True
    name: str = "Test User"
    hd: str | None = None  # extension: hosted domain claim (Workspace accounts)


def stable_sub(email: str) -> str:
    """A stable, Google-looking 21-digit subject id derived from the email."""
    digest = int(hashlib.sha256(email.strip().lower().encode()).hexdigest(), 16)
    return "1" + str(digest % 10**20).zfill(20)


def s256(verifier: str) -> str:
    """RFC 7636 S256 code challenge of a verifier."""
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest())
        .rstrip(b"=")
        .decode()
    )


def map_scopes(scope: str) -> list[str]:
    """Map scopes like Google (email/profile -> userinfo URLs), keeping order, no duplicates."""
    out: list[str] = []
    for s in scope.split():
        s = SCOPE_ALIASES.get(s, s)
        if s not in out:
            out.append(s)
    return out


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    code_challenge: str
    scopes: list[str]
    account: Account
    offline: bool
    nonce: str | None
    expires_at: float
    used: bool = False


@dataclass
class _Grant:
    client_id: str
    account: Account
    scopes: list[str]
    access: dict[str, float] = field(default_factory=dict)  # access token -> expiry (epoch)
    refresh: str | None = None  # the live refresh token
    used_refresh: set[str] = field(default_factory=set)  # rotated-away refresh tokens
    revoked: bool = False


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)


def _json(status: int, payload: Any, **headers: str) -> _Response:
    return _Response(status, json.dumps(payload).encode(), JSON_TYPE, dict(headers))


def _oauth_error(status: int, error: str, description: str) -> _Response:
    return _json(
        status, {"error": error, "error_description": description}, **{"Cache-Control": "no-store"}
    )


def _error_page(error: str, detail: str) -> _Response:
    """Google shows an HTML error page (never a redirect) for client/redirect problems."""
    page = (
        f"<!doctype html><title>Error 400: {html.escape(error)}</title>"
        f"<h1>Access blocked: authorization error</h1><p>Error 400: {html.escape(error)}</p>"
        f"<p>{html.escape(detail)}</p>"
    )
    return _Response(400, page.encode(), "text/html; charset=utf-8")


class FakeGoogle:
    """Fake Google OAuth/OIDC server; see the module docstring."""

    def __init__(
        self,
        client_id: str = "test-client-id",
        client_secret: str = "test-client-secret",
        redirect_uris: Iterable[str] = (),
        access_token_ttl: int = 3600,
        issuer: str | None = None,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris = list(redirect_uris)
        self.access_token_ttl = access_token_ttl
        self._issuer = issuer
        self.code_ttl: float = 600.0
        # knobs set by tests
        self.next_account: Account | None = None
        self.next_granted_scopes: list[str] | None = (
            None  # extension: granular consent for next authorize
        )
        self.deny_next = False
        self.callback_iss: str | None = None
        self.rotate_refresh_tokens = False
        self.refresh_latency = 0.0
        # records read by tests
        self.refresh_count = 0
        self.refreshes_in_flight = 0
        self.most_refreshes_in_flight = 0  # at once: whether callers' refreshes overlapped
        self.refresh_requests_with_scope = 0
        self.exchange_count = 0
        self.revoked: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.last_authorize_params: dict[str, str] = {}
        # internal state
        self._lock = threading.RLock()
        self._codes: dict[str, _Code] = {}
        self._grants: list[_Grant] = []
        self._by_access: dict[str, _Grant] = {}
        self._by_refresh: dict[str, _Grant] = {}
        self._granted: dict[tuple[str, str], list[str]] = {}  # (client_id, sub) -> scopes so far
        self._failures: deque[tuple[int, str | None, str | None]] = deque()
        self._hangs: deque[float] = deque()
        self._revocation_gate: threading.Event | None = None
        self._keys: list[RSAKey] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # ---- lifecycle -------------------------------------------------------------------
    def start(self) -> FakeGoogle:
        """Generate the signing key and serve on a free loopback port."""
        if self._server is not None:
            raise RuntimeError("FakeGoogle already started")
        self._stopping.clear()
        self.rotate_signing_key(keep_old=False)
        ThreadingHTTPServer.request_queue_size = 128  # storms open more than 5 connections at once
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.fake = self  # type: ignore[attr-defined]
        server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-google",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (hanging requests are woken up)."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeGoogle:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeGoogle not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def issuer(self) -> str:
        return self._issuer if self._issuer is not None else self.base_url

    def settings(self) -> dict[str, str]:
        """Gateway configuration pointing at this fake (the redirect URI is up to the test)."""
        b = self.base_url
        return {
            "GOOGLE_CLIENT_ID": self.client_id,
            "GOOGLE_CLIENT_SECRET": self.client_secret,
            "GOOGLE_AUTHORIZE_URL": b + AUTHORIZE_PATH,
            "GOOGLE_TOKEN_URL": b + TOKEN_PATH,
            "GOOGLE_REVOKE_URL": b + REVOKE_PATH,
            "GOOGLE_USERINFO_URL": b + USERINFO_PATH,
            "GOOGLE_JWKS_URL": b + JWKS_PATH,
            "GOOGLE_ISSUER": self.issuer,
        }

    # ---- test controls ---------------------------------------------------------------
    def fail_next(
        self, status: int, error: str | None = None, times: int = 1, body: str | None = None
    ) -> None:
        """The next `times` refresh grants answer `status` with an OAuth error (or raw `body`)."""
        with self._lock:
            self._failures.extend([(status, error, body)] * times)

    def hang_next(self, seconds: float, times: int = 1) -> None:
        """The next `times` refresh grants sleep `seconds` before being answered."""
        with self._lock:
            self._hangs.extend([seconds] * times)

    def hold_revocations(self) -> threading.Event:
        """Revocation requests wait at the provider until the returned event is set (or the
        fake stops): the gateway's revoke is then in flight, holding whatever it holds."""
        gate = threading.Event()
        with self._lock:
            self._revocation_gate = gate
        return gate

    def wait_for_revocation(self, count: int, timeout: float = 5.0) -> None:
        """Wait until the ``count``-th revocation request has arrived."""
        deadline = time.monotonic() + timeout
        while len(self.revoked) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"revocation {count} never reached the provider")
            time.sleep(0.005)

    def same_grant(self, access_token: str, refresh_token: str) -> bool:
        """Whether the two tokens were issued for one grant (one code exchange)."""
        with self._lock:
            grant = self._by_access.get(access_token)
            return grant is not None and grant is self._by_refresh.get(refresh_token)

    def revoke_grant_for(self, email: str) -> int:
        """The user removes the app's access in their Google account; returns grants revoked."""
        with self._lock:
            hit = [
                g
                for g in self._grants
                if not g.revoked and g.account.email.lower() == email.lower()
            ]
            for g in hit:
                g.revoked = True
            return len(hit)

    def expire_access_tokens(self) -> None:
        """Every access token issued so far stops working at userinfo."""
        with self._lock:
            for g in self._grants:
                for tok in g.access:
                    g.access[tok] = 0.0

    def rotate_signing_key(self, keep_old: bool = True) -> str:
        """Extension: new signing key (the old one stays in the JWKS if keep_old); returns kid."""
        key = RSAKey.generate_key(
            2048,
            parameters={"kid": secrets.token_hex(8), "use": "sig", "alg": "RS256"},
            private=True,
        )
        with self._lock:
            self._keys = [key] + (self._keys[:1] if keep_old else [])
        return key.kid  # type: ignore[return-value]

    def wait_for_refresh(self, count: int, timeout: float = 5.0) -> None:
        """Wait until the ``count``-th refresh request has arrived: a caller is then at the
        provider (held there by ``refresh_latency`` or ``hang_next``)."""
        deadline = time.monotonic() + timeout
        while self.refresh_count < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"refresh {count} never reached the provider")
            time.sleep(0.005)

    def token_is_live(self, token: str) -> bool:
        """True for an unexpired access token or the current refresh token of a live grant."""
        with self._lock:
            g = self._by_access.get(token)
            if g is not None:
                return not g.revoked and g.access[token] > time.time()
            g = self._by_refresh.get(token)
            return g is not None and not g.revoked and g.refresh == token

    # ---- helpers ---------------------------------------------------------------------
    def _record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def _issue_access(self, g: _Grant) -> str:
        tok = "ya29." + secrets.token_urlsafe(32)
        g.access[tok] = time.time() + self.access_token_ttl
        self._by_access[tok] = g
        return tok

    def _issue_refresh(self, g: _Grant) -> str:
        tok = "1//" + secrets.token_urlsafe(32)
        if g.refresh is not None:
            g.used_refresh.add(g.refresh)
        g.refresh = tok
        self._by_refresh[tok] = g
        return tok

    def _id_token(self, g: _Grant, nonce: str | None) -> str:
        now = int(time.time())
        a = g.account
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": g.client_id,
            "azp": g.client_id,
            "sub": a.sub,
            "email": a.email,
            "email_verified": a.email_verified,
            "name": a.name,
            "iat": now,
            "exp": now + 3600,
        }
        if a.hd:
            claims["hd"] = a.hd
        if nonce:
            claims["nonce"] = nonce
        key = self._keys[0]
        return jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "JWT"}, claims, key)

    def _client_auth(self, form: dict[str, str], headers: Any) -> bool:
        """client_secret_post or client_secret_basic (RFC 6749 §2.3.1 form-encoding tolerated)."""
        auth = headers.get("Authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                cid, _, secret = base64.b64decode(auth[6:].strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            cid, secret = unquote_plus(cid), unquote_plus(secret)
            if form.get("client_id", cid) != cid:
                return False
        else:
            cid, secret = form.get("client_id", ""), form.get("client_secret", "")
        return secrets.compare_digest(cid, self.client_id) and secrets.compare_digest(
            secret, self.client_secret
        )

    # ---- endpoints ---------------------------------------------------------------------
    def _authorize(self, q: dict[str, str]) -> _Response:
        with self._lock:
            self.last_authorize_params = dict(q)
            if q.get("client_id") != self.client_id:
                return _error_page("invalid_client", "The OAuth client was not found.")
            redirect_uri = q.get("redirect_uri", "")
            if not redirect_uri or (self.redirect_uris and redirect_uri not in self.redirect_uris):
                return _error_page(
                    "redirect_uri_mismatch", "redirect_uri does not match a registered URI."
                )
            if q.get("response_type") != "code":
                return _error_page("unsupported_response_type", "response_type must be code.")
            if not q.get("scope"):
                return _error_page("invalid_request", "Missing required parameter: scope")
            if not q.get("state"):
                return _error_page("invalid_request", "Missing required parameter: state")
            if q.get("code_challenge_method") != "S256" or not _PKCE_RE.match(
                q.get("code_challenge", "")
            ):
                return _error_page(
                    "invalid_request", "code_challenge with code_challenge_method=S256 required."
                )
            if q.get("access_type", "online") not in ("online", "offline"):
                return _error_page("invalid_request", "Invalid access_type.")
            params: dict[str, str] = {}
            if self.deny_next:
                self.deny_next = False
                params = {"error": "access_denied", "state": q["state"]}
            else:
                account = self.next_account or Account(
                    email=q.get("login_hint") or "user@example.com",
                    sub=stable_sub(q.get("login_hint") or "user@example.com"),
                )
                self.next_account = None
                scopes = map_scopes(q["scope"])
                if self.next_granted_scopes is not None:
                    scopes = map_scopes(" ".join(self.next_granted_scopes))
                    self.next_granted_scopes = None
                before = self._granted.get((self.client_id, account.sub), [])
                union = before + [s for s in scopes if s not in before]
                if q.get("include_granted_scopes") == "true":  # incremental authorization
                    scopes = union
                self._granted[(self.client_id, account.sub)] = union
                code = "4/" + secrets.token_urlsafe(32)
                self._codes[code] = _Code(
                    self.client_id,
                    redirect_uri,
                    q["code_challenge"],
                    scopes,
                    account,
                    q.get("access_type") == "offline",
                    q.get("nonce"),
                    time.time() + self.code_ttl,
                )
                params = {
                    "code": code,
                    "state": q["state"],
                    "scope": " ".join(scopes),
                    "authuser": "0",
                    "prompt": "consent",
                }
            iss = self.issuer if self.callback_iss is None else self.callback_iss
            if iss:
                params["iss"] = iss
        sep = "&" if "?" in redirect_uri else "?"
        location = redirect_uri + sep + urlencode(params, quote_via=quote)
        return _Response(302, b"", "text/html; charset=utf-8", {"Location": location})

    def _token(self, form: dict[str, str], headers: Any) -> _Response:
        grant_type = form.get("grant_type", "")
        if grant_type == "authorization_code":
            return self._exchange(form, headers)
        if grant_type == "refresh_token":
            return self._refresh(form, headers)
        return _oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    def _exchange(self, form: dict[str, str], headers: Any) -> _Response:
        with self._lock:
            self.exchange_count += 1
            if not self._client_auth(form, headers):
                return _oauth_error(401, "invalid_client", "The OAuth client was not found.")
            c = self._codes.get(form.get("code", ""))
            if c is None or c.expires_at < time.time() or c.client_id != self.client_id:
                return _oauth_error(400, "invalid_grant", "Malformed auth code.")
            if c.used:
                return _oauth_error(400, "invalid_grant", "Code was already redeemed.")
            if form.get("redirect_uri") != c.redirect_uri:
                return _oauth_error(400, "redirect_uri_mismatch", "Bad Request")
            verifier = form.get("code_verifier")
            if not verifier:
                return _oauth_error(400, "invalid_grant", "Missing code verifier.")
            if not _PKCE_RE.match(verifier) or not secrets.compare_digest(
                s256(verifier), c.code_challenge
            ):
                return _oauth_error(400, "invalid_grant", "Invalid code verifier.")
            c.used = True
            g = _Grant(c.client_id, c.account, list(c.scopes))
            self._grants.append(g)
            body: dict[str, Any] = {
                "access_token": self._issue_access(g),
                "expires_in": self.access_token_ttl,
                "token_type": "Bearer",
                "scope": " ".join(g.scopes),
            }
            if c.offline:
                body["refresh_token"] = self._issue_refresh(g)
            if OIDC_SCOPES & set(g.scopes):
                body["id_token"] = self._id_token(g, c.nonce)
        return _json(200, body, **{"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _refresh(self, form: dict[str, str], headers: Any) -> _Response:
        with self._lock:
            self.refresh_count += 1
            if "scope" in form:
                self.refresh_requests_with_scope += 1
            failure = self._failures.popleft() if self._failures else None
            delay = (self._hangs.popleft() if self._hangs else 0.0) + self.refresh_latency
            self.refreshes_in_flight += 1
            self.most_refreshes_in_flight = max(self.most_refreshes_in_flight,
                                                self.refreshes_in_flight)
        try:
            if delay > 0:
                self._stopping.wait(delay)
        finally:
            with self._lock:
                self.refreshes_in_flight -= 1
        if failure is not None:
            status, error, raw = failure
            if raw is not None:
                ctype = JSON_TYPE if raw.lstrip()[:1] in ("{", "[") else "text/plain; charset=utf-8"
                return _Response(status, raw.encode(), ctype)
            if error is None:
                page = f"<html><body>Error {status}</body></html>".encode()
                return _Response(status, page, "text/html; charset=utf-8")
            desc = {
                "invalid_grant": REVOKED_GRANT,
                "invalid_client": "The OAuth client was not found.",
            }
            return _oauth_error(status, error, desc.get(error, "Injected failure."))
        with self._lock:
            if not self._client_auth(form, headers):
                return _oauth_error(401, "invalid_client", "The OAuth client was not found.")
            tok = form.get("refresh_token", "")
            if not tok:
                return _oauth_error(
                    400, "invalid_request", "Missing required parameter: refresh_token"
                )
            g = self._by_refresh.get(tok)
            if g is None or g.revoked or g.client_id != self.client_id:
                return _oauth_error(400, "invalid_grant", REVOKED_GRANT)
            if tok in g.used_refresh:  # replay of a rotated token: kill the whole grant
                g.revoked = True
                return _oauth_error(400, "invalid_grant", REVOKED_GRANT)
            body: dict[str, Any] = {
                "access_token": self._issue_access(g),
                "expires_in": self.access_token_ttl,
                "scope": " ".join(g.scopes),
                "token_type": "Bearer",
            }
            if self.rotate_refresh_tokens:
                body["refresh_token"] = self._issue_refresh(g)
        return _json(200, body, **{"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _revoke(self, form: dict[str, str], headers: Any) -> _Response:
        tok = form.get("token", "")
        if not tok:
            return _oauth_error(400, "invalid_request", "Missing required parameter: token")
        with self._lock:
            self.revoked.append(tok)
            gate = self._revocation_gate
        while gate is not None and not gate.wait(0.05) and not self._stopping.is_set():
            pass
        with self._lock:
            if not self.token_is_live(tok):
                return _oauth_error(400, "invalid_token", "Token expired or revoked")
            (self._by_access.get(tok) or self._by_refresh[tok]).revoked = True
        return _json(200, {})

    def _userinfo(self, headers: Any) -> _Response:
        auth = headers.get("Authorization", "")
        tok = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        with self._lock:
            g = self._by_access.get(tok) if tok and self.token_is_live(tok) else None
            if g is None:
                return _json(
                    401,
                    {"error": "invalid_request", "error_description": "Invalid Credentials"},
                    **{
                        "WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", '
                        'error="invalid_token"'
                    },
                )
            a = g.account
            info: dict[str, Any] = {
                "sub": a.sub,
                "email": a.email,
                "email_verified": a.email_verified,
                "name": a.name,
            }
            if a.hd:
                info["hd"] = a.hd
        return _json(200, info)

    def _drive_about(self, headers: Any) -> _Response:
        """Drive's about resource: 401 without a live token, 403 insufficientPermissions (as
        Google answers) when the grant lacks a Drive scope."""
        auth = headers.get("Authorization", "")
        tok = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        with self._lock:
            g = self._by_access.get(tok) if tok and self.token_is_live(tok) else None
            if g is None:
                return _json(401, {"error": {"code": 401, "message": "Invalid Credentials"}})
            if not DRIVE_READ_SCOPES & set(g.scopes):
                return _json(403, {"error": {"code": 403, "status": "PERMISSION_DENIED",
                                             "message": "Request had insufficient "
                                                        "authentication scopes."}})
            return _json(200, {"user": {"displayName": g.account.name,
                                        "emailAddress": g.account.email},
                               "storageQuota": {"limit": "16106127360",
                                                "usage": "1073741824"}})

    def _jwks(self) -> _Response:
        with self._lock:
            keys = [k.as_dict(private=False) for k in self._keys]
        return _json(200, {"keys": keys}, **{"Cache-Control": "public, max-age=3600"})

    def _discovery(self) -> _Response:
        b = self.base_url
        return _json(
            200,
            {
                "issuer": self.issuer,
                "authorization_endpoint": b + AUTHORIZE_PATH,
                "token_endpoint": b + TOKEN_PATH,
                "userinfo_endpoint": b + USERINFO_PATH,
                "revocation_endpoint": b + REVOKE_PATH,
                "jwks_uri": b + JWKS_PATH,
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "email", "profile"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "client_secret_basic",
                ],
                "claims_supported": [
                    "aud",
                    "email",
                    "email_verified",
                    "exp",
                    "iat",
                    "iss",
                    "name",
                    "sub",
                    "hd",
                ],
                "code_challenge_methods_supported": ["S256"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "authorization_response_iss_parameter_supported": self.callback_iss != "",
            },
            **{"Cache-Control": "public, max-age=3600"},
        )

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        form: dict[str, str] | None,
        headers: Any,
    ) -> _Response:
        routes: dict[tuple[str, str], Callable[[], _Response]] = {
            ("GET", AUTHORIZE_PATH): lambda: self._authorize(query),
            ("POST", TOKEN_PATH): lambda: self._token(form or {}, headers),
            ("POST", REVOKE_PATH): lambda: self._revoke(form or {}, headers),
            ("GET", USERINFO_PATH): lambda: self._userinfo(headers),
            ("GET", DRIVE_ABOUT_PATH): lambda: self._drive_about(headers),
            ("GET", JWKS_PATH): self._jwks,
            ("GET", DISCOVERY_PATH): self._discovery,
        }
        handler = routes.get((method, path))
        if handler is None:
            return _json(404, {"error": "not_found"})
        return handler()


def _single_values(raw: str) -> dict[str, str] | None:
    """Parse a query/form string; None when a parameter repeats (RFC 6749 §3.1)."""
    parsed = parse_qs(raw, keep_blank_values=True)
    if any(len(v) > 1 for v in parsed.values()):
        return None
    return {k: v[0] for k, v in parsed.items()}


class _Handler(BaseHTTPRequestHandler):
    """Parses the request and hands it to the FakeGoogle bound to the server."""

    server_version = "FakeGoogle/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # keep stderr quiet
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        fake: FakeGoogle = self.server.fake  # type: ignore[attr-defined]
        path, _, qs = self.path.partition("?")
        fake._record(method, path)
        query = _single_values(qs)
        form: dict[str, str] | None = None
        if method == "POST":
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode(
                "utf-8", "replace"
            )
            ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype != "application/x-www-form-urlencoded":
                return self._send(
                    _oauth_error(400, "invalid_request", "Body must be form-encoded.")
                )
            form = _single_values(raw)
        if query is None or (method == "POST" and form is None):
            return self._send(_oauth_error(400, "invalid_request", "A parameter was repeated."))
        try:
            resp = fake._route(method, path, query, form, self.headers)
        except (
            Exception
        ) as exc:  # a bug in the fake: answer 500 rather than dropping the connection
            resp = _json(500, {"error": "fake_google_bug", "error_description": repr(exc)})
        self._send(resp)

    def _send(self, resp: _Response) -> None:
        try:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(resp.body)))
            for name, value in resp.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(resp.body)
        except (BrokenPipeError, ConnectionResetError):
            pass
