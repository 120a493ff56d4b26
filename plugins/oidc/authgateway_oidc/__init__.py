"""Any standard OpenID Connect provider for authgateway, by configuration alone.

Each name in ``AUTH_GATEWAY_OIDC_PROVIDERS`` becomes a provider declared by its issuer. The core
discovers its endpoints when it is first used, verifies its id_tokens against its JWKS, and
enforces RFC 9207 ``iss`` when its metadata says it sends it: this module only reads settings.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlsplit

from authgateway import ProviderInfo, hookimpl
from authgateway.errors import ConfigError
from authgateway.standard import listed_provider_names, names_loopback

log = logging.getLogger(__name__)

PROVIDERS_SETTING = "AUTH_GATEWAY_OIDC_PROVIDERS"
DEFAULT_SCOPES = ("openid", "email", "profile")
CLIENT_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
#: The gateway sets these itself on every authorization request.
RESERVED_PARAMS = frozenset({"client_id", "redirect_uri", "response_type", "scope", "state",
                             "code_challenge", "code_challenge_method"})


@hookimpl
def authgateway_register_providers(settings) -> list[ProviderInfo]:
    # The app config holds AUTH_GATEWAY_* environment variables without their prefix.
    listed = settings.get(PROVIDERS_SETTING) or settings.get("OIDC_PROVIDERS")
    return [provider(name, settings) for name in listed_provider_names(
        listed, PROVIDERS_SETTING, "keycloak -> KEYCLOAK_ISSUER")]



def provider(name: str, settings) -> ProviderInfo:
    """The declaration for one listed name, from its ``<NAME>_*`` settings."""
    prefix = name.upper()
    issuer = _issuer(prefix, settings.get(f"{prefix}_ISSUER"))
    method = str(settings.get(f"{prefix}_CLIENT_AUTH_METHOD") or CLIENT_AUTH_METHODS[0]).strip()
    if method not in CLIENT_AUTH_METHODS:
        raise ConfigError(
            f"{prefix}_CLIENT_AUTH_METHOD is {method!r}: use client_secret_basic (the default) "
            "or client_secret_post, as registered with the provider."
        )
    return ProviderInfo(
        name=name,
        display_name=str(settings.get(f"{prefix}_DISPLAY_NAME") or name.replace("_", " ").title()),
        issuer=issuer,
        # OpenID Connect Discovery 1.0 section 4: a terminating "/" is removed before appending.
        discovery_url=issuer.rstrip("/") + "/.well-known/openid-configuration",
        default_scopes=_scopes(settings.get(f"{prefix}_SCOPES")),
        extra_authorize_params=_extra_params(prefix,
                                             settings.get(f"{prefix}_EXTRA_AUTHORIZE_PARAMS")),
        client_auth_method=method,
    )


def _issuer(prefix: str, value: object) -> str:
    issuer = str(value or "").strip()
    if not issuer:
        raise ConfigError(
            f"{prefix}_ISSUER is not set: set it to the provider's issuer URL, exactly as its "
            "/.well-known/openid-configuration names it (e.g. https://idp.example.com/realms/main)."
        )
    parts = urlsplit(issuer)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query \
            or parts.fragment:
        raise ConfigError(
            f"{prefix}_ISSUER is {issuer!r}: it must be an https URL without query or fragment."
        )
    if parts.scheme == "http" and not names_loopback(parts.hostname):
        log.warning("%s_ISSUER uses plain http on %s: client secrets and tokens would cross the "
                    "network unencrypted; use https outside a test bench.", prefix, parts.hostname)
    return issuer



def _scopes(value: object) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        scopes = [str(v) for v in value]
    else:
        scopes = str(value or "").replace(",", " ").split()
    return tuple(dict.fromkeys(scopes)) or DEFAULT_SCOPES


def _extra_params(prefix: str, value: object) -> dict[str, str]:
    if isinstance(value, dict):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    elif not value:
        return {}
    else:
        try:
            pairs = parse_qsl(str(value).strip(), keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise ConfigError(
                f"{prefix}_EXTRA_AUTHORIZE_PARAMS is not in query-string syntax: write it like "
                "prompt=consent&acr_values=mfa"
            ) from None
    reserved = sorted({key for key, _ in pairs} & RESERVED_PARAMS)
    if reserved:
        raise ConfigError(
            f"{prefix}_EXTRA_AUTHORIZE_PARAMS sets {', '.join(reserved)}, which the gateway "
            "sets itself on every request: remove it (scopes go in "
            f"{prefix}_SCOPES)."
        )
    return dict(pairs)
