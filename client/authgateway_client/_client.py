"""The two clients, ``GatewayClient`` and ``AsyncGatewayClient``: one request builder per
operation of the REST contract, and one judge of each answer that both share.

Retry policy: only calls that are safe to repeat are retried, ``max_retries`` times (2 by
default) with exponential backoff and jitter (``Retry-After`` is honoured). They are
``auth_status``, ``providers``, ``health`` and ``get_token`` without ``force_refresh`` (the
gateway refreshes one credential once, so asking twice hands out the same kind of answer).
Never retried: ``start_auth`` (each call starts a new flow), ``revoke`` (it acts at the
provider) and ``get_token(force_refresh=True)`` (each call refreshes upstream). A retry happens
on a connection failure (refused, reset, connect timeout; never a read timeout, which has
already used the caller's time) and on a 502/503/504 that is not a definite gateway answer:
a proxy's page, or ``provider_unavailable``; never ``provider_misconfigured`` or
``provider_not_configured``, which only an operator can fix.

The API key is sent in ``X-API-Key`` and never appears in a repr, a log line or an exception.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlsplit

import httpx

from . import __version__
from ._errors import (
    AuthRequired,
    AuthTimeout,
    GatewayConnectionError,
    GatewayError,
    GatewayTimeout,
    UnexpectedResponse,
    error_from_response,
)
from ._models import AuthFlow, AuthStatus, Health, RevokeResult, Token, UserProviders

URL_ENV = "AUTH_GATEWAY_URL"
API_KEY_ENV = "AUTH_GATEWAY_API_KEY"
#: Longer than the gateway's own provider timeout (10 s by default), so that a slow provider
#: reaches the caller as the gateway's ``provider_unavailable`` rather than as a client timeout.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
RETRY_STATUSES = frozenset({502, 503, 504})
MAX_RETRY_AFTER = 10.0
USER_AGENT = f"authgateway-client/{__version__}"

#: Retries are logged here, under the package's name (what a caller configures).
log = logging.getLogger("authgateway_client")
T = TypeVar("T")


# ---- requests --------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Call(Generic[T]):
    name: str
    method: str
    path: str
    parse: Callable[[dict], T]
    body: dict | None = None
    idempotent: bool = False
    ok: tuple[int, ...] = (200,)


def _segment(value: str) -> str:
    return quote(value, safe="@")


def _start_auth(provider: str, user_email: str, scopes: Iterable[str] | None) -> _Call[AuthFlow]:
    body: dict[str, Any] = {"provider": provider, "user_email": user_email}
    if scopes is not None:
        body["scopes"] = list(scopes)
    return _Call("start_auth", "POST", "/auth/init", AuthFlow.from_json, body)


def _auth_status(session_id: str) -> _Call[AuthStatus]:
    return _Call("auth_status", "GET", "/auth/status/" + _segment(session_id),
                 AuthStatus.from_json, idempotent=True)


def _get_token(provider: str, user_email: str, min_valid_seconds: float | None,
               force_refresh: bool, scopes: Iterable[str] | None) -> _Call[Token]:
    body: dict[str, Any] = {"provider": provider, "user_email": user_email}
    if min_valid_seconds is not None:
        body["min_valid_seconds"] = min_valid_seconds
    if force_refresh:
        body["force_refresh"] = True
    if scopes is not None:
        body["scopes"] = list(scopes)
    return _Call("get_token", "POST", "/auth/token", Token.from_json, body,
                 idempotent=not force_refresh)


def _providers(user_email: str) -> _Call[UserProviders]:
    return _Call("providers", "GET", "/auth/providers/" + _segment(user_email),
                 UserProviders.from_json, idempotent=True)


def _revoke(provider: str, user_email: str) -> _Call[RevokeResult]:
    return _Call("revoke", "DELETE", "/auth/revoke", RevokeResult.from_json,
                 {"provider": provider, "user_email": user_email})


def _health() -> _Call[Health]:
    return _Call("health", "GET", "/health", Health.from_json, idempotent=True, ok=(200, 503))


class _ApiKeyAuth(httpx.Auth):
    """Adds the key to each request; holding it here keeps it out of the client's headers."""

    def __init__(self, key: str | None) -> None:
        self._key = key

    def auth_flow(self, request: httpx.Request):
        if self._key:
            request.headers["X-API-Key"] = self._key
        yield request

    def __repr__(self) -> str:
        return "<API key hidden>"


def _gateway_url(url: str | None) -> str:
    url = url or os.environ.get(URL_ENV)
    if not url:
        raise ValueError(f"No gateway URL: pass url= or set {URL_ENV}.")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("The gateway URL must be an http:// or https:// URL.")
    if parts.username or parts.password:
        raise ValueError("Put the API key in api_key= (or the environment), not in the URL.")
    return url.rstrip("/")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _retry_after(response: httpx.Response | None) -> float:
    try:
        return min(float(response.headers["Retry-After"]), MAX_RETRY_AFTER)
    except (AttributeError, KeyError, ValueError):
        return 0.0


