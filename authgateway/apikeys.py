"""API keys: created once, stored as SHA-256 hashes, verified from a short-lived cache."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update

from .extensions import db
from .models import ApiKey, utcnow

KEY_PREFIX = "agw_"
VISIBLE_PREFIX_LENGTH = 12
BOOTSTRAP_NAME = "bootstrap"
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(name: str) -> str:
    """Store a new key under ``name`` and return it: the only time it is ever shown."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    db.session.add(ApiKey(name=name, prefix=key[:VISIBLE_PREFIX_LENGTH], key_hash=hash_key(key)))
    db.session.commit()
    return key


def register_key(name: str, key: str) -> bool:
    """Store an existing key (the bootstrap one) under ``name``; False if its hash is known."""
    if db.session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key))):
        return False
    db.session.add(ApiKey(name=name, prefix=key[:VISIBLE_PREFIX_LENGTH], key_hash=hash_key(key)))
    db.session.commit()
    return True


def list_keys() -> list[ApiKey]:
    return list(db.session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


def revoke_key(name: str) -> bool:
    result = db.session.execute(
        update(ApiKey)
        .where(ApiKey.name == name, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    db.session.commit()
    return result.rowcount == 1


@dataclass
class _Entry:
    name: str | None  # None: no live key has this hash
    revoked: bool
    checked: float


class ApiKeyCache:
    """Maps a presented key to its name. Entries live ``ttl`` seconds, so a revocation reaches
    every process within that time; ``last_used_at`` is written at most once a minute per key.

    The bootstrap key (``AUTH_GATEWAY_API_KEY``) needs no row, but once `init-db --seed` has
    stored it, `apikeys revoke bootstrap` stops it like any other key."""

    def __init__(self, bootstrap_key: str | None, ttl: float) -> None:
        self._bootstrap = bootstrap_key.encode("utf-8") if bootstrap_key else None
        self._bootstrap_digest = hash_key(bootstrap_key) if bootstrap_key else None
        self._ttl = ttl
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def authenticate(self, presented: str) -> str | None:
        # Looking a hash up leaks nothing useful about the key through timing.
        digest = hash_key(presented)
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(digest)
        if entry is None or now - entry.checked > self._ttl:
            entry = self._load(digest, now)
        if entry.revoked:
            return None
        if entry.name is not None:
            return entry.name
        candidate = presented.encode("utf-8")
        if self._bootstrap is not None and hmac.compare_digest(candidate, self._bootstrap):
            return BOOTSTRAP_NAME
        return None

    def _load(self, digest: str, now: float) -> _Entry:
        row = db.session.execute(
            select(ApiKey.id, ApiKey.name, ApiKey.last_used_at, ApiKey.revoked_at).where(
                ApiKey.key_hash == digest)
        ).first()
        revoked = row is not None and row.revoked_at is not None
        entry = _Entry(name=row.name if row and not revoked else None, revoked=revoked,
                       checked=now)
        if entry.name and (row.last_used_at is None
                           or utcnow() - row.last_used_at > LAST_USED_RESOLUTION):
            db.session.execute(
                update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=utcnow())
            )
        # Close the read (and the write) now, so the request holds no connection for it.
        db.session.commit()
        with self._lock:
            if row or digest == self._bootstrap_digest:
                self._entries[digest] = entry
            else:
                # Unknown keys are not cached: a flood of random keys must not grow memory.
                self._entries.pop(digest, None)
        return entry
