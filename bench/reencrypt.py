"""Benchmark `flask tokens reencrypt` on PostgreSQL (not a test, not in CI).

Fills a scratch database with --rows credentials encrypted under an old key (COPY), runs the
command as a subprocess with a new primary key and the old one as rotation key, and reports
credentials per second and the child's peak RSS. Goal: >= 5,000 credentials/s, < 200 MB.

    /tmp/venv/bin/python bench/reencrypt.py [--rows 100000] [--batch-size 500]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import psycopg
from cryptography.fernet import Fernet

from authgateway import create_app
from authgateway.crypto import KeyRing

COLUMNS = ("user_email", "provider", "subject", "access_token_encrypted",
           "refresh_token_encrypted", "key_id", "expires_at", "scopes", "status",
           "authenticated_at", "refresh_failures", "created_at", "updated_at")


def plaintext(i: int) -> tuple[str, str]:
    # About the size of real Google tokens.
    return f"ya29.a0AfB_{i:08d}" + "x" * 200, f"1//0g{i:08d}" + "y" * 90


def create_database(base: str) -> str:
    name = f"authgateway_bench_{os.getpid()}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    return urlsplit(base)._replace(path="/" + name).geturl()


def drop_database(base: str, url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate(url: str, key: str) -> None:
    from flask_migrate import upgrade

    from authgateway.extensions import db

    app = create_app({"DATABASE_URL": url, "ENCRYPTION_KEY": key, "LOAD_PLUGINS": False,
                      "LOG_LEVEL": "WARNING"})
    with app.app_context():
        upgrade()
        db.engine.dispose()


def fill(url: str, old: KeyRing, rows: int) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(url) as connection, connection.cursor() as cursor:
        with cursor.copy(f"COPY credentials ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for i in range(rows):
                access, refresh = plaintext(i)
                copy.write_row((f"user{i}@example.com", "google", str(i), old.encrypt(access),
                                old.encrypt(refresh), old.primary_id, now + timedelta(hours=1),
                                "openid email", "active", now, 0, now, now))
        connection.commit()
        cursor.execute("ANALYZE credentials")


def verify(url: str, new: KeyRing, rows: int, sample: int = 2000) -> None:
    with psycopg.connect(url) as connection:
        counts = dict(connection.execute(
            "SELECT key_id, count(*) FROM credentials GROUP BY key_id").fetchall())
        assert counts == {new.primary_id: rows}, counts
        for i in random.sample(range(rows), min(sample, rows)):
            access, refresh, kid = connection.execute(
                "SELECT access_token_encrypted, refresh_token_encrypted, key_id FROM credentials"
                " WHERE user_email = %s", (f"user{i}@example.com",)).fetchone()
            assert (new.decrypt(access, kid), new.decrypt(refresh, kid)) == plaintext(i)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--database-url", default=os.environ.get(
        "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="a database to connect to for CREATE DATABASE (the bench uses its own)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()

    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    url = create_database(args.database_url)
    try:
        migrate(url, old_key)
        started = time.perf_counter()
        fill(url, KeyRing(old_key), args.rows)
        print(f"filled {args.rows} credentials in {time.perf_counter() - started:.1f} s",
              file=sys.stderr)

        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTH_GATEWAY_")}
        env.update(DATABASE_URL=url, AUTH_GATEWAY_ENCRYPTION_KEY=new_key,
                   AUTH_GATEWAY_ROTATION_KEYS=old_key, AUTH_GATEWAY_LOAD_PLUGINS="0",
                   AUTH_GATEWAY_LOG_LEVEL="WARNING", AUTH_GATEWAY_API_KEY="bench")
        with tempfile.TemporaryDirectory() as instance:
            env["AUTH_GATEWAY_INSTANCE_PATH"] = instance
            command = [sys.executable, "-m", "flask", "--app", "authgateway", "tokens",
                       "reencrypt", "--batch-size", str(args.batch_size)]
            started = time.perf_counter()
            done = subprocess.run(command, env=env, cwd=instance,  # noqa: S603 (our own argv)
                                  capture_output=True, text=True)
            wall = time.perf_counter() - started
        # Only child this process waited for: its peak resident set (kilobytes on Linux).
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if done.returncode != 0:
            sys.exit(f"reencrypt failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        verify(url, KeyRing(new_key, [old_key]), args.rows)
        own = re.search(r"([\d.]+) s \((\d+) rows/s\)", done.stdout)
        print(done.stdout.strip())
        print(f"rows: {args.rows}  batch size: {args.batch_size}")
        print(f"wall time of the process: {wall:.2f} s -> {args.rows / wall:,.0f} credentials/s"
              " (including interpreter start-up)")
        if own:
            print(f"re-encryption alone: {own.group(1)} s -> {int(own.group(2)):,} credentials/s")
        print(f"peak RSS: {peak_mb:.1f} MB")
    finally:
        if not args.keep:
            drop_database(args.database_url, url)


if __name__ == "__main__":
    main()
