"""API keys: created once, stored as SHA-256 hashes, verified from a short-lived cache.

A key may be scoped: to some providers, to users whose email matches a pattern, to some
operations, and until an expiry. The scope is cached with the key, so checking it costs no
database work; a change reaches every process when its cache entry is next read again."""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update

from . import emails
from .extensions import db
from .models import ApiKey, utcnow

KEY_PREFIX = "agw_"
VISIBLE_PREFIX_LENGTH = 12
BOOTSTRAP_NAME = "bootstrap"
LAST_USED_RESOLUTION = timedelta(minutes=1)

#: What a key may be limited to, as ``--can`` names them: the /auth endpoints but the callback.
OPERATIONS = ("token", "init", "status", "providers", "revoke")
DURATION = re.compile(r"(\d+)([smhdw])")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: A user pattern: shell-style wildcards (* ? [...]) over a whole address, one @ in it.
USER_PATTERN = re.compile(r"[^@\s]+@[^@\s]+")


class ScopeError(ValueError):
    """A scope or duration given to a command is not valid; the message names the option."""


@dataclass(frozen=True)
class Scope:
    """What a key may do; None in a dimension means no limit there."""

    providers: frozenset[str] | None = None
    users: tuple[str, ...] | None = None  # lower-cased patterns, as the operator wrote them
    operations: frozenset[str] | None = None
    _user_match: re.Pattern | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.users is not None:
            # One regular expression for all patterns, so a check is one match.
            joined = "|".join(f"(?:{fnmatch.translate(p)})" for p in self.users)
            # ASCII letters only ignore case (authgateway.emails): in Unicode mode IGNORECASE
            # lets "k" match the Kelvin sign.
            object.__setattr__(self, "_user_match",
                               re.compile(joined, re.IGNORECASE | re.ASCII))

    @property
    def unlimited(self) -> bool:
        return self.providers is None and self.users is None and self.operations is None

    def refusal(self, operation: str, provider: str | None = None,
                user_email: str | None = None) -> tuple[str, str] | None:
        """What this scope lacks for the request (``operation``, ``provider`` or ``user``) and a
        sentence saying so, or None when it covers it. Says nothing about stored credentials."""
        if self.operations is not None and operation not in self.operations:
            return "operation", f"This API key may not use the '{operation}' operation."
        if provider is not None and not self.covers_provider(provider):
            return "provider", f"This API key may not use the provider '{provider[:64]}'."
        if user_email is not None and not self.covers_user(user_email):
            return "user", "This API key may not act for this user (its user patterns do not " \
                           "match the address)."
        return None

    def covers_provider(self, provider: str) -> bool:
        return self.providers is None or provider in self.providers

    def covers_user(self, user_email: str) -> bool:
        return self._user_match is None or self._user_match.match(user_email) is not None

    def summary(self) -> str:
        """One line for people: ``providers=google users=*@example.com can=init,status``."""
        if self.unlimited:
            return "full access"
        parts = []
        if self.providers is not None:
            parts.append("providers=" + ",".join(sorted(self.providers)))
        if self.users is not None:
            parts.append("users=" + ",".join(self.users))
        if self.operations is not None:
            parts.append("can=" + ",".join(op for op in OPERATIONS if op in self.operations))
        return " ".join(parts)


FULL_ACCESS = Scope()


def parse_providers(text: str, installed: list[str]) -> frozenset[str]:
    names = [name.strip().lower() for name in text.split(",")]
    if not all(names):
        raise ScopeError("--providers takes a comma-separated list of provider names, "
                         "such as google,github.")
    unknown = sorted(set(names) - set(installed))
    if unknown:
        raise ScopeError(f"--providers names {', '.join(repr(n) for n in unknown)}, which is "
                         f"not installed (installed: {', '.join(installed) or 'none'}).")
    return frozenset(names)


