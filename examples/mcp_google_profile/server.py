"""An MCP server with one tool that reads the user's Google profile through the authgateway.

The gateway keeps the user's Google grant; this server asks it for a fresh access token on
each call and never sees a refresh token or a client secret. When the user has not connected
Google (or Google no longer accepts the grant), the tool answers with the link to connect it.

    pip install './client[mcp]'                               # from the repository's root
    AUTH_GATEWAY_URL=http://127.0.0.1:8000 AUTH_GATEWAY_API_KEY=... \
        python examples/mcp_google_profile/server.py          # speaks MCP on stdio

``GOOGLE_USERINFO_URL`` points the tool at another userinfo endpoint (the tests' fake Google).
"""

from __future__ import annotations

import os

import httpx
from authgateway_client import AsyncGatewayClient, AuthRequired, GatewayError, ProviderUnavailable

try:  # mcp 2 renamed FastMCP to MCPServer; the API used here is the same in both.
    from mcp.server.mcpserver import MCPServer as FastMCP
except ImportError:
    from mcp.server.fastmcp import FastMCP

PROVIDER = "google"
USERINFO_URL_ENV = "GOOGLE_USERINFO_URL"
DEFAULT_USERINFO_URL = "https://openidconnect.googleapis.com/v1/userinfo"


async def _userinfo(authorization: str) -> dict | None:
    """Google's answer, or None when Google no longer accepts the token."""
    url = os.environ.get(USERINFO_URL_ENV) or DEFAULT_USERINFO_URL
    async with httpx.AsyncClient(timeout=10.0) as http:
        response = await http.get(url, headers={"Authorization": authorization})
    if response.status_code == 401:
        return None
    response.raise_for_status()
    return response.json()


async def google_profile(user_email: str) -> str:
    """Show the name and email address of the user's Google account.

    A real server takes ``user_email`` from its own authentication of the MCP client, never
    from the model: whoever names an email here acts with that user's Google grant."""
    async with AsyncGatewayClient() as gateway:
        try:
            token = await gateway.get_token(PROVIDER, user_email, start_auth_if_needed=True)
            profile = await _userinfo(token.authorization)
            if profile is None:
                # The user removed our access at Google before the token expired: a forced
                # refresh tells whether the grant is gone (then AuthRequired carries a link).
                token = await gateway.get_token(PROVIDER, user_email, force_refresh=True,
                                                start_auth_if_needed=True)
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


def build_server() -> FastMCP:
    server = FastMCP("google-profile")
    server.add_tool(google_profile)
    return server


mcp = build_server()

if __name__ == "__main__":
    mcp.run()
