"""Bad input never hurts: whatever a caller sends, the answer is a 4xx in the one error shape
(an HTML page only on the callback, which answers a person), never a 500, never a traceback."""

from __future__ import annotations

import io
import json

import pytest

from tests.conftest import HEADERS
from tests.flow import connect

JSON_ENDPOINTS = [("post", "/auth/init"), ("post", "/auth/token"), ("delete", "/auth/revoke")]
EVERY_PATH = ["/auth/init", "/auth/token", "/auth/revoke", "/auth/callback/google",
              "/auth/status/00000000-0000-0000-0000-000000000000",
              "/auth/providers/ada@example.com", "/health", "/openapi.json", "/metrics",
              "/auth/nothing", "/static/authgateway.css"]
GOOD = {"provider": "google", "user_email": "ada@example.com"}


def assert_refused(response, *, status: int | None = None, page: bool = False) -> dict | None:
    """A 4xx in the one error shape (or, for the callback, an escaped page); nothing leaked."""
    text = response.get_data(as_text=True)
    request = response.request
    where = f"{request.method} {request.path}: {response.status_code} {text[:300]}"
    assert 400 <= response.status_code < 500, where
    if status is not None:
        assert response.status_code == status, where
    assert "Traceback" not in text and 'File "' not in text, where
    if page:
        assert response.mimetype == "text/html", where
        assert "<script" not in text.lower(), where
        return None
    assert response.mimetype == "application/json", where
    detail = response.get_json()["detail"]
    assert isinstance(detail["error"], str) and isinstance(detail["message"], str), where
    assert isinstance(detail["auth_required"], bool), where
    return detail


@pytest.mark.parametrize("method,path", JSON_ENDPOINTS)
def test_bodies_that_are_not_a_json_object(client, method, path):
    bodies = [
        (b"not json", "application/json"), (b"provider=google&user_email=a@b.co",
                                            "application/x-www-form-urlencoded"),
        (b'{"provider": "google"', "application/json"), (b"\xff\xfe\x00\x01", "application/json"),
        (b"[]", "application/json"), (b"null", "application/json"), (b"42", "application/json"),
        (b'"a string"', "application/json"), (b"", "application/json"),
        (json.dumps(GOOD).encode("utf-16"), "application/json"),
        (b"--x\r\nContent-Disposition: form-data; name=provider\r\n\r\ngoogle\r\n--x--\r\n",
         "multipart/form-data; boundary=x"),
        (json.dumps(GOOD).encode(), "text/plain; charset=klingon"),
        (b'{"provider": "google", "user_email": "ada@example.com"}garbage', "application/json"),
    ]
    for data, content_type in bodies:
        answer = getattr(client, method)(path, data=data,
                                         headers={**HEADERS, "Content-Type": content_type})
        if answer.status_code == 200:  # a JSON object under a surprising content type is fine
            continue
        detail = assert_refused(answer)
        assert detail["error"] in ("invalid_request", "not_authenticated"), (data, detail)


@pytest.mark.parametrize("method,path", JSON_ENDPOINTS)
def test_wrong_types_name_the_field(client, method, path):
    wrong = {
        "provider": [1, 1.5, True, [], {}, ["google"], {"google": 1}],
        "user_email": [1, False, [], {}, ["ada@example.com"], ""],
    }
    if path == "/auth/init":
        wrong["scopes"] = ["email", {}, 1, [1], [None], [[]], ["a b"], [""], ["x" * 600],
                           ["\x00"], ["\ud800"], ["e\u0301"], ["s"] * 101]
    if path == "/auth/token":
        wrong["min_valid_seconds"] = ["10", True, [], {}, -1, 10**400, 86401]
        wrong["force_refresh"] = [1, 0, "true", [], {}]
    for name, values in wrong.items():
        for value in values:
            answer = getattr(client, method)(path, json={**GOOD, name: value}, headers=HEADERS)
            detail = assert_refused(answer, status=400)
            assert detail["error"] == "invalid_request", (name, value, detail)
            assert name in detail["message"], (name, value, detail)


def test_non_finite_numbers(client):
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
        data = b'{"provider": "google", "user_email": "ada@example.com", "min_valid_seconds": '
        answer = client.post("/auth/token", data=data + literal + b"}",
                             headers={**HEADERS, "Content-Type": "application/json"})
        assert_refused(answer, status=400)


