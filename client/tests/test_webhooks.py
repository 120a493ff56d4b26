"""verify_webhook against signatures made by the standardwebhooks package, the reference the
gateway signs with."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from authgateway_client import (
    CredentialNeedsReauth,
    FlowFailed,
    WebhookEvent,
    WebhookVerificationError,
    verify_webhook,
)
from standardwebhooks import Webhook

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = json.dumps({"type": "credential.needs_reauth", "timestamp": "2026-12-05T08:00:00.000Z",
                   "data": {"id": "evt_1", "provider": "google", "user_email": "ada@example.com",
                            "api_key": None, "error": "invalid_grant"}})


def signed(body: str = BODY, secret: str = SECRET, msg_id: str = "evt_1",
           when: datetime | None = None) -> dict[str, str]:
    when = when or datetime.now(UTC)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": Webhook(secret).sign(msg_id, when, body)}


def test_a_signed_event_verifies_as_its_typed_class():
    event = verify_webhook(BODY.encode(), signed(), SECRET)
    assert isinstance(event, CredentialNeedsReauth)
    assert (event.id, event.provider, event.user_email, event.error) == (
        "evt_1", "google", "ada@example.com", "invalid_grant")
    assert event.timestamp == datetime(2026, 12, 5, 8, tzinfo=UTC)


def test_headers_in_any_case_and_a_str_body():
    headers = {name.title(): value for name, value in signed().items()}
    assert verify_webhook(BODY, headers, SECRET).type == "credential.needs_reauth"


def test_one_matching_signature_among_several_is_enough():
    headers = signed()
    other = signed(secret="whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB")["webhook-signature"]
    headers["webhook-signature"] = f"{other} v1a,whatever {headers['webhook-signature']}"
    assert verify_webhook(BODY, headers, SECRET).id == "evt_1"


@pytest.mark.parametrize("change", [
    lambda h, b: (h, b.replace("invalid_grant", "ok")),                      # body altered
    lambda h, b: ({**h, "webhook-id": "evt_2"}, b),                          # id altered
    lambda h, b: ({**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}, b),
    lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b),
    lambda h, b: ({**h, "webhook-timestamp": "soon"}, b),
])
def test_anything_altered_is_refused(change):
    headers, body = change(signed(), BODY)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, headers, SECRET)


def test_another_secret_or_an_old_request_is_refused():
    with pytest.raises(WebhookVerificationError, match="no signature"):
        verify_webhook(BODY, signed(), "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB")
    old = signed(when=datetime.now(UTC) - timedelta(minutes=6))
    with pytest.raises(WebhookVerificationError, match="too far"):
        verify_webhook(BODY, old, SECRET)
    with pytest.raises(WebhookVerificationError, match="not a whsec_"):
        verify_webhook(BODY, signed(), "whsec_not base64!")


def test_a_failed_flow_and_an_unknown_type():
    failed = json.dumps({"type": "flow.failed", "timestamp": "2026-12-05T08:00:00Z",
                         "data": {"id": "evt_3", "provider": "google", "user_email": "a@b.c",
                                  "api_key": "mcp", "code": "access_denied",
                                  "session_id": "s"}})
    event = verify_webhook(failed, signed(failed, msg_id="evt_3"), SECRET)
    assert isinstance(event, FlowFailed) and event.code == "access_denied"
    future = failed.replace("flow.failed", "credential.something_new")
    event = verify_webhook(future, signed(future, msg_id="evt_3"), SECRET)
    assert type(event) is WebhookEvent and event.data["code"] == "access_denied"
