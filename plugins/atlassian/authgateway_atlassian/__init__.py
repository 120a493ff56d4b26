"""Atlassian Cloud (Jira, Confluence) for authgateway: OAuth 2.0 (3LO) apps.

What is Atlassian's own:

- The authorize URL carries ``audience=api.atlassian.com`` and ``prompt=consent``; scopes are
  space-separated, and ``offline_access`` (a refresh token) and ``read:me`` (who signed in) are
  always asked for.
- The token endpoint takes a JSON body with the client's id and secret in it.
- Refresh tokens rotate: every refresh answers a new one and invalidates the one sent, and
  sending an invalidated one again ends the whole grant. The core stores each new one in the
  same write as the access token, under the credential's lock.
- Who signed in comes from ``GET {API_URL}/me``: ``account_id`` is the subject, and ``email``
  counts only when ``email_verified`` is true.
- A token reaches sites, not one API: the accessible cloud sites
  (``GET {API_URL}/oauth/token/accessible-resources``) are the credential's account,
  ``{"sites": [{"id", "name", "url", "scopes"}, ...]}``, read at the exchange and again after
  each refresh.

Atlassian has no token revocation endpoint for 3LO apps, so a revocation deletes the
credential here and nothing more (the core's default answers ``provider_revoked: false``).
"""

from __future__ import annotations

import dataclasses
import logging

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
from authgateway.standard import parse_token_answer, read_answer

log = logging.getLogger(__name__)

NAME = "atlassian"
ENDPOINTS = {
    "AUTHORIZE_URL": "https://auth.atlassian.com/authorize",
    "TOKEN_URL": "https://auth.atlassian.com/oauth/token",
    "API_URL": "https://api.atlassian.com",
}
#: A refresh token (offline_access) and who signed in (read:me), whatever else is asked for.
IDENTITY_SCOPES = ("read:me", "offline_access")
SITE_FIELDS = ("id", "name", "url", "scopes")

UNVERIFIED_EMAIL = ("Atlassian does not say this account's email address is verified, so the "
                    "gateway cannot tell the address is yours.")
NO_EMAIL = ("Atlassian did not share this account's email address, so the gateway cannot tell "
            "it is the one this connection was started for.")


@dataclasses.dataclass(frozen=True)
class AtlassianInfo(ProviderInfo):
    """The declaration, with where the token's accessible sites are listed."""

    sites_url: str = ""


@hookimpl
def authgateway_register_providers(settings) -> list[ProviderInfo]:
    urls = {key: str(settings.get(f"ATLASSIAN_{key}", default)).strip()
            for key, default in ENDPOINTS.items()}
    api = urls["API_URL"].rstrip("/")
    scopes = str(settings.get("ATLASSIAN_SCOPES") or "").replace(",", " ").split()
    return [AtlassianInfo(
        name=NAME,
        display_name="Atlassian",
        authorize_url=urls["AUTHORIZE_URL"],
        token_url=urls["TOKEN_URL"],
        userinfo_url=api + "/me",
        sites_url=api + "/oauth/token/accessible-resources",
        identity_scopes=IDENTITY_SCOPES,
        default_scopes=tuple(dict.fromkeys(scopes)),
        extra_authorize_params={"audience": "api.atlassian.com", "prompt": "consent"},
        # Atlassian's consent screen documents no login hint.
        send_login_hint=False,
        client_auth_method="client_secret_post",
    )]


@hookimpl
def authgateway_exchange_code(
    provider: AtlassianInfo, config: ProviderConfig, code: str, code_verifier: str
) -> TokenSet:
    tokens = _token_request(provider, config, {
        "grant_type": "authorization_code", "code": code, "redirect_uri": config.redirect_uri,
        "code_verifier": code_verifier})
    # Without its sites a token reaches nothing: a failure here fails the flow, and the person
    # starts again (nothing was stored, no refresh token was spent).
    return _with_account(tokens, _sites(provider, config, tokens.access_token))


@hookimpl
def authgateway_refresh_token(
    provider: AtlassianInfo, config: ProviderConfig, refresh_token: str
) -> TokenSet:
    tokens = _token_request(provider, config,
                            {"grant_type": "refresh_token", "refresh_token": refresh_token})
    # The refresh token sent is invalid from here on: the new pair must reach the store whatever
    # the sites call does, so its failure keeps the sites stored before.
    try:
        sites = _sites(provider, config, tokens.access_token)
    except ProviderError as exc:
        log.warning("atlassian sites not refreshed: %s", exc.code)
        return tokens
    return _with_account(tokens, sites)


@hookimpl
def authgateway_fetch_identity(
    provider: ProviderInfo, config: ProviderConfig, tokens: TokenSet
) -> Identity:
    try:
        me = _api_get(config, tokens.access_token, provider.userinfo_url)
    except ProviderError as exc:
        raise IdentityError(f"atlassian /me failed ({exc.code})") from exc
    if not isinstance(me, dict) or not isinstance(me.get("account_id"), str) \
            or not me["account_id"]:
        raise IdentityError("Atlassian did not name the signed-in account")
    subject, email = me["account_id"], me.get("email")
    if not isinstance(email, str) or not email:
        return Identity(subject=subject, unproven_reason=NO_EMAIL, account=tokens.account)
    verified = me.get("email_verified") is True
    return Identity(subject=subject, email=email, email_verified=verified,
                    unproven_reason=None if verified else UNVERIFIED_EMAIL,
                    account=tokens.account)


def _token_request(provider: ProviderInfo, config: ProviderConfig, body: dict) -> TokenSet:
    try:
        response = requests.post(
            provider.token_url, timeout=config.timeout, allow_redirects=False,
            json={**body, "client_id": config.client_id, "client_secret": config.client_secret},
            headers={"Accept": "application/json"})
    except requests.Timeout as exc:
        raise ProviderUnavailable(f"{provider.name} timed out", code="timeout") from exc
    except requests.RequestException as exc:
        raise ProviderUnavailable(f"{provider.name} could not be reached",
                                  code="network_error") from exc
    return parse_token_answer(provider, response.status_code, read_answer(response))


def _sites(provider: AtlassianInfo, config: ProviderConfig, access_token: str) -> list[dict]:
    listed = _api_get(config, access_token, provider.sites_url)
    if not isinstance(listed, list):
        raise ProviderUnavailable("atlassian listed no sites", code="malformed_response")
    return [{key: site[key] for key in SITE_FIELDS if key in site} for site in listed
            if isinstance(site, dict) and isinstance(site.get("id"), str)]


def _with_account(tokens: TokenSet, sites: list[dict]) -> TokenSet:
    return dataclasses.replace(tokens, account={"sites": sites})


def _api_get(config: ProviderConfig, access_token: str, url: str):
    try:
        response = requests.get(url, timeout=config.timeout, headers={
            "Accept": "application/json", "Authorization": f"Bearer {access_token}"})
    except requests.RequestException as exc:
        raise ProviderUnavailable(f"atlassian API call failed: {type(exc).__name__}",
                                  code="network_error") from exc
    if response.status_code != 200:
        raise ProviderUnavailable(f"atlassian API answered {response.status_code}",
                                  code=f"http_{response.status_code}")
    try:
        return response.json()
    except ValueError as exc:
        raise ProviderUnavailable("atlassian API sent no JSON",
                                  code="malformed_response") from exc
