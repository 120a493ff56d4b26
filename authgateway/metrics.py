"""Prometheus metrics at ``/metrics``: what this gateway process is doing.

The counters live in prometheus-client's default registry, one set per process. A server that
forks several workers onto one port (gunicorn, for example) needs ``PROMETHEUS_MULTIPROC_DIR``: an
empty directory shared by the workers and set in the environment before the gateway is imported.
Each worker then writes its values there, and ``/metrics`` answers their sum through
prometheus-client's multiprocess collector. ``authgateway serve`` is one process with threads and
needs none of this.

The domain calls the small functions below (``token_answered``, ``audited``, ``upstream``); they
never touch the database, and no label carries an email, a path or anything a caller chooses.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from .providers import IdentityError, InvalidGrant, ProviderMisconfigured, ProviderUnavailable

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

HTTP_REQUESTS = Counter(
    "authgateway_http_requests",
    "HTTP requests answered, by Flask endpoint (unmatched: no route), method and status.",
    ["endpoint", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "authgateway_http_request_duration_seconds",
    "Time from the request's arrival in Flask to its response, by Flask endpoint.",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
TOKEN_ANSWERS = Counter(
    "authgateway_token_answers",
    "Answers of POST /auth/token by provider and outcome: cached, refreshed, "
    "refreshed_by_peer, stale_after_failure, or the error code (refresh_failed, "
    "provider_unavailable, not_authenticated, ...).",
    ["provider", "outcome"],
)
UPSTREAM_CALLS = Counter(
    "authgateway_upstream_calls",
    "Calls to a provider by provider, operation (exchange_code, refresh, revoke, "
    "fetch_identity) and outcome (ok, invalid_grant, unavailable, misconfigured, "
    "identity_error, plugin_error, not_confirmed).",
    ["provider", "operation", "outcome"],
)
UPSTREAM_LATENCY = Histogram(
    "authgateway_upstream_call_duration_seconds",
    "Duration of calls to a provider, by provider and operation.",
    ["provider", "operation"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
FLOWS = Counter(
    "authgateway_flows",
    "Authorization flows by provider and outcome: started, completed, or why one failed.",
    ["provider", "outcome"],
)
API_KEY_REFUSALS = Counter(
    "authgateway_api_key_refusals",
    "Requests refused with 403 forbidden (or a flow hidden from /auth/status), by API key name "
    "and what its scope lacks: operation, provider, user or flow.",
    ["api_key", "lacks"],
)
PROVIDER_BREAKER = Gauge(
    "authgateway_provider_breaker",
    "State of each provider's refresh breaker in this process: 0 closed, 1 open (refreshes "
    "fail fast), 2 half-open (one trial call in flight).",
    ["provider"],
    multiprocess_mode="max",
)
PROVIDER_REFUSALS = Counter(
    "authgateway_provider_refusals",
    "Refreshes not attempted, by provider and reason: busy (the provider's refresh slots were "
    "all taken) or open (its breaker was open).",
    ["provider", "reason"],
)
WEBHOOK_ATTEMPTS = Counter(
    "authgateway_webhook_attempts",
    "Webhook delivery attempts by outcome: delivered, retry (the receiver failed, it is tried "
    "again later) or failed (it failed for WEBHOOK_RETRY_HOURS and is given up).",
    ["outcome"],
)

#: How tokens.py says an answer was obtained, as an operator reads it.
TOKEN_OUTCOMES = {"fresh": "refreshed_by_peer", "failed": "stale_after_failure"}

#: The facade's hooks that reach a provider over the network; building the authorization URL
#: does not.
UPSTREAM_OPERATIONS = {
    "authgateway_exchange_code": "exchange_code",
    "authgateway_refresh_token": "refresh",
    "authgateway_revoke_token": "revoke",
    "authgateway_fetch_identity": "fetch_identity",
}

#: Why a flow fails: the gateway's own codes and the authorization error codes of RFC 6749 and
#: OpenID Connect. A provider may send any other code; it is counted as provider_error so that
#: the callback's query string cannot mint new time series.
FLOW_FAILURES = frozenset({
    "expired", "provider_unavailable", "iss_mismatch", "invalid_request", "identity_unverified",
    "exchange_failed", "email_mismatch", "account_mismatch", "access_denied", "unauthorized_client",
    "unsupported_response_type", "invalid_scope", "server_error", "temporarily_unavailable",
    "interaction_required", "login_required", "account_selection_required",
    "consent_required",
})
FLOW_ACTIONS = {"flow_started": "started", "flow_completed": "completed"}
#: The methods counted by name. Any other a client invents is counted as "other", so that the
#: request line cannot mint new time series either.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@functools.cache
def _series(metric, *labels: str):
    """``metric.labels(*labels)``, looked up once: labels() validates and takes a lock on every
    call, and the hot path counts three series per request. Only for labels from closed sets,
    as all of ours are, or this cache would grow with them."""
    return metric.labels(*labels)


def token_answered(provider: str, outcome: str) -> None:
    """One answer of /auth/token: how tokens.py got it, or the error code it raised."""
    _series(TOKEN_ANSWERS, provider, TOKEN_OUTCOMES.get(outcome, outcome)).inc()


def breaker_state(provider: str, value: int) -> None:
    _series(PROVIDER_BREAKER, provider).set(value)


def provider_refused(provider: str, reason: str) -> None:
    _series(PROVIDER_REFUSALS, provider, reason).inc()


def refused(api_key: str, lacks: str) -> None:
    """A request outside its key's scope. Key names are the operator's, a set as closed as
    the keys themselves."""
    _series(API_KEY_REFUSALS, api_key, lacks).inc()


def audited(action: str, provider: str | None, outcome: str) -> None:
    """Called by audit.record, which sees every flow's start and end."""
    if action in FLOW_ACTIONS:
        _series(FLOWS, provider or "", FLOW_ACTIONS[action]).inc()
    elif action == "flow_failed":
        reason = outcome if outcome in FLOW_FAILURES else "provider_error"
        _series(FLOWS, provider or "", reason).inc()


