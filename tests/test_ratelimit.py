"""Abuse: wrong API keys per address and flows per API key are limited, with counters in the
shared database so that the limits hold across processes."""

from __future__ import annotations

import logging
import threading

import pytest
from sqlalchemy import func, select

from authgateway import create_app, ratelimit
from authgateway.context import gateway
from authgateway.errors import ConfigError
from authgateway.extensions import db
from authgateway.models import RateLimit
from tests.conftest import HEADERS, base_config
from tests.flow import connect, token
from tests.wire import Wire

WRONG = {"X-API-Key": "not-the-key"}
PATH = "/auth/providers/ada@example.com"


def from_address(address: str) -> dict:
    return {"environ_base": {"REMOTE_ADDR": address}}


def rows(app) -> dict[str, int]:
    with app.app_context():
        return {r.key: r.count for r in db.session.scalars(select(RateLimit))}


def assert_limited(answer) -> int:
    assert answer.status_code == 429, answer.get_data(as_text=True)
    detail = answer.get_json()["detail"]
    assert detail["error"] == "rate_limited" and detail["auth_required"] is False
    retry_after = int(answer.headers["Retry-After"])
    assert 1 <= retry_after <= 60 and detail["retry_after"] == retry_after
    return retry_after


def test_wrong_keys_from_one_address_are_refused_then_logged(make_app, caplog):
    app = make_app(RATELIMIT_BAD_KEY="3/minute")
    client = app.test_client()
    with caplog.at_level(logging.WARNING, logger="authgateway"):
        for _ in range(3):
            assert client.get(PATH, headers=WRONG, **from_address("10.0.0.1")).status_code == 403
        assert_limited(client.get(PATH, headers=WRONG, **from_address("10.0.0.1")))
        # Refused for the rest of the window without a key that authenticates, without
        # counting further.
        assert_limited(client.get(PATH, **from_address("10.0.0.1")))
    assert rows(app) == {"bad_key:10.0.0.1": 4}
    assert client.get(PATH, headers=HEADERS, **from_address("10.0.0.2")).status_code == 200
    messages = [r.getMessage() for r in caplog.records]
    assert sum("invalid API key presented from 10.0.0.1" in m for m in messages) == 4
    assert any("10.0.0.1 sent 4 wrong API keys" in m for m in messages)
    assert not any("not-the-key" in m for m in messages)


def test_a_valid_key_is_never_refused_for_what_wrong_keys_did(make_app):
    """25 wrong keys from one address, past the default 20 a minute: the address's valid key is
    answered as ever, and its next wrong key is still refused."""
    app = make_app()
    client = app.test_client()
    address = from_address("10.0.0.9")
    statuses = [client.get(PATH, headers={"X-API-Key": f"wrong-{n}"}, **address).status_code
                for n in range(25)]
    assert statuses == [403] * 20 + [429] * 5
    for _ in range(3):
        assert client.get(PATH, headers=HEADERS, **address).status_code == 200
        assert client.get(PATH, headers={"Authorization": "Bearer " + HEADERS["X-API-Key"]},
                          **address).status_code == 200
    assert_limited(client.get(PATH, headers=WRONG, **address))
    assert rows(app) == {"bad_key:10.0.0.9": 21}  # a blocked address is not counted further


def test_the_limit_holds_across_processes(make_app):
    """Two apps stand for two gateway processes: they share nothing but the database."""
    first, second = make_app(RATELIMIT_BAD_KEY="3/minute"), make_app(RATELIMIT_BAD_KEY="3/minute")
    assert first.test_client().get(PATH, headers=WRONG).status_code == 403
    assert second.test_client().get(PATH, headers=WRONG).status_code == 403
    assert first.test_client().get(PATH, headers=WRONG).status_code == 403
    assert_limited(second.test_client().get(PATH, headers=WRONG))


def test_valid_keys_cost_no_database_work(make_app, google):
    # Unprepared statements, so that PostgreSQL's wire names the tables of every one of them.
    app = make_app(RATELIMIT_BAD_KEY="3/minute", DB_PREPARE_THRESHOLD="none")
    client = app.test_client()
    connect(client)
    with app.app_context():
        wire = Wire(db.engine)
    with wire:  # requests outside this app context, each in its own as in production
        for _ in range(10):
            assert token(client).status_code == 200
        statements = wire.take_statements()
    assert any(" FROM credentials " in sql for sql in statements), statements  # watched
    assert not any("rate_limits" in sql for sql in statements), statements
    assert rows(app) == {"init:bootstrap": 1}  # the flow connect() started, nothing more


def test_flows_per_api_key(make_app, google):
    app = make_app(RATELIMIT_INIT="2/minute")
    client, cli = app.test_client(), app.test_cli_runner()
    other = cli.invoke(args=["apikeys", "create", "other"]).stdout.strip().splitlines()[0]
    body = {"provider": "google", "user_email": "ada@example.com"}
    for _ in range(2):
        assert client.post("/auth/init", json=body, headers=HEADERS).status_code == 200
    assert_limited(client.post("/auth/init", json=body, headers=HEADERS))
    assert client.post("/auth/init", json=body, headers={"X-API-Key": other}).status_code == 200
    # Only flows are limited: the same key still gets tokens and status.
    assert client.get(PATH, headers=HEADERS).status_code == 200
    assert rows(app) == {"init:bootstrap": 3, "init:other": 1}


