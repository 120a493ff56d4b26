"""What a provider plugin works with: its description, its settings, what it returns, its errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProviderInfo:
    """A provider as a plugin declares it; the core's default plugin needs nothing more for a
    standard OAuth 2.0 / OIDC provider."""

    name: str
    display_name: str
    #: Required unless ``discovery_url`` is set, which then supplies every endpoint left empty.
    authorize_url: str | None = None
    token_url: str | None = None
    revoke_url: str | None = None
    userinfo_url: str | None = None
    jwks_url: str | None = None
    #: Compared with the callback's RFC 9207 ``iss`` parameter, by simple string comparison.
    issuer: str | None = None
    #: ``iss`` claims accepted in id_tokens; empty means ``(issuer,)``.
    id_token_issuers: tuple[str, ...] = ()
    #: The provider always sends ``iss`` on the callback, so a callback without it is rejected.
    requires_iss_parameter: bool = False
    default_scopes: tuple[str, ...] = ()
    #: Always requested, because the gateway must verify who signed in.
    identity_scopes: tuple[str, ...] = ("openid", "email")
    extra_authorize_params: Mapping[str, str] = field(default_factory=dict)
    #: ``client_secret_basic`` or ``client_secret_post`` (RFC 6749 section 2.3.1).
    client_auth_method: str = "client_secret_basic"
    send_login_hint: bool = True
    #: An OpenID Connect discovery document (RFC 8414 metadata). The core fetches it when the
    #: provider is first used and fills in the endpoints, the issuer and the RFC 9207
    #: requirement (``authorization_response_iss_parameter_supported``) from it; see
    #: ``authgateway.discovery``.
    discovery_url: str | None = None

    def __post_init__(self) -> None:
        if not self.discovery_url and not (self.authorize_url and self.token_url):
            raise ValueError(
                f"provider '{self.name}' needs authorize_url and token_url, or a discovery_url"
            )

    @property
    def accepted_id_token_issuers(self) -> tuple[str, ...]:
        return self.id_token_issuers or ((self.issuer,) if self.issuer else ())


@dataclass(frozen=True)
class ProviderConfig:
    """The operator's settings for one provider (``<NAME>_CLIENT_ID`` and friends)."""

    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str
    timeout: float = 10.0


@dataclass(frozen=True)
class TokenSet:
    """What a token endpoint answered. ``scopes`` is None when the provider did not say."""

    access_token: str = field(repr=False)
    token_type: str = "Bearer"
    expires_in: int | None = None
    refresh_token: str | None = field(default=None, repr=False)
    scopes: tuple[str, ...] | None = None
    id_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Identity:
    """Who signed in, as the provider vouches for it."""

    subject: str
    email: str | None
    email_verified: bool


class ProviderError(Exception):
    """A provider call failed. ``code`` is the provider's error code, safe to store and show."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class InvalidGrant(ProviderError):
    """The grant is dead (revoked, expired, password changed): the user must authorize again."""


class ProviderUnavailable(ProviderError):
    """Network error, timeout, 5xx or 429: transient, so nothing stored may change."""


class ProviderMisconfigured(ProviderError):
    """invalid_client, unauthorized_client and the like: an operator must fix the settings."""


class IdentityError(ProviderError):
    """The provider's statement of who signed in could not be verified."""
