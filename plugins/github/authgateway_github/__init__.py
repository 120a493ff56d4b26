"""GitHub for authgateway: plain OAuth 2.0 without OpenID Connect.

The core's standard pieces do the authorize URL and the token endpoint, told how GitHub's
answers read (comma-separated scopes, errors sent with HTTP 200, ``bad_refresh_token`` for a
dead grant). This plugin adds what is GitHub's own: who signed in comes from the REST API
(``GET /user``, ``GET /user/emails``), and revocation deletes the grant through the REST API.
Both kinds of GitHub client work: an OAuth App (tokens that never expire) and a GitHub App with
expiring user tokens (8 h, single-use refresh tokens that rotate).
"""

from __future__ import annotations

import requests

from authgateway import (
    Identity,
    IdentityError,
    ProviderConfig,
    ProviderInfo,
    TokenAnswers,
    TokenSet,
    hookimpl,
)

NAME = "github"
ENDPOINTS = {
    "AUTHORIZE_URL": "https://github.com/login/oauth/authorize",
    "TOKEN_URL": "https://github.com/login/oauth/access_token",
    "API_URL": "https://api.github.com",
}
#: Who signed in (read:user) and every address of the account with its verification (user:email).
SCOPES = ("read:user", "user:email")
TOKEN_ANSWERS = TokenAnswers(
    scope_separator=",",
    dead_grant_errors=frozenset({"bad_refresh_token", "bad_verification_code"}),
    misconfiguration_errors=frozenset({
        "incorrect_client_credentials", "redirect_uri_mismatch", "invalid_client",
        "unauthorized_client", "invalid_request", "unsupported_grant_type",
    }),
)
API_HEADERS = {"Accept": "application/vnd.github+json", "User-Agent": "authgateway-github",
               "X-GitHub-Api-Version": "2022-11-28"}


@hookimpl
def authgateway_register_providers(settings) -> list[ProviderInfo]:
    urls = {key: settings.get(f"GITHUB_{key}", default) for key, default in ENDPOINTS.items()}
    api = urls["API_URL"].rstrip("/")
    return [
        ProviderInfo(
            name=NAME,
            display_name="GitHub",
            authorize_url=urls["AUTHORIZE_URL"],
            token_url=urls["TOKEN_URL"],
            userinfo_url=api + "/user",
            revoke_url=api + "/applications/{client_id}/grant",
            identity_scopes=SCOPES,
            default_scopes=SCOPES,
            # GitHub's `login` names an account, not an email: the gateway never knows it.
            send_login_hint=False,
            client_auth_method="client_secret_post",
            token_answers=TOKEN_ANSWERS,
            revoke_with="access_token",
            # Revocation deletes the whole authorization, the token a new flow just stored
            # included.
            revoke_replaced_grants=False,
        )
    ]


@hookimpl
def authgateway_fetch_identity(
    provider: ProviderInfo, config: ProviderConfig, tokens: TokenSet
) -> Identity | None:
    if provider.name != NAME:
        return None
    user = _api_get(provider, config, tokens.access_token, provider.userinfo_url)
    # The list is paginated (30 by default); 100 per page covers any real account.
    emails = _api_get(provider, config, tokens.access_token,
                      provider.userinfo_url + "/emails?per_page=100")
    if not isinstance(user, dict) or not isinstance(user.get("id"), int):
        raise IdentityError("GitHub did not name the signed-in account")
    if not isinstance(emails, list):
        raise IdentityError("GitHub did not list the account's email addresses")
    # Only verified addresses prove anything; the public `email` of /user proves nothing.
    verified = [entry for entry in emails if isinstance(entry, dict)
                and entry.get("verified") is True and isinstance(entry.get("email"), str)]
    primary = next((entry["email"] for entry in verified if entry.get("primary") is True), None)
    return Identity(subject=str(user["id"]), email=primary, email_verified=primary is not None,
                    verified_emails=tuple(entry["email"] for entry in verified))


@hookimpl
def authgateway_revoke_token(
    provider: ProviderInfo, config: ProviderConfig, token: str, token_type_hint: str
) -> bool | None:
    """Delete the whole grant: every token of this app for the user stops working."""
    if provider.name != NAME:
        return None
    if token_type_hint != "access_token" or not provider.revoke_url:
        return False  # GitHub revokes a grant by its access token only
    try:
        response = requests.delete(
            provider.revoke_url.format(client_id=config.client_id),
            auth=(config.client_id, config.client_secret), json={"access_token": token},
            headers=API_HEADERS, timeout=config.timeout,
        )
    except requests.RequestException:
        return False
    return response.status_code == 204


def _api_get(provider: ProviderInfo, config: ProviderConfig, access_token: str, url: str):
    try:
        response = requests.get(url, timeout=config.timeout,
                                headers={**API_HEADERS, "Authorization": f"Bearer {access_token}"})
        response.raise_for_status()
        return response.json()
    except (requests.RequestException, ValueError) as exc:
        raise IdentityError(f"{provider.name} API call failed: {type(exc).__name__}") from exc
