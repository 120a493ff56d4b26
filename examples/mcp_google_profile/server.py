"""An MCP server with two tools that read the user's Google account through the authgateway.

The gateway keeps the user's Google grant; this server asks it for a fresh access token on
each call and never sees a refresh token or a client secret. ``google_profile`` needs the
sign-in scopes; ``google_drive_usage`` needs Drive too, and asks for it only when called
(incremental consent). When the person must connect Google, or grant Drive, an MCP client
that can open links (URL elicitation, protocol 2025-11-25) is asked to show the gateway's
link and told when the person is done; any other client gets the link as the tool's answer.

    pip install './client[mcp]'                               # from the repository's root
    AUTH_GATEWAY_URL=http://127.0.0.1:8000 AUTH_GATEWAY_API_KEY=... \
        python examples/mcp_google_profile/server.py          # speaks MCP on stdio

``GOOGLE_USERINFO_URL`` and ``GOOGLE_DRIVE_ABOUT_URL`` point the tools at other endpoints (the
tests' fake Google).
"""

from __future__ import annotations

import os

import httpx
from authgateway_client import AsyncGatewayClient, AuthRequired, GatewayError, ProviderUnavailable
from authgateway_client.mcp import get_token

try:  # mcp 2 renamed FastMCP to MCPServer; the API used here is the same in both.
    from mcp.server.mcpserver import Context
    from mcp.server.mcpserver import MCPServer as FastMCP
except ImportError:
    from mcp.server.fastmcp import Context, FastMCP

PROVIDER = "google"
USERINFO_URL_ENV = "GOOGLE_USERINFO_URL"
DEFAULT_USERINFO_URL = "https://openidconnect.googleapis.com/v1/userinfo"
DRIVE_ABOUT_URL_ENV = "GOOGLE_DRIVE_ABOUT_URL"
DEFAULT_DRIVE_ABOUT_URL = "https://www.googleapis.com/drive/v3/about?fields=user,storageQuota"
DRIVE_READONLY = "https://www.googleapis.com/auth/drive.readonly"


async def _userinfo(authorization: str) -> dict | None:
    """Google's answer, or None when Google no longer accepts the token."""
    url = os.environ.get(USERINFO_URL_ENV) or DEFAULT_USERINFO_URL
    async with httpx.AsyncClient(timeout=10.0) as http:
        response = await http.get(url, headers={"Authorization": authorization})
    if response.status_code == 401:
        return None
    response.raise_for_status()
    return response.json()


async def google_profile(user_email: str, ctx: Context) -> str:
    """Show the name and email address of the user's Google account.

    A real server takes ``user_email`` from its own authentication of the MCP client, never
    from the model: whoever names an email here acts with that user's Google grant."""
    async with AsyncGatewayClient() as gateway:
        try:
            token = await get_token(ctx, gateway, PROVIDER, user_email)
            profile = await _userinfo(token.authorization)
            if profile is None:
                # The user removed our access at Google before the token expired: a forced
                # refresh tells whether the grant is gone (then AuthRequired carries a link).
                token = await get_token(ctx, gateway, PROVIDER, user_email, force_refresh=True)
                profile = await _userinfo(token.authorization)
        except AuthRequired as exc:
            return exc.user_message
        except ProviderUnavailable:
            return "Google cannot be reached right now; please try again in a minute."
        except GatewayError as exc:
            return f"The sign-in service failed ({exc.code}); please tell an administrator."
    if profile is None:
        return "Google did not accept the connection; please try again."
    return f"{profile.get('name') or 'Your Google account'} <{profile['email']}>"


async def google_drive_usage(user_email: str, ctx: Context) -> str:
    """Show how much of the user's Google Drive storage is used.

    Needs read access to Drive, which the person grants the first time this tool runs."""
    async with AsyncGatewayClient() as gateway:
        try:
            token = await get_token(ctx, gateway, PROVIDER, user_email, scopes=[DRIVE_READONLY])
        except AuthRequired as exc:
            return exc.user_message
        except ProviderUnavailable:
            return "Google cannot be reached right now; please try again in a minute."
        except GatewayError as exc:
            return f"The sign-in service failed ({exc.code}); please tell an administrator."
    url = os.environ.get(DRIVE_ABOUT_URL_ENV) or DEFAULT_DRIVE_ABOUT_URL
    async with httpx.AsyncClient(timeout=10.0) as http:
        response = await http.get(url, headers={"Authorization": token.authorization})
    if response.status_code in (401, 403):
        return "Google did not accept the connection for Drive; please try again."
    response.raise_for_status()
    quota = response.json()["storageQuota"]
    used, limit = int(quota["usage"]) / 2**30, int(quota.get("limit") or 0) / 2**30
    return f"{used:.1f} GiB of {limit:.1f} GiB used" if limit else f"{used:.1f} GiB used"


def build_server() -> FastMCP:
    server = FastMCP("google-profile")
    server.add_tool(google_profile)
    server.add_tool(google_drive_usage)
    return server


mcp = build_server()

if __name__ == "__main__":
    mcp.run()
