"""What one app instance holds besides Flask's own: its key ring, providers and caches."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from sqlalchemy import Engine

from .apikeys import ApiKeyCache
from .config import Settings
from .crypto import KeyRing
from .plugins import Providers


@dataclass
class Gateway:
    keyring: KeyRing
    providers: Providers
    settings: Settings
    api_keys: ApiKeyCache
    #: Reads of one statement, in autocommit (storage.autocommit_reader): the token lookup.
    reader: Engine


def gateway() -> Gateway:
    return current_app.extensions["authgateway"]
