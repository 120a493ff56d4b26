"""A typed client for the authgateway's REST contract, for MCP servers and other callers.

    from authgateway_client import AuthRequired, GatewayClient

    with GatewayClient() as gateway:  # AUTH_GATEWAY_URL and AUTH_GATEWAY_API_KEY
        try:
            token = gateway.get_token("google", email, start_auth_if_needed=True)
        except AuthRequired as exc:
            return exc.user_message  # "Open this link to connect your Google account: https://..."

``AsyncGatewayClient`` has the same methods as coroutines. The distribution is
``authgateway-client`` (the repository's ``client/`` folder); its only dependency is httpx, and
it imports nothing of the gateway's server package.
"""

from __future__ import annotations

__version__ = "0.1.0"

from ._client import (  # noqa: E402  (_client reads __version__ for its User-Agent)
    API_KEY_ENV,
    DEFAULT_TIMEOUT,
    URL_ENV,
    AsyncGatewayClient,
    GatewayClient,
)
from ._errors import (  # noqa: E402
    ERROR_CLASSES,
    ApiKeyError,
    AuthRequired,
    AuthTimeout,
    DatabaseUnavailable,
    DecryptionFailed,
    Forbidden,
    GatewayConnectionError,
    GatewayError,
    GatewayTimeout,
    InsufficientScope,
    InternalError,
    InvalidApiKey,
    InvalidRequest,
    MethodNotAllowed,
    MissingApiKey,
    NotAuthenticated,
    NotFound,
    ProviderMisconfigured,
    ProviderNotConfigured,
    ProviderUnavailable,
    RateLimited,
    RefreshFailed,
    SessionNotFound,
    UnexpectedResponse,
    UnsupportedProvider,
)
from ._models import (  # noqa: E402
    Account,
    AuthFlow,
    AuthStatus,
    Health,
    ProviderConnection,
    RevokeResult,
    Token,
    UserProviders,
)
from ._webhooks import (  # noqa: E402
    EVENT_CLASSES,
    CredentialConnected,
    CredentialNeedsReauth,
    CredentialRecovered,
    CredentialRevoked,
    CredentialScopesChanged,
    FlowFailed,
    WebhookEvent,
    WebhookPing,
    WebhookVerificationError,
    verify_webhook,
)

__all__ = [
    "EVENT_CLASSES",
    "CredentialConnected",
    "CredentialNeedsReauth",
    "CredentialRecovered",
    "CredentialRevoked",
    "CredentialScopesChanged",
    "FlowFailed",
    "WebhookEvent",
    "WebhookPing",
    "WebhookVerificationError",
    "verify_webhook",
    "API_KEY_ENV",
    "DEFAULT_TIMEOUT",
    "ERROR_CLASSES",
    "URL_ENV",
    "Account",
    "ApiKeyError",
    "AsyncGatewayClient",
    "AuthFlow",
    "AuthRequired",
    "AuthStatus",
    "AuthTimeout",
    "DatabaseUnavailable",
    "DecryptionFailed",
    "Forbidden",
    "GatewayClient",
    "GatewayConnectionError",
    "GatewayError",
    "GatewayTimeout",
    "Health",
    "InsufficientScope",
    "InternalError",
    "InvalidApiKey",
    "InvalidRequest",
    "MethodNotAllowed",
    "MissingApiKey",
    "NotAuthenticated",
    "NotFound",
    "ProviderConnection",
    "ProviderMisconfigured",
    "ProviderNotConfigured",
    "ProviderUnavailable",
    "RateLimited",
    "RefreshFailed",
    "RevokeResult",
    "SessionNotFound",
    "Token",
    "UnexpectedResponse",
    "UnsupportedProvider",
    "UserProviders",
    "__version__",
]
