"""Microsoft Entra ID (work, school and personal Microsoft accounts) for authgateway.

OpenID Connect, found by discovery under ``{MICROSOFT_AUTHORITY_URL}/{MICROSOFT_TENANT}/v2.0``,
with Microsoft's three departures from the textbook:

- With the ``common`` and ``organizations`` tenants the discovered issuer is a template,
  ``.../{tenantid}/v2.0``: an id_token's ``iss`` is accepted when it is that template with the
  token's own ``tid`` in it, and ``MICROSOFT_ALLOWED_TENANTS`` restricts which ``tid`` may connect.
- ``email`` is not verified by Microsoft and an organisation's administrator can set it to any
  address. It proves the address only when the optional claim ``xms_edov`` (email domain owner
  verified) is true, or when the operator vouches for the tenant by listing it in
  ``MICROSOFT_ALLOWED_TENANTS``; otherwise the flow fails with ``email_mismatch``.
- The account is ``tid`` + ``oid`` (the same person in two tenants is two accounts), never the
  email.

Refresh tokens replace themselves on every use; the core stores each new one. Microsoft has no
RFC 7009 revocation endpoint, so a revocation deletes the credential here and nothing more.
"""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import urlsplit

from authgateway import Identity, IdentityError, ProviderConfig, ProviderInfo, TokenSet, hookimpl
from authgateway.errors import ConfigError
from authgateway.standard import verify_id_token

NAME = "microsoft"
AUTHORITY_URL = "https://login.microsoftonline.com"
DEFAULT_TENANT = "common"
#: Who signed in: ``oid`` needs ``profile``, the refresh token needs ``offline_access``.
IDENTITY_SCOPES = ("openid", "profile", "email", "offline_access")
DEFAULT_SCOPES = ("https://graph.microsoft.com/User.Read",)
#: Endpoints an operator may set instead of the discovered ones.
ENDPOINT_SETTINGS = {"AUTHORIZE_URL": "authorize_url", "TOKEN_URL": "token_url",
                     "USERINFO_URL": "userinfo_url", "JWKS_URL": "jwks_url"}
TENANT_PLACEHOLDER = "{tenantid}"
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")

UNVERIFIED_EMAIL = (
    "Microsoft does not vouch for this account's email address: the organisation has not "
    "proven that it owns the address's domain, so the gateway cannot tell the address is yours."
)
NO_EMAIL = ("Microsoft did not share this account's email address, so the gateway cannot tell "
            "it is the one this connection was started for.")
TENANT_REFUSED = ("This gateway does not accept accounts of your organisation's Microsoft "
                  "tenant; its operator decides which organisations may connect.")


@dataclasses.dataclass(frozen=True)
class MicrosoftInfo(ProviderInfo):
    """The declaration, with the tenants whose accounts may connect (empty: any tenant)."""

    allowed_tenants: frozenset[str] = frozenset()


@hookimpl
def authgateway_register_providers(settings) -> list[ProviderInfo]:
    authority = _authority(settings.get("MICROSOFT_AUTHORITY_URL") or AUTHORITY_URL)
    tenant = _tenant(settings.get("MICROSOFT_TENANT") or DEFAULT_TENANT)
    allowed = _allowed_tenants(settings.get("MICROSOFT_ALLOWED_TENANTS"))
    if allowed and GUID.match(tenant) and tenant not in allowed:
        raise ConfigError(
            f"MICROSOFT_ALLOWED_TENANTS does not list MICROSOFT_TENANT ({tenant}), the only "
            "tenant that can sign in: add it, or unset MICROSOFT_ALLOWED_TENANTS."
        )
    endpoints = {field: str(settings.get(f"MICROSOFT_{key}")).strip()
                 for key, field in ENDPOINT_SETTINGS.items() if settings.get(f"MICROSOFT_{key}")}
    scopes = str(settings.get("MICROSOFT_SCOPES") or "").replace(",", " ").split()
    return [MicrosoftInfo(
        name=NAME,
        display_name="Microsoft",
        # Microsoft's authority URL: {authority}/{tenant}/v2.0, its document one level below.
        discovery_url=f"{authority}/{tenant}/v2.0/.well-known/openid-configuration",
        identity_scopes=IDENTITY_SCOPES,
        default_scopes=tuple(dict.fromkeys(scopes)) or DEFAULT_SCOPES,
        client_auth_method="client_secret_post",
        allowed_tenants=allowed,
        **endpoints,
    )]


