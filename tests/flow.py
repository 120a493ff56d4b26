"""Driving a flow the way a person and an MCP server do, for the tests."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import requests

from tests.conftest import HEADERS


def start(client, email="ada@example.com", provider="google", **extra):
    response = client.post("/auth/init", json={"provider": provider, "user_email": email, **extra},
                           headers=HEADERS)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def consent(auth_url: str) -> str:
    """The person at the provider: returns the gateway callback path + query it is sent to."""
    answer = requests.get(auth_url, allow_redirects=False, timeout=10)
    assert answer.status_code == 302, answer.text
    location = urlsplit(answer.headers["Location"])
    return f"{location.path}?{location.query}"


def callback_params(callback: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}


def connect(client, email="ada@example.com", **extra) -> dict:
    """A whole successful flow through the test client; returns the init answer."""
    flow = start(client, email, **extra)
    page = client.get(consent(flow["auth_url"]))
    assert page.status_code == 200, page.get_data(as_text=True)
    return flow


def token(client, email="ada@example.com", **extra):
    return client.post("/auth/token", json={"provider": "google", "user_email": email, **extra},
                       headers=HEADERS)
