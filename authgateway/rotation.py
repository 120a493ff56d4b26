"""Key rotation and flow housekeeping: which key protects which rows, moving rows to the
primary key in small locked batches, and purging dead flows.

`flask keys status`, `flask tokens reencrypt` and `flask sessions purge` are thin wrappers
over these functions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Table, bindparam, delete, func, or_, select, update

from . import audit
from .crypto import KeyRing
from .errors import DecryptionFailedError
from .extensions import db
from .models import PENDING, AuthSession, Credential, WebhookEndpoint, utcnow
from .storage import locked_transaction

log = logging.getLogger(__name__)

PRIMARY, ROTATION, UNKNOWN = "primary", "rotation", "UNKNOWN"
#: `flask sessions purge` keeps a flow this long after it expired, for `/auth/status` callers.
PURGE_AFTER = timedelta(days=1)
#: How many of those flows the serving process deletes at a time (purge_some_sessions).
AUTO_PURGE_LIMIT = 100
#: How many row ids a report names before it only counts.
NAMED_IDS = 20


@dataclass(frozen=True)
class Target:
    """A table whose rows hold ciphertext under the key named by their ``key_id``."""

    label: str
    table: Table
    columns: tuple[str, ...]
    pending_only: bool

    def holds_ciphertext(self) -> list[ColumnElement[bool]]:
        """Rows that matter: a credential marked needs_reauth holds no token any more, and a
        finished flow's verifier is never read again."""
        t = self.table
        conditions = [t.c.key_id.is_not(None), or_(*(t.c[name].is_not(None)
                                                      for name in self.columns))]
        if self.pending_only:
            conditions.append(t.c.status == PENDING)
        return conditions


CREDENTIALS = Target("credentials", Credential.__table__,
                     ("access_token_encrypted", "refresh_token_encrypted"), pending_only=False)
SESSIONS = Target("pending sessions", AuthSession.__table__, ("code_verifier_encrypted",),
                  pending_only=True)
WEBHOOK_SECRETS = Target("webhook secrets", WebhookEndpoint.__table__, ("secret_encrypted",),
                         pending_only=False)
TARGETS = (CREDENTIALS, SESSIONS, WEBHOOK_SECRETS)


# ---- where the keys stand ------------------------------------------------------------------

@dataclass(frozen=True)
class KeyUse:
    key_id: str
    role: str  # PRIMARY, ROTATION or UNKNOWN (not configured: its rows cannot be decrypted)
    credentials: int
    sessions: int
    webhook_secrets: int = 0

    @property
    def removable(self) -> bool:
        return (self.role == ROTATION and self.credentials == 0 and self.sessions == 0
                and self.webhook_secrets == 0)


@dataclass(frozen=True)
class KeyStatus:
    keys: list[KeyUse]
    #: Credentials whose key is not configured: the first NAMED_IDS ids, and how many in all.
    unreadable_ids: list[int]
    unreadable_count: int


def role(keyring: KeyRing, kid: str) -> str:
    if kid == keyring.primary_id:
        return PRIMARY
    return ROTATION if kid in keyring.ids else UNKNOWN


def key_status(keyring: KeyRing) -> KeyStatus:
    """Rows per key id: every configured key, and any key id found in the database."""
    counts: dict[str, list[int]] = {kid: [0] * len(TARGETS) for kid in keyring.ids}
    with db.engine.connect() as connection:
        for position, target in enumerate(TARGETS):
            t = target.table
            rows = connection.execute(select(t.c.key_id, func.count())
                                      .where(*target.holds_ciphertext()).group_by(t.c.key_id))
            for kid, count in rows:
                counts.setdefault(kid, [0] * len(TARGETS))[position] = count
        t = CREDENTIALS.table
        unknown = [*CREDENTIALS.holds_ciphertext(), t.c.key_id.not_in(keyring.ids)]
        ids = list(connection.scalars(select(t.c.id).where(*unknown).order_by(t.c.id)
                                      .limit(NAMED_IDS)))
        total = connection.scalar(select(func.count()).select_from(t).where(*unknown))
    keys = [KeyUse(kid, role(keyring, kid), *per_target) for kid, per_target in counts.items()]
    return KeyStatus(keys=keys, unreadable_ids=ids, unreadable_count=total)


