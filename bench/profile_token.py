"""Instructions per request of POST /auth/token (a valid cached token), the gateway's hot path,
against bench/bare_app.py's bare Flask route. Not a test, not in CI.

Wall-clock benchmarks (bench/token_load.py) need a quiet machine; an instruction count does
not, and it repeats to within a fraction of a percent. Each target runs in its own process under
valgrind's callgrind and is called in-process as waitress calls it (a WSGI environ shaped like
waitress's, the body read to the end, close()), one user after another as bench/token.lua does.
Only the requests after a warm-up are counted: they run inside ``sys.call_tracing``, a C
function callgrind can name (--toggle-collect), which with no tracer set only calls its argument.

    .venv/bin/python bench/profile_token.py [--requests 2000] [--keep]

Prints instructions per request for both and their ratio. With --keep, the callgrind files
stay in a temporary directory for ``callgrind_annotate --inclusive=yes FILE``. The database
server's own work is not counted, only the serving process's. Needs valgrind and a PostgreSQL
it may create a database on (BENCH_DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))  # bare_app, and token_load's database helpers

USERS = 1000
WARM_UP = USERS  # every token decrypted once (KeyRing.decrypt_cached), as after wrk's warm-up


def environ(body: bytes, api_key: str | None) -> dict:
    """What waitress's Task.get_environment builds for this request from wrk."""
    env = {
        "REMOTE_ADDR": "127.0.0.1", "REMOTE_HOST": "127.0.0.1", "REMOTE_PORT": "50000",
        "REQUEST_METHOD": "POST", "SERVER_PORT": "8000", "SERVER_NAME": "localhost",
        "SERVER_SOFTWARE": "waitress", "SERVER_PROTOCOL": "HTTP/1.1", "SCRIPT_NAME": "",
        "PATH_INFO": "/auth/token", "REQUEST_URI": "/auth/token", "QUERY_STRING": "",
        "wsgi.url_scheme": "http", "wsgi.version": (1, 0), "wsgi.errors": sys.stderr,
        "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
        "wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True,
        "HTTP_HOST": "127.0.0.1:8000", "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
    }
    if api_key is not None:
        env["HTTP_X_API_KEY"] = api_key
    return env


#: The bodies bench/token.lua sends, made before counting: the server receives them as bytes.
BODIES = [json.dumps({"provider": "google", "user_email": f"user{i}@example.com"}).encode()
          for i in range(USERS)]


def call(app, number: int, api_key: str | None) -> None:
    statuses = []
    answer = app(environ(BODIES[number % USERS], api_key),
                 lambda status, _headers, _exc=None: statuses.append(status))
    try:
        b"".join(answer)
    finally:
        if hasattr(answer, "close"):
            answer.close()
    if not statuses[0].startswith("200"):
        sys.exit(f"request {number} answered {statuses[0]}")


def run_requests(app, start: int, count: int, api_key: str | None) -> None:
    for number in range(start, start + count):
        call(app, number, api_key)


def inner(target: str, requests: int) -> None:
    """In the process valgrind watches: build the target, warm it up, run the counted part."""
    if target == "bare":
        from bare_app import app
        api_key = None
    else:
        from authgateway import create_app
        api_key = os.environ["PROFILE_API_KEY"]
        # The cache and audit timers are made long: at valgrind's speed, a 5 s expiry would
        # reload the key many times within the run, where a real server at thousands of
        # requests per second reloads it once per few thousand requests.
        app = create_app({"DATABASE_URL": os.environ["PROFILE_DATABASE_URL"],
                          "ENCRYPTION_KEY": os.environ["PROFILE_ENCRYPTION_KEY"],
                          "API_KEY": api_key, "LOG_LEVEL": "WARNING", "RATELIMIT_INIT": "0",
                          "APIKEY_CACHE_SECONDS": 300, "AUDIT_FLUSH_SECONDS": 3600,
                          "GOOGLE_CLIENT_ID": "profile", "GOOGLE_CLIENT_SECRET": "profile",
                          "GOOGLE_REDIRECT_URI": "http://localhost/auth/callback/google"})
    run_requests(app, 0, WARM_UP, api_key)
    sys.call_tracing(run_requests, (app, WARM_UP, requests, api_key))


def callgrind(target: str, requests: int, env: dict, out: Path) -> int:
    """Instructions inside the counted part of one run of ``target``."""
    subprocess.run(  # noqa: S603 (our own argv)
        [shutil.which("valgrind") or "valgrind", "--tool=callgrind", "--collect-atstart=no",
         "--toggle-collect=sys_call_tracing", f"--callgrind-out-file={out}",
         sys.executable, __file__, "--inner", target, "--requests", str(requests)],
        env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    summary = re.search(r"^summary:\s+(\d+)", out.read_text(), re.MULTILINE)
    return int(summary.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--keep", action="store_true", help="keep the callgrind files")
    parser.add_argument("--target", choices=["gateway", "bare", "both"], default="both")
    parser.add_argument("--inner", choices=["gateway", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--database-url", default=os.environ.get(
        "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    if args.inner:
        inner(args.inner, args.requests)
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: apt-get install -y valgrind")

    from cryptography.fernet import Fernet
    from token_load import create_pg_database, drop_pg_database, local_app, migrate_and_fill

    targets = ["gateway", "bare"] if args.target == "both" else [args.target]
    key, api_key = Fernet.generate_key().decode(), "agw_profile_" + os.urandom(12).hex()
    work = Path(tempfile.mkdtemp(prefix="authgateway-profile-"))
    url = create_pg_database(args.database_url)
    try:
        migrate_and_fill(local_app(url, key, api_key, _NoGoogle()), key)
        env = {**os.environ, "PROFILE_DATABASE_URL": url, "PROFILE_ENCRYPTION_KEY": key,
               "PROFILE_API_KEY": api_key}
        per_request = {}
        for target in targets:
            out = work / f"callgrind.{target}"
            per_request[target] = callgrind(target, args.requests, env, out) / args.requests
            print(f"{target:8} {per_request[target]:>10,.0f} instructions per request"
                  + (f"  ({out})" if args.keep else ""))
        if len(per_request) == 2:
            print(f"ratio bare/gateway {per_request['bare'] / per_request['gateway']:.3f}")
    finally:
        drop_pg_database(args.database_url, url)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


class _NoGoogle:
    """token_load.local_app's provider settings; the hot path never calls the provider."""

    def settings(self) -> dict[str, str]:
        return {"GOOGLE_CLIENT_ID": "profile", "GOOGLE_CLIENT_SECRET": "profile"}


if __name__ == "__main__":
    main()
