"""A provider that hangs or fails does not take the gateway down: refreshes at one provider use
a bounded number of worker threads (the bulkhead), and after a run of transient failures its
breaker fails fast for a cool-down, then lets one trial call decide (authgateway/breaker.py)."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import update

from authgateway import create_app
from authgateway.extensions import db
from authgateway.models import Credential, utcnow
from tests.conftest import (
    API_KEY,
    ENCRYPTION_KEY,
    HEADERS,
    base_config,
    empty_tables,
    free_port,
    served_process,
)
from tests.fakes import FakeGoogle
from tests.flow import connect, token

REDIRECT_URI = "http://localhost/auth/callback/google"
credentials = Credential.__table__


def expire(app, emails: list[str] | None = None) -> None:
    query = update(credentials).values(expires_at=utcnow() - timedelta(seconds=60))
    if emails is not None:
        query = query.where(credentials.c.user_email.in_(emails))
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(query)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


# ---- the served gateway, a provider that hangs ---------------------------------------------

PROVIDER_TIMEOUT = 3.0
THREADS = 8  # the default
CONCURRENCY = max(1, THREADS // 4)  # REFRESH_CONCURRENCY's default
FAILURES = 5  # BREAKER_FAILURES' default
VALID = [f"valid{i}@example.com" for i in range(10)]
EXPIRING = [f"expiring{i}@example.com" for i in range(40)]


def test_a_hanging_provider_holds_few_threads_and_valid_tokens_stay_fast(postgres_url,
                                                                          tmp_path):
    with FakeGoogle(redirect_uris=[REDIRECT_URI]) as google:
        app = create_app(base_config(postgres_url, **google.settings(),
                                     GOOGLE_REDIRECT_URI=REDIRECT_URI))
        with app.app_context():
            from flask_migrate import upgrade

            upgrade()
            empty_tables()
        client = app.test_client()
        for email in VALID + EXPIRING:
            connect(client, email)
        expire(app, EXPIRING)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AUTH_GATEWAY_", "GOOGLE_")) and k != "DATABASE_URL"}
        env.update(DATABASE_URL=postgres_url, AUTH_GATEWAY_ENCRYPTION_KEY=ENCRYPTION_KEY,
                   AUTH_GATEWAY_API_KEY=API_KEY, AUTH_GATEWAY_LOAD_PLUGINS="1",
                   AUTH_GATEWAY_INSTANCE_PATH=str(tmp_path), AUTH_GATEWAY_LOG_LEVEL="WARNING",
                   AUTH_GATEWAY_PROVIDER_TIMEOUT=str(PROVIDER_TIMEOUT), HOST="127.0.0.1",
                   PORT=str(free_port()), GOOGLE_REDIRECT_URI=REDIRECT_URI,
                   PYTHONUNBUFFERED="1", **google.settings())
        script = Path(sys.executable).with_name("authgateway")
        command = [str(script), "serve"] if script.exists() else [
            sys.executable, "-m", "authgateway", "serve"]
        with served_process(command, env, tmp_path / "gateway.log") as (url, _process):
            google.refresh_latency = 60.0  # every refresh hangs, past the timeout
            before = google.refresh_count
            valid_latencies: list[float] = []
            valid_statuses: Counter = Counter()
            expiring_answers: list[tuple[float, int, str | None]] = []
            hanging = threading.Event()

            def ask_valid(offset: int) -> None:
                with requests.Session() as http:
                    http.headers.update(HEADERS)
                    i = offset
                    while not hanging.is_set():
                        started = time.perf_counter()
                        answer = http.post(url + "/auth/token", timeout=60, json={
                            "provider": "google", "user_email": VALID[i % len(VALID)]})
                        valid_latencies.append(time.perf_counter() - started)
                        valid_statuses[answer.status_code] += 1
                        i += 1

            def ask_expiring(email: str, barrier: threading.Barrier) -> None:
                with requests.Session() as http:
                    http.headers.update(HEADERS)
                    barrier.wait()
                    for _ in range(3):
                        started = time.perf_counter()
                        answer = http.post(url + "/auth/token", timeout=60, json={
                            "provider": "google", "user_email": email})
                        expiring_answers.append((time.perf_counter() - started,
                                                 answer.status_code,
                                                 answer.json()["detail"]["error"]
                                                 if answer.status_code != 200 else None))

            valid_callers = [threading.Thread(target=ask_valid, args=(i,)) for i in range(4)]
            for caller in valid_callers:
                caller.start()
            time.sleep(0.5)
            valid_latencies.clear()  # measured during the hang only
            barrier = threading.Barrier(len(EXPIRING))
            expiring_callers = [threading.Thread(target=ask_expiring, args=(email, barrier))
                                for email in EXPIRING]
            for caller in expiring_callers:
                caller.start()
            for caller in expiring_callers:
                caller.join(timeout=120)
            # The hang outlasts the expiring callers' answers: keep measuring through a whole
            # provider timeout, while the slots' calls are still at the provider.
            time.sleep(PROVIDER_TIMEOUT)
            health = requests.get(url + "/health", timeout=10)
            metrics_text = requests.get(url + "/metrics", headers=HEADERS, timeout=10).text
            hanging.set()
            for caller in valid_callers:
                caller.join(timeout=60)
            calls = google.refresh_count - before
            google.refresh_latency = 0.0

    statuses = Counter((status, error) for _, status, error in expiring_answers)
    slow = sum(1 for elapsed, _, _ in expiring_answers if elapsed > 1.0)
    print(f"\n[hanging provider] valid: n={len(valid_latencies)} "
          f"p50={sorted(valid_latencies)[len(valid_latencies) // 2] * 1000:.1f}ms "
          f"p99={p99(valid_latencies) * 1000:.1f}ms max={max(valid_latencies) * 1000:.1f}ms; "
          f"expiring: {dict(statuses)}, slower than 1 s: {slow}; provider calls: {calls}; "
          f"health providers: {health.json().get('providers')}")
    assert len(expiring_answers) == 3 * len(EXPIRING)
    assert set(statuses) == {(502, "provider_unavailable")}
    assert valid_statuses == {200: sum(valid_statuses.values())}
    assert len(valid_latencies) >= 100
    assert p99(valid_latencies) < 0.1, p99(valid_latencies)
    # The provider saw the slots' calls until the breaker opened, no more.
    assert 1 <= calls <= CONCURRENCY + FAILURES, calls
    # Only callers holding a slot waited for the provider; every other was turned away at once.
    assert slow <= calls
    assert health.status_code == 200
    assert health.json()["providers"]["google"] in ("open", "half_open")
    assert 'authgateway_provider_breaker{provider="google"} 1.0' in metrics_text


# ---- the breaker, step by step -----------------------------------------------------------

#: Long enough that the steps meant to fall inside one cool-down do on a busy machine.
COOLDOWN = 2


@pytest.fixture
def breaker_app(make_app):
    return make_app(BREAKER_FAILURES=2, BREAKER_COOLDOWN_SECONDS=COOLDOWN)


def breaker_state(client) -> str:
    return client.get("/health").get_json()["providers"]["google"]


def test_the_breaker_opens_fails_fast_lets_one_trial_decide_and_closes(breaker_app, google):
    client = breaker_app.test_client()
    connect(client, "ada@example.com")
    expire(breaker_app)
    assert breaker_state(client) == "closed"

    google.fail_next(503, times=3)
    before = google.refresh_count
    for _ in range(2):
        answer = token(client)
        assert answer.status_code == 502
        assert answer.get_json()["detail"]["error"] == "provider_unavailable"
    assert google.refresh_count - before == 2
    assert breaker_state(client) == "open"
    metrics_text = client.get("/metrics", headers=HEADERS).get_data(as_text=True)
    assert 'authgateway_provider_breaker{provider="google"} 1.0' in metrics_text

    # Open: failing fast, the provider is not asked.
    answer = token(client)
    assert answer.status_code == 502
    detail = answer.get_json()["detail"]
    assert detail["error"] == "provider_unavailable" and detail["auth_required"] is False
    assert answer.headers["Retry-After"] == str(detail["retry_after"]) == str(COOLDOWN)
    assert google.refresh_count - before == 2

    # After the cool-down one trial call; it fails: open again, for another cool-down.
    time.sleep(COOLDOWN + 0.05)
    assert token(client).status_code == 502
    assert google.refresh_count - before == 3
    assert breaker_state(client) == "open"
    assert token(client).status_code == 502
    assert google.refresh_count - before == 3

    # The next trial succeeds: closed, and the credential refreshed.
    time.sleep(COOLDOWN + 0.05)
    answer = token(client)
    assert answer.status_code == 200, answer.get_json()
    assert google.token_is_live(answer.get_json()["access_token"])
    assert google.refresh_count - before == 4
    assert breaker_state(client) == "closed"
    metrics_text = client.get("/metrics", headers=HEADERS).get_data(as_text=True)
    assert 'authgateway_provider_breaker{provider="google"} 0.0' in metrics_text


def test_an_open_breaker_answers_a_token_that_is_still_valid(breaker_app, google):
    client = breaker_app.test_client()
    connect(client, "ada@example.com")
    google.fail_next(503, times=2)
    for _ in range(2):  # asks for more validity than the token has: a refresh, which fails
        assert token(client, min_valid_seconds=7200).status_code == 200
    assert breaker_state(client) == "open"
    before = google.refresh_count
    answer = token(client, min_valid_seconds=7200)
    assert answer.status_code == 200
    assert google.refresh_count == before
    assert token(client, min_valid_seconds=7200, force_refresh=True).status_code == 502


def test_a_refused_grant_is_an_answer_not_a_failure(make_app, google):
    app = make_app(BREAKER_FAILURES=1)
    client = app.test_client()
    for email in ("ada@example.com", "bob@example.com"):
        connect(client, email)
    expire(app)
    google.fail_next(400, "invalid_grant")
    assert token(client, "ada@example.com").status_code == 401
    assert breaker_state(client) == "closed"
    answer = token(client, "bob@example.com")
    assert answer.status_code == 200, answer.get_json()
