"""authgateway: a self-hosted OAuth token gateway for MCP servers."""

from __future__ import annotations

from .events import Event
from .hookspecs import hookimpl  # plugins write `from authgateway import hookimpl`
from .providers import (
    Identity,
    IdentityError,
    InvalidGrant,
    ProviderConfig,
    ProviderError,
    ProviderInfo,
    ProviderMisconfigured,
    ProviderUnavailable,
    TokenAnswers,
    TokenSet,
)
from .version import __version__


def create_app(test_config: dict | None = None):
    """The app factory: defaults, then the environment (or ``test_config`` instead), validated.
    Loaded by ``flask --app authgateway``, it is the commands' app (commandline.command_app).

    The imports wait for the call: a plugin's ``from authgateway import hookimpl`` loads the
    contract alone, not the app and everything it wires."""
    if test_config is None:
        from .commandline import command_app, run_by_a_command

        if run_by_a_command():
            return command_app()
    from .app import build_app

    return build_app(test_config)


__all__ = [
    "__version__",
    "create_app",
    "Event",
    "hookimpl",
    "Identity",
    "IdentityError",
    "InvalidGrant",
    "ProviderConfig",
    "ProviderError",
    "ProviderInfo",
    "ProviderMisconfigured",
    "ProviderUnavailable",
    "TokenAnswers",
    "TokenSet",
]
