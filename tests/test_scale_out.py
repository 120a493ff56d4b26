"""What docs/scale-out.md claims about connections: a refresh holds one connection, in one
transaction with the row lock, for its whole upstream call; PgBouncer in transaction mode keeps
that lock working; psycopg's prepared statements do not survive PgBouncer before 1.21 unless
AUTH_GATEWAY_DB_PREPARE_THRESHOLD=none turns them off."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from sqlalchemy import UniqueConstraint, update

from authgateway import audit, create_app, standard
from authgateway.extensions import db
from authgateway.models import Credential, utcnow
from tests.conftest import HEADERS, base_config, empty_tables, in_ci
from tests.fakes.google import JWKS_PATH
from tests.flow import connect, consent, start, token
from tests.wire import Wire

EMAIL = "ada@example.com"
REDIRECT_URI = "http://localhost/auth/callback/google"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expire(direct_url: str) -> None:
    app = create_app(base_config(direct_url))
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(update(Credential.__table__).values(
            expires_at=utcnow() - timedelta(seconds=60)))
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def migrated(postgres_url) -> str:
    """The run's PostgreSQL database, migrated and empty."""
    app = create_app(base_config(postgres_url))
    with app.app_context():
        from flask_migrate import upgrade

        upgrade()
        empty_tables()
        db.engine.dispose()
    return postgres_url


@pytest.fixture
def gateway_on(google) -> Iterator:
    """Build gateway apps on a database URL, pointed at the fake Google."""
    apps = []

    def make(url: str, **overrides):
        app = create_app(base_config(url, **google.settings(), GOOGLE_REDIRECT_URI=REDIRECT_URI,
                                     **overrides))
        google.redirect_uris = [REDIRECT_URI]
        apps.append(app)
        return app

    yield make
    for app in apps:
        audit.served_tokens(app).flush()  # now, while its database is still there
        with app.app_context():
            db.engine.dispose()


# ---- a refresh holds its connection for the upstream call ------------------------------------

def test_a_refresh_holds_one_connection_in_one_transaction_for_the_upstream_call(
        migrated, gateway_on, google):
    """The holder sits idle in its transaction, row lock taken, while the provider answers; a
    second caller for the same credential waits on that lock inside a transaction of its own."""
    app = gateway_on(migrated)
    connect(app.test_client())
    expire(migrated)
    google.hang_next(1.2)  # under base_config's 2 s PROVIDER_TIMEOUT
    answers: list = []
    callers = [threading.Thread(target=lambda: answers.append(token(app.test_client())))
               for _ in range(2)]
    for caller in callers:
        caller.start()
        time.sleep(0.2)
    database = migrated.rsplit("/", 1)[1]
    holders, waiters = set(), set()
    deadline = time.monotonic() + 0.9
    with psycopg.connect(migrated, autocommit=True) as watcher:
        while time.monotonic() < deadline and not (holders and waiters):
            holders |= {pid for (pid,) in watcher.execute(
                "SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
                "JOIN pg_class c ON c.oid = l.relation WHERE a.datname = %s "
                "AND a.state = 'idle in transaction' AND c.relname = 'credentials' "
                "AND l.mode = 'RowShareLock' AND a.query ILIKE '%%FOR UPDATE%%'",
                (database,))}
            waiters |= {pid for (pid,) in watcher.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
                "AND wait_event_type = 'Lock' AND query ILIKE '%%FOR UPDATE%%'", (database,))}
            time.sleep(0.05)
    for caller in callers:
        caller.join(timeout=30)
    assert len(holders) == 1, "no connection held the row lock during the upstream call"
    assert len(waiters) == 1 and not holders & waiters
    assert [a.status_code for a in answers] == [200, 200] and google.refresh_count == 1


def test_each_process_opens_at_most_twice_db_pool_size_connections(postgres_url):
    app = create_app(base_config(postgres_url, DB_POOL_SIZE=7))
    reader = app.extensions["authgateway"].reader
    with app.app_context():
        assert db.engine.pool.size() == 7
        assert db.engine.pool._max_overflow == 7
        # The token read draws from this same pool, not from one of its own.
        assert reader.engine is db.engine and reader.engine.pool is db.engine.pool
        db.engine.dispose()


# ---- PgBouncer in transaction mode -----------------------------------------------------------

