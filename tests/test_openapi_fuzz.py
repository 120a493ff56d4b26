"""The OpenAPI document is kept true: schemathesis generates requests for every operation it
describes, valid and invalid, and sends them to the app in-process (WSGI) with the API key.
No answer may be a 5xx, every status must be documented for its operation, and every body and
header must match what is documented for its status and content type.

Bounded so that the whole file stays well under a minute and a half on both backends: a few
examples per operation and generation mode, and a deadline per example. Hypothesis picks new
examples on every run, so over many CI runs the contract meets far more inputs than one run
sends; a failure prints how to reproduce it.

schemathesis' own pytest loader (``schemathesis.pytest.from_fixture``) does not run under
pytest 9 (it sets ``node._nodeid``), so each operation is driven here through its Hypothesis
strategy, ``APIOperation.as_strategy``, which is what that loader does too."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from authgateway import __version__
from authgateway.openapi import openapi_document
from tests.conftest import HEADERS
from tests.flow import callback_params, connect, consent

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]
DOCUMENT = openapi_document(__version__)


def _can_be_wrong(operation: dict) -> bool:
    """Negative examples need something to get wrong: a body, or a parameter of its own (the
    shared X-Request-ID accepts any string)."""
    return "requestBody" in operation or any("$ref" not in p for p in operation["parameters"])


OPERATIONS = [
    (method, path, mode)
    for path, operations in DOCUMENT["paths"].items()
    for method, operation in operations.items()
    for mode in GenerationMode
    if mode == GenerationMode.POSITIVE or _can_be_wrong(operation)
]
#: Examples per operation and mode; AUTHGATEWAY_FUZZ_EXAMPLES=500 makes a deeper run.
MAX_EXAMPLES = int(os.environ.get("AUTHGATEWAY_FUZZ_EXAMPLES", "15"))
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES, deadline=3000, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


@pytest.fixture
def api_schema(make_app, google):
    # The limits stay off here: the fuzzer would spend its examples on 429s.
    app = make_app(RATELIMIT_BAD_KEY="0", RATELIMIT_INIT="0", LOG_LEVEL="WARNING")
    # Someone is connected, so that successful token, providers and revoke answers can happen.
    connect(app.test_client())
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


@pytest.mark.parametrize("method,path,mode", OPERATIONS)
def test_every_operation_keeps_its_documented_contract(api_schema, method, path, mode):
    operation = api_schema[path][method]

    @FUZZ_SETTINGS
    @given(case=operation.as_strategy(generation_mode=mode))
    def examples(case) -> None:
        case.call_and_validate(headers=HEADERS, checks=CHECKS)

    examples()


def test_the_answers_random_input_rarely_reaches_conform_too(api_schema, make_app, google):
    """Successes, provider failures and limits, driven on purpose, checked the same way."""

    def check(path: str, method: str, *, schema=api_schema, **case) -> object:
        # A 5xx is the documented answer to a provider that is down: only conformance counts.
        return schema[path][method].Case(**case).call_and_validate(
            headers=HEADERS, checks=[c for c in CHECKS if c is not not_a_server_error])

    ada = {"provider": "google", "user_email": "ada@example.com"}
    started = check("/auth/init", "POST", body={**ada, "scopes": ["email"]}).json()
    assert check("/auth/status/{session_id}", "GET",
                 path_parameters={"session_id": started["session_id"]}).status_code == 200
    callback = callback_params(consent(started["auth_url"]))
    for status in (200, 400):  # the flow, then a replay of its callback
        page = check("/auth/callback/{provider}", "GET", path_parameters={"provider": "google"},
                     query=callback)
        assert page.status_code == status
    assert check("/auth/token", "POST", body={**ada, "force_refresh": True}).status_code == 200
    assert check("/auth/providers/{user_email}", "GET",
                 path_parameters={"user_email": "ada@example.com"}).json()["providers"]
    google.fail_next(503)
    assert check("/auth/token", "POST", body={**ada, "force_refresh": True}).status_code == 502
    google.fail_next(400, "invalid_grant")
    assert check("/auth/token", "POST", body={**ada, "force_refresh": True}).status_code == 401
    assert check("/auth/revoke", "DELETE", body=ada).status_code == 200
    assert check("/auth/revoke", "DELETE", body=ada).status_code == 404
    assert check("/auth/token", "POST", body={**ada, "padding": "x" * 70_000}).status_code == 413

    limited = schemathesis.openapi.from_wsgi(
        "/openapi.json", make_app(RATELIMIT_INIT="1/minute", LOG_LEVEL="WARNING"))
    statuses = [check("/auth/init", "POST", schema=limited, body=ada).status_code
                for _ in range(2)]
    assert statuses == [200, 429]