@hookimpl
def authgateway_fetch_identity(
    provider: ProviderInfo, config: ProviderConfig, tokens: TokenSet
) -> Identity:
    if not tokens.id_token or not provider.jwks_url:
        raise IdentityError("Microsoft sent no id_token (the openid scope is always asked for)")
    claims = verify_id_token(provider, config, tokens.id_token,
                             issuers=lambda claims: _issuers(provider, claims))
    tenant, account = str(claims["tid"]).lower(), claims.get("oid")  # tid: checked by _issuers
    if not isinstance(account, str) or not account:
        raise IdentityError("Microsoft's id_token has no oid (it comes with the profile scope)")
    subject = f"{tenant}/{account}"
    # The tenant, for a caller that calls Microsoft Graph or routes by organisation.
    tenant_account = {"tenant_id": tenant}
    allowed = provider.allowed_tenants
    if allowed and tenant not in allowed:
        return Identity(subject=subject, unproven_reason=TENANT_REFUSED)
    email = claims.get("email")
    if not isinstance(email, str) or not email:
        return Identity(subject=subject, unproven_reason=NO_EMAIL)
    verified = tenant in allowed or claims.get("xms_edov") in (True, 1, "1", "true", "True")
    return Identity(subject=subject, email=email, email_verified=verified,
                    unproven_reason=None if verified else UNVERIFIED_EMAIL,
                    account=tenant_account)


def _issuers(provider: ProviderInfo, claims) -> tuple[str, ...]:
    """The one ``iss`` this token may carry: the discovered issuer, with the token's own tenant
    in place of the placeholder that ``common`` and ``organizations`` publish."""
    tenant = claims.get("tid")
    if not isinstance(tenant, str) or not GUID.match(tenant):
        raise IdentityError("Microsoft's id_token names no tenant (tid)")
    return (str(provider.issuer).replace(TENANT_PLACEHOLDER, tenant),)


def _authority(value: object) -> str:
    authority = str(value).strip().rstrip("/")
    parts = urlsplit(authority)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query \
            or parts.fragment or parts.path:
        raise ConfigError(
            f"MICROSOFT_AUTHORITY_URL is {authority!r}: it must be the sign-in service's base "
            "URL alone, such as https://login.microsoftonline.com (the tenant goes in "
            "MICROSOFT_TENANT)."
        )
    return authority


def _tenant(value: object) -> str:
    tenant = str(value).strip().lower()
    if tenant in ("common", "organizations", "consumers") or GUID.match(tenant) \
            or DOMAIN.match(tenant):
        return tenant
    raise ConfigError(
        f"MICROSOFT_TENANT is {value!r}: use common, organizations, consumers, a tenant id "
        "(a GUID) or a tenant's domain such as contoso.onmicrosoft.com."
    )


def _allowed_tenants(value: object) -> frozenset[str]:
    parts = value if isinstance(value, (list, tuple, set, frozenset)) else \
        str(value or "").split(",")
    tenants = {str(part).strip().lower() for part in parts if str(part).strip()}
    wrong = sorted(tenant for tenant in tenants if not GUID.match(tenant))
    if wrong:
        raise ConfigError(
            f"MICROSOFT_ALLOWED_TENANTS lists {', '.join(wrong)}, which is not a tenant id: "
            "list the tenants' ids (GUIDs, as in the tid claim), separated by commas."
        )
    return frozenset(tenants)
