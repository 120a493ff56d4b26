"""The example MCP server (examples/mcp_google_profile) run in-process through the MCP SDK's
own call_tool, against the live gateway and the fake Google: not yet connected (the tool answers
with the link), connected, and revoked (at the gateway, and by the user at Google)."""

from __future__ import annotations

import asyncio
import importlib.util
import re
from pathlib import Path

import pytest
import requests
from authgateway_client import GatewayClient

from tests.conftest import API_KEY
from tests.fakes.google import USERINFO_PATH

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mcp_google_profile" / "server.py"
EMAIL = "ada@example.com"
LINK = re.compile(r"^Open this link to connect your Google account: (http://\S+)$")


def load_example():
    spec = importlib.util.spec_from_file_location("mcp_google_profile_server", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def ask(live, google, monkeypatch):
    """Call the example's tool the way an MCP client does; returns its text answer."""
    monkeypatch.setenv("AUTH_GATEWAY_URL", live.url)
    monkeypatch.setenv("AUTH_GATEWAY_API_KEY", API_KEY)
    monkeypatch.setenv("GOOGLE_USERINFO_URL", google.base_url + USERINFO_PATH)
    server = load_example().build_server()

    def call(user_email: str = EMAIL) -> str:
        result = asyncio.run(server.call_tool("google_profile", {"user_email": user_email}))
        if isinstance(result, tuple):  # mcp 1.x: (content blocks, structured output)
            result = result[0]
        blocks = getattr(result, "content", result)  # mcp 2: a CallToolResult
        assert not getattr(result, "is_error", False), blocks
        return "".join(block.text for block in blocks)

    return call


def follow(answer: str) -> None:
    """The person opens the link and consents at (fake) Google."""
    match = LINK.match(answer)
    assert match, answer
    assert requests.get(match.group(1), timeout=10).status_code == 200


def test_the_tool_is_listed():
    server = load_example().build_server()
    tools = asyncio.run(server.list_tools())
    assert [tool.name for tool in tools] == ["google_profile"]


def test_not_connected_then_connected(ask, google):
    answer = ask()
    assert answer.startswith("Open this link to connect your Google account: " + google.base_url)
    follow(answer)
    assert ask() == "Test User <ada@example.com>"
    assert ask("ADA@example.com") == "Test User <ada@example.com>"


def test_revoked_at_the_gateway(ask, live):
    follow(ask())
    with GatewayClient(live.url, API_KEY) as gateway:
        assert gateway.revoke("google", EMAIL).success
    answer = ask()
    follow(answer)
    assert ask() == "Test User <ada@example.com>"


def test_revoked_by_the_user_at_google(ask, google):
    follow(ask())
    assert google.revoke_grant_for(EMAIL) == 1
    # The stored token is unexpired, so Google's 401 is what tells; the forced refresh fails.
    follow(ask())
    assert ask() == "Test User <ada@example.com>"


def test_google_down_is_not_a_reason_to_reconnect(ask, google):
    follow(ask())
    google.expire_access_tokens()
    google.fail_next(503)
    answer = ask()
    assert "try again" in answer and "link" not in answer