def _retryable_transport(exc: httpx.HTTPError) -> bool:
    # A read timeout may mean the gateway is still working on it, and it spent the caller's time.
    return isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError | httpx.ConnectTimeout)


def _transport_error(call: _Call, exc: httpx.HTTPError) -> GatewayError:
    if isinstance(exc, httpx.TimeoutException):
        error: GatewayError = GatewayTimeout(
            f"The gateway did not answer {call.name} in time ({type(exc).__name__}).")
    else:
        error = GatewayConnectionError(
            f"The gateway could not be reached for {call.name} ({type(exc).__name__}).")
    error.__cause__ = exc
    return error


class _Outcome(Generic[T]):
    """One attempt's verdict: a value, an error to raise, or a delay before trying again."""

    def __init__(self, value: Any = None, error: GatewayError | None = None,
                 delay: float | None = None) -> None:
        self.value, self.error, self.delay = value, error, delay

    def result(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value


class _BaseClient:
    def __init__(self, url: str | None = None, api_key: str | None = None, *,
                 timeout: float | httpx.Timeout = DEFAULT_TIMEOUT, max_retries: int = 2,
                 backoff: float = 0.25, max_backoff: float = 4.0) -> None:
        self.url = _gateway_url(url)
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self._auth = _ApiKeyAuth(api_key if api_key is not None else os.environ.get(API_KEY_ENV))
        self._options = {
            "base_url": self.url,
            "auth": self._auth,
            "timeout": timeout,
            "headers": {"Accept": "application/json",
                        "User-Agent": USER_AGENT},
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r})"

    def _judge(self, call: _Call[T], attempt: int, response: httpx.Response | None = None,
               exc: httpx.HTTPError | None = None) -> _Outcome[T]:
        can_retry = call.idempotent and attempt < self.max_retries
        if exc is not None:
            if can_retry and _retryable_transport(exc):
                return self._retry(call, attempt, type(exc).__name__)
            return _Outcome(error=_transport_error(call, exc))
        data = _json(response)
        if response.status_code in call.ok and isinstance(data, dict) and "detail" not in data:
            try:
                return _Outcome(call.parse(data))
            except (KeyError, TypeError, ValueError):
                return _Outcome(error=UnexpectedResponse(
                    f"The gateway's answer to {call.name} is not the documented one.",
                    status=response.status_code))
        error = error_from_response(response.status_code, data)
        if can_retry and response.status_code in RETRY_STATUSES and (
                isinstance(error, UnexpectedResponse) or error.retryable):
            return self._retry(call, attempt, f"HTTP {response.status_code}", response)
        return _Outcome(error=error)

    def _retry(self, call: _Call, attempt: int, reason: str,
               response: httpx.Response | None = None) -> _Outcome:
        # Jitter spreads the retries of many MCP servers; it guards no secret.
        delay = min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1.0)  # noqa: S311
        delay = max(delay, _retry_after(response))
        log.warning("gateway call %s failed (%s); retry %d of %d in %.2f s", call.name, reason,
                    attempt + 1, self.max_retries, delay)
        return _Outcome(delay=delay)



