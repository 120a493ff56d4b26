"""The person's side of the flow in a real browser: Debian's chromium, driven by Playwright,
through the real OpenID Connect peer's login and consent pages to the gateway's own page.

Screenshots of each page (desktop and phone widths) are saved under the test's tmp_path.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.oidc_gateway import (
    DISPLAY_NAME,
    PROVIDER,
    GatewayServer,
    oidc_settings,
    require,
    start_peer,
)

CHROMIUM = Path(os.environ.get("AUTHGATEWAY_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # Nothing but loopback resolves: a page that asked for anything else would fail to load
    # it here, and test_signing_in_sends_no_request_beyond_loopback would name it.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
EMAIL = "grace@example.com"


def browser_missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install 'playwright>=1.65')"
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser():
    require(browser_missing())
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                             headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server():
    server = GatewayServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def peer(server):
    peer = start_peer(server)
    yield peer
    peer.stop()


@pytest.fixture
def gw(server, peer, make_app):
    return server.serve(make_app(redirect_uri=server.callback("google"),
                                 **oidc_settings(peer, server)))


@pytest.fixture
def page(browser, gw):
    """A fresh browser profile; remembers CSP complaints and where the gateway's page reached."""
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.csp_errors = []
    page.foreign_requests = []
    page.requested = []  # every URL the browser asked for, from any page
    page.on("console", lambda m: "Content Security Policy" in m.text
            and page.csp_errors.append(m.text))

    def on_request(request):
        page.requested.append(request.url)
        if page.url.startswith(gw.url) and not request.url.startswith(gw.url):
            page.foreign_requests.append(request.url)

    page.on("request", on_request)
    yield page
    context.close()


def start(gw) -> dict:
    answer = gw.post("/auth/init", json={"provider": PROVIDER, "user_email": EMAIL})
    assert answer.status_code == 200, answer.text
    return answer.json()


def screenshots(page, tmp_path: Path, name: str) -> None:
    """The gateway's page at desktop and phone widths; on a phone nothing scrolls sideways."""
    page.screenshot(path=tmp_path / f"{name}-desktop.png", full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=tmp_path / f"{name}-phone.png", full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert (tmp_path / f"{name}-phone.png").stat().st_size > 0


def sign_in(page, gw, flow: dict, tmp_path: Path) -> None:
    """Sign in at the peer and consent, as `make try` tells the person to."""
    page.goto(flow["auth_url"])
    page.fill("input[name=login]", EMAIL)
    page.fill("input[name=password]", "any password")
    page.screenshot(path=tmp_path / "provider-login.png")
    page.click("button[type=submit]")
    page.wait_for_selector("input[name=prompt][value=consent]", state="attached")
    page.screenshot(path=tmp_path / "provider-consent.png")
    with page.expect_navigation(url=f"{gw.url}/auth/callback/{PROVIDER}?**"):
        page.click("button[type=submit]")


def test_sign_in_and_consent_land_on_the_success_page(page, gw, tmp_path):
    flow = start(gw)
    sign_in(page, gw, flow, tmp_path)

    text = page.inner_text("body")
    assert f"{DISPLAY_NAME} is connected" in text
    assert EMAIL in text
    assert "close this window" in text and "Next:" in text
    assert page.title().startswith("Connected")
    screenshots(page, tmp_path, "success")
    assert page.csp_errors == [] and page.foreign_requests == []
    status = gw.get(f"/auth/status/{flow['session_id']}").json()
    assert status["status"] == "completed"


def test_signing_in_sends_no_request_beyond_loopback(page, gw, peer, tmp_path):
    sign_in(page, gw, start(gw), tmp_path)

    hosts = {urlsplit(url).hostname for url in page.requested}
    assert hosts <= {"127.0.0.1", "localhost"}, [
        url for url in page.requested if urlsplit(url).hostname not in ("127.0.0.1", "localhost")]
    # The peer's sign-in and consent pages and the gateway's page were all among them.
    assert any(url.startswith(peer.issuer) for url in page.requested)
    assert any(url.startswith(f"{gw.url}/auth/callback/") for url in page.requested)


def test_refusing_lands_on_the_failure_page(page, gw, tmp_path):
    flow = start(gw)
    page.goto(flow["auth_url"])
    with page.expect_navigation(url=f"{gw.url}/auth/callback/{PROVIDER}?**"):
        page.click("a[href*='/abort']")

    text = page.inner_text("body")
    assert f"{DISPLAY_NAME} was not connected" in text
    assert f"The sign-in at {DISPLAY_NAME} was cancelled" in text
    assert EMAIL in text
    assert "access_denied" in text
    screenshots(page, tmp_path, "refused")
    assert page.csp_errors == [] and page.foreign_requests == []
    status = gw.get(f"/auth/status/{flow['session_id']}").json()
    assert (status["status"], status["error"]) == ("failed", "access_denied")
