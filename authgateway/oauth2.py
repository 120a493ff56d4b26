"""The core's default plugin: standard OAuth 2.0 / OpenID Connect.

Registered ``trylast``, so a provider plugin only overrides what its provider does differently.
The token endpoint and authorize URL pieces are public in ``authgateway.standard``.
"""

from __future__ import annotations

import logging

import requests

from . import standard
from .hookspecs import hookimpl
from .providers import (
    Identity,
    IdentityError,
    ProviderConfig,
    ProviderInfo,
    TokenSet,
)

log = logging.getLogger(__name__)


@hookimpl(trylast=True)
def authgateway_register_providers(settings) -> list[ProviderInfo]:
    return []


@hookimpl(trylast=True)
def authgateway_authorization_url(
    provider: ProviderInfo,
    config: ProviderConfig,
    state: str,
    code_challenge: str,
    scopes: list[str],
    login_hint: str | None,
) -> str:
    return standard.authorization_url(provider, config, state=state,
                                      code_challenge=code_challenge, scopes=scopes,
                                      login_hint=login_hint)


@hookimpl(trylast=True)
def authgateway_exchange_code(
    provider: ProviderInfo, config: ProviderConfig, code: str, code_verifier: str
) -> TokenSet:
    return standard.exchange_code(provider, config, code, code_verifier)


@hookimpl(trylast=True)
def authgateway_refresh_token(
    provider: ProviderInfo, config: ProviderConfig, refresh_token: str
) -> TokenSet:
    return standard.refresh_token(provider, config, refresh_token)


@hookimpl(trylast=True)
def authgateway_revoke_token(
    provider: ProviderInfo, config: ProviderConfig, token: str, token_type_hint: str
) -> bool:
    if not provider.revoke_url:
        return False
    auth_fields, headers = standard.client_authentication(provider, config)
    try:
        response = requests.post(
            provider.revoke_url, timeout=config.timeout, headers=headers,
            data={"token": token, "token_type_hint": token_type_hint, **auth_fields},
        )
    except requests.RequestException as exc:
        log.warning("revocation at %s failed: %s", provider.name, type(exc).__name__)
        return False
    if response.status_code == 200:
        return True
    # Google answers 400 invalid_token for a token that is already dead: it is revoked either way.
    if response.status_code == 400 and standard.error_code(
            standard.read_answer(response)) == "invalid_token":
        return True
    log.warning("revocation at %s answered %s", provider.name, response.status_code)
    return False


@hookimpl(trylast=True)
def authgateway_fetch_identity(
    provider: ProviderInfo, config: ProviderConfig, tokens: TokenSet
) -> Identity:
    if tokens.id_token and provider.jwks_url:
        claims = standard.verify_id_token(provider, config, tokens.id_token)
        if not claims.get("email") and provider.userinfo_url:
            # OIDC Core 5.4: a provider may keep the email claims for userinfo, whose answer
            # counts only for the subject the id_token names (5.3.2).
            extra = _userinfo(provider, config, tokens.access_token)
            if extra.get("sub") != claims.get("sub"):
                raise IdentityError(f"{provider.name} userinfo names another subject")
            claims = {**claims, "email": extra.get("email"),
                      "email_verified": extra.get("email_verified")}
    elif provider.userinfo_url:
        claims = _userinfo(provider, config, tokens.access_token)
    else:
        raise IdentityError(f"{provider.name} gave no id_token and has no userinfo endpoint")
    if not claims.get("sub"):
        raise IdentityError(f"{provider.name} did not name the signed-in account")
    email = claims.get("email")
    return Identity(
        subject=str(claims["sub"]),
        email=str(email) if email else None,
        email_verified=claims.get("email_verified") in (True, "true"),
    )


def _userinfo(provider: ProviderInfo, config: ProviderConfig, access_token: str) -> dict:
    try:
        response = requests.get(
            provider.userinfo_url,
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
            timeout=config.timeout,
        )
        response.raise_for_status()
        claims = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise IdentityError(f"{provider.name} userinfo failed: {type(exc).__name__}") from exc
    if not isinstance(claims, dict):
        raise IdentityError(f"{provider.name} userinfo is not a JSON object")
    return claims