@pytest.mark.parametrize("method,path", JSON_ENDPOINTS)
def test_huge_bodies_are_413_in_the_error_shape(client, method, path):
    big = json.dumps({**GOOD, "padding": "x" * 70_000}).encode()
    answer = getattr(client, method)(path, data=big,
                                     headers={**HEADERS, "Content-Type": "application/json"})
    assert assert_refused(answer, status=413)["error"] == "invalid_request"
    # Without a Content-Length (chunked): the limit holds while reading.
    # As a WSGI server hands on a chunked body: no Content-Length, the stream ends itself.
    answer = getattr(client, method)(path, input_stream=io.BytesIO(big),
                                     headers={**HEADERS, "Content-Type": "application/json",
                                              "Transfer-Encoding": "chunked"},
                                     environ_overrides={"wsgi.input_terminated": True})
    assert assert_refused(answer, status=413)["error"] == "invalid_request"


@pytest.mark.parametrize("method,path", JSON_ENDPOINTS)
def test_deep_nesting(client, method, path):
    depth = 10_000
    for data in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth,
                 b'{"provider": ' + b"[" * depth + b"]" * depth + b', "user_email": "a@b.co"}',
                 b'{"provider": "google", "user_email": "a@b.co", "scopes": ' + b"[" * depth
                 + b"]" * depth + b"}"):
        answer = getattr(client, method)(path, data=data,
                                         headers={**HEADERS, "Content-Type": "application/json"})
        assert_refused(answer, status=400)


EMAILS = ["ada\x00@example.com", "ada\n@example.com", "ada@exa\rmple.com", "ada\x7f@example.com",
          "ada\u0085@example.com", "\u202eada@example.com", "ada\u200b@example.com",
          "ada\ud800@example.com", "a" * 400 + "@example.com", "@example.com", "ada@",
          "ada@@example.com", "ada example@example.com", "' OR '1'='1@example.com",
          "ada@example.com'; DROP TABLE credentials; --"]


def test_unicode_and_control_characters_in_emails(client):
    for email in EMAILS:
        for method, path in JSON_ENDPOINTS:
            answer = getattr(client, method)(path, json={**GOOD, "user_email": email},
                                             headers=HEADERS)
            assert_refused(answer)
    # Odd but well-formed addresses are data: looked up like any other, and not found.
    for email in ("ädä@exämple.com", "用户@例子.广告", "../../etc/passwd@x.y",
                  "'or'1'='1'--@example.com"):
        answer = client.post("/auth/token", json={**GOOD, "user_email": email}, headers=HEADERS)
        assert assert_refused(answer, status=404)["error"] == "not_authenticated"


def test_unicode_and_control_characters_in_provider_names(client):
    names = ["goo\x00gle", "google\n", "GOOGLE", "ｇｏｏｇｌｅ", "goo\ud800gle", "../google",
             "google'; --", "<script>alert(1)</script>", "x" * 10_000, "", " google "]
    for name in names:
        for method, path in JSON_ENDPOINTS:
            answer = getattr(client, method)(path, json={**GOOD, "provider": name},
                                             headers=HEADERS)
            detail = assert_refused(answer, status=400)
            assert detail["error"] in ("unsupported_provider", "invalid_request"), detail
            assert name not in detail["message"] or name == "", detail


def test_hostile_path_parameters(client):
    segments = ["..%2F..%2Fetc%2Fpasswd", "../../etc/passwd", "%2e%2e%2f%2e%2e%2f",
                "' OR '1'='1", "1; DROP TABLE credentials; --", "%00", "%ff%fe", "%ED%A0%80",
                "x" * 5000, "%0d%0aSet-Cookie:%20a=b", "<script>alert(1)</script>",
                "00000000-0000-0000-0000-000000000000%00"]
    for segment in segments:
        status = client.get(f"/auth/status/{segment}", headers=HEADERS)
        assert assert_refused(status)["error"] in ("session_not_found", "not_found")
        providers = client.get(f"/auth/providers/{segment}", headers=HEADERS)
        assert assert_refused(providers)["error"] in ("invalid_request", "not_found")
        page = client.get(f"/auth/callback/{segment}?state=x&code=y")
        if page.mimetype == "text/html":
            assert_refused(page, page=True)
            assert "<script>alert" not in page.get_data(as_text=True)
        else:
            assert_refused(page)
        assert "Set-Cookie" not in page.headers


