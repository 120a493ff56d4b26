"""The fence around the raw token read (storage._LibpqRead), which drives libpq below psycopg's
documented API: ``Connection.pgconn``; ``psycopg.pq``'s PGconn.prepare, exec_prepared and
exec_params with text parameters and text results, and PGresult.status, ntuples, fformat,
error_field and error_message; and ``psycopg.adapt.Transformer`` built from a connection
(dump_sequence, set_pgresult, load_row). Each is exercised here on PostgreSQL and compared with
psycopg's own cursor (storage._PsycopgRead), so that a psycopg release that changes one of them
fails here, by name. setup.cfg bounds psycopg to the releases this file was run on (VERIFIED).

AUTH_GATEWAY_PG_RAW_READ=off is the way back to psycopg's own cursor; both modes answer the
same, over HTTP too."""

from __future__ import annotations

import configparser
from pathlib import Path

import psycopg
import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from psycopg import pq
from sqlalchemy import Integer, bindparam, func, select, update

from authgateway import create_app, storage, tokens
from authgateway.context import gateway
from authgateway.extensions import db
from authgateway.models import Credential, utcnow
from tests.conftest import ENCRYPTION_KEY
from tests.flow import connect, token
from tests.wire import Wire

#: The psycopg releases the raw read was verified on: this file and the token tests in both
#: modes passed, on the newest patch release of each minor. setup.cfg says the same.
VERIFIED = SpecifierSet(">=3.1,<3.4")

RE_VERIFY = (
    "The raw token read (authgateway/storage.py, _LibpqRead) uses psycopg internals: "
    "Connection.pgconn, pq.PGconn.prepare/exec_prepared/exec_params, pq.PGresult "
    "status/ntuples/fformat/error_field/error_message, psycopg.adapt.Transformer "
    "(dump_sequence, set_pgresult, load_row) and PyFormat. On the new release, run "
    "tests/test_raw_read.py, tests/test_hot_path.py, tests/test_refresh.py and "
    "tests/test_scale_out.py with AUTH_GATEWAY_PG_RAW_READ=on and again =off, and measure both "
    "modes (docs/scale-out.md); then widen VERIFIED in tests/test_raw_read.py and the psycopg "
    "bound in setup.cfg together. If it no longer holds, make AUTH_GATEWAY_PG_RAW_READ default "
    "to off (authgateway/config.py)."
)

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

credentials = Credential.__table__
#: The token read: text parameters, every kind of column the credential has.
BY_EMAIL = tokens._SEEN
#: Every column, by parameters of other types than text: an integer and a time.
BY_ID_AND_TIME = select(*credentials.c).where(credentials.c.id == bindparam("id"),
                                              credentials.c.authenticated_at <= bindparam("at"))
#: A read the server fails while running it.
DIVISION = select(func.div(bindparam("a", type_=Integer), bindparam("b", type_=Integer)).label("q"))


def test_the_installed_psycopg_is_one_the_raw_read_was_verified_on(database_url):
    installed = Version(psycopg.__version__)
    assert installed in VERIFIED, (
        f"psycopg {installed} is outside {VERIFIED}, the releases the raw token read was "
        f"verified on. {RE_VERIFY}")


def test_setup_cfg_bounds_psycopg_to_the_verified_releases(database_url):
    config = configparser.ConfigParser()
    config.read(Path(__file__).resolve().parent.parent / "setup.cfg")
    requirements = [Requirement(line) for line in
                    config["options"]["install_requires"].split("\n") if line.strip()]
    (psycopg_requirement,) = [r for r in requirements if r.name == "psycopg"]
    assert psycopg_requirement.specifier == VERIFIED, (
        f"setup.cfg allows psycopg{psycopg_requirement.specifier}, the raw read was verified "
        f"on {VERIFIED}. {RE_VERIFY}")


@pytest.fixture
def stored(make_app):
    """An app on PostgreSQL and two credentials: one with NULLs, non-ASCII text and a time to
    the microsecond, one with every column set."""
    app = make_app()
    now = utcnow().replace(microsecond=123456)
    with app.app_context():
        db.session.add_all([
            Credential(user_email="zoë+\"quoted\"\\@example.com", provider="google",
                       access_token_encrypted="gAAAA\u2028tab\there", key_id=None,
                       expires_at=None, scopes="openid ✓ 'single'", authenticated_at=now,
                       last_error_at=utcnow()),
            Credential(user_email="ada@example.com", provider="google", subject="1",
                       access_token_encrypted="gAAAA-access", refresh_token_encrypted="gAAAA-r",
                       key_id="k1", expires_at=now, scopes="openid email",
                       authenticated_at=now, last_refreshed_at=now, refresh_failures=2,
                       last_error="provider_unavailable", last_error_at=now),
        ])
        db.session.commit()
    return app


