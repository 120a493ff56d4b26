"""What the client makes of answers no test gateway gives on demand, without a gateway: an
httpx transport answers in-process."""

from __future__ import annotations

import httpx
from authgateway_client import GatewayClient


def test_a_degraded_gateway_is_an_answer_not_retried():
    seen = []

    def degraded(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503, json={"status": "degraded", "database": "unavailable",
                                         "encryption": "operational", "version": "9"})

    with GatewayClient("http://gateway.invalid", "a-key",
                       transport=httpx.MockTransport(degraded)) as gw:
        health = gw.health()
    assert not health.healthy and health.database == "unavailable" and len(seen) == 1
