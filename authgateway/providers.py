"""What a provider plugin works with: its description, its settings, what it returns, its errors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

#: Token endpoint errors that are the operator's to fix (RFC 6749 section 5.2 apart from
#: invalid_grant, plus Google's redirect_uri_mismatch).
MISCONFIGURATION_ERRORS = frozenset({
    "invalid_client", "unauthorized_client", "redirect_uri_mismatch", "invalid_request",
    "invalid_scope", "unsupported_grant_type",
})


@dataclass(frozen=True)
class TokenAnswers:
    """How a provider's token endpoint answers, for the one function that reads every answer
    (``authgateway.standard.parse_token_answer``). Whatever the provider, an answer carrying
    ``error`` is an error even with HTTP 200, numbers sent as strings (``"28800"``) are read
    as numbers, and an answer without ``expires_in`` is a token that never expires (its
    ``expires_at`` is null and it is never refreshed)."""

    #: How ``scope`` in the answer separates scopes; None means whitespace (RFC 6749 section
    #: 3.3). GitHub answers ``read:user,user:email``.
    scope_separator: str | None = None
    #: Error codes saying the grant (the code or the refresh token) is dead: the user must
    #: authorize again. Raised as ``InvalidGrant``.
    dead_grant_errors: frozenset[str] = frozenset({"invalid_grant"})
    #: Error codes an operator must fix. Raised as ``ProviderMisconfigured``, as is any other
    #: 4xx or error code; 429, 5xx, timeouts and unreadable answers are ``ProviderUnavailable``.
    misconfiguration_errors: frozenset[str] = MISCONFIGURATION_ERRORS


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
    #: Scopes that grant others: a grant of the key covers each scope of its value (Google's
    #: ``.../auth/drive`` covers ``.../auth/drive.readonly``). Scopes are otherwise compared as
    #: exact strings; see ``missing_scopes``.
    implied_scopes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    extra_authorize_params: Mapping[str, str] = field(default_factory=dict)
    #: ``client_secret_basic`` or ``client_secret_post`` (RFC 6749 section 2.3.1).
    client_auth_method: str = "client_secret_basic"
    send_login_hint: bool = True
    #: An OpenID Connect discovery document (RFC 8414 metadata). The core fetches it when the
    #: provider is first used and fills in the endpoints, the issuer and the RFC 9207
    #: requirement (``authorization_response_iss_parameter_supported``) from it; see
    #: ``authgateway.discovery``.
    discovery_url: str | None = None
    #: How the token endpoint's answers read; see ``TokenAnswers``.
    token_answers: TokenAnswers = field(default_factory=TokenAnswers)
    #: Which token revocation sends when the credential has both: ``refresh_token`` (RFC 7009:
    #: revoking it ends the grant) or ``access_token`` (GitHub revokes a grant by its access
    #: token only).
    revoke_with: str = "refresh_token"
    #: When a new flow replaces the user's stored credential, revoke the grant it replaced at
    #: the provider (with the token ``revoke_with`` names), after the new credential is
    #: committed: best effort, audited as ``grant_replaced``, never failing the flow. For
    #: providers where each flow makes a grant of its own. Off for Google and GitHub: there,
    #: revoking any token ends every grant of the user for the client (Google) or the whole
    #: authorization (GitHub), so it would end the new credential too.
    revoke_replaced_grants: bool = False
    #: Settings the provider needs besides ``<NAME>_CLIENT_ID``, ``_CLIENT_SECRET`` and
    #: ``_REDIRECT_URI``, by full name; ``providers list`` names the missing ones and their
    #: values reach the hooks in ``ProviderConfig.settings``.
    required_settings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.discovery_url and not (self.authorize_url and self.token_url):
            raise ValueError(
                f"provider '{self.name}' needs authorize_url and token_url, or a discovery_url"
            )

    @property
    def accepted_id_token_issuers(self) -> tuple[str, ...]:
        return self.id_token_issuers or ((self.issuer,) if self.issuer else ())

    def missing_scopes(self, granted: Iterable[str], wanted: Iterable[str]) -> list[str]:
        """The scopes of ``wanted`` that ``granted`` does not cover, in ``wanted``'s order: by
        exact string (case and trailing slashes count), or through ``implied_scopes`` (one step:
        what an implied scope implies in turn is not followed)."""
        covered = set(granted)
        covered.update(*(self.implied_scopes.get(scope, ()) for scope in tuple(covered)))
        return [scope for scope in dict.fromkeys(wanted) if scope not in covered]


@dataclass(frozen=True)
class ProviderConfig:
    """The operator's settings for one provider (``<NAME>_CLIENT_ID`` and friends)."""

    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str
    timeout: float = 10.0
    #: The values of the provider's ``required_settings``, by name.
    settings: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenSet:
    """What a token endpoint answered. ``scopes`` is None when the provider did not say."""

    access_token: str = field(repr=False)
    token_type: str = "Bearer"
    expires_in: int | None = None
    refresh_token: str | None = field(default=None, repr=False)
    scopes: tuple[str, ...] | None = None
    id_token: str | None = field(default=None, repr=False)
    #: What the caller needs beside the token about the account, as the provider says it now
    #: (Slack's team, Notion's workspace, Atlassian's sites): JSON-serialisable, never a token
    #: or secret. When a refresh answers it, it replaces what the credential stored; None
    #: keeps what was stored.
    account: Mapping[str, object] | None = None


@dataclass(frozen=True)
class Identity:
    """Who signed in, as the provider vouches for it.

    ``subject`` is the provider's stable id of the account; a credential remembers it, and a
    later flow for the same user and provider must sign in as the same subject. A flow is
    accepted when its email is one the provider verified: ``email`` when ``email_verified``,
    or any of ``verified_emails`` (a provider that lists every verified address of the
    account, such as GitHub, puts them there)."""

    subject: str
    email: str | None = None
    email_verified: bool = False
    verified_emails: tuple[str, ...] = ()
    #: One sentence for the person, shown when the flow fails because no email is proven:
    #: why the provider's word does not count here (an address its provider does not verify).
    #: Never a token, a claim value or anything the provider wrote.
    unproven_reason: str | None = None
    #: What the caller needs beside the token about the account (see ``TokenSet.account``),
    #: stored with the credential when the flow completes and returned with its tokens.
    account: Mapping[str, object] | None = None

    @property
    def proven_emails(self) -> tuple[str, ...]:
        """Every address the provider vouches for, as it wrote them."""
        primary = (self.email,) if self.email and self.email_verified else ()
        return tuple(dict.fromkeys((*primary, *self.verified_emails)))


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
