"""Slack for authgateway: OAuth v2 user tokens (``xoxp-``), with or without token rotation.

What is Slack's own, and what this plugin does about it:

- The person's scopes go in ``user_scope`` (``scope`` is for the app's bot), comma-separated.
- ``oauth.v2.access`` answers HTTP 200 with ``"ok": false`` and an ``error`` for a failure, and
  puts two tokens in one answer: the bot's at the top level and the person's under
  ``authed_user``. The gateway serves people, so only ``authed_user.access_token`` is ever
  taken; an answer without one is an error, never the bot token in its place.
- With token rotation on for the app, the user token expires (``expires_in``) and comes with a
  rotating ``xoxe-1-`` refresh token, used at ``oauth.v2.access`` with
  ``grant_type=refresh_token``; without rotation the token never expires and has no refresh
  token.
- Who signed in: ``auth.test`` names the token's user and team, ``users.info`` gives the user's
  email (with the ``users:read.email`` user scope) and whether Slack has confirmed it
  (``is_email_confirmed``). The subject is ``<team id>/<user id>``.
- The team comes back to callers as the account: ``{"team_id", "team_name"}``.
- Revocation is ``auth.revoke``, called with the user token itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import requests

from authgateway import (
    Identity,
    IdentityError,
    ProviderConfig,
    ProviderInfo,
    ProviderMisconfigured,
    ProviderUnavailable,
    TokenAnswers,
    TokenSet,
    hookimpl,
    standard,
)

NAME = "slack"
ENDPOINTS = {
    "AUTHORIZE_URL": "https://slack.com/oauth/v2/authorize",
    "TOKEN_URL": "https://slack.com/api/oauth.v2.access",
    "API_URL": "https://slack.com/api",
}
#: Who signed in (users:read, for users.info) and their email (users:read.email, which Slack
#: grants only together with users:read).
SCOPES = ("users:read", "users:read.email")
TOKEN_ANSWERS = TokenAnswers(
    scope_separator=",",
    # The code or the refresh token is dead: the person must connect again.
    dead_grant_errors=frozenset({
        "invalid_code", "invalid_refresh_token", "token_revoked", "token_expired",
        "invalid_grant", "account_inactive",
    }),
    misconfiguration_errors=frozenset({
        "invalid_client_id", "bad_client_secret", "bad_redirect_uri",
        "oauth_authorization_url_mismatch", "invalid_grant_type", "invalid_client",
        "unauthorized_client", "invalid_request", "unsupported_grant_type",
    }),
)
#: Errors Slack answers with ``ok: false`` that say nothing about the grant or the client: a
#: later attempt may succeed.
TRANSIENT_ERRORS = frozenset({
    "ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout",
})
NO_EMAIL = ("Slack did not share this account's email address, so the gateway cannot tell who "
            "signed in: the connection needs the users:read.email user scope.")
UNCONFIRMED_EMAIL = ("Slack has not confirmed that this account owns its email address, so the "
                     "address proves nothing about who signed in.")


@hookimpl
def authgateway_register_providers(settings) -> list[ProviderInfo]:
    urls = {key: settings.get(f"SLACK_{key}", default) for key, default in ENDPOINTS.items()}
    api = str(urls["API_URL"]).rstrip("/")
    return [
        ProviderInfo(
            name=NAME,
            display_name="Slack",
            authorize_url=urls["AUTHORIZE_URL"],
            token_url=urls["TOKEN_URL"],
            userinfo_url=api + "/users.info",
            revoke_url=api + "/auth.revoke",
            identity_scopes=SCOPES,
            default_scopes=SCOPES,
            send_login_hint=False,  # Slack has no login_hint
            # Slack asks for HTTP Basic in preference to the secret in the form.
            client_auth_method="client_secret_basic",
            token_answers=TOKEN_ANSWERS,
            # auth.revoke takes the access token; what it does with a refresh token is not said.
            revoke_with="access_token",
        )
    ]


@hookimpl
def authgateway_authorization_url(
    provider: ProviderInfo, config: ProviderConfig, state: str, code_challenge: str,
    scopes: list[str], login_hint: str | None,
) -> str:
    """The standard URL with the scopes moved to ``user_scope``, comma-separated: they are the
    person's, not a bot's."""
    url = standard.authorization_url(provider, config, state=state,
                                     code_challenge=code_challenge, scopes=[], login_hint=None)
    parts = urlsplit(url)
    query = [(key, value) for key, value in parse_qsl(parts.query) if key != "scope"]
    query.append(("user_scope", ",".join(scopes)))
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


@hookimpl
def authgateway_exchange_code(
    provider: ProviderInfo, config: ProviderConfig, code: str, code_verifier: str
) -> TokenSet:
    body = _token_call(provider, config, {
        "grant_type": "authorization_code", "code": code, "redirect_uri": config.redirect_uri,
        "code_verifier": code_verifier,
    })
    return _user_tokens(provider, body)


@hookimpl
def authgateway_refresh_token(
    provider: ProviderInfo, config: ProviderConfig, refresh_token: str
) -> TokenSet:
    body = _token_call(provider, config,
                       {"grant_type": "refresh_token", "refresh_token": refresh_token})
    return _user_tokens(provider, body)


@hookimpl
def authgateway_fetch_identity(
    provider: ProviderInfo, config: ProviderConfig, tokens: TokenSet
) -> Identity:
    me = _api(provider, config, tokens.access_token, "auth.test")
    user_id, team_id = me.get("user_id"), me.get("team_id") or me.get("enterprise_id")
    if not _text(user_id) or not _text(team_id):
        raise IdentityError("Slack's auth.test did not name the token's user and team")
    user = _api(provider, config, tokens.access_token, "users.info", {"user": user_id})["user"]
    if not isinstance(user, Mapping) or user.get("id") != user_id:
        raise IdentityError("Slack's users.info did not describe the token's user")
    account = _team(team_id, _text(me.get("team")) or (tokens.account or {}).get("team_name"))
    subject = f"{team_id}/{user_id}"
    profile = user.get("profile")
    email = profile.get("email") if isinstance(profile, Mapping) else None
    if not _text(email):
        return Identity(subject=subject, unproven_reason=NO_EMAIL, account=account)
    confirmed = user.get("is_email_confirmed") is True
    return Identity(subject=subject, email=email, email_verified=confirmed,
                    unproven_reason=None if confirmed else UNCONFIRMED_EMAIL, account=account)


@hookimpl
def authgateway_revoke_token(
    provider: ProviderInfo, config: ProviderConfig, token: str, token_type_hint: str
) -> bool:
    if token_type_hint != "access_token" or not provider.revoke_url:
        return False
    try:
        response = requests.post(provider.revoke_url, timeout=config.timeout,
                                 headers={"Authorization": f"Bearer {token}"})
        body = response.json()
    except (requests.RequestException, ValueError):
        return False
    return isinstance(body, dict) and body.get("ok") is True and body.get("revoked") is True


def _token_call(provider: ProviderInfo, config: ProviderConfig,
                form: Mapping[str, str]) -> dict:
    """POST to ``oauth.v2.access``; its answer when ``ok`` is true, else the error it means."""
    auth_fields, headers = standard.client_authentication(provider, config)
    try:
        response = requests.post(provider.token_url, data={**form, **auth_fields},
                                 headers=headers, timeout=config.timeout, allow_redirects=False)
    except requests.Timeout as exc:
        raise ProviderUnavailable("slack timed out", code="timeout") from exc
    except requests.RequestException as exc:
        raise ProviderUnavailable("slack could not be reached", code="network_error") from exc
    status, body = response.status_code, standard.read_answer(response)
    if status == 429 or status >= 500:
        raise standard.token_error(provider, status, standard.error_code(body))
    if body is None:
        raise ProviderUnavailable("slack sent an unreadable answer", code="malformed_response")
    if body.get("ok") is True and status < 400:
        return body
    code = standard.error_code(body) or f"http_{status}"
    if code in TRANSIENT_ERRORS:
        raise ProviderUnavailable(f"slack answered {code}", code=code)
    raise standard.token_error(provider, status, code)


def _user_tokens(provider: ProviderInfo, body: Mapping) -> TokenSet:
    """The person's tokens in an ``oauth.v2.access`` answer, with the team as the account.

    A code exchange puts them under ``authed_user`` (the top level is the bot's); a refresh of
    a user token answers them at the top level, with ``token_type`` ``user``."""
    authed_user = body.get("authed_user")
    if isinstance(authed_user, Mapping) and _text(authed_user.get("access_token")):
        part = authed_user
    elif body.get("token_type") == "user":
        part = body
    else:
        raise ProviderMisconfigured(
            "slack granted no user token: the app asked for no user scopes", code="no_user_token")
    tokens = standard.parse_token_answer(provider, 200, part)
    team = body.get("team") if isinstance(body.get("team"), Mapping) else None
    account = None
    if team is not None and _text(team.get("id")):
        account = _team(team["id"], _text(team.get("name")))
    return dataclasses.replace(tokens, token_type="Bearer", account=account)


def _api(provider: ProviderInfo, config: ProviderConfig, access_token: str, method: str,
         params: Mapping[str, str] | None = None) -> dict:
    """One Web API call with the user's token; its answer when ``ok`` is true."""
    base = provider.userinfo_url.rsplit("/", 1)[0]
    try:
        response = requests.get(f"{base}/{method}", params=params, timeout=config.timeout,
                                headers={"Authorization": f"Bearer {access_token}"})
        body = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise IdentityError(f"slack {method} failed: {type(exc).__name__}") from exc
    if not isinstance(body, dict) or body.get("ok") is not True:
        code = standard.error_code(body if isinstance(body, dict) else None)
        raise IdentityError(f"slack {method} answered {code or response.status_code}",
                            code=code)
    return body


def _team(team_id: str, team_name: str | None) -> dict[str, str]:
    """The account callers get: the team's id, and its name when Slack said it."""
    return {"team_id": team_id, **({"team_name": team_name} if team_name else {})}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
