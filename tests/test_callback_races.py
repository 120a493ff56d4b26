"""A completing callback against what else writes the same credential at that moment: a revoke,
and a second flow's callback. On SQLite and PostgreSQL, with the fake Google over real HTTP.

The window that matters lies inside the gateway, after a callback has read the stored
credential and before it writes: no provider call happens there. ``CredentialReads`` makes it
wide on purpose: a SQLAlchemy event on the gateway's own engine that sees the callback's read
go by and, if asked, holds that thread right after it until the test says go."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from sqlalchemy import event, select

from authgateway.context import gateway
from authgateway.extensions import db
from authgateway.models import AuthSession, Credential
from tests.conftest import HEADERS
from tests.flow import connect, consent, start, token

EMAIL = "ada@example.com"
CONNECTED = "Google is connected"
_READS_CREDENTIALS = re.compile(r"^\s*SELECT\b.*\bFROM credentials\b", re.DOTALL)


class CredentialReads:
    """Which threads named ``callback*`` have read the credentials table. With ``hold``, each
    such thread waits after its first read until ``release`` is set."""

    def __init__(self, hold: bool) -> None:
        self.hold = hold
        self.release = threading.Event()
        self._readers: set[str] = set()
        self._changed = threading.Condition()

    def __call__(self, _conn, _cursor, statement, *_args) -> None:
        name = threading.current_thread().name
        if not name.startswith("callback") or not _READS_CREDENTIALS.match(statement):
            return
        with self._changed:
            first = name not in self._readers
            self._readers.add(name)
            self._changed.notify_all()
        if first and self.hold:
            assert self.release.wait(timeout=20), "the test never released the callback"

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self._readers) >= count, timeout), (
                f"{count} callbacks never read the credential")


@contextmanager
def credential_reads(app, *, hold: bool) -> Iterator[CredentialReads]:
    reads = CredentialReads(hold)
    with app.app_context():
        engine = db.engine
    event.listen(engine, "after_cursor_execute", reads)
    try:
        yield reads
    finally:
        reads.release.set()
        event.remove(engine, "after_cursor_execute", reads)


def stored(app) -> tuple[Credential, str, str]:
    """The one credential row, with its tokens decrypted."""
    with app.app_context():
        [row] = db.session.scalars(select(Credential)).all()
        keyring = gateway().keyring
        access = keyring.decrypt(row.access_token_encrypted, row.key_id)
        refresh = keyring.decrypt(row.refresh_token_encrypted, row.key_id)
        db.session.expunge(row)
    return row, access, refresh


def stored_refresh_token(app) -> str:
    return stored(app)[2]


def revoke(client):
    return client.delete("/auth/revoke", json={"provider": "google", "user_email": EMAIL},
                         headers=HEADERS)


def assert_the_new_grant_is_stored(app, client, google, revoked_refresh_token: str) -> None:
    row, access, refresh = stored(app)
    assert row.status == "active"
    assert refresh != revoked_refresh_token and not google.token_is_live(revoked_refresh_token)
    assert google.token_is_live(refresh) and google.same_grant(access, refresh)
    answer = token(client)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["access_token"] == access


# ---- a revoke meanwhile --------------------------------------------------------------------

def test_a_revoke_committed_between_the_callbacks_read_and_write(app, client, google):
    """The person signs in again; the revoke of their old grant commits after the callback
    read the old credential and before it wrote. The callback still succeeds and its new grant
    is stored: it was granted after the revoke was asked for."""
    connect(client)
    old_refresh = stored_refresh_token(app)
    callback = consent(start(client)["auth_url"])
    with (credential_reads(app, hold=True) as reads,
          ThreadPoolExecutor(1, thread_name_prefix="callback") as pool):
        page = pool.submit(app.test_client().get, callback)
        reads.wait_for(1)
        revoked = revoke(client)
        reads.release.set()
        page = page.result(timeout=30)
    assert revoked.status_code == 200 and revoked.get_json()["provider_revoked"] is True
    assert page.status_code == 200 and CONNECTED in page.get_data(as_text=True)
    assert_the_new_grant_is_stored(app, client, google, old_refresh)


def test_a_callback_completing_while_a_revoke_is_at_the_provider(app, client, google):
    """The revoke holds the credential's lock while it waits for the provider, the window a
    real provider keeps open for a round trip or a timeout. A callback completing then waits
    for the revoke and stores its new grant after it."""
    connect(client)
    old_refresh = stored_refresh_token(app)
    callback = consent(start(client)["auth_url"])
    gate = google.hold_revocations()
    with (credential_reads(app, hold=False) as reads,
          ThreadPoolExecutor(1, thread_name_prefix="revoke") as revoker,
          ThreadPoolExecutor(1, thread_name_prefix="callback") as completer):
        revoked = revoker.submit(revoke, app.test_client())
        google.wait_for_revocation(1)
        page = completer.submit(app.test_client().get, callback)
        reads.wait_for(1)
        gate.set()
        revoked, page = revoked.result(timeout=30), page.result(timeout=30)
    assert revoked.status_code == 200 and revoked.get_json()["provider_revoked"] is True
    assert page.status_code == 200 and CONNECTED in page.get_data(as_text=True)
    assert_the_new_grant_is_stored(app, client, google, old_refresh)


# ---- two flows at once ---------------------------------------------------------------------

def test_two_first_flows_completing_at_once_both_succeed_and_the_later_wins(app, client,
                                                                           google):
    """Two flows for one user and provider, no credential yet; both callbacks read "none"
    before either writes. Both pages say connected; one credential stays, written whole by
    the callback that committed last."""
    flows = [start(client) for _ in range(2)]
    callbacks = [consent(flow["auth_url"]) for flow in flows]
    with (credential_reads(app, hold=True) as reads,
          ThreadPoolExecutor(2, thread_name_prefix="callback") as pool):
        pages = [pool.submit(app.test_client().get, callback) for callback in callbacks]
        reads.wait_for(2)
        reads.release.set()
        pages = [page.result(timeout=30) for page in pages]
    for page in pages:
        assert page.status_code == 200, page.get_data(as_text=True)
        assert CONNECTED in page.get_data(as_text=True)
    row, access, refresh = stored(app)  # exactly one row
    assert google.token_is_live(access) and google.same_grant(access, refresh)
    with app.app_context():
        sessions = db.session.scalars(select(AuthSession)).all()
    assert [s.status for s in sessions] == ["completed", "completed"]
    # The earlier commit's credential was written before its session was completed: a row
    # written after that is the later commit's.
    assert row.authenticated_at > min(s.completed_at for s in sessions)
    assert token(client).get_json()["access_token"] == access