def describe_status(status: KeyStatus) -> list[str]:
    lines = [f"{'KEY ID':14} {'ROLE':9} {'CREDENTIALS':>11} {'PENDING SESSIONS':>16} "
             f"{'WEBHOOK SECRETS':>15}"]
    for use in status.keys:
        note = ""
        if use.removable:
            note = "  no rows left: remove it from AUTH_GATEWAY_ROTATION_KEYS"
        elif use.role == ROTATION:
            note = "  still in use: run `flask tokens reencrypt`"
        elif use.role == UNKNOWN:
            note = "  NOT CONFIGURED: these rows cannot be decrypted"
        lines.append(f"{use.key_id:14} {use.role:9} {use.credentials:>11} "
                     f"{use.sessions:>16} {use.webhook_secrets:>15}{note}")
    if status.unreadable_count:
        lines.append(f"Credentials whose key is not configured (they answer 500 "
                     f"decryption_failed): {_ids(status.unreadable_ids, status.unreadable_count)}."
                     " Put the key that encrypted them back in AUTH_GATEWAY_ROTATION_KEYS.")
    elif all(use.role == PRIMARY or use.removable for use in status.keys):
        lines.append("Every row is under the primary key: no rotation key is needed.")
    return lines


def _ids(named: list, count: int) -> str:
    text = ", ".join(str(i) for i in named)
    return text + (f" and {count - len(named)} more" if count > len(named) else "")


# ---- re-encryption -------------------------------------------------------------------------

@dataclass
class Batch:
    """What one batch did. ``last_id`` is where the next batch starts."""

    target: Target
    last_id: object
    seen: int = 0
    moved: int = 0
    failed: list = field(default_factory=list)  # ids no configured key opens

    @property
    def skipped(self) -> int:
        """Rows that were moved (by a refresh) or deleted while this batch waited for them."""
        return self.seen - self.moved - len(self.failed)


def _to_move(target: Target, keyring: KeyRing) -> list[ColumnElement[bool]]:
    return [*target.holds_ciphertext(), target.table.c.key_id != keyring.primary_id]


def count_to_move(keyring: KeyRing) -> dict[str, dict[str, int]]:
    """Per target label: rows under each non-primary key id."""
    counts: dict[str, dict[str, int]] = {}
    with db.engine.connect() as connection:
        for target in TARGETS:
            t = target.table
            rows = connection.execute(select(t.c.key_id, func.count())
                                      .where(*_to_move(target, keyring)).group_by(t.c.key_id))
            counts[target.label] = {kid: n for kid, n in rows}
    return counts


def reencrypt_batch(target: Target, keyring: KeyRing, after: object,
                    batch_size: int) -> Batch | None:
    """Move the next ``batch_size`` rows after id ``after`` to the primary key in one short
    transaction; None when no row is left.

    The rows are read again under the lock the refresh path takes (``SELECT ... FOR UPDATE``;
    SQLite's write lock), so a refresh that wrote new tokens meanwhile is seen, never undone.
    Rows no configured key opens are named in the log and left exactly as they are.
    """
    t = target.table
    page = select(t.c.id).where(*_to_move(target, keyring)).order_by(t.c.id).limit(batch_size)
    if after is not None:
        page = page.where(t.c.id > after)
    with db.engine.connect() as connection:
        ids = list(connection.scalars(page))
    if not ids:
        return None
    batch = Batch(target=target, last_id=ids[-1], seen=len(ids))
    columns = [t.c[name] for name in target.columns]
    params = []
    with locked_transaction(("reencrypt", t.name)) as connection:
        rows = connection.execute(
            select(t.c.id, t.c.key_id, *columns)
            .where(t.c.id.between(ids[0], ids[-1]), *_to_move(target, keyring))
            .order_by(t.c.id).with_for_update()
        )
        for row in rows:
            try:
                values = {name: _reencrypt(keyring, getattr(row, name), row.key_id)
                          for name in target.columns}
            except DecryptionFailedError as exc:
                log.error("%s %s cannot be decrypted, left as it is: %s", target.label, row.id,
                          exc.reason)
                batch.failed.append(row.id)
                continue
            params.append({"row_id": row.id, **values})
        if params:
            statement = (update(t).where(t.c.id == bindparam("row_id"))
                         .values(key_id=keyring.primary_id,
                                 **{name: bindparam(name) for name in target.columns}))
            if "updated_at" in t.c:
                # The credential did not change, only its envelope: keep when it last did.
                statement = statement.values(updated_at=t.c.updated_at)
            connection.execute(statement, params)
            batch.moved = len(params)
            audit.record("reencrypted", actor="cli", user_email=None, provider=None,
                         detail=f"{batch.moved} {target.label} (ids {ids[0]}..{ids[-1]}) "
                                f"to key {keyring.primary_id}",
                         connection=connection)
    return batch


