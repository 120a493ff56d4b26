"""Standard OAuth 2.0 pieces a provider plugin reuses: the authorize URL, the client's
authentication, the token endpoint call and the reading of its answer.

The core's default plugin (``authgateway.oauth2``) is built on these, so a plugin whose provider
differs in one respect calls them for the rest. None of them is a hook: importing them into a
plugin module registers nothing. ``verify_id_token`` checks an OpenID Connect id_token against
the provider's JWKS, for a plugin that reads claims the standard identity ignores.

Every failure is raised as a ``ProviderError`` subclass whose ``code`` is safe to store and
show; no token, secret or response body is ever in a message.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import parse_qsl, quote, urlencode

import requests
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from .errors import ConfigError
from .providers import (
    IdentityError,
    InvalidGrant,
    ProviderConfig,
    ProviderError,
    ProviderInfo,
    ProviderMisconfigured,
    ProviderUnavailable,
    TokenSet,
)

__all__ = [
    "authorization_url",
    "client_authentication",
    "error_code",
    "exchange_code",
    "listed_provider_names",
    "parse_token_answer",
    "read_answer",
    "refresh_token",
    "token_error",
    "token_request",
    "verify_id_token",
]

PROVIDER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


def listed_provider_names(listed: object, setting: str, example: str) -> list[str]:
    """The provider names an operator listed in ``setting`` (comma-separated, or a list), in
    lower case, each once. A name prefixes its provider's settings, so anything but letters,
    digits and underscores stops startup with a sentence showing ``example``
    (``"acme -> ACME_TOKEN_URL"``)."""
    parts = listed if isinstance(listed, (list, tuple)) else str(listed or "").split(",")
    names: list[str] = []
    for part in parts:
        name = str(part).strip().lower()
        if not name:
            continue
        if not PROVIDER_NAME.match(name):
            raise ConfigError(
                f"{setting} lists {part!r}, which is not a provider name: use letters, digits "
                f"and underscores, starting with a letter (it prefixes its settings, e.g. "
                f"{example})."
            )
        if name not in names:
            names.append(name)
    return names


ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]


def names_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (``localhost``, ``*.localhost``, a loopback address)
    without a lookup: where plain http is tolerable, since nothing crosses a network."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def authorization_url(
    provider: ProviderInfo,
    config: ProviderConfig,
    *,
    state: str,
    code_challenge: str,
    scopes: list[str],
    login_hint: str | None = None,
) -> str:
    """The URL that sends the person to ``provider.authorize_url``: response_type=code, PKCE
    S256, space-separated scopes, ``extra_authorize_params``, and ``login_hint`` when the
    provider accepts one (``send_login_hint``)."""
    params = {
        "response_type": "code",
        "client_id": config.client_id,
        "redirect_uri": config.redirect_uri,
        "scope": " ".join(scopes),
        "state": state,
        **provider.extra_authorize_params,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
    }
    if login_hint and provider.send_login_hint:
        params["login_hint"] = login_hint
    separator = "&" if "?" in provider.authorize_url else "?"
    return provider.authorize_url + separator + urlencode(params, quote_via=quote)


def client_authentication(
    provider: ProviderInfo, config: ProviderConfig
) -> tuple[dict[str, str], dict[str, str]]:
    """The form fields and headers that authenticate the client, as
    ``provider.client_auth_method`` says (RFC 6749 section 2.3.1)."""
    if provider.client_auth_method == "client_secret_post":
        return {"client_id": config.client_id, "client_secret": config.client_secret}, {}
    # The id and secret are form-encoded before Basic encoding, as section 2.3.1 asks.
    pair = f"{quote(config.client_id, safe='')}:{quote(config.client_secret, safe='')}"
    return {}, {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def exchange_code(
    provider: ProviderInfo, config: ProviderConfig, code: str, code_verifier: str
) -> TokenSet:
    """Exchange an authorization code with its PKCE verifier (RFC 6749 4.1.3, RFC 7636)."""
    return token_request(provider, config, {
        "grant_type": "authorization_code", "code": code, "redirect_uri": config.redirect_uri,
        "code_verifier": code_verifier,
    })


def refresh_token(provider: ProviderInfo, config: ProviderConfig, refresh_token: str) -> TokenSet:
    """Use a refresh token (RFC 6749 section 6). No scope is sent: the grant's scopes stay."""
    return token_request(provider, config,
                         {"grant_type": "refresh_token", "refresh_token": refresh_token})


def token_request(
    provider: ProviderInfo, config: ProviderConfig, form: Mapping[str, str]
) -> TokenSet:
    """POST ``form`` to the token endpoint with the client's authentication, asking for JSON,
    and read the answer with ``parse_token_answer``."""
    auth_fields, headers = client_authentication(provider, config)
    try:
        response = requests.post(
            provider.token_url, data={**form, **auth_fields}, timeout=config.timeout,
            headers={"Accept": "application/json", **headers}, allow_redirects=False,
        )
    except requests.Timeout as exc:
        raise ProviderUnavailable(f"{provider.name} timed out", code="timeout") from exc
    except requests.RequestException as exc:
        raise ProviderUnavailable(
            f"{provider.name} could not be reached", code="network_error"
        ) from exc
    return parse_token_answer(provider, response.status_code, read_answer(response))


def read_answer(response: requests.Response) -> dict | None:
    """A token endpoint's body as a dict: JSON, or form-encoded (what GitHub sends to a client
    that does not ask for JSON); None when it is neither."""
    try:
        body = response.json()
    except ValueError:
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type not in ("application/x-www-form-urlencoded", "text/plain"):
            return None
        try:
            body = dict(parse_qsl(response.text, strict_parsing=True))
        except ValueError:
            return None
    return body if isinstance(body, dict) else None


