"""The flow of API.md end to end, and every way a callback can fail."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import insert, select, update

from authgateway.context import Every, gateway
from authgateway.extensions import db
from authgateway.models import AuthSession, Credential, utcnow
from tests.conftest import HEADERS
from tests.fakes import Account
from tests.flow import callback_params, connect, consent, start, token


def test_whole_flow_over_http_as_a_seed_client_sees_it(live, google):
    """init -> the person consents -> callback page -> status -> token -> providers -> revoke."""
    init = live.post("/auth/init", json={"provider": "google", "user_email": "Ada@Example.com",
                                         "scopes": ["https://www.googleapis.com/auth/drive"]})
    assert init.status_code == 200
    flow = init.json()
    assert set(flow) == {"auth_url", "session_id", "expires_at"}
    assert live.get(f"/auth/status/{flow['session_id']}").json()["status"] == "pending"

    query = parse_qs(urlsplit(flow["auth_url"]).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["redirect_uri"] == [live.url + "/auth/callback/google"]
    assert query["access_type"] == ["offline"] and query["prompt"] == ["consent"]
    assert query["include_granted_scopes"] == ["true"]
    assert query["login_hint"] == ["ada@example.com"]
    assert set(query["scope"][0].split()) == {"openid", "email",
                                              "https://www.googleapis.com/auth/drive"}
    assert len(query["state"][0]) >= 22  # >= 128 bits

    page = requests.get(flow["auth_url"], timeout=10)  # follows the provider's redirect to us
    assert page.status_code == 200
    assert "Google is connected" in page.text and "ada@example.com" in page.text
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "no-referrer"

    status = live.get(f"/auth/status/{flow['session_id']}").json()
    assert status == {"status": "completed", "session_id": flow["session_id"],
                      "user_email": "ada@example.com", "provider": "google"}

    answer = live.post("/auth/token", json={"provider": "google", "user_email": "ada@example.com"})
    assert answer.status_code == 200
    got = answer.json()
    assert got["token_type"] == "Bearer"
    assert google.token_is_live(got["access_token"])
    assert "https://www.googleapis.com/auth/drive" in got["scopes"]
    assert got["expires_at"].endswith("+00:00")

    listed = live.get("/auth/providers/ada@example.com").json()
    assert listed["user_email"] == "ada@example.com"
    assert [(p["provider"], p["status"]) for p in listed["providers"]] == [("google", "active")]

    revoked = live.delete("/auth/revoke", json={"provider": "google",
                                                "user_email": "ada@example.com"})
    assert revoked.status_code == 200
    assert revoked.json()["success"] is True and revoked.json()["provider_revoked"] is True
    assert len(google.revoked) == 1 and not google.token_is_live(got["access_token"])

    gone = live.post("/auth/token", json={"provider": "google", "user_email": "ada@example.com"})
    assert gone.status_code == 404
    assert gone.json()["detail"]["error"] == "not_authenticated"
    assert gone.json()["detail"]["auth_required"] is True
    assert live.get("/auth/providers/ada@example.com").json()["providers"] == []


def test_state_is_single_use(client, google):
    flow = start(client)
    callback = consent(flow["auth_url"])
    assert client.get(callback).status_code == 200
    exchanges = google.exchange_count
    again = client.get(callback)
    assert again.status_code == 400
    assert "already used" in again.get_data(as_text=True)
    assert google.exchange_count == exchanges  # a second use never exchanges a code


def test_unknown_state_is_404(client, google):
    flow = start(client)
    callback = consent(flow["auth_url"]).replace("state=", "state=x")
    assert client.get(callback).status_code == 404
    assert client.get("/auth/callback/google?code=abc").status_code == 400


def test_expired_session(client, app, google):
    flow = start(client)
    with app.app_context():
        db.session.execute(update(AuthSession).values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    status = client.get(f"/auth/status/{flow['session_id']}", headers=HEADERS).get_json()
    assert status["status"] == "failed" and status["error"] == "expired"
    page = client.get(consent(flow["auth_url"]))
    assert page.status_code == 410
    assert google.exchange_count == 0


def test_iss_mismatch_is_rejected_and_stores_nothing(client, app, google):
    google.callback_iss = "https://evil.example"
    flow = start(client)
    page = client.get(consent(flow["auth_url"]))
    assert page.status_code == 400 and "iss_mismatch" in page.get_data(as_text=True)
    assert google.exchange_count == 0
    status = client.get(f"/auth/status/{flow['session_id']}", headers=HEADERS).get_json()
    assert status["status"] == "failed" and status["error"] == "iss_mismatch"


def test_iss_mismatch_is_checked_on_error_callbacks_too(client, google):
    google.callback_iss = "https://evil.example"
    google.deny_next = True
    flow = start(client)
    page = client.get(consent(flow["auth_url"]))
    assert page.status_code == 400 and "iss_mismatch" in page.get_data(as_text=True)


def test_signing_in_as_someone_else_fails_with_email_mismatch(client, app, google):
    google.next_account = Account(email="mallory@example.com", sub="999")
    flow = start(client, "ada@example.com")
    page = client.get(consent(flow["auth_url"]))
    assert page.status_code == 403
    assert "different account" in page.get_data(as_text=True)
    status = client.get(f"/auth/status/{flow['session_id']}", headers=HEADERS).get_json()
    assert status["error"] == "email_mismatch"
    with app.app_context():
        assert db.session.scalar(select(Credential)) is None
    assert token(client).status_code == 404


def test_the_kelvin_sign_does_not_sign_in_as_a_k(client, app, google):
    """str.lower() folds the Kelvin sign (U+212A) into "k": an account signed in as
    "\u212aate@example.com" is not kate@example.com."""
    google.next_account = Account(email="\u212aate@example.com", sub="1001")
    flow = start(client, "kate@example.com")
    page = client.get(consent(flow["auth_url"]))
    assert page.status_code == 403 and "Nothing was stored" in page.get_data(as_text=True)
    status = client.get(f"/auth/status/{flow['session_id']}", headers=HEADERS).get_json()
    assert status["error"] == "email_mismatch"
    with app.app_context():
        assert db.session.scalar(select(Credential)) is None
    assert token(client, "kate@example.com").status_code == 404


def test_an_upper_case_ascii_email_from_the_provider_still_matches(client, google):
    google.next_account = Account(email="Kate@Example.COM", sub="1001")
    connect(client, "kate@example.com")
    assert token(client, "kate@example.com").status_code == 200


@pytest.mark.parametrize("email", ["\u212aate@example.com", "ro\u017fe@example.com",
                                   "\u0130da@example.com", "stra\u00dfe@example.com",
                                   "ada@\u212aexample.com"])
def test_emails_that_change_case_into_ascii_are_refused_at_init(client, email):
    answer = client.post("/auth/init", json={"provider": "google", "user_email": email},
                         headers=HEADERS)
    assert answer.status_code == 400
    assert "Kelvin" in answer.get_json()["detail"]["message"]


def test_only_ascii_letters_ignore_case(client, google):
    """Other characters are kept as written: a flow for \u00c4da@example.com is not one for
    \u00e4da@example.com."""
    flow = start(client, "\u00c4da@Example.com")
    assert flow["auth_url"]
    status = client.get(f"/auth/status/{flow['session_id']}", headers=HEADERS).get_json()
    assert status["user_email"] == "\u00c4da@example.com"


def test_an_unverified_email_is_not_accepted(client, app, google):
    google.next_account = Account(email="ada@example.com", sub="1", email_verified=False)
    flow = start(client)
    assert client.get(consent(flow["auth_url"])).status_code == 403
    with app.app_context():
        assert db.session.scalar(select(Credential)) is None


def test_access_denied_marks_the_session_failed(client, google):
    google.deny_next = True
    flow = start(client)
    page = client.get(consent(flow["auth_url"]))
    assert page.status_code == 400
    assert "The sign-in at Google was cancelled" in page.get_data(as_text=True)
    status = client.get(f"/auth/status/{flow['session_id']}", headers=HEADERS).get_json()
    assert status == {"status": "failed", "error": "access_denied",
                      "session_id": flow["session_id"], "user_email": "ada@example.com",
                      "provider": "google"}


def test_a_hostile_error_value_is_shown_escaped(client, google):
    flow = start(client)
    state = callback_params(consent(flow["auth_url"]))["state"]
    page = client.get("/auth/callback/google", query_string={
        "state": state, "error": "<script>alert(1)</script>",
        "error_description": "<img src=x onerror=alert(1)>"})
    html = page.get_data(as_text=True)
    assert page.status_code == 400
    assert "<script>alert" not in html and "<img" not in html
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]


def test_a_hostile_email_is_escaped_on_the_page(client, google):
    email = "<b>x</b>@example.com"
    google.next_account = Account(email=email, sub="42")
    flow = start(client, email)
    html = client.get(consent(flow["auth_url"])).get_data(as_text=True)
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;@example.com" in html


def test_a_failed_code_exchange_answers_502(client, google):
    flow = start(client)
    callback = consent(flow["auth_url"])
    google.client_secret = "rotated-by-someone"  # the token endpoint now refuses our client
    page = client.get(callback)
    assert page.status_code == 502
    status = client.get(f"/auth/status/{flow['session_id']}", headers=HEADERS).get_json()
    assert status["error"] == "exchange_failed"


def test_granted_scopes_come_from_the_token_response(client, google):
    google.next_granted_scopes = ["openid", "email"]
    connect(client, scopes=["https://www.googleapis.com/auth/drive"])
    scopes = token(client).get_json()["scopes"]
    assert "https://www.googleapis.com/auth/drive" not in scopes


def test_a_new_flow_replaces_the_credential(client, google):
    connect(client)
    first = token(client).get_json()["access_token"]
    connect(client)
    second = token(client).get_json()["access_token"]
    assert first != second and google.token_is_live(second)


def test_the_callback_for_an_unknown_provider_is_a_404_page(client):
    page = client.get("/auth/callback/nope?state=x&code=y")
    assert page.status_code == 404 and page.mimetype == "text/html"


def _expired_flows(app, count: int, ago: timedelta) -> set[str]:
    """``count`` pending flows that expired ``ago``."""
    now, ids = utcnow(), [str(uuid.uuid4()) for _ in range(count)]
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(insert(AuthSession.__table__), [dict(
            id=session_id, state_hash=hashlib.sha256(session_id.encode()).hexdigest(),
            code_verifier_encrypted="x", key_id="old", user_email="someone@example.com",
            provider="google", scopes="", status="pending", created_at=now - ago,
            expires_at=now - ago) for session_id in ids])
    return set(ids)


def _flows(app) -> set[str]:
    with app.app_context():
        return set(db.session.scalars(select(AuthSession.id)))


def test_flows_expired_over_a_day_ago_are_purged_by_the_server(app, client, google):
    """The first /auth/init of a minute deletes at most 100 of them, oldest first; the next
    ones in that minute delete nothing; a flow expired less than a day ago stays."""
    oldest = _expired_flows(app, 60, timedelta(days=3))
    old = _expired_flows(app, 60, timedelta(hours=25))
    recent = _expired_flows(app, 5, timedelta(hours=23))
    first = start(client)["session_id"]
    left = _flows(app)
    assert not left & oldest and len(left & old) == 20
    assert recent | {first} <= left and len(left) == 26
    second = start(client)["session_id"]
    assert _flows(app) == left | {second}  # the same minute: no purge
    with app.app_context():
        gateway().flow_purge = Every(60.0)  # a minute later, as a new timer sees it
    start(client)
    left = _flows(app)
    assert not left & (oldest | old) and recent | {first, second} <= left and len(left) == 8
