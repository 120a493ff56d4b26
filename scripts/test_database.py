#!/usr/bin/env python
"""`make test`: create the PostgreSQL database TEST_DATABASE_URL names when it is missing.

The tests connect to it to make their own databases beside it. Without a reachable server the
PostgreSQL tests are skipped with the reason (this script says so and succeeds), except in CI,
where they are required and this script fails."""

from __future__ import annotations

import os
import sys

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


def main() -> int:
    url = make_url(os.environ.get("TEST_DATABASE_URL") or DEFAULT)
    name = url.database
    shown = url.render_as_string(hide_password=True)
    server = url.set(drivername="postgresql", database="postgres")
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    try:
        with psycopg.connect(server.render_as_string(hide_password=False), autocommit=True,
                             connect_timeout=5) as admin:
            if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                return 0
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.errors.DuplicateDatabase:
        return 0  # made by another run in the meantime
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if in_ci:
            print(f"make test: PostgreSQL is required in CI and {shown} cannot be created: "
                  f"{reason}", file=sys.stderr)
            return 1
        print(f"make test: no PostgreSQL at {shown} ({reason}); its tests will be skipped. "
              "Set TEST_DATABASE_URL to a server you can create databases on to run them.",
              file=sys.stderr)
        return 0
    print(f"make test: created the test database {shown}.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
