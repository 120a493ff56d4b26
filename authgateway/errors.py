"""The gateway's error hierarchy: one class per wire error code of API.md.

Domain code raises these; the HTTP layer turns any of them into the one error shape
``{"detail": {"error", "message", "auth_required"}}``. Messages are for people and never
carry a token, a secret or an upstream response body.
"""

from __future__ import annotations


class ConfigError(Exception):
    """A setting is missing or wrong: startup stops with this one-sentence message. The
    commands (authgateway/cli.py) print the sentence alone, without a traceback, and exit 1."""


class GatewayError(Exception):
    status: int = 500
    code: str = "internal_error"
    auth_required: bool = False
    default_message: str = "The gateway hit an unexpected error."
    #: HTTP headers the answer carries besides the body: Retry-After, from ``retry_after``.
    headers: dict[str, str] = {}

    def __init__(self, message: str | None = None, **extra: object) -> None:
        self.message = message or self.default_message
        self.extra = extra
        if extra.get("retry_after") is not None:
            self.headers = {"Retry-After": str(extra["retry_after"])}
        super().__init__(self.message)

    def to_dict(self) -> dict:
        detail = {"error": self.code, "message": self.message, "auth_required": self.auth_required}
        detail.update(self.extra)
        return {"detail": detail}


class InvalidRequestError(GatewayError):
    status, code = 400, "invalid_request"
    default_message = "The request is not valid."


class PayloadTooLargeError(InvalidRequestError):
    status = 413
    default_message = "The request body is larger than 64 KiB."


class UnsupportedProviderError(GatewayError):
    status, code = 400, "unsupported_provider"


class ProviderNotConfiguredError(GatewayError):
    status, code = 503, "provider_not_configured"


class MissingApiKeyError(GatewayError):
    status, code = 401, "missing_api_key"
    default_message = "Send an API key in the X-API-Key header or as Authorization: Bearer <key>."


class InvalidApiKeyError(GatewayError):
    status, code = 403, "invalid_api_key"
    default_message = "The API key is not valid or has been revoked."


class ForbiddenError(GatewayError):
    """The key is valid, but its scope does not cover this provider, user or operation."""

    status, code = 403, "forbidden"
    default_message = "This API key may not do this."


class NotFoundError(GatewayError):
    status, code = 404, "not_found"
    default_message = "There is nothing at this path."


class MethodNotAllowedError(GatewayError):
    status, code = 405, "method_not_allowed"
    default_message = "This method is not allowed on this path."


class SessionNotFoundError(GatewayError):
    status, code = 404, "session_not_found"
    default_message = "No authorization session has this id."


class NotAuthenticatedError(GatewayError):
    status, code, auth_required = 404, "not_authenticated", True
    default_message = "The user has not connected this provider: start a flow with /auth/init."


class RefreshFailedError(GatewayError):
    status, code, auth_required = 401, "refresh_failed", True
    default_message = (
        "The provider no longer accepts this user's grant: send the user through /auth/init again."
    )


class InsufficientScopeError(GatewayError):
    """The grant lacks scopes the caller needs; ``missing_scopes`` names them."""

    status, code, auth_required = 403, "insufficient_scope", True
    default_message = (
        "The user has not granted every scope this call needs: start a flow with /auth/init "
        "for the missing scopes."
    )

    def __init__(self, missing_scopes: list[str], message: str | None = None) -> None:
        super().__init__(message, missing_scopes=missing_scopes)


class ProviderUnavailableError(GatewayError):
    status, code = 502, "provider_unavailable"
    default_message = "The provider could not be reached; the stored credential is unchanged."


class ProviderMisconfiguredError(GatewayError):
    status, code = 502, "provider_misconfigured"
    default_message = (
        "The provider rejected the gateway's client credentials; an operator must fix the "
        "provider settings. The stored credential is unchanged."
    )


class DecryptionFailedError(GatewayError):
    status, code = 500, "decryption_failed"
    default_message = (
        "The stored credential cannot be decrypted with any configured key; an operator must "
        "restore the key that encrypted it."
    )

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason  # for the operator's log, never for the wire


class RateLimitedError(GatewayError):
    status, code = 429, "rate_limited"
    default_message = "Too many requests; retry later."

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message, retry_after=retry_after)


class DatabaseUnavailableError(GatewayError):
    status, code = 503, "database_unavailable"
    default_message = ("The gateway's database cannot be reached right now; nothing was "
                       "changed: retry after the time in retry_after.")

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after=retry_after)