def test_malformed_flows_do_not_use_up_the_flow_budget(make_app, google):
    """120 refused /auth/init requests (the default budget a minute), then a valid flow."""
    app = make_app()
    client = app.test_client()
    valid = {"provider": "google", "user_email": "ada@example.com"}
    malformed = [
        {"data": "not json", "content_type": "application/json"},
        {"json": ["a", "list"]},
        {"json": {"user_email": "ada@example.com"}},
        {"json": {**valid, "provider": 7}},
        {"json": {**valid, "user_email": "no-at-sign"}},
        {"json": {**valid, "user_email": "\u212aate@example.com"}},
        {"json": {**valid, "scopes": "openid"}},
        {"json": {**valid, "scopes": ["with space"]}},
        {"json": {**valid, "provider": "nowhere"}},
    ]
    errors = set()
    for n in range(120):
        answer = client.post("/auth/init", headers=HEADERS, **malformed[n % len(malformed)])
        assert answer.status_code == 400, answer.get_json()
        errors.add(answer.get_json()["detail"]["error"])
    assert errors == {"invalid_request", "unsupported_provider"}
    assert rows(app) == {}
    assert client.post("/auth/init", json=valid, headers=HEADERS).status_code == 200
    assert rows(app) == {"init:bootstrap": 1}


def test_zero_turns_a_limit_off(make_app):
    app = make_app(RATELIMIT_BAD_KEY="0", RATELIMIT_INIT="0")
    client = app.test_client()
    for _ in range(30):
        assert client.get(PATH, headers=WRONG).status_code == 403
    assert rows(app) == {}


def test_a_new_window_starts_afresh_and_old_ones_are_purged(make_app, monkeypatch):
    app = make_app(RATELIMIT_BAD_KEY="2/minute")
    client = app.test_client()
    now = [1_800_000_020.0]
    monkeypatch.setattr(ratelimit.time, "time", lambda: now[0])
    for _ in range(2):
        assert client.get(PATH, headers=WRONG).status_code == 403
    assert assert_limited(client.get(PATH, headers=WRONG)) == 40  # the minute ends at :60
    now[0] += 60
    assert client.get(PATH, headers=WRONG).status_code == 403
    assert client.get(PATH, headers=HEADERS).status_code == 200
    now[0] += 3600
    monkeypatch.setattr(ratelimit, "PURGE_EVERY", 0)
    assert client.get(PATH, headers=WRONG).status_code == 403
    assert list(rows(app).values()) == [1]  # the finished windows are gone


def test_concurrent_hits_are_counted_exactly(make_app):
    app = make_app(RATELIMIT_BAD_KEY="10000/hour")
    with app.app_context():
        limiter = gateway().limiter

    def hit() -> None:
        with app.app_context():
            for _ in range(10):
                limiter._hit("concurrency", limiter.bad_key_limit)

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with app.app_context():
        assert db.session.scalar(select(func.sum(RateLimit.count))) == 80


def test_behind_a_proxy_the_forwarded_address_counts(make_app):
    headers = {**WRONG, "X-Forwarded-For": "203.0.113.7"}
    trusting = make_app(RATELIMIT_BAD_KEY="1/minute", TRUSTED_PROXIES=1)
    assert trusting.test_client().get(PATH, headers=headers).status_code == 403
    assert_limited(trusting.test_client().get(PATH, headers=headers))
    assert rows(trusting) == {"bad_key:203.0.113.7": 2}
    # Without TRUSTED_PROXIES the header is the caller's word: ignored.
    direct = make_app(RATELIMIT_BAD_KEY="1/minute")
    direct.test_client().get(PATH, headers=headers)
    assert rows(direct) == {"bad_key:127.0.0.1": 1}


@pytest.mark.parametrize("setting,value", [
    ("RATELIMIT_INIT", "lots"), ("RATELIMIT_INIT", "10/fortnight"), ("RATELIMIT_BAD_KEY", "-1"),
    ("RATELIMIT_BAD_KEY", "0/minute"), ("TRUSTED_PROXIES", "many"),
])
def test_bad_settings_stop_startup_naming_them(tmp_path, setting, value):
    with pytest.raises(ConfigError, match=f"AUTH_GATEWAY_{setting}"):
        create_app(base_config(f"sqlite:///{tmp_path}/x.sqlite", **{setting: value}))


def test_settings_accept_their_documented_forms():
    assert ratelimit.parse("RATELIMIT_INIT", "120/minute") == ratelimit.Limit(120, 60)
    assert ratelimit.parse("RATELIMIT_INIT", " 5 / seconds ") == ratelimit.Limit(5, 1)
    assert ratelimit.parse("RATELIMIT_INIT", "1000/day") == ratelimit.Limit(1000, 86400)
    assert ratelimit.parse("RATELIMIT_INIT", "0") is None
    assert ratelimit.parse("RATELIMIT_INIT", 0) is None
