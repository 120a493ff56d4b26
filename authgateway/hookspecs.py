"""The provider contract. A plugin implements some of these with ``@authgateway.hookimpl``.

Every operation hook is ``firstresult`` and is routed to the plugin that registered the provider
(``authgateway_register_providers``): that plugin answers if it implements the hook, else the
core's default plugin (registered ``trylast``) answers for any standard OAuth 2.0 / OIDC
provider. A plugin is never called for another plugin's provider, so it need not check
``provider.name``; returning ``None`` hands the call to the default plugin.

A plugin that overrides a hook reuses the standard behaviour for the rest through the public
helpers in ``authgateway.standard`` (authorize URL, client authentication, token endpoint call,
reading of its answer), and says how its token endpoint answers with
``ProviderInfo.token_answers`` (``authgateway.providers.TokenAnswers``).
"""

from __future__ import annotations

import pluggy

from .events import Event
from .providers import Identity, ProviderConfig, ProviderInfo, TokenSet

hookspec = pluggy.HookspecMarker("authgateway")
hookimpl = pluggy.HookimplMarker("authgateway")


@hookspec
def authgateway_register_providers(settings) -> list[ProviderInfo]:
    """Return the providers this plugin offers.

    ``settings.get(NAME, default)`` reads a setting (the app's config, then the environment),
    so endpoints can be overridden by configuration.
    """


@hookspec(firstresult=True)
def authgateway_authorization_url(
    provider: ProviderInfo,
    config: ProviderConfig,
    state: str,
    code_challenge: str,
    scopes: list[str],
    login_hint: str | None,
) -> str | None:
    """Return the URL that sends the person to the provider to consent (PKCE S256)."""


@hookspec(firstresult=True)
def authgateway_exchange_code(
    provider: ProviderInfo, config: ProviderConfig, code: str, code_verifier: str
) -> TokenSet | None:
    """Exchange an authorization code; raise a ``ProviderError`` subclass on failure.
    ``authgateway.standard.exchange_code`` is the standard call."""


@hookspec(firstresult=True)
def authgateway_refresh_token(
    provider: ProviderInfo, config: ProviderConfig, refresh_token: str
) -> TokenSet | None:
    """Use a refresh token; raise ``InvalidGrant`` when the grant is dead,
    ``ProviderUnavailable`` when the failure is transient. A ``TokenSet`` without
    ``refresh_token`` keeps the one stored; with one, it replaces it in the same write, so a
    rotated-away refresh token is never sent again. ``expires_in`` None: the token never
    expires and is never refreshed."""


@hookspec(firstresult=True)
def authgateway_revoke_token(
    provider: ProviderInfo, config: ProviderConfig, token: str, token_type_hint: str
) -> bool | None:
    """Revoke a token at the provider (RFC 7009). ``token`` is the refresh token when the
    credential has one, unless ``ProviderInfo.revoke_with`` is ``access_token``. Return True
    when the provider confirmed it, False when it could not be reached or has no revocation
    endpoint."""


@hookspec(firstresult=True)
def authgateway_fetch_identity(
    provider: ProviderInfo, config: ProviderConfig, tokens: TokenSet
) -> Identity | None:
    """Return who signed in (a verified id_token, else userinfo); raise ``IdentityError``
    when it cannot be established. The flow is accepted when its email is among
    ``Identity.proven_emails`` (``email`` if ``email_verified``, and ``verified_emails``), and,
    for a user who already has a credential, when ``subject`` is the one stored."""


@hookspec
def authgateway_event(event: Event) -> None:
    """Called for every event (``authgateway.events``: ``credential.connected``,
    ``credential.scopes_changed``, ``credential.needs_reauth``, ``credential.recovered``,
    ``credential.revoked``, ``flow.failed``) after the transaction that caused it commits,
    in the thread that made the change: keep it short, hand slow work to a queue. The return
    value is ignored; an exception is logged and never fails the request. Webhooks are
    delivered from the database, independently of this hook."""
