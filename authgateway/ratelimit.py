"""Rate limits that hold across every process of a deployment: the counters live in the shared
database (``rate_limits``), one row per key and fixed window, bumped with one atomic upsert.

Two limits, both settings of the form ``N/second|minute|hour|day`` (``0`` turns one off):

- ``AUTH_GATEWAY_RATELIMIT_INIT`` (default ``120/minute``): flows started per API key.
- ``AUTH_GATEWAY_RATELIMIT_BAD_KEY`` (default ``20/minute``): wrong API keys per client address.
  Past it the address gets 429 for the rest of the window for every request whose key does
  not authenticate (a missing key included); a valid key from that address is answered as
  ever. A valid key costs no work here: only a wrong one is counted, and the block is
  remembered in the process that counted it.

The client address is ``request.remote_addr``. Behind a reverse proxy that is the proxy: set
``AUTH_GATEWAY_TRUSTED_PROXIES`` to the number of proxies in front, and the address is read from
their ``X-Forwarded-For`` (werkzeug's ProxyFix). Never set it higher than the real number of
proxies, or a caller can choose its own address.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from dataclasses import dataclass

from flask import Flask
from sqlalchemy import delete
from werkzeug.middleware.proxy_fix import ProxyFix

from .errors import ConfigError, RateLimitedError
from .extensions import db
from .models import RateLimit
from .storage import insert_on_conflict

log = logging.getLogger(__name__)

PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
SPEC = re.compile(r"(\d+)\s*/\s*(second|minute|hour|day)s?")
PURGE_EVERY = 60.0  # seconds between one process's sweeps of finished windows
BAD_KEY_MESSAGE = "Too many requests with a wrong API key came from this address; retry later."
MAX_BLOCKED = 10_000  # blocked addresses remembered before the expired ones are dropped

rate_limits = RateLimit.__table__


@dataclass(frozen=True)
class Limit:
    count: int
    period: int  # seconds


def parse(setting: str, value: object) -> Limit | None:
    """``"120/minute"`` -> Limit(120, 60); ``"0"`` -> None (no limit)."""
    text = str(value if value is not None else "0").strip().lower()
    if text in ("0", "off", "none", ""):
        return None
    match = SPEC.fullmatch(text)
    if not match or int(match.group(1)) < 1:
        raise ConfigError(
            f"AUTH_GATEWAY_{setting} must look like 120/minute (a count per second, minute, "
            f"hour or day) or 0 for no limit, not {value!r}."
        )
    return Limit(int(match.group(1)), PERIODS[match.group(2)])


class RateLimiter:
    """The limits of one app. Counting is in the database; this process only remembers which
    addresses it has seen go over the bad-key limit, until their window ends."""

    def __init__(self, init: Limit | None, bad_key: Limit | None) -> None:
        self.init_limit, self.bad_key_limit = init, bad_key
        self._blocked: dict[str, float] = {}  # address -> wall-clock end of its window
        self._lock = threading.Lock()
        self._last_purge = 0.0

    def check_address(self, address: str | None) -> None:
        """Refuse an address this process has seen send too many wrong keys (a dict lookup)."""
        if not self._blocked:
            return
        with self._lock:
            until = self._blocked.get(address or "")
            if until is not None and until <= time.time():
                del self._blocked[address or ""]
                until = None
        if until is not None:
            raise RateLimitedError(_seconds_until(until), BAD_KEY_MESSAGE)

    def bad_key(self, address: str | None) -> None:
        """Count a wrong key from ``address``; raise RateLimitedError once past the limit."""
        address = address or ""
        log.warning("invalid API key presented from %s", address or "an unknown address")
        if self.bad_key_limit is None:
            return
        count, window_end = self._hit(f"bad_key:{address}", self.bad_key_limit)
        if count <= self.bad_key_limit.count:
            return
        with self._lock:
            if len(self._blocked) > MAX_BLOCKED:  # many addresses at once: drop the expired
                now = time.time()
                self._blocked = {a: end for a, end in self._blocked.items() if end > now}
            newly = address not in self._blocked
            self._blocked[address] = window_end
        if newly:
            log.warning("%s sent %d wrong API keys in %ds: refused until the window ends in %ds",
                        address or "an unknown address", count, self.bad_key_limit.period,
                        _seconds_until(window_end))
        raise RateLimitedError(_seconds_until(window_end), BAD_KEY_MESSAGE)

    def flow_started(self, api_key_name: str) -> None:
        """Count a flow started with this key; raise RateLimitedError once past the limit."""
        if self.init_limit is None:
            return
        count, window_end = self._hit(f"init:{api_key_name}", self.init_limit)
        if count > self.init_limit.count:
            log.warning("API key %r started more than %d flows in %ds", api_key_name,
                        self.init_limit.count, self.init_limit.period)
            raise RateLimitedError(_seconds_until(window_end), "This API key started too many "
                                   "flows; retry later.")

    def _hit(self, key: str, limit: Limit) -> tuple[int, float]:
        """One more hit on ``key`` in the current window: (hits so far, when the window ends)."""
        now = time.time()
        window_start = int(now // limit.period) * limit.period
        statement = insert_on_conflict(rate_limits, db.engine.dialect).values(
            key=key[:200], window_start=window_start, count=1)
        statement = statement.on_conflict_do_update(
            index_elements=[rate_limits.c.key, rate_limits.c.window_start],
            set_={"count": rate_limits.c.count + 1},
        ).returning(rate_limits.c.count)
        with db.engine.begin() as connection:
            count = connection.execute(statement).scalar_one()
            if now - self._last_purge > PURGE_EVERY:
                self._last_purge = now
                connection.execute(delete(rate_limits).where(
                    rate_limits.c.window_start < now - self._longest_period()))
        return count, window_start + limit.period

    def _longest_period(self) -> int:
        return max(limit.period for limit in (self.init_limit, self.bad_key_limit) if limit)


def _seconds_until(moment: float) -> int:
    return max(1, math.ceil(moment - time.time()))


def init_app(app: Flask) -> RateLimiter:
    """Read the limits, and trust ``TRUSTED_PROXIES`` proxies for the client address."""
    limiter = RateLimiter(
        parse("RATELIMIT_INIT", app.config["RATELIMIT_INIT"]),
        parse("RATELIMIT_BAD_KEY", app.config["RATELIMIT_BAD_KEY"]),
    )
    if app.config["TRUSTED_PROXIES"]:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=app.config["TRUSTED_PROXIES"])
    return limiter