@pytest.fixture
def pgbouncer(postgres_url) -> Iterator:
    """Start PgBouncer (pool_mode = transaction) in front of the test PostgreSQL; returns a
    function of the server pool size that gives the database's URL through it."""
    binary = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if binary is None:
        message = "PgBouncer is not installed (apt-get install pgbouncer)"
        if in_ci():
            pytest.fail(message + "; CI requires it")
        pytest.skip(message)
    started: list[tuple[subprocess.Popen, Path]] = []
    upstream = psycopg.conninfo.conninfo_to_dict(postgres_url)

    def start(pool_size: int) -> str:
        # PgBouncer refuses to run as root: then it runs as postgres, in a folder it may write.
        folder = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        folder.chmod(0o755)
        user = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(folder, account.pw_uid, account.pw_gid)
            user = ["-u", "postgres"]
        port = free_port()
        (folder / "users.txt").write_text(f'"{upstream.get("user", "postgres")}" ""\n')
        (folder / "pgbouncer.ini").write_text(f"""\
[databases]
* = host={upstream.get("host", "127.0.0.1")} port={upstream.get("port", "5432")}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder}/users.txt
pool_mode = transaction
# The gateway sends its statement timeout as a startup parameter (options), which PgBouncer
# refuses unless told to ignore it.
ignore_startup_parameters = options
default_pool_size = {pool_size}
max_client_conn = 200
logfile = {folder}/pgbouncer.log
pidfile = {folder}/pgbouncer.pid
""")
        process = subprocess.Popen([binary, *user, str(folder / "pgbouncer.ini")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started.append((process, folder))
        parts = urlsplit(postgres_url)
        userinfo = parts.netloc.rpartition("@")[0]
        url = parts._replace(netloc=f"{userinfo}@127.0.0.1:{port}" if userinfo
                             else f"127.0.0.1:{port}").geturl()
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, process.stderr.read().decode()
            try:
                psycopg.connect(url, connect_timeout=2).close()
                return url
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, "PgBouncer did not start"
                time.sleep(0.2)

    yield start
    for process, folder in started:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def alternate(url: str, prepare_threshold: int | None, rounds: int = 8) -> None:
    """Two clients run the same query in turn, each statement its own transaction."""
    with psycopg.connect(url, autocommit=True, prepare_threshold=prepare_threshold) as a, \
            psycopg.connect(url, autocommit=True, prepare_threshold=prepare_threshold) as b:
        for i in range(rounds):
            for connection in (a, b):
                assert connection.execute("SELECT %s::int + 1", (i,)).fetchone() == (i + 1,)


def test_psycopg_prepared_statements_break_under_pgbouncer_unless_turned_off(pgbouncer):
    version = subprocess.run([shutil.which("pgbouncer") or "/usr/sbin/pgbouncer", "--version"],
                             capture_output=True, text=True).stdout.split()[1]
    url = pgbouncer(pool_size=1)  # both clients share one server connection
    if tuple(int(part) for part in version.split(".")[:2]) < (1, 21):
        # psycopg's default: the sixth run prepares "_pg3_0" on the server, for both clients.
        with pytest.raises((psycopg.errors.DuplicatePreparedStatement,
                            psycopg.errors.InvalidSqlStatementName)):
            alternate(url, prepare_threshold=5)
    alternate(url, prepare_threshold=None)


def test_one_refresh_through_pgbouncer_in_transaction_mode(migrated, pgbouncer, gateway_on,
                                                           google):
    """Two gateways (two engines, as two processes have) and 20 callers share three server
    connections; the row lock lives inside one transaction, which PgBouncer keeps on one
    server connection, so it still admits one refresh."""
    url = pgbouncer(pool_size=3)
    apps = [gateway_on(url, DB_PREPARE_THRESHOLD="none") for _ in range(2)]
    connect(apps[0].test_client())
    expire(migrated)
    google.refresh_latency = 0.3
    calls = 20
    barrier = threading.Barrier(calls)
    answers: list = [None] * calls

    def call(i: int) -> None:
        client = apps[i % 2].test_client()
        barrier.wait()
        answers[i] = token(client)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [a.status_code if a else None for a in answers] == [200] * calls
    assert len({a.get_json()["access_token"] for a in answers}) == 1
    assert google.refresh_count == 1


# ---- no stickiness -------------------------------------------------------------------------

def test_a_flow_started_on_one_process_finishes_on_another(make_app):
    """The flow's state is a row in auth_sessions, so a load balancer needs no affinity."""
    first, second = make_app().test_client(), make_app().test_client()
    flow = start(first)
    page = second.get(consent(flow["auth_url"]))
    assert page.status_code == 200
    status = first.get(f"/auth/status/{flow['session_id']}", headers=HEADERS).get_json()
    assert status["status"] == "completed"
    assert token(second).status_code == 200 and token(first).status_code == 200


# ---- sharding by user email (Citus) ----------------------------------------------------------

def test_what_sharding_by_user_email_finds_in_the_schema_and_the_queries(migrated, gateway_on,
                                                                        google):
    """The facts the Citus section rests on, on PostgreSQL: the hot path and the refresh lock
    name user_email (single-shard on a distributed table); the unique constraint holds it; the
    primary keys and the callback's lookup by state do not (the work listed before sharding)."""
    # Unprepared statements, so that the wire shows the text of every one of them.
    app = gateway_on(migrated, DB_PREPARE_THRESHOLD="none")
    client = app.test_client()
    with app.app_context():
        wire = Wire(db.engine)
    with wire:
        connect(client)
        flow = wire.take_statements()
        assert token(client).status_code == 200
        hot_path = wire.take_statements()
        assert token(client, force_refresh=True).status_code == 200
        refresh = wire.take_statements()

    def where(statement: str) -> str:
        return statement.partition(" WHERE ")[2]

    def on_credentials(statements: list[str]) -> list[str]:
        return [s for s in statements if re.search(r"\bFROM credentials\b", s)]

    [read] = on_credentials(hot_path)
    locks = [s for s in on_credentials(refresh) if "FOR UPDATE" in s]
    assert locks
    assert all("credentials.user_email" in where(s) for s in [read, *locks]), [read, *locks]

    credentials, sessions = (db.metadata.tables[name] for name in ("credentials",
                                                                  "auth_sessions"))
    assert any({c.name for c in constraint.columns} == {"user_email", "provider"}
               for constraint in credentials.constraints if isinstance(constraint,
                                                                       UniqueConstraint))
    assert [c.name for c in credentials.primary_key] == ["id"]
    assert [c.name for c in sessions.primary_key] == ["id"]
    by_state = [s for s in flow if "FROM auth_sessions" in s and "state_hash" in where(s)]
    assert by_state and not any("user_email" in where(s) for s in by_state)


# ---- what each process keeps for itself ------------------------------------------------------

def test_the_jwks_cache_is_per_process_and_fetched_again_for_an_unknown_key(make_app, google):
    """Module state: one cache per process, shared by its threads and apps and by nobody else;
    a signing key it has not seen makes it fetch the keys again."""

    def fetches() -> int:
        return sum(1 for _method, path in google.requests if path.startswith(JWKS_PATH))

    first, second = make_app().test_client(), make_app().test_client()
    standard._jwks._entries.clear()
    connect(first)
    connect(second, "bob@example.com")
    assert fetches() == 1
    google.rotate_signing_key(keep_old=False)
    connect(first, "carol@example.com")
    assert fetches() == 2


# ---- nothing that transaction pooling would break ------------------------------------------

def test_the_gateway_uses_no_session_state_that_transaction_pooling_would_lose():
    """PgBouncer in transaction mode hands each transaction to any server connection: session
    features would leak between clients or vanish. The gateway's code uses none of them."""
    session_features = re.compile(
        r"pg_advisory_lock|pg_try_advisory_lock\b|\bLISTEN\b|\bNOTIFY\b|\bUNLISTEN\b|"
        r"CREATE\s+TEMP|SET\s+SESSION|\bDECLARE\b.*\bWITH HOLD\b", re.IGNORECASE)
    root = Path(__file__).resolve().parent.parent
    sources = [*root.glob("authgateway/**/*.py"), *root.glob("plugins/*/authgateway_*/*.py")]
    found = [f"{path.relative_to(root)}: {match.group(0)}" for path in sources
             for match in session_features.finditer(path.read_text())]
    assert sources and found == []


def test_every_test_this_guide_names_exists():
    root = Path(__file__).resolve().parent.parent
    guide = (root / "docs" / "scale-out.md").read_text()
    defined = {match for path in [*root.glob("tests/**/*.py"), *root.glob("plugins/*/tests/*.py")]
               for match in re.findall(r"^def (test_\w+)", path.read_text(), re.MULTILINE)}
    named = set(re.findall(r"\b(test_\w+)\b(?!\.py)", guide))  # not the file names
    assert named and named - defined == set()
