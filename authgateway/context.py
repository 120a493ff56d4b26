"""What one app instance holds besides Flask's own: its key ring, providers and caches."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from flask import current_app

from .apikeys import ApiKeyCache
from .config import Settings
from .crypto import KeyRing
from .plugins import Providers
from .ratelimit import RateLimiter
from .storage import RowReader


class Every:
    """Says yes at most once per ``seconds`` (monotonic clock) of this process, whichever of
    its threads asks: housekeeping that a request path does now and then."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._next = 0.0
        self._lock = threading.Lock()

    def due(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                return False
            self._next = now + self.seconds
            return True


#: How often one process purges expired flows from the request path (flows.start_flow).
FLOW_PURGE_SECONDS = 60.0


@dataclass
class Gateway:
    keyring: KeyRing
    providers: Providers
    settings: Settings
    api_keys: ApiKeyCache
    #: The token lookup's read, below SQLAlchemy's Connection (storage.RowReader).
    reader: RowReader
    limiter: RateLimiter
    flow_purge: Every = field(default_factory=lambda: Every(FLOW_PURGE_SECONDS))


def gateway() -> Gateway:
    # The app itself, then its attribute. An attribute read through one of Flask's context
    # proxies (current_app, request, g) is found by werkzeug's LocalProxy.__getattr__ only
    # after a normal lookup failed with an AttributeError, raised and caught. The hot path
    # takes the object behind the proxy once per function instead.
    return current_app._get_current_object().extensions["authgateway"]
