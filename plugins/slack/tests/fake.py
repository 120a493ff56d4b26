"""A fake Slack on loopback, built on the kit's ``FakeProvider``: OAuth v2 with ``user_scope``,
``oauth.v2.access`` answering both the bot's and the person's token, ``ok: false`` with HTTP 200
for every failure, token rotation on or off, and the Web API methods the plugin calls
(``auth.test``, ``users.info``, ``auth.revoke``).

An ``Account``'s ``subject`` is its Slack user id; ``claims`` may set ``team_id`` and
``team_name`` (``TEAM_ID`` and ``TEAM_NAME`` when absent); ``email_verified`` is what
``users.info`` says as ``is_email_confirmed``.
"""

from __future__ import annotations

import secrets

from authgateway.testing import FakeProvider, Request

TEAM_ID = "T0123ABCD"
TEAM_NAME = "Example Inc"


class FakeSlack(FakeProvider):
    def __init__(self, *, rotation: bool = False, bot_scopes: bool = True, **options) -> None:
        options = {
            "authorize_path": "/oauth/v2/authorize", "token_path": "/api/oauth.v2.access",
            "userinfo_path": "/api/users.info", "revoke_path": None,
            # Slack answers every failure with HTTP 200 and ok: false.
            "error_status": 200, "dead_grant_error": "invalid_refresh_token",
            "bad_code_error": "invalid_code", "bad_client_error": "bad_client_secret",
            "scope_separator": ",", **options,
        }
        super().__init__(**options)
        self.rotation = rotation
        #: The app also asks for bot scopes: the answer then carries a bot token too.
        self.bot_scopes = bot_scopes
        #: The app asked for bot scopes only: authed_user carries no token of the person's.
        self.no_user_token = False
        #: How a refresh answers the user's new tokens: at the top level as ``user`` (what
        #: Slack's SDKs read), under ``authed_user``, or (never for a user's refresh token) as
        #: a ``bot`` token.
        self.refresh_shape = "top_level"
        self.bot_tokens: list[str] = []
        self.routes.update({("GET", "/api/auth.test"): self.auth_test,
                            ("POST", "/api/auth.revoke"): self.auth_revoke})

    @property
    def rotation(self) -> bool:
        return self._rotation

    @rotation.setter
    def rotation(self, on: bool) -> None:
        """Token rotation as the app's setting: expiring tokens with xoxe- refresh tokens that
        are single use, or tokens that never expire and no refresh token at all."""
        self._rotation = on
        self.expires_in = 43200 if on else None
        self.refresh_tokens = self.rotate_refresh_tokens = on
        self.access_prefix = "xoxe.xoxp-1-" if on else "xoxp-1-"
        self.refresh_prefix = "xoxe-1-"

    def settings(self, redirect_uri: str, **extra) -> dict[str, object]:
        return {"SLACK_CLIENT_ID": self.client_id, "SLACK_CLIENT_SECRET": self.client_secret,
                "SLACK_REDIRECT_URI": redirect_uri,
                "SLACK_AUTHORIZE_URL": self.url + self.authorize_path,
                "SLACK_TOKEN_URL": self.url + self.token_path,
                "SLACK_API_URL": self.url + "/api", **extra}

    # ---- OAuth ------------------------------------------------------------------------------

    def authorize(self, query: dict[str, str]):
        """The person's scopes are ``user_scope``; ``scope`` would be the bot's."""
        scopes = query.get("user_scope", "").replace(",", " ")
        answer = super().authorize({**{k: v for k, v in query.items() if k != "scope"},
                                    "scope": scopes})
        with self._lock:
            self.last_authorize = dict(query)
        return answer

    def token(self, request: Request):
        status, answer, headers = super().token(request)
        if not isinstance(answer, dict):
            return status, answer, headers
        if status >= 500 or status == 429:
            return status, {"ok": False, "error": answer.get("error") or "internal_error"}, headers
        if "error" in answer:
            return 200, {"ok": False, "error": answer["error"]}, headers
        if not answer:
            return status, answer, headers
        team = self._team_of(answer["access_token"])
        user = {key: answer[key] for key in ("access_token", "scope", "expires_in",
                                             "refresh_token") if key in answer}
        if request.form.get("grant_type") == "refresh_token":
            body = {"ok": True, "app_id": "A0FAKEAPP", "team": team, "enterprise": None}
            if self.refresh_shape == "authed_user":
                body["authed_user"] = {"id": self.account_for(answer["access_token"]).subject,
                                       **user, "token_type": "user"}
            else:
                kind = "bot" if self.refresh_shape == "bot" else "user"
                body.update(user, token_type=kind)
            return 200, body, headers
        body = {"ok": True, "app_id": "A0FAKEAPP",
                "authed_user": {"id": self.account_for(answer["access_token"]).subject,
                                **user, "token_type": "user"},
                "team": team, "enterprise": None, "is_enterprise_install": False}
        if self.no_user_token:
            body["authed_user"] = {"id": body["authed_user"]["id"]}
        if self.bot_scopes or self.no_user_token:
            bot = "xoxb-" + secrets.token_urlsafe(24)
            with self._lock:
                self.bot_tokens.append(bot)
                self._issued.append(bot)
            body.update(access_token=bot, token_type="bot", scope="commands",
                        bot_user_id="U0BOT0001")
        return 200, body, headers

    def _team_of(self, access_token: str) -> dict[str, str]:
        account = self.account_for(access_token)
        claims = account.claims if account is not None else {}
        return {"id": claims.get("team_id", TEAM_ID), "name": claims.get("team_name", TEAM_NAME)}

    # ---- the Web API ------------------------------------------------------------------------

    def userinfo(self, request: Request):
        """``users.info``: the email only with users:read.email, as Slack gives it."""
        account = self.account_for(request.bearer)
        if account is None:
            return 200, {"ok": False, "error": "invalid_auth"}
        with self._lock:
            scopes = self._by_access[request.bearer].scopes
        if "users:read" not in scopes:
            return 200, {"ok": False, "error": "missing_scope", "needed": "users:read"}
        if request.query.get("user") != account.subject:
            return 200, {"ok": False, "error": "user_not_found"}
        profile = {"real_name": "Ada", "display_name": "ada"}
        if "users:read.email" in scopes and account.email:
            profile["email"] = account.email
        team = self._team_of(request.bearer)
        return 200, {"ok": True, "user": {
            "id": account.subject, "team_id": team["id"], "name": "ada", "deleted": False,
            "is_bot": False, "is_email_confirmed": bool(account.email_verified),
            "profile": profile}}

    def auth_test(self, request: Request):
        account = self.account_for(request.bearer)
        if account is None:
            return 200, {"ok": False, "error": "invalid_auth"}
        team = self._team_of(request.bearer)
        return 200, {"ok": True, "url": "https://example.slack.com/", "team": team["name"],
                     "user": "ada", "team_id": team["id"], "user_id": account.subject}

    def auth_revoke(self, request: Request):
        """Ends the grant of the token that authenticates the call."""
        with self._lock:
            self.revoked.append(request.bearer)
        if not self.end_grant_of(request.bearer):
            return 200, {"ok": False, "error": "invalid_auth"}
        return 200, {"ok": True, "revoked": True}
