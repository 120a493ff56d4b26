"""Nothing secret escapes: a whole life of two credentials at DEBUG, with every log record of
every logger, every response and every page scanned for every secret involved. And the logs
are structured: one JSON object per line with LOG_FORMAT=json, carrying the request id that
the response returns in X-Request-ID."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
from cryptography.fernet import Fernet

from authgateway.extensions import db
from authgateway.log_setup import JsonFormatter, RequestIdFilter
from authgateway.models import AuthSession
from tests.conftest import API_KEY, ENCRYPTION_KEY, HEADERS
from tests.flow import consent, start


class RecordingClient:
    """The test client, keeping every response it saw."""

    def __init__(self, client) -> None:
        self.client, self.responses = client, []

    def __getattr__(self, method):
        def call(*args, **kwargs):
            response = getattr(self.client, method)(*args, **kwargs)
            self.responses.append(response)
            return response
        return call


def test_no_secret_in_any_log_line_response_or_page(make_app, google, caplog, capfd):
    caplog.set_level(logging.DEBUG)  # the root logger: urllib3, authlib, werkzeug, ours
    # SQLAlchemy at DEBUG logs every statement with its parameters: none may be a secret either.
    for name in ("urllib3", "authlib", "werkzeug", "sqlalchemy", "authgateway"):
        caplog.set_level(logging.DEBUG, logger=name)  # restored after the test
    app = make_app()
    client = RecordingClient(app.test_client())
    google.rotate_refresh_tokens = True

    for email in ("ada@example.com", "bob@example.com"):
        flow = start(client, email)
        callback = consent(flow["auth_url"])
        assert client.get(callback).status_code == 200
        assert client.get(callback).status_code == 400  # the replay: code and state again
        assert client.get(f"/auth/status/{flow['session_id']}",
                          headers=HEADERS).status_code == 200
    served = []
    for extra in ({}, {"force_refresh": True}):
        answer = client.post("/auth/token", json={"provider": "google",
                                                  "user_email": "ada@example.com", **extra},
                             headers=HEADERS)
        assert answer.status_code == 200
        served.append(answer.get_json()["access_token"])
    google.fail_next(400, "invalid_grant")
    refused = client.post("/auth/token", json={"provider": "google",
                                               "user_email": "bob@example.com",
                                               "force_refresh": True}, headers=HEADERS)
    assert refused.status_code == 401
    client.get("/auth/providers/ada@example.com", headers=HEADERS)
    revoked = client.delete("/auth/revoke", json={"provider": "google",
                                                  "user_email": "ada@example.com"},
                            headers=HEADERS)
    assert revoked.status_code == 200 and revoked.get_json()["provider_revoked"] is True
    client.post("/auth/token", json={"provider": "google", "user_email": "ada@example.com"},
                headers={"X-API-Key": API_KEY + "x"})
    assert client.get("/health").status_code == 200

    with app.app_context():
        keyring = app.extensions["authgateway"].keyring
        verifiers = [keyring.decrypt(s.code_verifier_encrypted, s.key_id)
                     for s in db.session.query(AuthSession)]
    secrets = {
        "access token": list(google._by_access),
        "refresh token": list(google._by_refresh),
        "authorization code": list(google._codes),
        "PKCE verifier": verifiers,
        "client secret": [google.client_secret],
        "API key": [API_KEY],
        "encryption key": [ENCRYPTION_KEY],
    }
    assert len(secrets["access token"]) >= 3 and len(secrets["refresh token"]) >= 3
    assert len(secrets["authorization code"]) == 2 and len(verifiers) == 2

    json_format, text_format = JsonFormatter(), logging.Formatter()
    request_ids = RequestIdFilter()
    logged = []
    for record in caplog.records:
        request_ids.filter(record)
        logged += [json_format.format(record), text_format.format(record), repr(vars(record))]
    assert any("urllib3" in line for line in logged), "the upstream calls were not logged"
    out, err = capfd.readouterr()
    pages = []
    for response in client.responses:
        text = response.get_data(as_text=True) + str(response.headers)
        if response.request.path == "/auth/token" and response.status_code == 200:
            # The one place an access token belongs: the answer to the caller who asked.
            text = text.replace(response.get_json()["access_token"], "<served>")
        pages.append(text)
    for kind, values in secrets.items():
        for value in values:
            assert value and len(value) >= 16, kind
            for where, texts in (("log", logged), ("output", [out, err]),
                                 ("response", pages)):
                leaks = [t for t in texts if value in t]
                assert not leaks, f"the {kind} appears in a {where}: {leaks[0][:500]}"


def test_request_ids(client):
    mine = client.get("/health", headers={"X-Request-ID": "lb-4f2a.9_c"})
    assert mine.headers["X-Request-ID"] == "lb-4f2a.9_c"
    for hostile in ("a b", "x" * 65, "<script>", "id\u00e9", ""):
        made = client.get("/health", headers={"X-Request-ID": hostile})
        assert made.headers["X-Request-ID"] != hostile
        assert len(made.headers["X-Request-ID"]) == 32
    first, second = client.get("/auth/nothing"), client.get("/auth/nothing")
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


SERVE_ONE_REQUEST = textwrap.dedent("""
    import json, sys
    from authgateway import create_app
    app = create_app()
    client = app.test_client()
    wrong = client.get("/auth/providers/ada@example.com", headers={"X-API-Key": "wrong"})
    ok = client.get("/auth/providers/ada@example.com", headers={"X-API-Key": sys.argv[1],
                                                                "X-Request-ID": "caller-id-1"})
    print(json.dumps([wrong.status_code, wrong.headers["X-Request-ID"], ok.status_code]))
""")


@pytest.mark.parametrize("variable", ["LOG_FORMAT", "AUTH_GATEWAY_LOG_FORMAT"])
def test_json_logs_are_one_object_per_line_with_the_request_id(tmp_path, variable):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), variable: "json",
           "LOG_LEVEL": "DEBUG", "DATABASE_URL": f"sqlite:///{tmp_path}/gateway.sqlite",
           "AUTH_GATEWAY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
           "AUTH_GATEWAY_API_KEY": API_KEY, "AUTH_GATEWAY_LOAD_PLUGINS": "0"}
    migrate = subprocess.run([str(os.path.join(os.path.dirname(sys.executable), "flask")),
                              "--app", "authgateway", "db", "upgrade"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert migrate.returncode == 0, migrate.stderr
    run = subprocess.run([sys.executable, "-c", SERVE_ONE_REQUEST, API_KEY], env=env,
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    wrong_status, wrong_id, ok_status = json.loads(run.stdout)
    assert (wrong_status, ok_status) == (403, 200)
    lines = [json.loads(line) for line in run.stderr.splitlines()]  # each line one object
    assert all({"time", "level", "logger", "message", "request_id"} <= set(line)
               for line in lines)
    refused = [line for line in lines if "invalid API key" in line["message"]]
    assert refused and refused[0]["request_id"] == wrong_id and refused[0]["level"] == "WARNING"
    assert any(line["request_id"] == "caller-id-1" and line.get("status") == 200
               for line in lines)
    assert API_KEY not in run.stderr
