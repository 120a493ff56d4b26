"""The example MCP server (examples/mcp_google_profile) driven by the MCP SDK's own in-memory
client, against the live gateway and the fake Google.

Two kinds of MCP client: one that declares URL elicitation on protocol 2025-11-25 (it is sent
the gateway's link as a -32042 error, the person consents at Google, the completion
notification arrives, the retried call answers), and ones that do not (a 2025-11-25 client
without the capability, and the SDK's default 2026-07-28 connection): the tool answers with
the link. Then connected, revoked at the gateway and at Google, and Google unavailable."""

from __future__ import annotations

import asyncio
import importlib.util
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authgateway_client import GatewayClient
from mcp import Client, types
from mcp.shared.exceptions import MCPError, UrlElicitationRequiredError

from tests.conftest import API_KEY
from tests.fakes.google import DRIVE_ABOUT_PATH, USERINFO_PATH

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mcp_google_profile" / "server.py"
EMAIL = "ada@example.com"
DRIVE_READONLY = "https://www.googleapis.com/auth/drive.readonly"
LINK = re.compile(r"^Open this link to connect your Google account: (http://\S+)$")
MORE = re.compile(r"^This needs more access to your Google account; open this link to grant "
                  r"it: (http://\S+)$")
URL_ELICITATION_REQUIRED = -32042


def load_example():
    spec = importlib.util.spec_from_file_location("mcp_google_profile_server", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def example(live, google, monkeypatch):
    """The example's server, configured for the live gateway and the fake Google."""
    monkeypatch.setenv("AUTH_GATEWAY_URL", live.url)
    monkeypatch.setenv("AUTH_GATEWAY_API_KEY", API_KEY)
    monkeypatch.setenv("GOOGLE_USERINFO_URL", google.base_url + USERINFO_PATH)
    monkeypatch.setenv("GOOGLE_DRIVE_ABOUT_URL", google.base_url + DRIVE_ABOUT_PATH)
    return load_example().build_server()


def text(result: types.CallToolResult) -> str:
    assert not result.is_error, result.content
    return "".join(block.text for block in result.content)


@pytest.fixture(params=["legacy", "auto"])
def ask(example, request):
    """Call a tool as an MCP client without URL elicitation does (2025-11-25 without the
    capability, or the SDK's default 2026-07-28 connection); returns its text answer."""

    def call(tool: str = "google_profile", user_email: str = EMAIL) -> str:
        async def run() -> str:
            async with Client(example, mode=request.param) as client:
                return text(await client.call_tool(tool, {"user_email": user_email}))
        return asyncio.run(run())

    return call


def follow(url: str) -> None:
    """The person opens the link and consents at (fake) Google."""
    assert requests.get(url, timeout=10).status_code == 200


def link(answer: str, pattern: re.Pattern = LINK) -> str:
    match = pattern.match(answer)
    assert match, answer
    return match.group(1)


def test_the_tools_are_listed(example):
    async def run():
        async with Client(example) as client:
            return (await client.list_tools()).tools
    assert sorted(tool.name for tool in asyncio.run(run())) == ["google_drive_usage",
                                                                "google_profile"]


def test_a_client_with_url_elicitation_is_sent_the_link_and_told_when_done(example, google):
    completed: list[str] = []

    async def on_message(message) -> None:
        if isinstance(message, types.ElicitCompleteNotification):
            completed.append(message.params.elicitation_id)

    async def on_elicit(context, params) -> types.ElicitResult:
        # Declares the capability; a -32042 error reaches call_tool, not this callback.
        raise AssertionError(f"unexpected elicitation/create: {params}")

    async def consent(client: Client, tool: str) -> types.ElicitRequestURLParams:
        """Call the tool, expect -32042, consent at Google, wait for the notification."""
        with pytest.raises(MCPError) as caught:
            await client.call_tool(tool, {"user_email": EMAIL})
        assert caught.value.code == URL_ELICITATION_REQUIRED
        [elicitation] = UrlElicitationRequiredError.from_error(caught.value.error).elicitations
        assert elicitation.mode == "url" and elicitation.url.startswith(google.base_url)
        assert API_KEY not in elicitation.url and "access_token" not in elicitation.url
        assert elicitation.elicitation_id.startswith("authgateway-")
        await asyncio.to_thread(follow, elicitation.url)
        async with asyncio.timeout(15):
            while elicitation.elicitation_id not in completed:
                await asyncio.sleep(0.05)
        return elicitation

    async def run() -> None:
        async with Client(example, mode="legacy", elicitation_callback=on_elicit,
                          message_handler=on_message) as client:
            assert client.protocol_version == "2025-11-25"
            first = await consent(client, "google_profile")
            assert first.message == "Connect your Google account to continue."
            answer = text(await client.call_tool("google_profile", {"user_email": EMAIL}))
            assert answer == "Test User <ada@example.com>"

            # The second tool needs Drive: an incremental flow for it, the first grant kept.
            more = await consent(client, "google_drive_usage")
            assert more.message == "Grant more access to your Google account to continue."
            asked = parse_qs(urlsplit(more.url).query)
            assert DRIVE_READONLY in asked["scope"][0].split()
            assert asked["include_granted_scopes"] == ["true"]
            answer = text(await client.call_tool("google_drive_usage", {"user_email": EMAIL}))
            assert answer == "1.0 GiB of 15.0 GiB used"
            answer = text(await client.call_tool("google_profile", {"user_email": EMAIL}))
            assert answer == "Test User <ada@example.com>"
            assert completed == [first.elicitation_id, more.elicitation_id]

    asyncio.run(run())


def test_not_connected_then_connected(ask, google):
    answer = ask()
    assert answer.startswith("Open this link to connect your Google account: " + google.base_url)
    follow(link(answer))
    assert ask() == "Test User <ada@example.com>"
    assert ask(user_email="ADA@example.com") == "Test User <ada@example.com>"


def test_a_second_scope_is_asked_for_by_the_tool_that_needs_it(ask, google):
    follow(link(ask()))
    answer = ask("google_drive_usage")
    follow(link(answer, MORE))
    assert ask("google_drive_usage") == "1.0 GiB of 15.0 GiB used"
    assert ask() == "Test User <ada@example.com>"


def test_declining_the_second_scope_keeps_the_first_working(ask, google):
    follow(link(ask()))
    google.next_granted_scopes = ["openid", "email", "profile"]  # the person unticks Drive
    follow(link(ask("google_drive_usage"), MORE))
    assert MORE.match(ask("google_drive_usage"))
    assert ask() == "Test User <ada@example.com>"


def test_revoked_at_the_gateway(ask, live):
    follow(link(ask()))
    with GatewayClient(live.url, API_KEY) as gateway:
        assert gateway.revoke("google", EMAIL).success
    follow(link(ask()))
    assert ask() == "Test User <ada@example.com>"


def test_revoked_by_the_user_at_google(ask, google):
    follow(link(ask()))
    assert google.revoke_grant_for(EMAIL) == 1
    # The stored token is unexpired, so Google's 401 is what tells; the forced refresh fails.
    follow(link(ask()))
    assert ask() == "Test User <ada@example.com>"


def test_google_down_is_not_a_reason_to_reconnect(ask, google):
    follow(link(ask()))
    google.expire_access_tokens()
    google.fail_next(503)
    answer = ask()
    assert "try again" in answer and "link" not in answer
