"""Any OAuth 2.0 provider for authgateway, by configuration alone: no OpenID Connect needed.

Each name in ``AUTH_GATEWAY_OAUTH2_PROVIDERS`` becomes a provider with the endpoints its
``<NAME>_*`` settings give. The core's standard pieces run the authorize URL (PKCE S256), the
token endpoint, refresh and RFC 7009 revocation; this module reads the settings and finds who
signed in in the provider's userinfo answer, at JSON pointers (RFC 6901) the operator names.
Every setting is checked at startup: a wrong or missing one stops the gateway with one sentence
naming it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from urllib.parse import urlsplit

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
from authgateway.errors import ConfigError
from authgateway.standard import listed_provider_names, names_loopback

log = logging.getLogger(__name__)

PROVIDERS_SETTING = "AUTH_GATEWAY_OAUTH2_PROVIDERS"
CLIENT_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
#: How ``scope`` in the token endpoint's answer separates scopes.
SCOPE_SEPARATORS = {"space": None, "comma": ","}
#: ``verified_email``: the email counts only when the provider says it is verified.
#: ``email``: any email the provider returns counts (see the README for the risk).
IDENTITY_MODES = ("verified_email", "email")
#: ``_REVOKE_REPLACED_GRANTS``: whether the grant a new flow replaces is revoked.
SWITCH = {"true": True, "false": False}
DEFAULT_POINTERS = {"SUBJECT_POINTER": "/sub", "EMAIL_POINTER": "/email",
                    "EMAIL_VERIFIED_POINTER": "/email_verified"}


@dataclasses.dataclass(frozen=True)
class OAuth2Info(ProviderInfo):
    """The declaration, with where the userinfo answer says who signed in."""

    subject_pointer: str = "/sub"
    email_pointer: str = "/email"
    email_verified_pointer: str = "/email_verified"
    #: ``_IDENTITY=email``: the operator accepts an email the provider did not verify.
    trust_unverified_email: bool = False


@hookimpl
def authgateway_register_providers(settings) -> list[ProviderInfo]:
    # The app config holds AUTH_GATEWAY_* environment variables without their prefix.
    listed = settings.get(PROVIDERS_SETTING) or settings.get("OAUTH2_PROVIDERS")
    return [provider(name, settings) for name in listed_provider_names(
        listed, PROVIDERS_SETTING, "acme -> ACME_TOKEN_URL")]



def provider(name: str, settings) -> OAuth2Info:
    """The declaration for one listed name, from its ``<NAME>_*`` settings."""
    prefix = name.upper()

    def choice(key: str, allowed, default: str) -> str:
        value = str(settings.get(f"{prefix}_{key}") or default).strip().lower()
        if value not in allowed:
            raise ConfigError(f"{prefix}_{key} is {value!r}: use {' or '.join(allowed)}.")
        return value

    method = choice("CLIENT_AUTH_METHOD", CLIENT_AUTH_METHODS, "client_secret_basic")
    # On only for a provider where each flow makes a grant of its own: where revoking one
    # token ends every grant of the user for the client (as at Google), it ends the new one.
    revoke_replaced = choice("REVOKE_REPLACED_GRANTS", tuple(SWITCH), "false")
    separator = choice("SCOPE_SEPARATOR", tuple(SCOPE_SEPARATORS), "space")
    identity = choice("IDENTITY", IDENTITY_MODES, "verified_email")
    pointers = {key: _pointer(f"{prefix}_{key}", settings.get(f"{prefix}_{key}") or default)
                for key, default in DEFAULT_POINTERS.items()}
    revoke = settings.get(f"{prefix}_REVOKE_URL")
    scopes = tuple(dict.fromkeys(str(settings.get(f"{prefix}_SCOPES") or "")
                                 .replace(",", " ").split()))
    return OAuth2Info(
        name=name,
        display_name=str(settings.get(f"{prefix}_DISPLAY_NAME") or name.replace("_", " ").title()),
        authorize_url=_url(f"{prefix}_AUTHORIZE_URL", settings.get(f"{prefix}_AUTHORIZE_URL")),
        token_url=_url(f"{prefix}_TOKEN_URL", settings.get(f"{prefix}_TOKEN_URL")),
        userinfo_url=_url(f"{prefix}_USERINFO_URL", settings.get(f"{prefix}_USERINFO_URL")),
        revoke_url=_url(f"{prefix}_REVOKE_URL", revoke) if revoke else None,
        # Whatever userinfo needs is asked for on every flow.
        identity_scopes=scopes,
        default_scopes=scopes,
        client_auth_method=method,
        # login_hint is OpenID Connect's, not OAuth 2.0's.
        send_login_hint=False,
        token_answers=TokenAnswers(scope_separator=SCOPE_SEPARATORS[separator]),
        subject_pointer=pointers["SUBJECT_POINTER"],
        email_pointer=pointers["EMAIL_POINTER"],
        email_verified_pointer=pointers["EMAIL_VERIFIED_POINTER"],
        trust_unverified_email=identity == "email",
        revoke_replaced_grants=SWITCH[revoke_replaced],
    )


@hookimpl
def authgateway_fetch_identity(
    provider: ProviderInfo, config: ProviderConfig, tokens: TokenSet
) -> Identity:
    answer = _userinfo(provider, config, tokens.access_token)
    subject = resolve(answer, provider.subject_pointer)
    if isinstance(subject, bool) or not isinstance(subject, (str, int)) or subject == "":
        raise IdentityError(f"{provider.name} userinfo has no subject at "
                            f"{provider.subject_pointer}")
    email = resolve(answer, provider.email_pointer)
    if not isinstance(email, str) or not email:
        return Identity(subject=str(subject), unproven_reason=(
            f"{provider.display_name} did not share this account's email address, so the "
            "gateway cannot tell it is the one this connection was started for."))
    if provider.trust_unverified_email:
        return Identity(subject=str(subject), email=email, email_verified=True)
    verified = resolve(answer, provider.email_verified_pointer) in (True, "true")
    return Identity(subject=str(subject), email=email, email_verified=verified,
                    unproven_reason=None if verified else (
                        f"{provider.display_name} does not say that this account's email "
                        "address is verified, so the gateway cannot tell the address is yours."))


_MISSING = object()


def resolve(document: object, pointer: str) -> object:
    """The value at a JSON pointer (RFC 6901), or None when there is none."""
    value = document
    for token in pointer.split("/")[1:] if pointer else ():
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict):
            value = value.get(token, _MISSING)
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value) \
                and (token == "0" or not token.startswith("0")):
            value = value[int(token)]
        else:
            value = _MISSING
        if value is _MISSING:
            return None
    return value


def _userinfo(provider: ProviderInfo, config: ProviderConfig, access_token: str) -> object:
    try:
        response = requests.get(
            provider.userinfo_url, timeout=config.timeout, allow_redirects=False,
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"})
        response.raise_for_status()
        return response.json()
    except (requests.RequestException, ValueError) as exc:
        raise IdentityError(f"{provider.name} userinfo failed: {type(exc).__name__}") from exc


def _url(setting: str, value: object) -> str:
    url = str(value or "").strip()
    if not url:
        raise ConfigError(f"{setting} is not set: set it to the provider's endpoint URL, "
                          "as its documentation gives it.")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.fragment:
        raise ConfigError(f"{setting} is {url!r}: it must be an https URL without fragment.")
    if parts.scheme == "http" and not names_loopback(parts.hostname):
        log.warning("%s uses plain http on %s: client secrets and tokens would cross the "
                    "network unencrypted; use https outside a test bench.", setting,
                    parts.hostname)
    return url


def _pointer(setting: str, value: object) -> str:
    pointer = str(value).strip()
    if not pointer.startswith("/") or re.search(r"~[^01]|~$", pointer):
        raise ConfigError(
            f"{setting} is {pointer!r}: write a JSON pointer into the userinfo answer, such as "
            "/id or /data/attributes/email (RFC 6901: '/' starts each step, ~1 is a '/' in a "
            "name, ~0 a '~')."
        )
    return pointer