def parameter_sets(app) -> list[tuple]:
    """(statement, parameters) for each stored row and for a row that is not there."""
    with app.app_context():
        rows = db.session.execute(select(credentials.c.id, credentials.c.user_email,
                                         credentials.c.authenticated_at)).all()
    assert len(rows) == 2
    sets = []
    for row in rows:
        sets.append((BY_EMAIL, {"user_email": row.user_email, "provider": "google"}))
        sets.append((BY_ID_AND_TIME, {"id": row.id, "at": row.authenticated_at}))
    sets.append((BY_EMAIL, {"user_email": "nobody@example.com", "provider": "google"}))
    sets.append((BY_ID_AND_TIME, {"id": -1, "at": utcnow()}))
    return sets


def test_the_raw_read_finds_libpq_below_the_pooled_connection(stored):
    """RowReader takes the engine's pooled connection, and from it psycopg's Connection and its
    libpq connection; after the raw read psycopg finds that connection idle and usable."""
    with stored.app_context():
        pooled = db.engine.raw_connection()
        try:
            connection = pooled.driver_connection
            assert isinstance(connection, psycopg.Connection), RE_VERIFY
            assert isinstance(connection.pgconn, pq.PGconn), RE_VERIFY
            assert connection.pgconn.status == pq.ConnStatus.OK, RE_VERIFY
            read = storage._LibpqRead(BY_EMAIL, db.engine.dialect, prepare=True)
            row = read.fetch_one(connection, {"user_email": "ada@example.com",
                                              "provider": "google"})
            assert row is not None and row[1] == "ada@example.com"
            assert connection.info.transaction_status == pq.TransactionStatus.IDLE, RE_VERIFY
            assert connection.execute("SELECT 1").fetchone() == (1,)  # in psycopg's BEGIN
            assert connection.info.transaction_status == pq.TransactionStatus.INTRANS
            connection.rollback()
        finally:
            pooled.close()


@pytest.mark.parametrize("prepare", [True, False], ids=["prepared", "unnamed"])
def test_the_raw_read_answers_as_psycopgs_cursor(stored, prepare):
    """Every row, every column, value and type, as psycopg's own cursor returns it, and after
    the row processors as SQLAlchemy's Result returns it; several times on one connection, so
    that the prepared statement is reused."""
    sets = parameter_sets(stored)
    with stored.app_context():
        dialect = db.engine.dialect
        raw = {statement: storage._LibpqRead(statement, dialect, prepare)
               for statement in (BY_EMAIL, BY_ID_AND_TIME)}
        cursor = {statement: storage._PsycopgRead(statement, dialect)
                  for statement in (BY_EMAIL, BY_ID_AND_TIME)}
        pooled = db.engine.raw_connection()
        try:
            for _ in range(3):
                for statement, parameters in sets:
                    mine = raw[statement].fetch_one(pooled.driver_connection, parameters)
                    psycopgs = cursor[statement].fetch_one(pooled.driver_connection, parameters)
                    assert mine == psycopgs, f"{RE_VERIFY}\n{parameters}"
                    assert [type(v) for v in mine or ()] == [type(v) for v in psycopgs or ()]
                    if mine is not None:
                        expected = db.session.execute(statement, parameters).one()
                        assert raw[statement].decode(mine)._asdict() == expected._asdict()
        finally:
            pooled.close()
        assert sum(parameters is not None for _s, parameters in sets) == len(sets)


def test_libpq_answers_as_the_raw_read_expects(stored):
    """The libpq calls and the Transformer, one by one: what each returns, in the format the
    raw read loads (text), and the SQLSTATE of a prepared statement the session lost."""
    with stored.app_context():
        pooled = db.engine.raw_connection()
        try:
            connection = pooled.driver_connection
            pgconn = connection.pgconn
            read = storage._LibpqRead(BY_EMAIL, db.engine.dialect, prepare=True)
            parameters = {"user_email": "ada@example.com", "provider": "google"}
            loaders = psycopg.adapt.Transformer(connection)
            values = loaders.dump_sequence(read.parameters(parameters),
                                           [psycopg.adapt.PyFormat.TEXT] * 2)
            assert values == [b"ada@example.com", b"google"], RE_VERIFY
            name = b"test_raw_read_0"
            prepared = pgconn.prepare(name, read.sql.encode())
            assert prepared.status == pq.ExecStatus.COMMAND_OK, RE_VERIFY
            for result in (pgconn.exec_prepared(name, values),
                           pgconn.exec_params(read.sql.encode(), values)):
                assert result.status == pq.ExecStatus.TUPLES_OK, RE_VERIFY
                assert result.ntuples == 1, RE_VERIFY
                assert [result.fformat(i) for i in range(result.nfields)] == (
                    [pq.Format.TEXT] * result.nfields), RE_VERIFY
                loaders.set_pgresult(result)
                expected = connection.execute(
                    BY_EMAIL.compile(dialect=db.engine.dialect).string, parameters).fetchone()
                connection.rollback()
                assert loaders.load_row(0, tuple) == expected, RE_VERIFY
            pgconn.exec_(b"DEALLOCATE ALL")
            lost = pgconn.exec_prepared(name, values)
            assert lost.status == pq.ExecStatus.FATAL_ERROR, RE_VERIFY
            assert storage._sqlstate(lost) == storage.INVALID_SQL_STATEMENT_NAME, RE_VERIFY
        finally:
            pooled.close()


