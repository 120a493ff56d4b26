"""The client's exceptions: one class per wire error code of API.md, plus what can go wrong on
the way (connection, timeout, an answer outside the contract). Import them from the package,
``authgateway_client``.

Branch on the class (or on ``code``); ``message`` is the gateway's sentence for people. None
of them carries the API key, a token or an upstream response body.
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """Anything the gateway answered with an error, or could not answer.

    ``status`` is the HTTP status (None when no answer came); ``retryable`` says whether the
    same call may succeed later without anyone changing anything."""

    code: str = "internal_error"
    status: int | None = None
    auth_required: bool = False
    retryable: bool = False
    default_message = "The gateway answered with an error."

    def __init__(self, message: str | None = None, *, code: str | None = None,
                 status: int | None = None, auth_required: bool | None = None,
                 detail: dict[str, Any] | None = None) -> None:
        self.message = message or self.default_message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if auth_required is not None:
            self.auth_required = auth_required
        #: Further fields of the error body, beyond error, message and auth_required.
        self.detail = dict(detail or {})
        super().__init__(self.message)

    def __str__(self) -> str:
        status = f", HTTP {self.status}" if self.status is not None else ""
        return f"{self.message} [{self.code}{status}]"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status!r})"


class InvalidRequest(GatewayError):
    code, status = "invalid_request", 400


class UnsupportedProvider(GatewayError):
    code, status = "unsupported_provider", 400


class ProviderNotConfigured(GatewayError):
    """The provider's plugin is installed but has no client id/secret: an operator's job."""

    code, status = "provider_not_configured", 503


class ApiKeyError(GatewayError):
    """The gateway did not accept this caller: check AUTH_GATEWAY_API_KEY."""


class MissingApiKey(ApiKeyError):
    code, status = "missing_api_key", 401


class InvalidApiKey(ApiKeyError):
    code, status = "invalid_api_key", 403


class Forbidden(GatewayError):
    """The API key is valid, but its scope does not cover this provider, this user or this
    operation (``message`` says which): an operator's job, never the user's."""

    code, status = "forbidden", 403


class NotFound(GatewayError):
    """No such path: the gateway is older or newer than this client, or the URL is wrong."""

    code, status = "not_found", 404


class MethodNotAllowed(GatewayError):
    code, status = "method_not_allowed", 405


class SessionNotFound(GatewayError):
    code, status = "session_not_found", 404


class AuthRequired(GatewayError):
    """The user must authorize this provider: connect it (``not_authenticated``), connect it
    again (``refresh_failed``) or grant more scopes (``insufficient_scope``); ``reason`` says
    which.

    ``auth_url`` and ``session_id`` are set when the client started the flow for the caller
    (``get_token(..., start_auth_if_needed=True)``); ``user_message`` is then the sentence to
    show the person, naming the provider as the gateway names it for people."""

    code, auth_required = "auth_required", True
    auth_url: str | None = None
    session_id: str | None = None
    provider: str | None = None

    @property
    def reason(self) -> str:
        """The wire code: ``not_authenticated``, ``refresh_failed`` or ``insufficient_scope``."""
        return self.code

    @property
    def missing_scopes(self) -> list[str]:
        """The scopes the call needs that the grant lacks (``insufficient_scope`` only)."""
        value = self.detail.get("missing_scopes")
        return [scope for scope in value if isinstance(scope, str)] if isinstance(value, list) \
            else []

    @property
    def provider_display_name(self) -> str | None:
        """The provider's name for people (``Google``), as the gateway said it."""
        value = self.detail.get("provider_display_name")
        return value if isinstance(value, str) else None

    @property
    def user_message(self) -> str:
        name = self.provider_display_name or self.provider or "provider"
        if self.missing_scopes:
            if self.auth_url is None:
                return f"This needs more access to your {name} account than you have granted."
            return (f"This needs more access to your {name} account; open this link to grant "
                    f"it: {self.auth_url}")
        if self.auth_url is None:
            return f"Your {name} account is not connected (or no longer works); connect it again."
        return f"Open this link to connect your {name} account: {self.auth_url}"


