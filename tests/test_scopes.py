"""Per-call scopes on /auth/token and incremental authorization at the fake Google: the grant
covers what a call needs or the caller hears which scopes are missing; a flow for more asks for
the union and stores what Google granted; the old grant works until the new one is stored."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from tests.conftest import HEADERS
from tests.flow import connect, consent, start, token

API = "https://www.googleapis.com/auth/"
DRIVE, DRIVE_READONLY, CALENDAR = API + "drive", API + "drive.readonly", API + "calendar.readonly"


def scope_param(auth_url: str) -> list[str]:
    return parse_qs(urlsplit(auth_url).query)["scope"][0].split()


def test_a_call_whose_scopes_are_granted_gets_its_token(client, google):
    connect(client, scopes=[DRIVE])
    answer = token(client, scopes=[DRIVE, "openid"])
    assert answer.status_code == 200, answer.get_json()
    assert DRIVE in answer.get_json()["scopes"]


def test_a_scope_the_provider_declares_implied_is_covered(client, google):
    connect(client, scopes=[DRIVE])
    # Google answers email with its userinfo name, and drive covers drive.readonly.
    answer = token(client, scopes=["email", DRIVE_READONLY])
    assert answer.status_code == 200, answer.get_json()


def test_scopes_are_compared_as_exact_strings(client, google):
    connect(client, scopes=[DRIVE])
    answer = token(client, scopes=[DRIVE + "/", DRIVE.upper()])
    assert answer.status_code == 403
    assert answer.get_json()["detail"]["missing_scopes"] == [DRIVE + "/", DRIVE.upper()]


def test_a_missing_scope_is_403_insufficient_scope_and_nothing_upstream(client, google):
    connect(client)
    google.expire_access_tokens()  # a call without scopes would refresh
    before = list(google.requests)
    answer = token(client, scopes=[DRIVE, "email", CALENDAR], min_valid_seconds=3000)
    assert answer.status_code == 403
    detail = answer.get_json()["detail"]
    assert detail["error"] == "insufficient_scope" and detail["auth_required"] is True
    assert detail["missing_scopes"] == [DRIVE, CALENDAR]
    assert detail["provider_display_name"] == "Google"
    assert DRIVE in detail["message"] and "declined" in detail["message"]
    assert google.requests == before and google.refresh_count == 0


def test_auth_required_answers_name_the_provider_for_people(client, google):
    detail = token(client).get_json()["detail"]
    assert detail["error"] == "not_authenticated" and detail["provider_display_name"] == "Google"
    assert "provider_display_name" not in token(client, provider="nope").get_json()["detail"]


def test_scopes_must_be_a_list_of_scope_strings(client, google):
    for bad in ("drive", [1], ["has space"], ["x"] * 101):
        answer = token(client, scopes=bad)
        assert answer.status_code == 400, bad
        assert answer.get_json()["detail"]["error"] == "invalid_request"
        assert "scopes" in answer.get_json()["detail"]["message"]


def test_an_incremental_flow_asks_for_the_union_and_stores_what_google_granted(client, google):
    connect(client)
    granted_before = token(client).get_json()["scopes"]
    flow = start(client, scopes=[DRIVE])
    asked = scope_param(flow["auth_url"])
    assert DRIVE in asked and set(granted_before) <= set(asked)
    assert parse_qs(urlsplit(flow["auth_url"]).query)["include_granted_scopes"] == ["true"]
    page = client.get(consent(flow["auth_url"]))
    assert page.status_code == 200
    assert google.last_authorize_params["include_granted_scopes"] == "true"
    answer = token(client, scopes=[DRIVE])
    assert answer.status_code == 200, answer.get_json()
    stored = answer.get_json()["scopes"]
    assert set(stored) == set(granted_before) | {DRIVE}
    status = client.get(f"/auth/status/{flow['session_id']}", headers=HEADERS).get_json()
    assert status["status"] == "completed"


def test_granular_consent_that_declines_a_scope(client, google):
    connect(client)
    flow = start(client, scopes=[DRIVE, CALENDAR])
    google.next_granted_scopes = ["openid", "email", DRIVE]  # the person unticks the calendar
    page = client.get(consent(flow["auth_url"]))
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "You did not grant" in html and CALENDAR in html
    status = client.get(f"/auth/status/{flow['session_id']}", headers=HEADERS).get_json()
    assert status["status"] == "completed"
    assert token(client, scopes=[DRIVE]).status_code == 200
    declined = token(client, scopes=[DRIVE, CALENDAR])
    assert declined.status_code == 403
    detail = declined.get_json()["detail"]
    assert detail["missing_scopes"] == [CALENDAR] and "declined" in detail["message"]
    # Stored is what Google granted: the union of the old grant and the new consent.
    stored = token(client).get_json()["scopes"]
    assert DRIVE in stored and CALENDAR not in stored and API + "userinfo.profile" in stored


def test_an_abandoned_incremental_flow_leaves_the_old_grant_working(client, google):
    connect(client)
    old = token(client).get_json()
    start(client, scopes=[DRIVE])  # the person never opens the link
    assert token(client).get_json() == old
    assert google.token_is_live(old["access_token"])
    assert token(client, scopes=[DRIVE]).status_code == 403


def test_a_refused_incremental_flow_leaves_the_old_grant_working(client, google):
    connect(client)
    old = token(client).get_json()
    flow = start(client, scopes=[DRIVE])
    google.deny_next = True
    assert client.get(consent(flow["auth_url"])).status_code == 400
    assert token(client).get_json() == old
    listed = client.get("/auth/providers/ada@example.com", headers=HEADERS).get_json()
    assert listed["providers"][0]["scopes"] == old["scopes"]
    assert listed["providers"][0]["status"] == "active"


def test_the_old_grant_works_while_the_incremental_flow_is_at_the_provider(client, google):
    connect(client)
    old = token(client).get_json()
    flow = start(client, scopes=[DRIVE])
    callback = consent(flow["auth_url"])  # consented at Google, callback not yet arrived
    assert token(client).get_json() == old
    assert client.get(callback).status_code == 200
    new = token(client, scopes=[DRIVE]).get_json()
    assert new["access_token"] != old["access_token"] and google.token_is_live(new["access_token"])
