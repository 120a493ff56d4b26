"""Refreshes at one provider, contained: a bulkhead and a circuit breaker per provider, in
each process.

The bulkhead: at most ``REFRESH_CONCURRENCY`` worker threads refresh at one provider at once,
counting those that wait for a credential's lock, since each of them holds a worker thread for
as long as the provider takes. A caller beyond that is turned away at once, before it takes
any lock, so a provider that hangs holds a bounded number of threads and every other request
(valid tokens, other providers) still finds one free.

The breaker: after ``BREAKER_FAILURES`` transient failures in a row (timeouts, connection
errors, 5xx, 429; a refused grant or client is an answer, not a failure) the provider is *open*
for ``BREAKER_COOLDOWN_SECONDS``: refreshes fail fast without calling it. Then it is
*half-open*: one caller's call is the trial, the others are turned away meanwhile; success
closes the breaker, failure opens it for another cool-down.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, current_app

from . import metrics

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
#: The values of the authgateway_provider_breaker gauge.
STATE_VALUES = {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}
#: Seconds a caller turned away must still have on its token to be answered with it.
STALE_OK_SECONDS = 5
#: Retry-After when every slot is busy: a slot frees within one provider timeout at most.
BUSY_RETRY_AFTER = 1


class Refused(Exception):
    """The refresh was not attempted: the provider's slots are busy or its breaker is open."""

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


class Attempt:
    """One admitted refresh; it tells the breaker whether the provider answered."""

    def __init__(self, guard: ProviderGuard, trial: bool) -> None:
        self._guard, self.trial, self.decided = guard, trial, False

    def answered(self) -> None:
        self.decided = True
        self._guard.answered()

    def failed(self) -> None:
        self.decided = True
        self._guard.failed()


class ProviderGuard:
    """The bulkhead and the breaker of one provider; thread-safe."""

    def __init__(self, provider: str, concurrency: int, failures: int,
                 cooldown: float) -> None:
        self.provider = provider
        self._slots = threading.BoundedSemaphore(concurrency)
        self._threshold, self._cooldown = failures, cooldown
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at = 0.0
        self.state = CLOSED
        metrics.breaker_state(provider, STATE_VALUES[CLOSED])

    @contextmanager
    def attempt(self) -> Iterator[Attempt]:
        """Admit one refresh or raise Refused, without waiting either way."""
        trial = self._admit()
        if not self._slots.acquire(blocking=False):
            if trial:
                self._undecided_trial()
            metrics.provider_refused(self.provider, "busy")
            raise Refused("busy", BUSY_RETRY_AFTER)
        attempt = Attempt(self, trial)
        try:
            yield attempt
        finally:
            self._slots.release()
            if trial and not attempt.decided:
                self._undecided_trial()

    def _admit(self) -> bool:
        """Whether this caller is the half-open trial; raises Refused while open."""
        with self._lock:
            if self.state == CLOSED:
                return False
            now = time.monotonic()
            reopens = self._opened_at + self._cooldown
            if self.state == OPEN and now >= reopens:
                self._set(HALF_OPEN)
                return True
        metrics.provider_refused(self.provider, "open")
        # Half-open with the trial in flight: it decides within one provider timeout.
        raise Refused("open", max(1, math.ceil(reopens - now)))

    def _undecided_trial(self) -> None:
        """The trial never reached the provider (another worker had refreshed, say): the next
        caller tries instead."""
        with self._lock:
            if self.state == HALF_OPEN:
                self._set(OPEN)

    def answered(self) -> None:
        with self._lock:
            self._failures = 0
            if self.state == CLOSED:
                return
            self._set(CLOSED)
        log.warning("%s answers refreshes again: its breaker is closed", self.provider)

    def failed(self) -> None:
        with self._lock:
            self._failures += 1
            trial_failed = self.state == HALF_OPEN
            if not trial_failed and (self.state == OPEN or self._failures < self._threshold):
                return
            self._opened_at = time.monotonic()
            self._set(OPEN)
            failures = self._failures
        if trial_failed:
            log.warning("%s failed the trial refresh: failing fast for another %g s",
                        self.provider, self._cooldown)
        else:
            log.warning("%s failed %d refreshes in a row: failing fast for %g s, then one "
                        "trial call decides", self.provider, failures, self._cooldown)

    def _set(self, state: str) -> None:
        """Under the lock."""
        self.state = state
        metrics.breaker_state(self.provider, STATE_VALUES[state])


class Breakers:
    """The guards of one app, one per provider, made on first use."""

    def __init__(self, concurrency: int, failures: int, cooldown: float) -> None:
        self._settings = (concurrency, failures, cooldown)
        self._guards: dict[str, ProviderGuard] = {}
        self._lock = threading.Lock()

    def guard(self, provider: str) -> ProviderGuard:
        guard = self._guards.get(provider)
        if guard is None:
            with self._lock:
                guard = self._guards.get(provider)
                if guard is None:
                    guard = self._guards[provider] = ProviderGuard(provider, *self._settings)
        return guard

    def states(self) -> dict[str, str]:
        return {name: guard.state for name, guard in sorted(self._guards.items())}


def init_app(app: Flask, providers: list[str]) -> Breakers:
    config = app.config
    breakers = app.extensions["authgateway.breakers"] = Breakers(
        config["REFRESH_CONCURRENCY"], config["BREAKER_FAILURES"],
        config["BREAKER_COOLDOWN_SECONDS"])
    for name in providers:
        breakers.guard(name)
    return breakers


def breakers() -> Breakers:
    return current_app.extensions["authgateway.breakers"]