def error_code(body: Mapping | None) -> str | None:
    """The answer's ``error``, when it is a short identifier: it is stored and shown, the rest of
    the body never is."""
    code = body.get("error") if body is not None else None
    if isinstance(code, str) and code.replace("_", "").isalnum() and len(code) <= 64:
        return code
    return "unreadable_error" if code else None


def token_error(provider: ProviderInfo, status: int, code: str | None) -> ProviderError:
    """The error a failed token request raises, by the provider's ``token_answers``: 429 and
    5xx are transient, a dead-grant code is ``InvalidGrant``, anything else an operator's."""
    label = code or f"http_{status}"
    if status == 429 or status >= 500:
        return ProviderUnavailable(f"{provider.name} token endpoint answered {status}",
                                   code=label)
    if code in provider.token_answers.dead_grant_errors:
        return InvalidGrant(f"{provider.name} answered {code}", code=code)
    if code in provider.token_answers.misconfiguration_errors or status == 401:
        return ProviderMisconfigured(f"{provider.name} answered {label}", code=label)
    return ProviderMisconfigured(f"{provider.name} rejected the token request ({label})",
                                 code=label)


def parse_token_answer(provider: ProviderInfo, status: int, body: Mapping | None) -> TokenSet:
    """A token endpoint's answer as a ``TokenSet``, or the ``ProviderError`` it means.

    An ``error`` is an error whatever the HTTP status; ``expires_in`` may be a string; no
    ``expires_in`` means a token that does not expire (``expires_in`` None); ``scope`` is split
    by ``provider.token_answers.scope_separator``."""
    code = error_code(body)
    if code is not None or status >= 400:
        raise token_error(provider, status, code)
    access_token = body.get("access_token") if body is not None else None
    if not isinstance(access_token, str) or not access_token:
        raise ProviderUnavailable(f"{provider.name} sent no access_token",
                                  code="malformed_response")
    scope = body.get("scope")
    refresh = body.get("refresh_token")
    id_token = body.get("id_token")
    return TokenSet(
        access_token=access_token,
        token_type=str(body.get("token_type") or "Bearer"),
        expires_in=_seconds(provider, body.get("expires_in")),
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        scopes=_scopes(scope, provider.token_answers.scope_separator)
        if isinstance(scope, str) else None,
        id_token=id_token if isinstance(id_token, str) and id_token else None,
    )


def _seconds(provider: ProviderInfo, value: object) -> int | None:
    # An unreadable lifetime is not read as "never expires": that token would never be renewed.
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        return int(float(value)) if isinstance(value, str) else int(value)
    except (TypeError, ValueError, OverflowError):
        raise ProviderUnavailable(f"{provider.name} sent an unreadable expires_in",
                                  code="malformed_response") from None


def _scopes(scope: str, separator: str | None) -> tuple[str, ...]:
    parts = scope.split(separator) if separator else scope.split()
    return tuple(part.strip() for part in parts if part.strip())


def verify_id_token(
    provider: ProviderInfo,
    config: ProviderConfig,
    id_token: str,
    *,
    issuers: Callable[[Mapping], Iterable[str]] | None = None,
) -> dict:
    """The claims of an id_token whose signature verifies against ``provider.jwks_url`` and
    whose ``aud`` is our client id, ``exp`` is in the future and ``iss`` is accepted; else
    ``IdentityError``. ``iss`` must be one of ``provider.accepted_id_token_issuers``, or, when
    ``issuers`` is given, one of what it returns for the (signature-checked) claims: a provider
    whose issuer names the signed-in account's tenant says so there."""
    try:
        try:
            token = jwt.decode(id_token, _jwks.get(provider.jwks_url, config.timeout),
                               algorithms=ID_TOKEN_ALGORITHMS)
        except (ValueError, JoseError):
            # The provider may have rotated its signing key since we cached its JWKS.
            keys = _jwks.get(provider.jwks_url, config.timeout, refresh=True)
            token = jwt.decode(id_token, keys, algorithms=ID_TOKEN_ALGORITHMS)
        accepted = (issuers(token.claims) if issuers is not None
                    else provider.accepted_id_token_issuers)
        jwt.JWTClaimsRegistry(
            leeway=60,
            iss={"essential": True, "values": list(accepted)},
            aud={"essential": True, "value": config.client_id},
            exp={"essential": True},
            sub={"essential": True},
        ).validate(token.claims)
    except (ValueError, JoseError) as exc:
        raise IdentityError(
            f"{provider.name} id_token did not verify: {type(exc).__name__}"
        ) from exc
    return token.claims


class _JWKSCache:
    """Signing keys per JWKS URL, kept for the Cache-Control max-age the provider sends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[KeySet, float]] = {}

    def get(self, url: str, timeout: float, refresh: bool = False) -> KeySet:
        with self._lock:
            entry = self._entries.get(url)
        if entry and not refresh and entry[1] > time.monotonic():
            return entry[0]
        try:
            response = requests.get(url, timeout=timeout)
            response.raise_for_status()
            keys = KeySet.import_key_set(response.json())
        except (requests.RequestException, ValueError, JoseError) as exc:
            raise IdentityError(f"the JWKS at {url} could not be loaded") from exc
        with self._lock:
            self._entries[url] = (keys, time.monotonic() + _max_age(response))
        return keys


def _max_age(response: requests.Response, default: int = 3600) -> int:
    for part in response.headers.get("Cache-Control", "").split(","):
        name, _, value = part.strip().partition("=")
        if name.lower() == "max-age" and value.isdigit():
            return int(value)
    return default


_jwks = _JWKSCache()