@pytest.mark.parametrize("prepare", [True, False], ids=["prepared", "unnamed"])
def test_a_failed_raw_read_raises_what_psycopgs_cursor_raises(stored, prepare):
    with stored.app_context():
        pooled = db.engine.raw_connection()
        try:
            connection = pooled.driver_connection
            dialect = db.engine.dialect
            with pytest.raises(psycopg.errors.DivisionByZero) as psycopgs:
                storage._PsycopgRead(DIVISION, dialect).fetch_one(connection, {"a": 1, "b": 0})
            with pytest.raises(psycopg.errors.DivisionByZero) as mine:
                storage._LibpqRead(DIVISION, dialect, prepare).fetch_one(connection,
                                                                          {"a": 1, "b": 0})
            assert str(mine.value) == str(psycopgs.value), RE_VERIFY
            assert mine.value.sqlstate == "22012"
            assert storage._LibpqRead(DIVISION, dialect, prepare).fetch_one(
                connection, {"a": 6, "b": 3}) == (2,)
        finally:
            pooled.close()


def test_both_modes_answer_the_same_over_http(make_app):
    """Two gateways on one database, one with the raw read and one with psycopg's cursor
    (AUTH_GATEWAY_PG_RAW_READ off): every answer of /auth/token is the same, a token, one
    valid for longer than it is (a refresh), a user who needs to reconnect, one never seen."""
    raw_app, psycopg_app = make_app(PG_RAW_READ=True), make_app(PG_RAW_READ=False)
    raw, psycopgs = raw_app.test_client(), psycopg_app.test_client()
    connect(raw)
    connect(raw, "grace@example.com")
    with raw_app.app_context():
        db.session.execute(update(credentials).where(
            credentials.c.user_email == "grace@example.com").values(status="needs_reauth"))
        db.session.commit()
    wires = []
    for app in (raw_app, psycopg_app):
        with app.app_context():
            wires.append(Wire(db.engine))
    try:
        for email, extra in (("ada@example.com", {}), ("ada@example.com", {}),
                             ("ada@example.com", {"min_valid_seconds": 7200}),
                             ("ada@example.com", {}),
                             ("grace@example.com", {}), ("nobody@example.com", {})):
            mine, theirs = token(raw, email, **extra), token(psycopgs, email, **extra)
            assert mine.status_code == theirs.status_code, (email, extra)
            if mine.status_code != 200 or "min_valid_seconds" not in extra:
                assert mine.get_json() == theirs.get_json(), (email, extra)
        said = [wire.take()[1] for wire in wires]
        assert 'Parse\t "authgateway_read_' in said[0]  # each mode is the one it says
        assert "authgateway_read_" not in said[1]
    finally:
        for wire in wires:
            wire.close()


@pytest.mark.parametrize("value,read", [(None, storage._LibpqRead), ("on", storage._LibpqRead),
                                        ("off", storage._PsycopgRead),
                                        ("0", storage._PsycopgRead),
                                        ("false", storage._PsycopgRead)])
def test_the_setting_in_the_environment_chooses_the_read(database_url, monkeypatch, tmp_path,
                                                         value, read):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("AUTH_GATEWAY_ENCRYPTION_KEY", ENCRYPTION_KEY)
    monkeypatch.setenv("AUTH_GATEWAY_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("AUTH_GATEWAY_LOAD_PLUGINS", "0")
    if value is None:
        monkeypatch.delenv("AUTH_GATEWAY_PG_RAW_READ", raising=False)
    else:
        monkeypatch.setenv("AUTH_GATEWAY_PG_RAW_READ", value)
    app = create_app()
    with app.app_context():
        reader = gateway().reader
        assert reader.first(BY_EMAIL, user_email="nobody@example.com", provider="google") is None
        assert [type(r) for r in reader._compiled.values()] == [read]
        db.engine.dispose()