def test_hostile_callback_queries(client, google):
    connect(client)
    queries = ["state=%00&code=%00", "state=" + "s" * 10_000, "state=a&state=b&code=c",
               "error=%3Cscript%3Ealert(1)%3C/script%3E&state=x",
               "error=access_denied&error_description=%3Cb%3Ehi%3C/b%3E&state=x",
               "code=x", "state=%ED%A0%80&code=x", "iss=%00&state=x&code=y"]
    for query in queries:
        page = client.get(f"/auth/callback/google?{query}")
        assert_refused(page, page=True)
        text = page.get_data(as_text=True)
        assert "<script>alert" not in text and "<b>hi" not in text


@pytest.mark.parametrize("method", ["PATCH", "PUT", "TRACE", "PROPFIND", "CONNECT"])
def test_unknown_methods_on_every_path(client, method):
    for path in EVERY_PATH:
        answer = client.open(path, method=method, headers=HEADERS, data=b"{}")
        expected = 404 if path == "/auth/nothing" else 405
        detail = assert_refused(answer, status=expected)
        assert detail["error"] == ("not_found" if expected == 404 else "method_not_allowed")


def test_hostile_api_key_headers(client):
    for headers in ({"X-API-Key": "k" * 20_000}, {"X-API-Key": "ключ"},
                    {"X-API-Key": "\x00"}, {"Authorization": "Bearer"},
                    {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer  "},
                    {"X-API-Key": "' OR '1'='1"}):
        answer = client.get("/auth/providers/ada@example.com", headers=headers)
        assert assert_refused(answer)["error"] in ("missing_api_key", "invalid_api_key")


def test_unknown_paths_anywhere_are_json(client):
    for path in ("/nothing", "/auth/", "/auth", "/auth/token/extra", "/static/../app.py",
                 "/static/%2e%2e/app.py", "/.env", "/auth/callback/"):
        answer = client.get(path, headers=HEADERS)
        assert_refused(answer)


PAGE_POLICY = ("default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
               "form-action 'none'; frame-ancestors 'none'")


def assert_hardened(response) -> None:
    where = f"{response.request.method} {response.request.path} {response.status_code}"
    assert response.headers["Cache-Control"] == "no-store", where
    assert response.headers["X-Content-Type-Options"] == "nosniff", where
    assert response.headers["Referrer-Policy"] == "no-referrer", where
    assert response.headers["X-Frame-Options"] == "DENY", where
    assert response.headers["Content-Security-Policy"] == PAGE_POLICY, where
    assert response.headers["X-Request-ID"], where


def test_every_kind_of_answer_carries_the_security_headers(client, google, monkeypatch):
    flow = connect(client)
    answers = [
        client.get("/auth/providers/ada@example.com", headers=HEADERS),
        client.get(f"/auth/status/{flow['session_id']}", headers=HEADERS),
        client.get("/auth/callback/google?state=unknown&code=x"),
        client.get("/static/authgateway.css"), client.get("/static/nothing.css"),
        client.get("/nothing"), client.put("/health"), client.get("/health"),
        client.get("/openapi.json"), client.get("/metrics", headers=HEADERS),
        client.post("/auth/init", data=b"x" * 70_000, headers=HEADERS),
        client.get("/auth/providers/ada@example.com"),
    ]
    for answer in answers:
        assert_hardened(answer)
    assert answers[2].mimetype == "text/html" and answers[3].mimetype == "text/css"


def test_an_unexpected_error_says_nothing_about_itself(client, google, monkeypatch):
    from authgateway import flows, tokens

    def explode(*args, **kwargs):
        raise RuntimeError("internal detail: connection string postgresql://user:pw@db")

    connect(client)
    monkeypatch.setattr(tokens, "get_token", explode)
    monkeypatch.setattr(flows, "finish_callback", explode)
    answer = client.post("/auth/token", json=GOOD, headers=HEADERS)
    assert answer.status_code == 500 and answer.mimetype == "application/json"
    assert answer.get_json()["detail"]["error"] == "internal_error"
    page = client.get("/auth/callback/google?state=x&code=y")
    assert page.status_code == 500 and page.mimetype == "text/html"
    for response in (answer, page):
        assert_hardened(response)
        assert "internal detail" not in response.get_data(as_text=True)
        assert "RuntimeError" not in response.get_data(as_text=True)