def webhook_attempted(outcome: str) -> None:
    """One delivery attempt: delivered, retry or failed."""
    _series(WEBHOOK_ATTEMPTS, outcome).inc()


def upstream(provider: str, hook_name: str, hook: Callable) -> Callable:
    """``hook`` (a pluggy hook caller), counted and timed as a call to ``provider`` when it is
    one of the operations that reach the provider."""
    operation = UPSTREAM_OPERATIONS.get(hook_name)
    if operation is None:
        return hook

    def call(**kwargs):
        started = time.perf_counter()
        outcome = "plugin_error"
        try:
            result = hook(**kwargs)
            outcome = ("unsupported" if result is None else
                       "not_confirmed" if result is False else "ok")
            return result
        except Exception as exc:
            outcome = _upstream_outcome(exc)
            raise
        finally:
            _series(UPSTREAM_CALLS, provider, operation, outcome).inc()
            _series(UPSTREAM_LATENCY, provider, operation).observe(time.perf_counter() - started)

    return call


def _upstream_outcome(exc: Exception) -> str:
    for kind, outcome in ((InvalidGrant, "invalid_grant"), (ProviderMisconfigured, "misconfigured"),
                          (ProviderUnavailable, "unavailable"), (IdentityError, "identity_error")):
        if isinstance(exc, kind):
            return outcome
    return "plugin_error"


def http_answered(endpoint: str | None, method: str, status: int, started: float | None) -> None:
    """One HTTP answer, by Flask endpoint (never the path: paths carry emails and whatever a
    scanner tries), method and status; ``started`` is the perf_counter time it arrived."""
    method = method if method in METHODS else "other"
    _series(HTTP_REQUESTS, endpoint or "unmatched", method, str(status)).inc()
    if started is not None:
        _series(HTTP_LATENCY, endpoint or "unmatched").observe(time.perf_counter() - started)


def exposition(accept: str | None) -> tuple[bytes, str]:
    """This process's metrics (or, under PROMETHEUS_MULTIPROC_DIR, every worker's summed) in
    the format ``accept`` asks for, and its content type."""
    registry = REGISTRY
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
