"""authgateway: a self-hosted OAuth token gateway for MCP servers."""

from __future__ import annotations

__version__ = "0.1.0"

from .hookspecs import hookimpl  # noqa: E402  (plugins write `from authgateway import hookimpl`)
from .providers import (  # noqa: E402
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


def create_app(test_config: dict | None = None):
    """The app factory: defaults, then the environment (or ``test_config`` instead), validated.
    Loaded by ``flask --app authgateway``, it is the commands' app (cli.command_app)."""
    if test_config is None:
        from .cli import command_app, run_by_a_command

        if run_by_a_command():
            return command_app()
    from .app import build_app

    return build_app(test_config)


__all__ = [
    "create_app",
    "hookimpl",
    "Identity",
    "IdentityError",
    "InvalidGrant",
    "ProviderConfig",
    "ProviderError",
    "ProviderInfo",
    "ProviderMisconfigured",
    "ProviderUnavailable",
    "TokenSet",
]