class NotAuthenticated(AuthRequired):
    """The user has never connected this provider (or revoked the connection)."""

    code, status = "not_authenticated", 404


class RefreshFailed(AuthRequired):
    """The provider no longer accepts the user's grant; the gateway dropped its tokens."""

    code, status = "refresh_failed", 401


class InsufficientScope(AuthRequired):
    """The grant lacks scopes the call asked for (``missing_scopes``): the person must grant
    them; the gateway asked the provider nothing."""

    code, status = "insufficient_scope", 403


class _RetryAfter:
    detail: dict[str, Any]

    @property
    def retry_after(self) -> float | None:
        """Seconds to wait, when the gateway said."""
        value = self.detail.get("retry_after")
        return float(value) if isinstance(value, int | float) else None


class ProviderUnavailable(_RetryAfter, GatewayError):
    """The provider could not be reached, or the gateway did not ask it (its breaker is open,
    or its refresh slots are busy: then ``retry_after`` says when to try again); the credential
    is unchanged: retry later, never send the user to re-authorize for this."""

    code, status, retryable = "provider_unavailable", 502, True


class ProviderMisconfigured(GatewayError):
    """The provider rejected the gateway's own client credentials: an operator's job."""

    code, status = "provider_misconfigured", 502


class DecryptionFailed(GatewayError):
    code, status = "decryption_failed", 500


class RateLimited(_RetryAfter, GatewayError):
    """Too many calls; not retried by the client, since the wait may be long."""

    code, status, retryable = "rate_limited", 429, True


class DatabaseUnavailable(_RetryAfter, GatewayError):
    """The gateway's database cannot be reached right now; nothing changed: retry after
    ``retry_after`` seconds."""

    code, status, retryable = "database_unavailable", 503, True


class InternalError(GatewayError):
    code, status = "internal_error", 500


class GatewayConnectionError(GatewayError):
    """No answer: the gateway is down, unreachable, or the connection broke."""

    code, retryable = "connection_error", True


class GatewayTimeout(GatewayConnectionError):
    code = "timeout"


class UnexpectedResponse(GatewayError):
    """An answer outside the contract: a proxy's error page, or a body this client cannot read."""

    code = "unexpected_response"


class AuthTimeout(GatewayError):
    """``wait_for_auth`` gave up while the flow was still pending."""

    code = "auth_timeout"


#: The class for each wire error code of API.md.
ERROR_CLASSES: dict[str, type[GatewayError]] = {
    cls.code: cls
    for cls in (InvalidRequest, UnsupportedProvider, ProviderNotConfigured, MissingApiKey,
                InvalidApiKey, NotFound, MethodNotAllowed, SessionNotFound, NotAuthenticated,
                RefreshFailed, InsufficientScope, ProviderUnavailable, ProviderMisconfigured,
                DecryptionFailed, RateLimited, InternalError, Forbidden, DatabaseUnavailable)
}


def error_from_response(status: int, data: Any) -> GatewayError:
    """The exception for an error answer (``data`` is its parsed JSON body, or None)."""
    detail = data.get("detail") if isinstance(data, dict) else None
    if not isinstance(detail, dict) or not isinstance(detail.get("error"), str):
        return UnexpectedResponse(f"The gateway answered HTTP {status} without the documented "
                                  "error body.", status=status)
    code = detail["error"]
    auth_required = detail.get("auth_required") is True
    cls = ERROR_CLASSES.get(code) or (AuthRequired if auth_required else GatewayError)
    message = detail.get("message") if isinstance(detail.get("message"), str) else None
    extra = {k: v for k, v in detail.items() if k not in ("error", "message", "auth_required")}
    return cls(message, code=code, status=status, auth_required=auth_required, detail=extra)
