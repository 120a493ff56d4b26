"""A fake OAuth 2.0 / OpenID Connect provider: a real HTTP server on 127.0.0.1, scriptable for a
provider's quirks.

It serves an authorize endpoint (the person consents at once and is redirected back with a
code), a token endpoint (authorization_code and refresh_token grants, PKCE S256), userinfo,
RFC 7009 revocation, and, when ``oidc`` is on, signed id_tokens, a JWKS and a discovery
document. Every attribute may be changed by a test at any time; all state sits behind one lock,
so concurrent gateway workers can call it at once. What the quirks mean:

- ``answers``: ``"json"``, ``"form"`` (form-encoded), or ``"accept"`` (form-encoded unless the
  request sends ``Accept: application/json``, as GitHub does);
- ``error_status``: the HTTP status of token endpoint errors (GitHub sends 200), and the codes
  ``dead_grant_error``, ``bad_code_error`` and ``bad_client_error``;
- ``expires_in``: seconds, or None for tokens that never expire; ``numbers_as_strings``;
  ``refresh_tokens`` (issue any), ``rotate_refresh_tokens`` (single use: a refresh returns a new
  one and retires the old; one sent again is recorded in ``reused_refresh``);
- ``scope_separator`` in token answers (GitHub: ``","``);
- ``routes``: extra endpoints, ``{("GET", "/user/emails"): handler}``, a handler taking a
  ``Request`` and returning ``(status, body)`` where body is a dict/list (JSON) or bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

__all__ = ["Account", "Email", "FakeProvider", "Request"]

DISCOVERY_PATH = "/.well-known/openid-configuration"


@dataclass
class Email:
    address: str
    verified: bool = True


@dataclass
class Account:
    """The account the simulated person signs in with. ``email`` is its primary address;
    ``emails`` lists further ones (for providers that list every address of an account)."""

    subject: str = "10001"
    email: str = "ada@example.com"
    email_verified: bool = True
    emails: tuple[Email, ...] = ()
    #: Further claims for userinfo and the id_token (``name``, ``login``...).
    claims: dict[str, Any] = field(default_factory=dict)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Any
    body: bytes

    @property
    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode(errors="replace")).items()}

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    @property
    def bearer(self) -> str:
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        return token if scheme.lower() == "bearer" else ""


@dataclass
class _Grant:
    account: Any
    scopes: list[str]
    nonce: str | None
    access: dict[str, float] = field(default_factory=dict)  # live access token -> expiry
    refresh: str | None = None
    retired_refresh: set[str] = field(default_factory=set)
    revoked: bool = False


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


Handler = Callable[[Request], tuple[int, Any]]


class FakeProvider:
    """See the module docstring. Use as a context manager, or ``start()`` and ``stop()``."""

    def __init__(
        self,
        *,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",  # noqa: S107 (a fake's)
        oidc: bool = False,
        discovery: bool = False,
        authorize_path: str = "/authorize",
        token_path: str = "/token",  # noqa: S107 (a path)
        userinfo_path: str = "/userinfo",
        revoke_path: str | None = "/revoke",
        jwks_path: str = "/jwks",
        answers: str = "json",
        error_status: int = 400,
        dead_grant_error: str = "invalid_grant",
        bad_code_error: str = "invalid_grant",
        bad_client_error: str = "invalid_client",
        expires_in: int | None = 3600,
        numbers_as_strings: bool = False,
        refresh_tokens: bool = True,
        rotate_refresh_tokens: bool = False,
        scope_separator: str = " ",
        routes: dict[tuple[str, str], Handler] | None = None,
    ) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.oidc, self.discovery = oidc, discovery
        self.authorize_path, self.token_path = authorize_path, token_path
        self.userinfo_path, self.revoke_path, self.jwks_path = userinfo_path, revoke_path, jwks_path
        self.answers, self.error_status = answers, error_status
        self.dead_grant_error, self.bad_code_error = dead_grant_error, bad_code_error
        self.bad_client_error = bad_client_error
        self.expires_in, self.numbers_as_strings = expires_in, numbers_as_strings
        self.refresh_tokens, self.rotate_refresh_tokens = refresh_tokens, rotate_refresh_tokens
        self.scope_separator = scope_separator
        self.routes: dict[tuple[str, str], Handler] = dict(routes or {})
        self.account = Account()
        #: How issued tokens begin, for providers whose tokens have a recognisable shape.
        self.access_prefix, self.refresh_prefix = "at-", "rt-"
        self.refresh_latency = 0.0
        # what tests read
        self.exchange_count = 0
        self.refresh_count = 0
        self.reused_refresh: list[str] = []
        self.revoked: list[str] = []
        self.token_accepts: list[str] = []
        self.last_authorize: dict[str, str] = {}
        self.issued_codes: list[str] = []
        self._issued: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self._failures: deque[tuple[int, str | None]] = deque()
        self._lock = threading.RLock()
        self._codes: dict[str, dict] = {}
        self._grants: list[_Grant] = []
        self._by_access: dict[str, _Grant] = {}
        self._by_refresh: dict[str, _Grant] = {}
        self._key = None
        self._server: ThreadingHTTPServer | None = None

    # ---- lifecycle ----------------------------------------------------------------------
    def start(self) -> FakeProvider:
        if self.oidc and self._key is None:
            from joserfc.jwk import RSAKey

            self._key = RSAKey.generate_key(2048, private=True, parameters={
                "kid": secrets.token_hex(4), "use": "sig", "alg": "RS256"})
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.request_queue_size = 128  # a refresh storm opens many connections at once
        server.daemon_threads = True
        server.fake = self  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL, which is also the issuer."""
        assert self._server is not None, "the fake provider is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    issuer = url

    def endpoints(self) -> dict[str, str | None]:
        """Absolute URLs, keyed as ``ProviderInfo`` names them."""
        endpoints = {"authorize_url": self.url + self.authorize_path,
                     "token_url": self.url + self.token_path,
                     "userinfo_url": self.url + self.userinfo_path,
                     "revoke_url": self.url + self.revoke_path if self.revoke_path else None,
                     "jwks_url": self.url + self.jwks_path if self.oidc else None,
                     "issuer": self.url}
        if self.discovery:
            endpoints["discovery_url"] = self.url + DISCOVERY_PATH
        return endpoints

    # ---- controls -------------------------------------------------------------------------
    def sign_in_as(self, account: Account) -> None:
        """The next consents sign in as ``account``."""
        self.account = account

    def fail_next(self, status: int, error: str | None = None, times: int = 1) -> None:
        """The next ``times`` token requests answer ``status``, with ``error`` in the body."""
        with self._lock:
            self._failures.extend([(status, error)] * times)

    def end_grants(self) -> int:
        """The person withdraws the app's access at the provider: every grant so far is dead,
        its tokens stop working. Returns how many grants ended."""
        with self._lock:
            live = [grant for grant in self._grants if not grant.revoked]
            for grant in live:
                grant.revoked = True
                grant.access.clear()
            return len(live)

    def end_grant_of(self, token: str) -> bool:
        """End the grant ``token`` (either of its tokens) belongs to, as a revocation does;
        False when the token is not a live one."""
        with self._lock:
            if not self.token_is_live(token):
                return False
            grant = self._by_access.get(token) or self._by_refresh[token]
            grant.revoked = True
            grant.access.clear()
            return True

    def live_grants(self) -> int:
        """How many grants are live: made by a code exchange, and not revoked or ended."""
        with self._lock:
            return sum(not grant.revoked for grant in self._grants)

    def token_is_live(self, token: str) -> bool:
        """An unexpired access token, or the current refresh token, of a live grant."""
        with self._lock:
            grant = self._by_access.get(token)
            if grant is not None:
                return not grant.revoked and grant.access.get(token, 0) > time.time()
            grant = self._by_refresh.get(token)
            return grant is not None and not grant.revoked and grant.refresh == token

    def issued_secrets(self) -> list[str]:
        """Every code and token this fake has handed out, for checking none leaks."""
        with self._lock:
            return [*self.issued_codes, *self._issued]

    def account_for(self, access_token: str) -> Any | None:
        """The account a live access token was issued for, None for any other token."""
        with self._lock:
            if not self.token_is_live(access_token):
                return None
            return self._by_access[access_token].account

    # ---- endpoints --------------------------------------------------------------------------
    def handle(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            self.requests.append((request.method, request.path))
        route = self.routes.get((request.method, request.path))
        if route is not None:
            status, body = route(request)
            return status, body, {}
        if request.method == "GET" and request.path == self.authorize_path:
            return self.authorize(request.query)
        if request.method == "POST" and request.path == self.token_path:
            return self.token(request)
        if request.path == self.userinfo_path:
            return (*self.userinfo(request), {})
        if request.method == "POST" and request.path == self.revoke_path:
            return (*self.revoke(request), {})
        if request.method == "GET" and self.oidc and request.path == self.jwks_path:
            return 200, {"keys": [self._key.as_dict(private=False)]}, {}
        if request.method == "GET" and self.discovery and request.path == DISCOVERY_PATH:
            return 200, self.document(), {}
        return 404, {"error": "not_found"}, {}

    def document(self) -> dict:
        """The OpenID Connect discovery document."""
        endpoints = self.endpoints()
        doc = {"issuer": self.url, "authorization_endpoint": endpoints["authorize_url"],
               "token_endpoint": endpoints["token_url"],
               "userinfo_endpoint": endpoints["userinfo_url"],
               "response_types_supported": ["code"], "subject_types_supported": ["public"],
               "id_token_signing_alg_values_supported": ["RS256"],
               "code_challenge_methods_supported": ["S256"]}
        if endpoints["jwks_url"]:
            doc["jwks_uri"] = endpoints["jwks_url"]
        if endpoints["revoke_url"]:
            doc["revocation_endpoint"] = endpoints["revoke_url"]
        return doc

    def authorize(self, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            self.last_authorize = dict(query)
            if query.get("client_id") != self.client_id or not query.get("redirect_uri"):
                return 400, b"unknown client or no redirect_uri", {}
            code = secrets.token_urlsafe(16)
            self.issued_codes.append(code)
            self._codes[code] = {"redirect_uri": query["redirect_uri"],
                                 "challenge": query.get("code_challenge"),
                                 "method": query.get("code_challenge_method"),
                                 "scopes": query.get("scope", "").split(),
                                 "nonce": query.get("nonce"), "account": self.account}
        redirect = {"code": code, "state": query.get("state", "")}
        separator = "&" if "?" in query["redirect_uri"] else "?"
        return 302, b"", {"Location": query["redirect_uri"] + separator + urlencode(redirect)}

    def token(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        accept = request.headers.get("Accept", "")
        with self._lock:
            self.token_accepts.append(accept)
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            status, error = failure
            answer = {"error": error, "error_description": "scripted"} if error else {}
        else:
            status, answer = self._token(request)
        as_json = self.answers == "json" or (self.answers == "accept"
                                             and "application/json" in accept)
        if as_json:
            return status, answer, {"Cache-Control": "no-store"}
        return status, urlencode(answer).encode(), {
            "Content-Type": "application/x-www-form-urlencoded", "Cache-Control": "no-store"}

    def _token(self, request: Request) -> tuple[int, dict]:
        form = request.form
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            pair = base64.b64decode(credentials).decode(errors="replace")
            client_id, _, client_secret = (unquote(part) for part in pair.partition(":"))
        if client_id != self.client_id or not secrets.compare_digest(
                client_secret.encode(), self.client_secret.encode()):
            return self._error(self.bad_client_error, 401)
        if form.get("grant_type") == "refresh_token":
            return self._refresh(form.get("refresh_token", ""))
        if form.get("grant_type") not in ("authorization_code", None):
            return self._error("unsupported_grant_type")
        return self._exchange(form)

    def _exchange(self, form: dict[str, str]) -> tuple[int, dict]:
        with self._lock:
            self.exchange_count += 1
            code = self._codes.pop(form.get("code", ""), None)  # single use
            if code is None:
                return self._error(self.bad_code_error)
            if form.get("redirect_uri") != code["redirect_uri"]:
                return self._error("redirect_uri_mismatch")
            if code["challenge"] and (code["method"] != "S256" or
                                      s256(form.get("code_verifier", "")) != code["challenge"]):
                return self._error(self.bad_code_error)
            grant = _Grant(code["account"], code["scopes"], code["nonce"])
            self._grants.append(grant)
            return 200, self._issue(grant, form.get("client_id") or self.client_id)

    def _refresh(self, token: str) -> tuple[int, dict]:
        with self._lock:
            self.refresh_count += 1
        if self.refresh_latency:
            time.sleep(self.refresh_latency)
        with self._lock:
            grant = self._by_refresh.get(token)
            if grant is not None and token in grant.retired_refresh:
                self.reused_refresh.append(token)
                return self._error(self.dead_grant_error)
            if grant is None or grant.revoked or grant.refresh != token:
                return self._error(self.dead_grant_error)
            if self.rotate_refresh_tokens:
                grant.access.clear()  # the old pair is retired together
            return 200, self._issue(grant, self.client_id, refreshing=True)

    def _issue(self, grant: _Grant, client_id: str, refreshing: bool = False) -> dict:
        access = self.access_prefix + secrets.token_urlsafe(24)
        lifetime = self.expires_in if self.expires_in is not None else 10**9
        grant.access[access] = time.time() + lifetime
        self._by_access[access] = grant
        body: dict[str, Any] = {"access_token": access, "token_type": "Bearer",
                                "scope": self.scope_separator.join(grant.scopes)}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        if self.refresh_tokens and (not refreshing or self.rotate_refresh_tokens):
            if grant.refresh:
                grant.retired_refresh.add(grant.refresh)
            grant.refresh = self.refresh_prefix + secrets.token_urlsafe(32)
            self._by_refresh[grant.refresh] = grant
            body["refresh_token"] = grant.refresh
        if self.oidc and "openid" in grant.scopes:
            body["id_token"] = self.id_token(grant.account, client_id, grant.nonce)
        self._issued.extend(str(body[key]) for key in ("access_token", "refresh_token", "id_token")
                            if key in body)
        if self.numbers_as_strings:
            body = {k: str(v) if isinstance(v, int) else v for k, v in body.items()}
        return body

    def id_token(self, account: Account, client_id: str, nonce: str | None = None) -> str:
        from joserfc import jwt

        now = int(time.time())
        claims = {"iss": self.url, "aud": client_id, "sub": account.subject, "iat": now,
                  "exp": now + 600, "email": account.email,
                  "email_verified": account.email_verified, **account.claims}
        if nonce:
            claims["nonce"] = nonce
        return jwt.encode({"alg": "RS256", "kid": self._key.kid}, claims, self._key)

    def userinfo(self, request: Request) -> tuple[int, Any]:
        account = self.account_for(request.bearer)
        if account is None:
            return 401, {"error": "invalid_token"}
        return 200, {"sub": account.subject, "email": account.email,
                     "email_verified": account.email_verified, **account.claims}

    def revoke(self, request: Request) -> tuple[int, Any]:
        """RFC 7009: revoking either token of a grant ends the grant; an unknown token is fine."""
        token = request.form.get("token", "")
        with self._lock:
            self.revoked.append(token)
        self.end_grant_of(token)
        return 200, {}

    def _error(self, code: str, standard_status: int = 400) -> tuple[int, dict]:
        status = standard_status if self.error_status == 400 else self.error_status
        return status, {"error": code, "error_description": code.replace("_", " ")}


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeProvider/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        fake: FakeProvider = self.server.fake  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        try:
            status, answer, headers = fake.handle(
                Request(method, parts.path, query, self.headers, body))
        except Exception as exc:  # a bug in a scripted route is a 500, as at a real provider
            status, answer, headers = 500, {"error": type(exc).__name__}, {}
        if isinstance(answer, bytes):
            data = answer
            headers.setdefault("Content-Type", "text/plain" if answer else "text/html")
        else:
            data = json.dumps(answer).encode() if status != 204 else b""
            headers.setdefault("Content-Type", "application/json")
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
