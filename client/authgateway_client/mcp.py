"""Consent from inside an MCP tool, for servers built on the official ``mcp`` package
(``pip install 'authgateway-client[mcp]'``).

    from authgateway_client import AsyncGatewayClient, AuthRequired
    from authgateway_client.mcp import get_token

    @server.tool()
    async def drive_usage(user_email: str, ctx: Context) -> str:
        async with AsyncGatewayClient() as gateway:
            try:
                token = await get_token(ctx, gateway, "google", user_email, scopes=[DRIVE])
            except AuthRequired as exc:
                return exc.user_message      # the link, for clients that cannot be asked
            ...

When the person must connect the provider or grant more scopes, ``get_token`` starts the flow
at the gateway and then, by what the MCP client can do:

- it declared URL elicitation (``elicitation.url``) on protocol 2025-11-25: raises the SDK's
  ``UrlElicitationRequiredError`` (JSON-RPC -32042) carrying the gateway's ``auth_url``, and
  watches the flow (``/auth/status``, backing off, until it ends or ``wait`` runs out). When
  the flow completes it sends ``notifications/elicitation/complete``, and the client retries
  the tool call, which then finds the token.
- otherwise (an older client, one without URL elicitation, or the 2026-07-28 protocol, which
  has neither -32042 nor the completion notification): raises the client's ``AuthRequired``,
  whose ``user_message`` is the link for the tool to answer with.

The error, not a mid-call ``elicitation/create`` request, because the person may take minutes
at the provider, longer than a client waits for one tool call, and because an error needs no
server-to-client channel (stateless transports have none).

The URL is the gateway's ``auth_url``, the provider's own authorize URL: it carries the
provider's parameters, an opaque ``state`` and the user's email as ``login_hint``, never the
API key or a token. It proves nothing about who opens it: the gateway stores the grant only
when the provider vouches that the account signed in has the flow's email (verified).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from mcp import types
from mcp.shared.exceptions import UrlElicitationRequiredError

from ._client import AsyncGatewayClient
from ._errors import AuthRequired, GatewayError
from ._models import Token

#: The protocol revisions that have URL elicitation, its -32042 error and its completion
#: notification (the 2026-07-28 revision moved URL requests into multi-round-trip results).
URL_ELICITATION_VERSIONS = frozenset({"2025-11-25"})
#: How long the completion is watched for at most; the gateway's flow usually expires sooner
#: (AUTH_GATEWAY_SESSION_EXPIRY_MINUTES), which ends the watch too.
DEFAULT_WAIT = 900.0

log = logging.getLogger("authgateway_client")
_watches: set[asyncio.Task] = set()  # referenced until done: a bare task may be collected


async def get_token(ctx: Any, gateway: AsyncGatewayClient, provider: str, user_email: str, *,
                    scopes: Iterable[str] | None = None,
                    min_valid_seconds: float | None = None, force_refresh: bool = False,
                    wait: float = DEFAULT_WAIT) -> Token:
    """A token whose grant covers ``scopes``; when the person must consent first, the MCP
    client is asked to open the gateway's link (``UrlElicitationRequiredError``) if it can
    be, else ``AuthRequired`` (with ``auth_url`` and ``user_message``) is raised.

    ``ctx`` is the tool's ``Context``; ``wait`` bounds, in seconds, how long the flow is
    watched for the completion notification. Other errors are the client's, unchanged."""
    scopes = list(scopes) if scopes is not None else None
    try:
        return await gateway.get_token(provider, user_email, min_valid_seconds=min_valid_seconds,
                                       force_refresh=force_refresh, scopes=scopes,
                                       start_auth_if_needed=True)
    except AuthRequired as exc:
        if exc.auth_url is None or exc.session_id is None or not can_elicit_url(ctx):
            raise
        elicitation_id = f"authgateway-{exc.session_id}"
        _watch(ctx.session, gateway, exc.session_id, elicitation_id, wait)
        # Read from the wire names, which mcp 1.x (camelCase fields) and 2.x both accept.
        elicitation = types.ElicitRequestURLParams.model_validate({
            "mode": "url", "message": consent_message(exc), "url": exc.auth_url,
            "elicitationId": elicitation_id})
        raise UrlElicitationRequiredError([elicitation], consent_message(exc)) from None


def can_elicit_url(ctx: Any) -> bool:
    """Whether this request's MCP client can be sent a URL elicitation: it speaks 2025-11-25
    and declared ``elicitation.url``."""
    session = ctx.session
    params = getattr(session, "client_params", None)  # the handshake's; None on 2026-07-28
    version = (getattr(ctx, "protocol_version", None)  # mcp 2
               or getattr(params, "protocolVersion", None))  # mcp 1
    if version not in URL_ELICITATION_VERSIONS:
        return False
    return session.check_client_capability(types.ClientCapabilities(
        elicitation=types.ElicitationCapability(url=types.UrlElicitationCapability())))


def consent_message(exc: AuthRequired) -> str:
    """What the person is asked, without the link (the client shows the link beside it)."""
    name = exc.provider_display_name or exc.provider or "provider"
    if exc.missing_scopes:
        return f"Grant more access to your {name} account to continue."
    return f"Connect your {name} account to continue."


def _watch(session: Any, gateway: AsyncGatewayClient, session_id: str, elicitation_id: str,
           wait: float) -> None:
    task = asyncio.get_running_loop().create_task(
        _announce_completion(session, gateway, session_id, elicitation_id, wait))
    _watches.add(task)
    task.add_done_callback(_watches.discard)


async def _announce_completion(session: Any, gateway: AsyncGatewayClient, session_id: str,
                               elicitation_id: str, wait: float) -> None:
    """Poll the flow until it ends; when it completed, tell the MCP client, which may then
    retry. A failed or expired flow is not announced: a retry would only fetch a new link."""
    # A client of its own: the tool's closes when the tool returns, which is now.
    async with AsyncGatewayClient(gateway.url, gateway._auth._key) as watcher:
        try:
            status = await watcher.wait_for_auth(session_id, timeout=wait, interval=1.0,
                                                 max_interval=10.0)
        except GatewayError as exc:  # AuthTimeout included: nobody consented in time
            log.info("stopped watching flow %s: %s", session_id, exc.code)
            return
    if not status.completed:
        return
    try:
        await session.send_elicit_complete(elicitation_id)
    except Exception as exc:  # noqa: BLE001  the MCP client went away meanwhile
        log.info("could not announce the completed flow %s: %s", session_id,
                 type(exc).__name__)
