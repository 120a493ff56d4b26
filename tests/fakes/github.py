"""A fake GitHub for tests: the OAuth web flow, the token endpoint, ``GET /user``,
``GET /user/emails`` and grant revocation, as GitHub's documentation describes them.

A real HTTP server on 127.0.0.1 (a free port), one lock around all state, so concurrent gateway
workers can hit it at once. As GitHub does:
- the token endpoint answers form-encoded unless the request sends ``Accept: application/json``,
  and reports errors in the body with HTTP 200 (``bad_verification_code``, ``bad_refresh_token``,
  ``incorrect_client_credentials``);
- an OAuth App's token never expires (no ``expires_in``, no ``refresh_token``); a GitHub App's
  expires in 8 h and comes with a single-use refresh token: refreshing returns a new pair and
  retires both old tokens, and a refresh token used twice is recorded in ``reused_refresh``;
- ``scope`` in a token answer is comma-separated; numbers may be strings
  (``numbers_as_strings``);
- revocation is ``DELETE /applications/{client_id}/grant`` with HTTP Basic client credentials
  and a JSON ``{"access_token": ...}``; 204 on success.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

AUTHORIZE_PATH = "/login/oauth/authorize"
TOKEN_PATH = "/login/oauth/access_token"
API_PREFIX = "/api"
ACCESS_TTL = 28800
REFRESH_TTL = 15897600


@dataclass
class Email:
    email: str
    verified: bool = True
    primary: bool = False


@dataclass
class User:
    """The GitHub account the simulated person signs in with."""

    id: int
    login: str
    emails: list[Email] = field(default_factory=list)


@dataclass
class _Grant:
    user: User
    scopes: list[str]
    access: dict[str, float] = field(default_factory=dict)  # live access token -> expiry
    refresh: str | None = None
    retired_refresh: set[str] = field(default_factory=set)
    revoked: bool = False


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class FakeGitHub:
    def __init__(self, *, client_id: str = "Iv1.test-client", client_secret: str = "gh-secret",
                 expiring: bool = False) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        #: A GitHub App with expiring user tokens (True) or an OAuth App (False).
        self.expiring = expiring
        self.numbers_as_strings = False
        self.user = User(id=583231, login="octocat",
                         emails=[Email("ada@example.com", verified=True, primary=True)])
        self.refresh_latency = 0.0
        # what tests read
        self.refresh_count = 0
        self.exchange_count = 0
        self.reused_refresh: list[str] = []
        self.revoked: list[str] = []
        self.token_accepts: list[str] = []
        self.last_authorize: dict[str, str] = {}
        self._failures: deque[tuple[int, str | None]] = deque()
        self._lock = threading.RLock()
        self._codes: dict[str, dict] = {}
        self._grants: list[_Grant] = []
        self._by_access: dict[str, _Grant] = {}
        self._by_refresh: dict[str, _Grant] = {}
        self._server: ThreadingHTTPServer | None = None

    # ---- lifecycle ----------------------------------------------------------------------
    def __enter__(self) -> FakeGitHub:
        ThreadingHTTPServer.request_queue_size = 128
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def settings(self, redirect_uri: str) -> dict[str, str]:
        return {"GITHUB_CLIENT_ID": self.client_id, "GITHUB_CLIENT_SECRET": self.client_secret,
                "GITHUB_REDIRECT_URI": redirect_uri,
                "GITHUB_AUTHORIZE_URL": self.url + AUTHORIZE_PATH,
                "GITHUB_TOKEN_URL": self.url + TOKEN_PATH,
                "GITHUB_API_URL": self.url + API_PREFIX}

    # ---- controls -------------------------------------------------------------------------
    def fail_next(self, status: int, error: str | None = None, times: int = 1) -> None:
        """The next ``times`` token requests answer ``status`` (with ``error`` in the body)."""
        with self._lock:
            self._failures.extend([(status, error)] * times)

    def token_is_live(self, token: str) -> bool:
        with self._lock:
            grant = self._by_access.get(token)
            return (grant is not None and not grant.revoked and token in grant.access
                    and grant.access[token] > time.time())

    # ---- endpoints ------------------------------------------------------------------------
    def authorize(self, query: dict[str, str]) -> tuple[int, dict, bytes]:
        with self._lock:
            self.last_authorize = dict(query)
            if query.get("client_id") != self.client_id:
                return 404, {}, b"Not Found"
            code = secrets.token_hex(10)
            self._codes[code] = {"redirect_uri": query.get("redirect_uri"),
                                 "challenge": query.get("code_challenge"),
                                 "method": query.get("code_challenge_method"),
                                 "scopes": query.get("scope", "").split(), "used": False}
        location = query["redirect_uri"] + "?" + urlencode({"code": code,
                                                           "state": query.get("state", "")})
        return 302, {"Location": location}, b""

    def token(self, form: dict[str, str], accept: str) -> tuple[int, dict]:
        with self._lock:
            self.token_accepts.append(accept)
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            status, error = failure
            return status, ({"error": error, "error_description": "injected"} if error else {})
        if (form.get("client_id") != self.client_id
                or not secrets.compare_digest(form.get("client_secret", ""), self.client_secret)):
            return 200, _error("incorrect_client_credentials")
        if form.get("grant_type") == "refresh_token":
            return self._refresh(form)
        return self._exchange(form)

    def _exchange(self, form: dict[str, str]) -> tuple[int, dict]:
        with self._lock:
            self.exchange_count += 1
            code = self._codes.get(form.get("code", ""))
            if code is None or code["used"]:
                return 200, _error("bad_verification_code")
            if form.get("redirect_uri") != code["redirect_uri"]:
                return 200, _error("redirect_uri_mismatch")
            if code["challenge"] and (code["method"] != "S256" or _s256(
                    form.get("code_verifier", "")) != code["challenge"]):
                return 200, _error("bad_verification_code")
            code["used"] = True
            grant = _Grant(self.user, code["scopes"])
            self._grants.append(grant)
            return 200, self._issue(grant)

    def _refresh(self, form: dict[str, str]) -> tuple[int, dict]:
        with self._lock:
            self.refresh_count += 1
        if self.refresh_latency:
            time.sleep(self.refresh_latency)
        with self._lock:
            token = form.get("refresh_token", "")
            grant = self._by_refresh.get(token)
            if grant is not None and token in grant.retired_refresh:
                self.reused_refresh.append(token)
                return 200, _error("bad_refresh_token")
            if grant is None or grant.revoked or not self.expiring:
                return 200, _error("bad_refresh_token")
            grant.access.clear()  # the old access token stops working too
            return 200, self._issue(grant)

    def _issue(self, grant: _Grant) -> dict:
        access = ("ghu_" if self.expiring else "gho_") + secrets.token_urlsafe(24)
        grant.access[access] = time.time() + (ACCESS_TTL if self.expiring else 10**9)
        self._by_access[access] = grant
        body: dict[str, Any] = {"access_token": access, "token_type": "bearer",
                                "scope": ",".join(grant.scopes)}
        if self.expiring:
            refresh = "ghr_" + secrets.token_urlsafe(48)
            if grant.refresh:
                grant.retired_refresh.add(grant.refresh)
            grant.refresh = refresh
            self._by_refresh[refresh] = grant
            numbers = {"expires_in": ACCESS_TTL, "refresh_token_expires_in": REFRESH_TTL}
            if self.numbers_as_strings:
                numbers = {key: str(value) for key, value in numbers.items()}
            body.update(refresh_token=refresh, **numbers)
        return body

    def api(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, dict | list]:
        if method == "DELETE" and path == f"/applications/{self.client_id}/grant":
            return self._revoke(headers, body)
        auth = headers.get("Authorization", "")
        token = auth.split(" ", 1)[1] if " " in auth else ""
        if not self.token_is_live(token):
            return 401, {"message": "Bad credentials"}
        with self._lock:
            user = self._by_access[token].user
        if path == "/user":
            primary = next((e.email for e in user.emails if e.primary), None)
            return 200, {"login": user.login, "id": user.id, "email": primary}
        if path == "/user/emails":
            return 200, [{"email": e.email, "verified": e.verified, "primary": e.primary,
                          "visibility": "private"} for e in user.emails]
        return 404, {"message": "Not Found"}

    def _revoke(self, headers: Any, body: bytes) -> tuple[int, dict]:
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if headers.get("Authorization", "") != "Basic " + expected:
            return 401, {"message": "Requires authentication"}
        try:
            token = json.loads(body or b"{}").get("access_token", "")
        except ValueError:
            return 400, {"message": "Problems parsing JSON"}
        with self._lock:
            self.revoked.append(token)
            grant = self._by_access.get(token)
            if grant is None or not self.token_is_live(token):
                return 404, {"message": "Not Found"}
            grant.revoked = True
            grant.access.clear()
        return 204, {}


def _error(code: str) -> dict:
    return {"error": code, "error_description": code.replace("_", " "),
            "error_uri": "https://docs.github.com/apps/troubleshooting"}


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeGitHub/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        fake: FakeGitHub = self.server.fake  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if method == "GET" and parts.path == AUTHORIZE_PATH:
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            status, headers, page = fake.authorize(query)
            return self._send(status, page, "text/html", headers)
        if method == "POST" and parts.path == TOKEN_PATH:
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            accept = self.headers.get("Accept", "")
            status, answer = fake.token(form, accept)
            if "application/json" in accept:
                return self._send(status, json.dumps(answer).encode(), "application/json")
            return self._send(status, urlencode(answer).encode(),
                              "application/x-www-form-urlencoded")
        if parts.path.startswith(API_PREFIX + "/"):
            status, answer = fake.api(method, parts.path[len(API_PREFIX):], self.headers, body)
            data = json.dumps(answer).encode() if status != 204 else b""
            return self._send(status, data, "application/json")
        self._send(404, b'{"message": "Not Found"}', "application/json")

    def _send(self, status: int, data: bytes, content_type: str,
              headers: dict | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