class GatewayClient(_BaseClient):
    """The gateway's API, synchronously; a context manager (or call ``close()``).

    ``url`` and ``api_key`` default to ``AUTH_GATEWAY_URL`` and ``AUTH_GATEWAY_API_KEY``.
    Options: ``timeout`` (seconds or an ``httpx.Timeout``; 30 s, 5 s to connect),
    ``max_retries`` (2), ``backoff`` (0.25 s, doubled per retry) up to ``max_backoff`` (4 s),
    and ``transport``, passed to ``httpx.Client`` (proxies, mounts, tests)."""

    def __init__(self, url: str | None = None, api_key: str | None = None, *,
                 transport: httpx.BaseTransport | None = None, **options: Any) -> None:
        super().__init__(url, api_key, **options)
        self._http = httpx.Client(transport=transport, **self._options)

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = self._http.request(call.method, call.path, json=call.body)
            except httpx.HTTPError as exc:
                outcome = self._judge(call, attempt, exc=exc)
            else:
                outcome = self._judge(call, attempt, response=response)
            if outcome.delay is None:
                return outcome.result()
            time.sleep(outcome.delay)
            attempt += 1

    def start_auth(self, provider: str, user_email: str,
                   scopes: Iterable[str] | None = None) -> AuthFlow:
        """Start a flow (never retried: each call is a new flow). ``scopes`` default to the
        provider's."""
        return self._run(_start_auth(provider, user_email, scopes))

    def auth_status(self, session_id: str) -> AuthStatus:
        return self._run(_auth_status(session_id))

    def wait_for_auth(self, session_id: str, timeout: float = 300.0, interval: float = 1.0,
                      max_interval: float = 5.0) -> AuthStatus:
        """Poll until the flow is completed or failed (the status says which); ``AuthTimeout``
        when it is still pending after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.auth_status(session_id)
            remaining = deadline - time.monotonic()
            if not status.pending:
                return status
            if remaining <= 0:
                raise AuthTimeout(f"The flow was still pending after {timeout:g} s.")
            time.sleep(min(interval, remaining))
            interval = min(interval * 1.5, max_interval)

    def get_token(self, provider: str, user_email: str, min_valid_seconds: float | None = None,
                  force_refresh: bool = False, start_auth_if_needed: bool = False,
                  scopes: Iterable[str] | None = None) -> Token:
        """A token valid for ``min_valid_seconds`` (the gateway's buffer when None), whose
        grant covers ``scopes`` (the scopes this call needs; any grant when None).

        ``AuthRequired`` when the user must authorize: ``NotAuthenticated``, ``RefreshFailed``,
        or ``InsufficientScope`` (``missing_scopes`` names what the grant lacks). With
        ``start_auth_if_needed`` it carries a fresh ``auth_url`` and ``session_id``: a flow for
        ``scopes``, which the gateway asks for together with what is already granted."""
        try:
            return self._run(_get_token(provider, user_email, min_valid_seconds, force_refresh,
                                        scopes))
        except AuthRequired as exc:
            exc.provider = provider
            if start_auth_if_needed:
                flow = self.start_auth(provider, user_email, scopes)
                exc.auth_url, exc.session_id = flow.auth_url, flow.session_id
            raise

    def providers(self, user_email: str) -> UserProviders:
        return self._run(_providers(user_email))

    def revoke(self, provider: str, user_email: str) -> RevokeResult:
        """Revoke at the provider and forget the credential (never retried)."""
        return self._run(_revoke(provider, user_email))

    def health(self) -> Health:
        return self._run(_health())


class AsyncGatewayClient(_BaseClient):
    """``GatewayClient``'s methods as coroutines; an async context manager (or ``aclose()``)."""

    def __init__(self, url: str | None = None, api_key: str | None = None, *,
                 transport: httpx.AsyncBaseTransport | None = None, **options: Any) -> None:
        super().__init__(url, api_key, **options)
        self._http = httpx.AsyncClient(transport=transport, **self._options)

    async def __aenter__(self) -> AsyncGatewayClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            try:
                response = await self._http.request(call.method, call.path, json=call.body)
            except httpx.HTTPError as exc:
                outcome = self._judge(call, attempt, exc=exc)
            else:
                outcome = self._judge(call, attempt, response=response)
            if outcome.delay is None:
                return outcome.result()
            await asyncio.sleep(outcome.delay)
            attempt += 1

    async def start_auth(self, provider: str, user_email: str,
                         scopes: Iterable[str] | None = None) -> AuthFlow:
        return await self._run(_start_auth(provider, user_email, scopes))

    async def auth_status(self, session_id: str) -> AuthStatus:
        return await self._run(_auth_status(session_id))

    async def wait_for_auth(self, session_id: str, timeout: float = 300.0,
                            interval: float = 1.0, max_interval: float = 5.0) -> AuthStatus:
        deadline = time.monotonic() + timeout
        while True:
            status = await self.auth_status(session_id)
            remaining = deadline - time.monotonic()
            if not status.pending:
                return status
            if remaining <= 0:
                raise AuthTimeout(f"The flow was still pending after {timeout:g} s.")
            await asyncio.sleep(min(interval, remaining))
            interval = min(interval * 1.5, max_interval)

    async def get_token(self, provider: str, user_email: str,
                        min_valid_seconds: float | None = None, force_refresh: bool = False,
                        start_auth_if_needed: bool = False,
                        scopes: Iterable[str] | None = None) -> Token:
        try:
            return await self._run(_get_token(provider, user_email, min_valid_seconds,
                                              force_refresh, scopes))
        except AuthRequired as exc:
            exc.provider = provider
            if start_auth_if_needed:
                flow = await self.start_auth(provider, user_email, scopes)
                exc.auth_url, exc.session_id = flow.auth_url, flow.session_id
            raise

    async def providers(self, user_email: str) -> UserProviders:
        return await self._run(_providers(user_email))

    async def revoke(self, provider: str, user_email: str) -> RevokeResult:
        return await self._run(_revoke(provider, user_email))

    async def health(self) -> Health:
        return await self._run(_health())


