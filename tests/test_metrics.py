"""/metrics: the Prometheus text format, moved by real flows and token calls, never public."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from authgateway import create_app
from authgateway.errors import ConfigError
from authgateway.extensions import db
from authgateway.models import Credential, utcnow
from tests.conftest import API_KEY, HEADERS, base_config
from tests.flow import callback_params, connect, consent, start

EMAIL = "ada@example.com"
METRICS_TOKEN = "metrics-token-0123456789abcdef"


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def scrape(get, **headers) -> dict[tuple[str, frozenset], float]:
    response = get("/metrics", headers=headers or HEADERS)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def moved(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_a_flow_and_token_calls_move_the_counters_of_the_served_gateway(live, google):
    """Through waitress, as `authgateway serve` runs it: flow, cached answer, refresh, a
    transient failure, a dead grant, an unknown user."""
    before = scrape(live.get)

    connect(live.app.test_client())
    assert live.post("/auth/token", json={"provider": "google", "user_email": EMAIL}).ok
    forced = {"provider": "google", "user_email": EMAIL, "force_refresh": True}
    assert live.post("/auth/token", json=forced).ok
    google.fail_next(503, "temporarily_unavailable")
    assert live.post("/auth/token", json=forced).status_code == 502
    google.revoke_grant_for(EMAIL)
    assert live.post("/auth/token", json=forced).status_code == 401
    unknown = {"provider": "google", "user_email": "nobody@example.com"}
    assert live.post("/auth/token", json=unknown).status_code == 404

    after = scrape(live.get)
    answers = "authgateway_token_answers_total"
    assert moved(before, after, answers, provider="google", outcome="cached") == 1
    assert moved(before, after, answers, provider="google", outcome="refreshed") == 1
    assert moved(before, after, answers, provider="google", outcome="provider_unavailable") == 1
    assert moved(before, after, answers, provider="google", outcome="refresh_failed") == 1
    assert moved(before, after, answers, provider="google", outcome="not_authenticated") == 1

    flows = "authgateway_flows_total"
    assert moved(before, after, flows, provider="google", outcome="started") == 1
    assert moved(before, after, flows, provider="google", outcome="completed") == 1

    upstream = "authgateway_upstream_calls_total"
    for operation, outcome, count in [("exchange_code", "ok", 1), ("fetch_identity", "ok", 1),
                                      ("refresh", "ok", 1), ("refresh", "unavailable", 1),
                                      ("refresh", "invalid_grant", 1)]:
        assert moved(before, after, upstream, provider="google", operation=operation,
                     outcome=outcome) == count, (operation, outcome)
    assert moved(before, after, "authgateway_upstream_call_duration_seconds_count",
                 provider="google", operation="refresh") == 3

    requests_ = "authgateway_http_requests_total"
    assert moved(before, after, requests_, endpoint="auth.token", method="POST",
                 status="200") == 2
    for status in ("502", "401", "404"):
        assert moved(before, after, requests_, endpoint="auth.token", method="POST",
                     status=status) == 1
    assert moved(before, after, "authgateway_http_request_duration_seconds_count",
                 endpoint="auth.token") == 5


def test_failed_flows_are_counted_by_reason_and_labels_carry_no_caller_input(client, google):
    before = scrape(client.get)
    flow = start(client)
    state = callback_params(consent(flow["auth_url"]))["state"]
    page = client.get("/auth/callback/google", query_string={
        "state": state, "error": "an_error_a_scanner_made_up"})
    assert page.status_code == 400
    client.get(f"/auth/providers/{EMAIL}", headers=HEADERS)
    client.get("/auth/no-such-path-" + "x" * 40, headers=HEADERS)
    invented = client.open("/auth/token", method="SCANNERMADEUP", headers=HEADERS)
    assert invented.status_code == 405

    response = client.get("/metrics", headers=HEADERS)
    after = parse(response.text)
    assert moved(before, after, "authgateway_http_requests_total", endpoint="unmatched",
                 method="other", status="405") == 1
    assert moved(before, after, "authgateway_flows_total", provider="google",
                 outcome="provider_error") == 1
    assert moved(before, after, "authgateway_http_requests_total", endpoint="unmatched",
                 method="GET", status="404") == 1
    for secret_or_input in (EMAIL, "an_error_a_scanner_made_up", "no-such-path", API_KEY,
                            "SCANNERMADEUP"):
        assert secret_or_input not in response.text


def test_metrics_need_the_api_key(client):
    missing = client.get("/metrics")
    assert missing.status_code == 401
    assert missing.get_json()["detail"]["error"] == "missing_api_key"
    assert set(missing.get_json()["detail"]) >= {"error", "message", "auth_required"}
    wrong = client.get("/metrics", headers={"Authorization": "Bearer not-a-key"})
    assert wrong.status_code == 403
    assert wrong.get_json()["detail"]["error"] == "invalid_api_key"
    assert client.get("/metrics", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200


def test_a_metrics_token_opens_metrics_and_nothing_else(make_app):
    client = make_app(METRICS_TOKEN=METRICS_TOKEN).test_client()
    scraper = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    assert client.get("/metrics", headers=scraper).status_code == 200
    assert client.get("/metrics", headers=HEADERS).status_code == 200  # API keys still do
    assert client.get("/metrics", headers={"Authorization": "Bearer " + "x" * 30}
                      ).status_code == 403
    assert client.get("/metrics").status_code == 401
    # The scraper's token is not an API key.
    denied = client.post("/auth/token", json={"provider": "google", "user_email": EMAIL},
                         headers=scraper)
    assert denied.status_code == 403


@pytest.mark.parametrize("value", ["short", "   "])
def test_a_weak_metrics_token_stops_startup_and_an_empty_one_means_none(tmp_path, value):
    config = base_config(f"sqlite:///{tmp_path}/db.sqlite", METRICS_TOKEN=value)
    if value.strip():
        with pytest.raises(ConfigError, match="AUTH_GATEWAY_METRICS_TOKEN"):
            create_app(config)
    else:
        assert create_app(config).config["METRICS_TOKEN"] is None


def test_several_processes_add_up_under_prometheus_multiproc_dir(tmp_path):
    """Workers forked onto one port each write their values; any of them answers the sum."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    count = textwrap.dedent("""
        from authgateway import metrics
        for _ in range(3):
            metrics.token_answered("google", "cached")
    """)
    for _ in range(2):
        subprocess.run([sys.executable, "-c", count], env=env, check=True, timeout=60,
                       cwd=Path(__file__).resolve().parent.parent)
    scrape_it = textwrap.dedent(f"""
        from authgateway import create_app
        from tests.conftest import HEADERS, base_config
        from flask_migrate import upgrade
        app = create_app(base_config("sqlite:///{tmp_path}/db.sqlite"))
        with app.app_context():
            upgrade()  # API keys, the bootstrap one included, are checked against the database
        print(app.test_client().get("/metrics", headers=HEADERS).get_data(as_text=True))
    """)
    out = subprocess.run([sys.executable, "-c", scrape_it], env=env, check=True, timeout=60,
                         capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent)
    samples = parse(out.stdout)
    key = ("authgateway_token_answers_total",
           frozenset({"provider": "google", "outcome": "cached"}.items()))
    assert samples[key] == 6


def test_a_refresh_storm_reads_as_one_refresh_and_answers_shared(app, client, google):
    """What docs/scale-out.md tells operators to expect: one upstream refresh, one `refreshed`
    answer, every other caller `refreshed_by_peer` (waited on the lock) or `cached`."""
    connect(client)
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(update(Credential.__table__).values(
            expires_at=utcnow() - timedelta(seconds=60)))
    google.refresh_latency = 0.3
    before = scrape(client.get)
    calls = 10
    barrier = threading.Barrier(calls)
    statuses: list[int] = []

    def call() -> None:
        own = app.test_client()
        barrier.wait()
        statuses.append(own.post("/auth/token", json={"provider": "google", "user_email": EMAIL},
                                 headers=HEADERS).status_code)

    threads = [threading.Thread(target=call) for _ in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    after = scrape(client.get)
    assert statuses == [200] * calls
    answers = "authgateway_token_answers_total"
    assert moved(before, after, answers, provider="google", outcome="refreshed") == 1
    assert (moved(before, after, answers, provider="google", outcome="refreshed_by_peer")
            + moved(before, after, answers, provider="google", outcome="cached")) == calls - 1
    assert moved(before, after, "authgateway_upstream_calls_total", provider="google",
                 operation="refresh", outcome="ok") == 1