def parse_user_pattern(pattern: str) -> str:
    # Normalised as emails are (authgateway.emails): a pattern never folds the Kelvin sign.
    normalised = emails.normalise(pattern)
    if normalised is None:
        raise ScopeError(f"--users {pattern.strip()!r} holds a character that changes case "
                         "into an ASCII letter (such as the Kelvin sign): write that letter.")
    pattern = normalised
    if not USER_PATTERN.fullmatch(pattern) or len(pattern) > 320 or not _brackets_close(pattern):
        raise ScopeError(f"--users {pattern!r} is not an email pattern: use one whole address "
                         "with * ? or [...] as wildcards, such as *@example.com.")
    return pattern


def _brackets_close(pattern: str) -> bool:
    """fnmatch reads an unclosed ``[`` as a literal: an operator who wrote one meant a set."""
    depth = 0
    for char in pattern:
        if char == "[":
            if depth:
                return False
            depth = 1
        elif char == "]" and depth:
            depth = 0
    return depth == 0


def parse_operations(text: str) -> frozenset[str]:
    names = [name.strip().lower() for name in text.split(",")]
    unknown = [name for name in names if name not in OPERATIONS]
    if unknown or not names:
        raise ScopeError(f"--can takes operations from {','.join(OPERATIONS)}, not "
                         f"{', '.join(repr(n) for n in unknown)}.")
    return frozenset(names)


def parse_duration(text: str, option: str, allow_zero: bool = False) -> timedelta:
    """``90d``, ``24h``, ``30m``, ``45s``, ``2w`` (and ``0`` when ``allow_zero``)."""
    text = text.strip().lower()
    if allow_zero and text == "0":
        return timedelta(0)
    match = DURATION.fullmatch(text)
    if not match or (int(match.group(1)) == 0 and not allow_zero):
        raise ScopeError(f"{option} takes a duration such as 90d, 24h, 30m or 2w, not {text!r}.")
    seconds = int(match.group(1)) * DURATION_UNITS[match.group(2)]
    if seconds > 100 * 365 * 86400:
        raise ScopeError(f"{option} is longer than a century: {text!r}.")
    return timedelta(seconds=seconds)


def _joined(values) -> str | None:
    return " ".join(values) if values is not None else None


def scope_of(row) -> Scope:
    """The scope stored in an api_keys row (or a row of its columns)."""
    return Scope(
        providers=frozenset(row.providers.split()) if row.providers is not None else None,
        users=tuple(row.users.split()) if row.users is not None else None,
        operations=frozenset(row.operations.split()) if row.operations is not None else None,
    )


def scope_columns(scope: Scope) -> dict:
    return {"providers": _joined(sorted(scope.providers) if scope.providers is not None
                                 else None),
            "users": _joined(scope.users),
            "operations": _joined([op for op in OPERATIONS if op in scope.operations]
                                  if scope.operations is not None else None)}


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_key(name: str, scope: Scope = FULL_ACCESS, expires_at: datetime | None = None) -> str:
    """Store a new key under ``name`` and return it: the only time it is ever shown."""
    key = _new_secret()
    db.session.add(ApiKey(name=name, prefix=key[:VISIBLE_PREFIX_LENGTH], key_hash=hash_key(key),
                          expires_at=expires_at, **scope_columns(scope)))
    db.session.commit()
    return key


def register_key(name: str, key: str) -> bool:
    """Store an existing key (the bootstrap one) under ``name``; False if its hash is known."""
    digest = hash_key(key)
    if db.session.scalar(select(ApiKey).where(or_(ApiKey.key_hash == digest,
                                                  ApiKey.previous_key_hash == digest))):
        return False
    db.session.add(ApiKey(name=name, prefix=key[:VISIBLE_PREFIX_LENGTH], key_hash=digest))
    db.session.commit()
    return True


