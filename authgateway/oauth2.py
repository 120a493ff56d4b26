"""The core's default plugin: standard OAuth 2.0 / OpenID Connect on Authlib's pieces.

Registered ``trylast``, so a provider plugin only overrides what its provider does differently.
"""

from __future__ import annotations

import logging
import threading
import time

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from .hookspecs import hookimpl
from .providers import (
    Identity,
    IdentityError,
    InvalidGrant,
    ProviderConfig,
    ProviderError,
    ProviderInfo,
    ProviderMisconfigured,
    ProviderUnavailable,
    TokenSet,
)

log = logging.getLogger(__name__)

#: Token endpoint errors that are the operator's to fix (RFC 6749 §5.2 apart from invalid_grant,
#: plus Google's redirect_uri_mismatch).
MISCONFIGURATION_ERRORS = frozenset({
    "invalid_client", "unauthorized_client", "redirect_uri_mismatch", "invalid_request",
    "invalid_scope", "unsupported_grant_type",
})
ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]


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
    params = dict(provider.extra_authorize_params)
    params.update(code_challenge=code_challenge, code_challenge_method="S256")
    if login_hint and provider.send_login_hint:
        params["login_hint"] = login_hint
    return prepare_grant_uri(
        provider.authorize_url,
        client_id=config.client_id,
        response_type="code",
        redirect_uri=config.redirect_uri,
        scope=" ".join(scopes),
        state=state,
        **params,
    )


@hookimpl(trylast=True)
def authgateway_exchange_code(
    provider: ProviderInfo, config: ProviderConfig, code: str, code_verifier: str
) -> TokenSet:
    with _session(provider, config) as session:
        token = _token_call(
            provider,
            lambda: session.fetch_token(
                provider.token_url,
                grant_type="authorization_code",
                code=code,
                code_verifier=code_verifier,
                timeout=config.timeout,
            ),
        )
    return _token_set(provider, token)


@hookimpl(trylast=True)
def authgateway_refresh_token(
    provider: ProviderInfo, config: ProviderConfig, refresh_token: str
) -> TokenSet:
    # The session has no scope, so Authlib sends none on refresh, as Google asks.
    with _session(provider, config) as session:
        token = _token_call(
            provider,
            lambda: session.refresh_token(
                provider.token_url, refresh_token=refresh_token, timeout=config.timeout
            ),
        )
    return _token_set(provider, token)


@hookimpl(trylast=True)
def authgateway_revoke_token(
    provider: ProviderInfo, config: ProviderConfig, token: str, token_type_hint: str
) -> bool:
    if not provider.revoke_url:
        return False
    with _session(provider, config) as session:
        try:
            response = session.revoke_token(
                provider.revoke_url,
                token=token,
                token_type_hint=token_type_hint,
                timeout=config.timeout,
            )
        except requests.RequestException as exc:
            log.warning("revocation at %s failed: %s", provider.name, type(exc).__name__)
            return False
    if response.status_code == 200:
        return True
    # Google answers 400 invalid_token for a token that is already dead: it is revoked either way.
    if response.status_code == 400 and _error_code(response) == "invalid_token":
        return True
    log.warning("revocation at %s answered %s", provider.name, response.status_code)
    return False


@hookimpl(trylast=True)
def authgateway_fetch_identity(
    provider: ProviderInfo, config: ProviderConfig, tokens: TokenSet
) -> Identity:
    if tokens.id_token and provider.jwks_url:
        claims = _verify_id_token(provider, config, tokens.id_token)
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


def _session(provider: ProviderInfo, config: ProviderConfig) -> OAuth2Session:
    session = OAuth2Session(
        client_id=config.client_id,
        client_secret=config.client_secret,
        token_endpoint_auth_method=provider.client_auth_method,
        revocation_endpoint_auth_method=provider.client_auth_method,
        redirect_uri=config.redirect_uri,
    )

    def classify(response: requests.Response) -> requests.Response:
        _raise_for_token_error(provider, response)
        return response

    session.register_compliance_hook("access_token_response", classify)
    session.register_compliance_hook("refresh_token_response", classify)
    return session


def _token_call(provider: ProviderInfo, call):
    try:
        return call()
    except ProviderError:
        raise
    except requests.Timeout as exc:
        raise ProviderUnavailable(f"{provider.name} timed out", code="timeout") from exc
    except requests.RequestException as exc:
        raise ProviderUnavailable(
            f"{provider.name} could not be reached", code="network_error"
        ) from exc
    except ValueError as exc:  # a 2xx body that is not a token response
        raise ProviderUnavailable(
            f"{provider.name} sent a malformed token response", code="malformed_response"
        ) from exc


def _error_code(response: requests.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("error") if isinstance(body, dict) else None
    # Only a short identifier is kept: it is stored and shown, the rest of the body never is.
    if isinstance(code, str) and code.replace("_", "").isalnum() and len(code) <= 64:
        return code
    return None


def _raise_for_token_error(provider: ProviderInfo, response: requests.Response) -> None:
    status = response.status_code
    if status < 400 and _error_code(response) is None:
        return
    code = _error_code(response)
    if status == 429 or status >= 500:
        raise ProviderUnavailable(
            f"{provider.name} token endpoint answered {status}", code=code or f"http_{status}"
        )
    if code == "invalid_grant":
        raise InvalidGrant(f"{provider.name} answered invalid_grant", code=code)
    if code in MISCONFIGURATION_ERRORS or status == 401:
        raise ProviderMisconfigured(
            f"{provider.name} answered {code or status}", code=code or f"http_{status}"
        )
    raise ProviderMisconfigured(
        f"{provider.name} rejected the token request ({code or status})",
        code=code or f"http_{status}",
    )


def _token_set(provider: ProviderInfo, token: dict) -> TokenSet:
    access_token = token.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise ProviderUnavailable(
            f"{provider.name} sent no access_token", code="malformed_response"
        )
    expires_in = token.get("expires_in")
    try:
        expires_in = int(expires_in) if expires_in is not None else None
    except (TypeError, ValueError):
        expires_in = None
    scope = token.get("scope")
    return TokenSet(
        access_token=access_token,
        token_type=str(token.get("token_type") or "Bearer"),
        expires_in=expires_in,
        refresh_token=token.get("refresh_token") or None,
        scopes=tuple(scope.split()) if isinstance(scope, str) else None,
        id_token=token.get("id_token") or None,
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


def _verify_id_token(provider: ProviderInfo, config: ProviderConfig, id_token: str) -> dict:
    try:
        try:
            token = jwt.decode(id_token, _jwks.get(provider.jwks_url, config.timeout),
                               algorithms=ID_TOKEN_ALGORITHMS)
        except (ValueError, JoseError):
            # The provider may have rotated its signing key since we cached its JWKS.
            keys = _jwks.get(provider.jwks_url, config.timeout, refresh=True)
            token = jwt.decode(id_token, keys, algorithms=ID_TOKEN_ALGORITHMS)
        jwt.JWTClaimsRegistry(
            leeway=60,
            iss={"essential": True, "values": list(provider.accepted_id_token_issuers)},
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
