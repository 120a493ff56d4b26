"""What one app instance holds besides Flask's own: its key ring, providers and caches."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from .apikeys import ApiKeyCache
from .config import Settings
from .crypto import KeyRing
from .plugins import Providers
from .ratelimit import RateLimiter
from .storage import RowReader


@dataclass
class Gateway:
    keyring: KeyRing
    providers: Providers
    settings: Settings
    api_keys: ApiKeyCache
    #: The token lookup's read, below SQLAlchemy's Connection (storage.RowReader).
    reader: RowReader
    limiter: RateLimiter


def gateway() -> Gateway:
    # The app itself, then its attribute. An attribute read through one of Flask's context
    # proxies (current_app, request, g) is found by werkzeug's LocalProxy.__getattr__ only
    # after a normal lookup failed with an AttributeError, raised and caught. The hot path
    # takes the object behind the proxy once per function instead.
    return current_app._get_current_object().extensions["authgateway"]