def _reencrypt(keyring: KeyRing, ciphertext: str | None, kid: str) -> str | None:
    return None if ciphertext is None else keyring.encrypt(keyring.decrypt(ciphertext, kid))


def reencrypt(keyring: KeyRing, batch_size: int) -> Iterator[Batch]:
    """Every batch, credentials first. Stopping at any point (even SIGKILL) loses nothing:
    each batch commits alone, and the next run starts with the rows still to move."""
    for target in TARGETS:
        after = None
        while (batch := reencrypt_batch(target, keyring, after, batch_size)) is not None:
            yield batch
            after = batch.last_id


@dataclass
class Summary:
    primary_id: str
    started: float = field(default_factory=time.monotonic)
    batches: int = 0
    moved: dict[str, int] = field(default_factory=lambda: {t.label: 0 for t in TARGETS})
    skipped: int = 0
    failed: dict[str, list] = field(default_factory=lambda: {t.label: [] for t in TARGETS})
    failed_count: int = 0

    def add(self, batch: Batch) -> None:
        self.batches += 1
        self.moved[batch.target.label] += batch.moved
        self.skipped += batch.skipped
        self.failed_count += len(batch.failed)
        named = self.failed[batch.target.label]
        named.extend(batch.failed[:max(0, NAMED_IDS - len(named))])

    def lines(self) -> list[str]:
        seconds = time.monotonic() - self.started
        moved = sum(self.moved.values())
        lines = [f"Re-encrypted {self.moved['credentials']} credentials and "
                 f"{self.moved['pending sessions']} pending sessions under key {self.primary_id} "
                 f"in {self.batches} batches, {seconds:.1f} s ({moved / max(seconds, 1e-9):.0f}"
                 " rows/s)."]
        if self.moved["webhook secrets"]:
            lines.append(f"Re-encrypted {self.moved['webhook secrets']} webhook signing "
                         "secrets.")
        if self.skipped:
            lines.append(f"{self.skipped} rows were refreshed or deleted meanwhile (already "
                         "under the primary key, or gone).")
        for label, ids in self.failed.items():
            if ids:
                lines.append(f"NOT re-encrypted: {label} {', '.join(map(str, ids))}: no "
                             "configured key opens them; they were left as they are. Put the "
                             "key that encrypted them back in AUTH_GATEWAY_ROTATION_KEYS and "
                             "run this again.")
        if self.failed_count > sum(len(ids) for ids in self.failed.values()):
            lines.append(f"({self.failed_count} rows in all could not be decrypted; "
                         "`flask keys status` lists them.)")
        return lines


def describe_dry_run(keyring: KeyRing, counts: dict[str, dict[str, int]]) -> list[str]:
    lines = []
    for label, per_key in counts.items():
        movable = sum(n for kid, n in per_key.items() if kid in keyring.ids)
        lines.append(f"Would re-encrypt {movable} {label} under key {keyring.primary_id}.")
        for kid, n in per_key.items():
            if kid not in keyring.ids:
                lines.append(f"Would leave {n} {label} under key {kid}: it is not configured.")
    lines.append("Dry run: nothing was written.")
    return lines


# ---- housekeeping --------------------------------------------------------------------------

def purge_sessions(now: datetime | None = None) -> int:
    """Delete flows that expired more than PURGE_AFTER ago; return how many."""
    cutoff = (now or utcnow()) - PURGE_AFTER
    t = SESSIONS.table
    with db.engine.begin() as connection:
        return connection.execute(delete(t).where(t.c.expires_at < cutoff)).rowcount


def purge_some_sessions(limit: int = AUTO_PURGE_LIMIT, now: datetime | None = None) -> int:
    """Delete at most ``limit`` of the flows that expired more than PURGE_AFTER ago, the oldest
    first, in one short statement (the expiry is indexed); return how many. What the serving
    process does now and then, so that flows nobody finished do not pile up."""
    cutoff = (now or utcnow()) - PURGE_AFTER
    t = SESSIONS.table
    oldest = select(t.c.id).where(t.c.expires_at < cutoff).order_by(t.c.expires_at).limit(limit)
    with db.engine.begin() as connection:
        return connection.execute(delete(t).where(t.c.id.in_(oldest))).rowcount
