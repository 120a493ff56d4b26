"""The wire contract of API.md: authentication, the one error shape, validation, health."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from authgateway import create_app
from authgateway.extensions import db
from tests.conftest import API_KEY, HEADERS, base_config
from tests.flow import connect, start, token


def error_of(response) -> dict:
    assert response.mimetype == "application/json"
    detail = response.get_json()["detail"]
    assert set(detail) >= {"error", "message", "auth_required"}
    return detail


@pytest.mark.parametrize("path,method", [
    ("/auth/init", "post"), ("/auth/token", "post"), ("/auth/revoke", "delete"),
    ("/auth/status/00000000-0000-0000-0000-000000000000", "get"),
    ("/auth/providers/ada@example.com", "get"),
])
def test_every_endpoint_but_the_callback_needs_an_api_key(client, path, method):
    missing = getattr(client, method)(path, json={})
    assert missing.status_code == 401 and error_of(missing)["error"] == "missing_api_key"
    wrong = getattr(client, method)(path, json={}, headers={"X-API-Key": "nope"})
    assert wrong.status_code == 403 and error_of(wrong)["error"] == "invalid_api_key"
    assert API_KEY not in wrong.get_data(as_text=True)


def test_the_key_is_accepted_as_a_bearer_token(client):
    answer = client.get("/auth/providers/ada@example.com",
                        headers={"Authorization": f"Bearer {API_KEY}"})
    assert answer.status_code == 200


def test_a_key_created_with_the_cli_works_and_revoking_it_stops_it(app, client, runner):
    created = runner.invoke(args=["apikeys", "create", "mcp-one"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    assert key.startswith("agw_")
    headers = {"X-API-Key": key}
    assert client.get("/auth/providers/ada@example.com", headers=headers).status_code == 200
    assert runner.invoke(args=["apikeys", "revoke", "mcp-one"]).exit_code == 0
    app.extensions["authgateway"].api_keys._ttl = 0  # the cache would hold it APIKEY_CACHE_SECONDS
    assert client.get("/auth/providers/ada@example.com", headers=headers).status_code == 403


@pytest.mark.parametrize("body,field", [
    ({"user_email": "ada@example.com"}, "provider"),
    ({"provider": "google"}, "user_email"),
    ({"provider": 3, "user_email": "ada@example.com"}, "provider"),
    ({"provider": "google", "user_email": "not-an-email"}, "user_email"),
    ({"provider": "google", "user_email": "a\x00b@example.com"}, "user_email"),
    ({"provider": "google", "user_email": "ada@example.com", "scopes": "email"}, "scopes"),
    ({"provider": "google", "user_email": "ada@example.com", "scopes": [1]}, "scopes"),
])
def test_bad_init_bodies_are_400_naming_the_field(client, body, field):
    answer = client.post("/auth/init", json=body, headers=HEADERS)
    assert answer.status_code == 400
    detail = error_of(answer)
    assert detail["error"] == "invalid_request" and field in detail["message"]


@pytest.mark.parametrize("data", [b"not json", b"[1, 2]", b"", b'"text"', b"{"])
def test_a_body_that_is_not_a_json_object_is_400(client, data):
    answer = client.post("/auth/token", data=data, headers={**HEADERS,
                                                           "Content-Type": "application/json"})
    assert answer.status_code == 400 and error_of(answer)["error"] == "invalid_request"


def test_an_oversized_body_is_refused(client):
    answer = client.post("/auth/init", data=b"{" + b" " * 70_000 + b"}",
                         headers={**HEADERS, "Content-Type": "application/json"})
    assert answer.status_code == 413 and error_of(answer)["error"] == "invalid_request"


def test_unknown_fields_are_ignored(client, google):
    flow = start(client, extra_field={"anything": True})
    assert flow["session_id"]


def test_token_body_types(client):
    for body in ({"min_valid_seconds": "10"}, {"min_valid_seconds": True},
                 {"force_refresh": "yes"}, {"min_valid_seconds": -1}):
        answer = token(client, **body)
        assert answer.status_code == 400, body
        assert error_of(answer)["error"] == "invalid_request"


def test_unsupported_provider_lists_the_installed_ones(client):
    answer = client.post("/auth/init", json={"provider": "myspace", "user_email": "a@b.co"},
                         headers=HEADERS)
    assert answer.status_code == 400
    detail = error_of(answer)
    assert detail["error"] == "unsupported_provider" and "google" in detail["message"]


def test_a_provider_without_client_settings_answers_503(make_app):
    app = make_app(GOOGLE_CLIENT_SECRET="")
    answer = app.test_client().post("/auth/init", json={"provider": "google",
                                                        "user_email": "a@b.co"}, headers=HEADERS)
    assert answer.status_code == 503
    detail = error_of(answer)
    assert detail["error"] == "provider_not_configured"
    assert "GOOGLE_CLIENT_SECRET" in detail["message"]


def test_unknown_paths_and_methods_under_auth_are_json(client):
    missing = client.get("/auth/nothing-here", headers=HEADERS)
    assert missing.status_code == 404 and error_of(missing)["error"] == "not_found"
    wrong = client.get("/auth/token", headers=HEADERS)
    assert wrong.status_code == 405 and error_of(wrong)["error"] == "method_not_allowed"
    assert "POST" in wrong.headers["Allow"]


def test_status_of_an_unknown_or_malformed_session(client):
    for session_id in ("00000000-0000-0000-0000-000000000000", "not-a-uuid", "..%2f..%2fetc"):
        answer = client.get(f"/auth/status/{session_id}", headers=HEADERS)
        assert answer.status_code == 404, session_id
        assert error_of(answer)["error"] == "session_not_found"


def test_status_of_a_pending_session(client, google):
    flow = start(client)
    status = client.get(f"/auth/status/{flow['session_id']}", headers=HEADERS).get_json()
    assert status["status"] == "pending" and status["expires_at"] == flow["expires_at"]


def test_emails_are_normalised(client, google):
    connect(client, "  Ada@Example.COM ")
    assert token(client, "ADA@example.com").status_code == 200
    listed = client.get("/auth/providers/ADA@EXAMPLE.COM", headers=HEADERS).get_json()
    assert listed["user_email"] == "ada@example.com" and len(listed["providers"]) == 1


def test_providers_of_a_user_with_none(client):
    answer = client.get("/auth/providers/nobody@example.com", headers=HEADERS)
    assert answer.get_json() == {"user_email": "nobody@example.com", "providers": []}
    assert client.get("/auth/providers/not-an-email", headers=HEADERS).status_code == 400


def test_revoke_without_a_credential_is_404(client):
    answer = client.delete("/auth/revoke", json={"provider": "google",
                                                 "user_email": "ada@example.com"},
                           headers=HEADERS)
    assert answer.status_code == 404 and error_of(answer)["error"] == "not_authenticated"


def test_revoke_when_the_provider_is_down_still_forgets(make_app, google):
    app = make_app()
    client = app.test_client()
    connect(client)
    google.stop()
    answer = client.delete("/auth/revoke", json={"provider": "google",
                                                 "user_email": "ada@example.com"},
                           headers=HEADERS)
    assert answer.status_code == 200 and answer.get_json()["provider_revoked"] is False
    assert token(client).status_code == 404


def test_json_answers_are_not_cached(client):
    answer = client.get("/auth/providers/ada@example.com", headers=HEADERS)
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_health(client):
    answer = client.get("/health")
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["status"] == "healthy" and body["database"] == "connected"
    assert body["encryption"] == "operational" and body["version"]


def test_health_is_503_when_the_database_is_unreachable():
    app = create_app(base_config("postgresql://nobody@127.0.0.1:1/none"))
    answer = app.test_client().get("/health")
    assert answer.status_code == 503
    assert answer.get_json()["status"] == "degraded"
    assert answer.get_json()["database"] == "unavailable"


def test_the_database_holds_no_plaintext_token(app, client, google):
    connect(client)
    got = token(client).get_json()["access_token"]
    with app.app_context():
        dump = " ".join(
            str(value)
            for table in ("credentials", "auth_sessions", "api_keys", "audit_events")
            for row in db.session.execute(text(f"SELECT * FROM {table}"))
            for value in row
        )
    refresh_tokens = [t for t in google._by_refresh]  # what the fake issued
    assert refresh_tokens
    for secret in [got, *refresh_tokens, API_KEY, google.client_secret]:
        assert secret not in dump


def test_openapi_lists_every_route(app, client):
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<path:", "<")
        path = path.replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, (path, method)
