"""A fake Atlassian identity platform and API gateway on loopback, built on the kit's
``FakeProvider``: OAuth 2.0 (3LO) as Atlassian's developer documentation describes it.

- ``/authorize`` wants ``audience=api.atlassian.com`` and ``prompt=consent``.
- ``/oauth/token`` reads a JSON body carrying ``client_id`` and ``client_secret``; anything else
  is ``invalid_request``. A dead grant is ``invalid_grant`` with HTTP 403, a wrong client
  ``access_denied`` with 401 (the answers of Auth0, on which Atlassian's service is built).
- Refresh tokens rotate: a refresh answers a new one and invalidates the one sent. Sending an
  invalidated one again is refused and ends the whole grant, every token of it (Atlassian's
  reuse detection; its ten-minute leeway for a retry is not modelled).
- ``/me`` answers the account (``account_id``, ``email``, ``email_verified``...) to a token
  granted ``read:me``; ``/oauth/token/accessible-resources`` lists ``sites`` to a live token
  (``sites_status`` other than 200 makes it fail).
- There is no revocation endpoint.

An ``Account``'s ``subject`` is its Atlassian account id.
"""

from __future__ import annotations

from typing import Any

from authgateway.testing import FakeProvider, Request

SITE = {"id": "1324a887-45db-1bf4-1e99-ef0ff456d421", "name": "ada-team",
        "url": "https://ada-team.atlassian.net",
        "scopes": ["read:jira-work", "read:jira-user"],
        "avatarUrl": "https://site-admin-avatar-cdn.prod.public.atl-paas.net/avatars/240/rocket.png"}
RESOURCES_PATH = "/oauth/token/accessible-resources"


class FakeAtlassian(FakeProvider):
    def __init__(self, **options) -> None:
        options = {"authorize_path": "/authorize", "token_path": "/oauth/token",
                   "userinfo_path": "/me", "revoke_path": None, "rotate_refresh_tokens": True,
                   "bad_client_error": "access_denied", **options}
        super().__init__(**options)
        self.sites: list[dict] = [dict(SITE)]
        self.sites_status = 200
        #: The bodies the token endpoint read, for tests to check.
        self.token_bodies: list[dict] = []

    def settings(self, redirect_uri: str, **extra) -> dict:
        """The gateway's settings pointing the plugin at this fake."""
        return {"ATLASSIAN_CLIENT_ID": self.client_id,
                "ATLASSIAN_CLIENT_SECRET": self.client_secret,
                "ATLASSIAN_REDIRECT_URI": redirect_uri,
                "ATLASSIAN_AUTHORIZE_URL": self.url + self.authorize_path,
                "ATLASSIAN_TOKEN_URL": self.url + self.token_path, "ATLASSIAN_API_URL": self.url,
                **extra}

    def handle(self, request: Request):
        if request.method == "GET" and request.path == RESOURCES_PATH:
            with self._lock:
                self.requests.append((request.method, request.path))
            return (*self.accessible_resources(request), {})
        return super().handle(request)

    def authorize(self, query: dict[str, str]):
        if query.get("audience") != "api.atlassian.com" or query.get("prompt") != "consent":
            return 400, b"audience=api.atlassian.com and prompt=consent are required", {}
        return super().authorize(query)

    def _token(self, request: Request) -> tuple[int, dict]:
        try:
            body = request.json()
        except ValueError:
            body = None
        if not request.headers.get("Content-Type", "").startswith("application/json") or \
                not isinstance(body, dict) or not all(isinstance(v, str) for v in body.values()):
            return self._error("invalid_request")
        with self._lock:
            self.token_bodies.append(body)
        return super()._token(_AsForm(request, body))

    def _refresh(self, token: str) -> tuple[int, dict]:
        with self._lock:
            grant = self._by_refresh.get(token)
            reused = grant is not None and token in grant.retired_refresh
        status, body = super()._refresh(token)
        if reused:  # reuse detection: the whole family of tokens ends
            with self._lock:
                grant.revoked = True
                grant.access.clear()
        return status, body

    def _error(self, code: str, standard_status: int = 400) -> tuple[int, dict]:
        status = {"invalid_grant": 403, "access_denied": 401}.get(code, standard_status)
        return status, {"error": code, "error_description": code.replace("_", " ")}

    def userinfo(self, request: Request) -> tuple[int, Any]:
        with self._lock:
            account = self.account_for(request.bearer)
            scopes = self._by_access[request.bearer].scopes if account is not None else []
        if account is None:
            return 401, {"code": 401, "message": "Unauthorized"}
        if "read:me" not in scopes:
            return 403, {"code": 403, "message": "Unauthorized; scope does not match"}
        me = {"account_type": "atlassian", "account_id": account.subject,
              "email": account.email, "name": "Ada Lovelace", "account_status": "active",
              "nickname": "ada", "zoneinfo": "Europe/London", "locale": "en-GB",
              "picture": "https://avatar-management.example/ada.png"}
        if account.email_verified is not None:
            me["email_verified"] = account.email_verified
        return 200, {key: value for key, value in {**me, **account.claims}.items()
                     if value is not None}

    def accessible_resources(self, request: Request) -> tuple[int, Any]:
        if self.account_for(request.bearer) is None:
            return 401, {"code": 401, "message": "Unauthorized"}
        if self.sites_status != 200:
            return self.sites_status, {"code": self.sites_status, "message": "scripted"}
        return 200, [dict(site) for site in self.sites]


class _AsForm(Request):
    """The request with its JSON body offered as the form the kit's token endpoint reads."""

    def __init__(self, request: Request, body: dict[str, str]) -> None:
        super().__init__(request.method, request.path, request.query, request.headers,
                         request.body)
        self._body = body

    @property
    def form(self) -> dict[str, str]:
        return dict(self._body)
