"""A fake GitHub for tests, built on the plugin kit's ``FakeProvider``: the OAuth web flow, the
token endpoint, ``GET /user``, ``GET /user/emails`` and grant revocation, as GitHub's
documentation describes them. As GitHub does:
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
The person signs in as ``account`` (``authgateway.testing.Account``: ``subject`` is the numeric
id, ``email`` the primary address, ``emails`` the others).
"""

from __future__ import annotations

import base64

from authgateway.testing import Account, Email, FakeProvider, Request

__all__ = ["ACCESS_TTL", "Account", "Email", "FakeGitHub"]

AUTHORIZE_PATH = "/login/oauth/authorize"
TOKEN_PATH = "/login/oauth/access_token"
API_PREFIX = "/api"
ACCESS_TTL = 28800


class FakeGitHub(FakeProvider):
    def __init__(self, *, client_id: str = "Iv1.test-client", client_secret: str = "gh-secret",
                 expiring: bool = False) -> None:
        super().__init__(client_id=client_id, client_secret=client_secret,
                         authorize_path=AUTHORIZE_PATH, token_path=TOKEN_PATH,
                         userinfo_path=API_PREFIX + "/user", revoke_path=None, answers="accept",
                         error_status=200, dead_grant_error="bad_refresh_token",
                         bad_code_error="bad_verification_code",
                         bad_client_error="incorrect_client_credentials", scope_separator=",")
        self.expiring = expiring
        self.account = Account(subject="583231", email="ada@example.com",
                               claims={"login": "octocat"})
        self.routes.update({
            ("GET", API_PREFIX + "/user"): self._user,
            ("GET", API_PREFIX + "/user/emails"): self._emails,
            ("DELETE", f"{API_PREFIX}/applications/{client_id}/grant"): self._revoke_grant,
        })

    @property
    def expiring(self) -> bool:
        """A GitHub App with expiring user tokens (True) or an OAuth App (False)."""
        return self.expires_in is not None

    @expiring.setter
    def expiring(self, value: bool) -> None:
        self.expires_in = ACCESS_TTL if value else None
        self.refresh_tokens = self.rotate_refresh_tokens = value
        self.access_prefix, self.refresh_prefix = ("ghu_" if value else "gho_"), "ghr_"

    def settings(self, redirect_uri: str) -> dict[str, str]:
        return {"GITHUB_CLIENT_ID": self.client_id, "GITHUB_CLIENT_SECRET": self.client_secret,
                "GITHUB_REDIRECT_URI": redirect_uri,
                "GITHUB_AUTHORIZE_URL": self.url + AUTHORIZE_PATH,
                "GITHUB_TOKEN_URL": self.url + TOKEN_PATH,
                "GITHUB_API_URL": self.url + API_PREFIX}

    def _user(self, request: Request):
        account = self.account_for(request.bearer)
        if account is None:
            return 401, {"message": "Bad credentials"}
        primary = account.email if account.email_verified else None
        return 200, {"login": account.claims.get("login"), "id": int(account.subject),
                     "email": primary}

    def _emails(self, request: Request):
        account = self.account_for(request.bearer)
        if account is None:
            return 401, {"message": "Bad credentials"}
        entries = [(account.email, account.email_verified, True)]
        entries += [(email.address, email.verified, False) for email in account.emails]
        return 200, [{"email": address, "verified": verified, "primary": primary,
                      "visibility": "private"} for address, verified, primary in entries]

    def _revoke_grant(self, request: Request):
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if request.headers.get("Authorization", "") != "Basic " + expected:
            return 401, {"message": "Requires authentication"}
        try:
            token = request.json().get("access_token", "")
        except (ValueError, AttributeError):
            return 400, {"message": "Problems parsing JSON"}
        self.revoked.append(token)
        if not self.end_grant_of(token):
            return 404, {"message": "Not Found"}
        return 204, b""
