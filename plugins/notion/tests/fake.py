"""A fake Notion on loopback, built on the kit's ``FakeProvider``: the OAuth endpoints of a
public connection as Notion's reference describes them.

- ``/v1/oauth/authorize`` wants ``owner=user`` and ``response_type=code``; Notion does no PKCE.
- ``/v1/oauth/token`` and ``/v1/oauth/revoke`` want HTTP Basic client authentication, a JSON
  body with exactly the documented fields, and a ``Notion-Version`` header. A form body is
  ``invalid_json``, a missing header ``missing_version``, unknown fields ``validation_error``
  (Notion API errors: ``{"object": "error", "status", "code", "message"}``); a missing or wrong
  client is ``{"error": "invalid_client"}`` with 401.
- A token answer carries no ``scope``; it names the workspace (``workspace_id``,
  ``workspace_name``, ``workspace_icon``, ``bot_id``) and the ``owner``: the user who consented,
  with ``person.email`` only when ``share_email`` is on and the account's ``email_verified`` is
  true (an account whose email Notion does not vouch for is modelled as one it does not share).
- Refresh tokens rotate: a refresh answers a new one and retires the old.

An ``Account``'s ``subject`` is its Notion user id.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from typing import Any

from authgateway.testing import FakeProvider, Request

VERSION = "2025-09-03"
WORKSPACE_ID = "7c3a1f52-9d0e-4b7a-a1c3-5e2f8d9b6a01"
TOKEN_FIELDS = {
    "authorization_code": {"grant_type", "code", "redirect_uri"},
    "refresh_token": {"grant_type", "refresh_token"},
}


class FakeNotion(FakeProvider):
    def __init__(self, **options) -> None:
        options = {"authorize_path": "/v1/oauth/authorize", "token_path": "/v1/oauth/token",
                   "revoke_path": "/v1/oauth/revoke", "userinfo_path": "/v1/users/me",
                   "rotate_refresh_tokens": True, **options}
        super().__init__(**options)
        self.workspace = {"workspace_id": WORKSPACE_ID, "workspace_name": "Ada's Workspace",
                          "workspace_icon": None}
        self.bot_id = str(uuid.uuid4())
        #: Off: the connection lacks the capability to read user emails.
        self.share_email = True
        #: The bodies the token endpoint received, parsed, and every Notion-Version sent.
        self.token_bodies: list[dict] = []
        self.versions: list[str] = []

    def settings(self, redirect_uri: str, **extra) -> dict:
        """The gateway's settings pointing the plugin at this fake."""
        return {"NOTION_CLIENT_ID": self.client_id, "NOTION_CLIENT_SECRET": self.client_secret,
                "NOTION_REDIRECT_URI": redirect_uri,
                "NOTION_AUTHORIZE_URL": self.url + self.authorize_path,
                "NOTION_TOKEN_URL": self.url + self.token_path, "NOTION_API_URL": self.url,
                **extra}

    # ---- authorize: no PKCE --------------------------------------------------------------

    def authorize(self, query: dict[str, str]):
        if query.get("owner") != "user" or query.get("response_type") != "code":
            return 400, b"owner=user and response_type=code are required", {}
        status, body, headers = super().authorize(query)
        with self._lock:
            if status == 302:
                self._codes[self.issued_codes[-1]]["challenge"] = None  # Notion ignores it
        return status, body, headers

    # ---- token: Basic + JSON ---------------------------------------------------------------

    def _token(self, request: Request) -> tuple[int, dict]:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        body = request.json()
        with self._lock:
            self.token_bodies.append(body)
        grant_type = body.get("grant_type")
        if grant_type not in TOKEN_FIELDS:
            return self._error("unsupported_grant_type")
        if set(body) - TOKEN_FIELDS[grant_type] or not all(
                isinstance(value, str) for value in body.values()):
            return notion_error(400, "validation_error", "body failed validation")
        if grant_type == "refresh_token":
            return self._refresh(body.get("refresh_token", ""))
        return self._exchange(body)

    def revoke(self, request: Request) -> tuple[int, Any]:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        body = request.json()
        if set(body) != {"token"} or not isinstance(body["token"], str):
            return notion_error(400, "validation_error", "body failed validation")
        with self._lock:
            self.revoked.append(body["token"])
        self.end_grant_of(body["token"])
        return 200, {"request_id": str(uuid.uuid4())}

    def _refusal(self, request: Request) -> tuple[int, dict] | None:
        """Notion's answer to a request without Basic client authentication, a JSON body or the
        version header; None for a request it reads."""
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        try:
            client_id, _, client_secret = base64.b64decode(credentials).decode().partition(":")
        except ValueError:
            client_id = client_secret = ""
        if scheme.lower() != "basic" or client_id != self.client_id or \
                not secrets.compare_digest(client_secret.encode(), self.client_secret.encode()):
            return 401, {"error": "invalid_client",
                         "error_description": "Client authentication failed."}
        with self._lock:
            self.versions.append(request.headers.get("Notion-Version", ""))
        if not request.headers.get("Notion-Version"):
            return notion_error(400, "missing_version",
                                "Notion-Version header failed validation")
        try:
            body = request.json()
        except ValueError:
            body = None
        if not request.headers.get("Content-Type", "").startswith("application/json") or \
                not isinstance(body, dict):
            return notion_error(400, "invalid_json", "Error parsing JSON body.")
        return None

    def _error(self, code: str, standard_status: int = 400) -> tuple[int, dict]:
        if code == self.bad_client_error:
            return super()._error(code, standard_status)
        return notion_error(standard_status, code, code.replace("_", " "))

    def _issue(self, grant, client_id: str, refreshing: bool = False) -> dict:
        body = super()._issue(grant, client_id, refreshing)
        body.pop("scope", None)
        body["token_type"] = "bearer"
        account = grant.account
        user: dict[str, Any] = {"object": "user", "id": account.subject, "type": "person",
                                "name": "Ada Lovelace", "avatar_url": None, "person": {}}
        if self.share_email and account.email and account.email_verified:
            user["person"] = {"email": account.email}
        body.update(self.workspace, bot_id=self.bot_id, owner={"type": "user", "user": user},
                    duplicated_template_id=None, request_id=str(uuid.uuid4()))
        return body


def notion_error(status: int, code: str, message: str) -> tuple[int, dict]:
    return status, {"object": "error", "status": status, "code": code, "message": message,
                    "request_id": str(uuid.uuid4())}


def basic(client_id: str, client_secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