def list_keys() -> list[ApiKey]:
    return list(db.session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


def get_key(name: str) -> ApiKey | None:
    return db.session.scalar(select(ApiKey).where(ApiKey.name == name))


def revoke_key(name: str) -> bool:
    result = db.session.execute(
        update(ApiKey)
        .where(ApiKey.name == name, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    db.session.commit()
    return result.rowcount == 1


def rotate_key(name: str, grace: timedelta) -> str | None:
    """A new secret for the live key ``name``, same scope; the current one keeps working for
    ``grace`` (not at all when zero). A secret still in an earlier grace stops now. None when
    no live key has this name."""
    key = _new_secret()
    row = get_key(name)
    if row is None or row.revoked_at is not None:
        return None
    keep = grace > timedelta(0)
    row.previous_key_hash = row.key_hash if keep else None
    row.previous_prefix = row.prefix if keep else None
    row.previous_expires_at = utcnow() + grace if keep else None
    row.key_hash, row.prefix = hash_key(key), key[:VISIBLE_PREFIX_LENGTH]
    db.session.commit()
    return key


def update_key(name: str, **values) -> bool:
    """Change the scope columns or ``expires_at`` of the live key ``name`` (a value of None
    lifts that limit); False when no live key has this name."""
    result = db.session.execute(
        update(ApiKey).where(ApiKey.name == name, ApiKey.revoked_at.is_(None)).values(**values))
    db.session.commit()
    return result.rowcount == 1


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the key's name and what it may do."""

    name: str
    scope: Scope


BOOTSTRAP_CALLER = Caller(BOOTSTRAP_NAME, FULL_ACCESS)


@dataclass
class _Entry:
    caller: Caller | None  # None: no live key has this hash
    revoked: bool
    checked: float
    valid_until: float | None = None  # wall-clock end of an expiry or a rotation's grace


class ApiKeyCache:
    """Maps a presented key to its caller (name and scope). Entries live ``ttl`` seconds, so a
    revocation or a scope change reaches every process within that time; ``last_used_at`` is
    written at most once a minute per key. An expiry or the end of a rotation's grace is
    checked on every request.

    The bootstrap key (``AUTH_GATEWAY_API_KEY``) needs no row, but once `init-db --seed` has
    stored it, `apikeys revoke bootstrap` stops it like any other key."""

    def __init__(self, bootstrap_key: str | None, ttl: float) -> None:
        self._bootstrap = bootstrap_key.encode("utf-8") if bootstrap_key else None
        self._bootstrap_digest = hash_key(bootstrap_key) if bootstrap_key else None
        self._ttl = ttl
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def authenticate(self, presented: str) -> Caller | None:
        # Looking a hash up leaks nothing useful about the key through timing.
        digest = hash_key(presented)
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(digest)
        if entry is None or now - entry.checked > self._ttl:
            entry = self._load(digest, now)
        if entry.revoked:
            return None
        if entry.caller is not None:
            if entry.valid_until is not None and time.time() >= entry.valid_until:
                return None
            return entry.caller
        candidate = presented.encode("utf-8")
        if self._bootstrap is not None and hmac.compare_digest(candidate, self._bootstrap):
            return BOOTSTRAP_CALLER
        return None

    def _load(self, digest: str, now: float) -> _Entry:
        row = db.session.execute(
            select(ApiKey.id, ApiKey.name, ApiKey.key_hash, ApiKey.last_used_at,
                   ApiKey.revoked_at, ApiKey.expires_at, ApiKey.previous_expires_at,
                   ApiKey.providers, ApiKey.users, ApiKey.operations)
            .where(or_(ApiKey.key_hash == digest, ApiKey.previous_key_hash == digest))
        ).first()
        revoked = row is not None and row.revoked_at is not None
        entry = _Entry(caller=None, revoked=revoked, checked=now)
        if row is not None and not revoked:
            entry.caller = Caller(row.name, scope_of(row))
            ends = [row.expires_at]
            if row.key_hash != digest:  # the previous secret, in its grace
                ends.append(row.previous_expires_at or utcnow())
            ends = [end.timestamp() for end in ends if end is not None]
            entry.valid_until = min(ends) if ends else None
        if (entry.caller and (entry.valid_until is None or entry.valid_until > time.time())
                and (row.last_used_at is None
                     or utcnow() - row.last_used_at > LAST_USED_RESOLUTION)):
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
