"""Notion (public connections) for authgateway.

Notion's OAuth departs from the textbook in four ways, and this plugin is those four:

- The token endpoint takes HTTP Basic client authentication and a JSON body (not a form), and
  every call names the API version in a ``Notion-Version`` header. Its errors come either as
  OAuth errors (``{"error": "invalid_client"}``) or as Notion API errors
  (``{"object": "error", "code": "invalid_grant", ...}``); both are read.
- There are no scopes: the person picks pages while consenting, and ``owner=user`` asks for a
  token that acts as them.
- Who signed in is in the token answer itself, ``owner.user`` (its ``id`` and
  ``person.email``); there is no userinfo call. The email is shared only when the connection has
  the capability to read user information including email addresses.
- The workspace the grant belongs to (``workspace_id``, ``workspace_name``, ``bot_id``) is
  returned to the caller as the credential's account.

Refresh tokens, when Notion issues them, rotate: each refresh answers a new one, which the core
stores in the same write. Revocation is ``POST /v1/oauth/revoke`` with the access token.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from urllib.parse import quote, urlencode

import requests

from authgateway import (
    Identity,
    IdentityError,
    ProviderConfig,
    ProviderError,
    ProviderInfo,
    ProviderUnavailable,
    TokenSet,
    hookimpl,
)
from authgateway.standard import client_authentication, parse_token_answer, read_answer

NAME = "notion"
ENDPOINTS = {
    "AUTHORIZE_URL": "https://api.notion.com/v1/oauth/authorize",
    "TOKEN_URL": "https://api.notion.com/v1/oauth/token",
    "API_URL": "https://api.notion.com",
}
#: The API version every call names; NOTION_VERSION sets another.
NOTION_VERSION = "2025-09-03"
#: What the account object carries, from the token answer.
ACCOUNT_FIELDS = ("workspace_id", "workspace_name", "bot_id")

NO_EMAIL = (
    "Notion did not share this account's email address (the connection needs the capability "
    "to read user information including email addresses), so the gateway cannot tell it is "
    "the one this connection was started for."
)


@dataclasses.dataclass(frozen=True)
class NotionInfo(ProviderInfo):
    """The declaration, with the API version sent in ``Notion-Version``."""

    notion_version: str = NOTION_VERSION


@dataclasses.dataclass(frozen=True)
class NotionTokens(TokenSet):
    """A token answer with its ``owner``: who signed in, read by ``fetch_identity``."""

    owner: Mapping | None = dataclasses.field(default=None, repr=False)


@hookimpl
def authgateway_register_providers(settings) -> list[ProviderInfo]:
    urls = {key: str(settings.get(f"NOTION_{key}", default)).strip()
            for key, default in ENDPOINTS.items()}
    return [NotionInfo(
        name=NAME,
        display_name="Notion",
        authorize_url=urls["AUTHORIZE_URL"],
        token_url=urls["TOKEN_URL"],
        revoke_url=urls["API_URL"].rstrip("/") + "/v1/oauth/revoke",
        identity_scopes=(),
        default_scopes=(),
        extra_authorize_params={"owner": "user"},
        # Notion's consent page picks the account itself and takes no hint.
        send_login_hint=False,
        client_auth_method="client_secret_basic",
        revoke_with="access_token",
        notion_version=str(settings.get("NOTION_VERSION") or NOTION_VERSION).strip(),
    )]


@hookimpl
def authgateway_authorization_url(
    provider: ProviderInfo, config: ProviderConfig, state: str, code_challenge: str,
    scopes: list[str], login_hint: str | None,
) -> str:
    """Notion has no scopes (the person picks pages while consenting), so none is sent."""
    params = {"client_id": config.client_id, "redirect_uri": config.redirect_uri,
              "response_type": "code", "state": state, **provider.extra_authorize_params,
              "code_challenge": code_challenge, "code_challenge_method": "S256"}
    separator = "&" if "?" in provider.authorize_url else "?"
    return provider.authorize_url + separator + urlencode(params, quote_via=quote)


@hookimpl
def authgateway_exchange_code(
    provider: NotionInfo, config: ProviderConfig, code: str, code_verifier: str
) -> TokenSet:
    # Notion's token endpoint takes no code_verifier: its body is exactly these fields.
    body = _post(provider, config, provider.token_url, {
        "grant_type": "authorization_code", "code": code, "redirect_uri": config.redirect_uri})
    tokens = _tokens(provider, body)
    if tokens.account is None:
        raise ProviderUnavailable("notion named no workspace_id", code="malformed_response")
    return tokens


@hookimpl
def authgateway_refresh_token(
    provider: NotionInfo, config: ProviderConfig, refresh_token: str
) -> TokenSet:
    return _tokens(provider, _post(provider, config, provider.token_url, {
        "grant_type": "refresh_token", "refresh_token": refresh_token}))


@hookimpl
def authgateway_fetch_identity(
    provider: ProviderInfo, config: ProviderConfig, tokens: TokenSet
) -> Identity:
    owner = getattr(tokens, "owner", None)
    user = owner.get("user") if isinstance(owner, Mapping) and owner.get("type") == "user" \
        else None
    if not isinstance(user, Mapping) or not isinstance(user.get("id"), str) or not user["id"]:
        raise IdentityError("Notion named no user as the grant's owner (owner=user is asked for)")
    person = user.get("person")
    email = person.get("email") if isinstance(person, Mapping) else None
    if not isinstance(email, str) or not email:
        return Identity(subject=user["id"], unproven_reason=NO_EMAIL, account=tokens.account)
    # The address a Notion account signs in with (by a code mailed to it, or through the
    # Google, Apple or SAML account of that address): Notion vouches for it.
    return Identity(subject=user["id"], email=email, email_verified=True,
                    account=tokens.account)


@hookimpl
def authgateway_revoke_token(
    provider: NotionInfo, config: ProviderConfig, token: str, token_type_hint: str
) -> bool:
    try:
        _post(provider, config, provider.revoke_url, {"token": token})
    except ProviderError:
        return False  # unreachable or refused: the token may still be live
    return True


def _post(provider: NotionInfo, config: ProviderConfig, url: str, body: dict) -> dict:
    """POST ``body`` as JSON with the client's Basic authentication; the answer as a dict, or
    the ``ProviderError`` a failed answer means."""
    _, headers = client_authentication(provider, config)
    try:
        response = requests.post(url, json=body, timeout=config.timeout, allow_redirects=False,
                                 headers={"Accept": "application/json",
                                          "Notion-Version": provider.notion_version, **headers})
    except requests.Timeout as exc:
        raise ProviderUnavailable(f"{provider.name} timed out", code="timeout") from exc
    except requests.RequestException as exc:
        raise ProviderUnavailable(f"{provider.name} could not be reached",
                                  code="network_error") from exc
    answer = _as_oauth_error(read_answer(response))
    if response.status_code >= 400 or (answer is not None and "error" in answer):
        parse_token_answer(provider, response.status_code, answer)  # raises the error it means
    if answer is None:
        raise ProviderUnavailable(f"{provider.name} sent an unreadable answer",
                                  code="malformed_response")
    return answer


def _tokens(provider: ProviderInfo, answer: dict) -> NotionTokens:
    tokens = parse_token_answer(provider, 200, answer)
    account = None
    if isinstance(answer.get("workspace_id"), str) and answer["workspace_id"]:
        account = {key: answer[key] for key in ACCOUNT_FIELDS if isinstance(answer.get(key), str)}
    owner = answer.get("owner")
    fields = {field.name: getattr(tokens, field.name) for field in dataclasses.fields(TokenSet)}
    return NotionTokens(**{**fields, "account": account},
                        owner=owner if isinstance(owner, Mapping) else None)


def _as_oauth_error(answer: dict | None) -> dict | None:
    """A Notion API error (``object: error`` with a ``code``) read as an OAuth error."""
    if answer is not None and answer.get("object") == "error" and "error" not in answer:
        return {"error": answer.get("code") or "unreadable_error"}
    return answer
