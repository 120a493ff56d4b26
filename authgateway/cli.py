"""Operator commands: ``flask --app authgateway <group> <command>``, or ``authgateway ...``.

Both read the development settings that `make run` writes (instance/dev.env) when the
environment sets no encryption key, work without a key for what needs none (``--help``,
``providers list``), and stop on a wrong setting with its one sentence, never a traceback."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from . import apikeys as apikeys_module
from . import audit as audit_module
from . import delivery, rotation
from .config import DEV_SETTINGS, instance_folder
from .context import gateway
from .crypto import KeyRing, generate_key
from .errors import ConfigError
from .models import utcnow
from .tokens import refresh_expiring


def load_dev_settings() -> None:
    """When the environment sets no encryption key and `make run` wrote development settings,
    use them and say so. A setting the environment has keeps its value."""
    if os.environ.get("AUTH_GATEWAY_ENCRYPTION_KEY", "").strip():
        return
    path = Path(instance_folder()) / DEV_SETTINGS
    if not path.is_file():
        return
    from dotenv import dotenv_values

    for name, value in dotenv_values(path).items():
        if value is not None and not os.environ.get(name, "").strip():
            os.environ[name] = value
    click.echo(f"Using the development settings in {_shown(path)}.", err=True)


def _shown(path: Path) -> str:
    relative = os.path.relpath(path)
    return path.as_posix() if relative.startswith("..") else relative


class _Reporting:
    """A command or group that a wrong or missing setting, or a database it cannot use, ends
    with one sentence instead of a traceback."""

    def invoke(self, ctx: click.Context):
        from sqlalchemy.exc import OperationalError, ProgrammingError

        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
        except (OperationalError, ProgrammingError) as exc:
            # The driver's own first line (no such table, connection refused) names no secret.
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            raise click.ClickException(
                f"The database cannot be used ({reason}): is it reachable, and has "
                "`init-db` created its tables?") from None


class Command(_Reporting, click.Command):
    pass


class Group(_Reporting, click.Group):
    command_class = Command


Group.group_class = Group


def keyring_checked() -> KeyRing:
    """The app's key ring, for a command that encrypts or decrypts: without a key, the command
    stops here with the sentence that says where the key is."""
    keyring = gateway().keyring
    keyring.check()
    return keyring



# `keys` must work before any key exists, so it is registered through the `flask.commands`
# entry point (and here), which Flask loads without creating the app.
@click.group("keys", cls=Group)
def keys() -> None:
    """Encryption keys."""


@keys.command("generate")
@click.option("--rotate", is_flag=True,
              help="Print a new key and keep the current ones for decryption.")
def keys_generate(rotate: bool) -> None:
    """Print new settings, ready to paste into .env (the explanation goes to stderr)."""
    new_key = generate_key()
    if not rotate:
        click.echo(f"AUTH_GATEWAY_ENCRYPTION_KEY={new_key}")
        click.echo(f"AUTH_GATEWAY_API_KEY={apikeys_module.KEY_PREFIX}{_token()}")
        click.echo("# Keep these secret. Set them in the gateway's environment (.env).",
                   err=True)
        return
    load_dev_settings()
    current = os.environ.get("AUTH_GATEWAY_ENCRYPTION_KEY", "").strip()
    if not current:
        raise click.ClickException(
            "--rotate needs the current AUTH_GATEWAY_ENCRYPTION_KEY in the environment, "
            "so that it can be kept for decryption."
        )
    older = [k.strip() for k in os.environ.get("AUTH_GATEWAY_ROTATION_KEYS", "").split(",")
             if k.strip()]
    click.echo(f"AUTH_GATEWAY_ENCRYPTION_KEY={new_key}")
    click.echo(f"AUTH_GATEWAY_ROTATION_KEYS={','.join([current, *older])}")
    click.echo(
        "# 1. Replace both settings with the lines above on every gateway process.\n"
        "# 2. Restart them: they now decrypt with old and new keys and encrypt with the new one.\n"
        "# 3. Run `flask --app authgateway tokens reencrypt`.\n"
        "# 4. Remove the old key from AUTH_GATEWAY_ROTATION_KEYS once "
        "`flask --app authgateway keys status` says so.",
        err=True,
    )


@keys.command("status")
@with_appcontext
def keys_status() -> None:
    """Rows per key id, which configured key each is, and when an old key can be removed."""
    for line in rotation.describe_status(rotation.key_status(keyring_checked())):
        click.echo(line)


def _token() -> str:
    import secrets

    return secrets.token_urlsafe(32)




def register_commands(app: Flask) -> None:
    app.cli.add_command(keys)
    app.cli.add_command(init_db)
    app.cli.add_command(apikeys)
    app.cli.add_command(providers)
    app.cli.add_command(tokens)
    app.cli.add_command(sessions)
    app.cli.add_command(serve)
    app.cli.add_command(audit)


@click.group(cls=Group)
def tokens() -> None:
    """Stored credentials: keep them warm, move them to a new key."""


@tokens.command("refresh")
@click.option("--expiring-within", "within", metavar="SECONDS", default=600, show_default=True,
              type=click.IntRange(0, 7 * 24 * 3600),
              help="Refresh every active credential that expires within this many seconds.")
@with_appcontext
def tokens_refresh(within: int) -> None:
    """Refresh tokens before they expire, through the same row lock as /auth/token: safe to
    run from cron on several hosts at once. Exits 1 when a refresh failed."""
    keyring_checked()
    counts = refresh_expiring(within, progress=lambda due: click.progressbar(
        due, label="Refreshing", file=sys.stderr))
    click.echo(f"refreshed {counts['refreshed']}, needs_reauth {counts['needs_reauth']}, "
               f"failed {counts['failed']} ({counts['fresh']} already fresh)")
    if counts["failed"]:
        raise click.exceptions.Exit(1)


@tokens.command("reencrypt")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 100_000),
              help="Rows per transaction.")
@click.option("--dry-run", is_flag=True, help="Count the rows to move; write nothing.")
@with_appcontext
def tokens_reencrypt(batch_size: int, dry_run: bool) -> None:
    """Move every credential and pending session to the primary key, in short locked
    transactions: safe while serving, safe to kill and run again."""
    keyring = keyring_checked()
    counts = rotation.count_to_move(keyring)
    if dry_run:
        click.echo("\n".join(rotation.describe_dry_run(keyring, counts)))
        return
    summary = rotation.Summary(keyring.primary_id)
    total = sum(n for per_key in counts.values() for n in per_key.values())
    with click.progressbar(length=total, label="Re-encrypting", file=sys.stderr) as bar:
        for batch in rotation.reencrypt(keyring, batch_size):
            summary.add(batch)
            bar.update(batch.seen)
    click.echo("\n".join(summary.lines()))
    if summary.failed_count:
        raise click.ClickException(f"{summary.failed_count} rows could not be decrypted.")


@click.group(cls=Group)
def sessions() -> None:
    """Authorization flows (auth_sessions)."""


@sessions.command("purge")
@with_appcontext
def sessions_purge() -> None:
    """Delete flows that expired more than a day ago."""
    click.echo(f"Purged {rotation.purge_sessions()} flows that expired more than a day ago.")


@click.command("init-db", cls=Command)
@click.option("--seed", is_flag=True, help="Also register AUTH_GATEWAY_API_KEY as a stored key.")
@with_appcontext
def init_db(seed: bool) -> None:
    """Apply every migration (the same as `flask db upgrade`); safe to run again."""
    from flask_migrate import upgrade

    upgrade()
    click.echo("Database schema is up to date.")
    if seed:
        key = current_app.config.get("API_KEY")
        if not key:
            raise click.ClickException("--seed needs AUTH_GATEWAY_API_KEY to be set.")
        if apikeys_module.register_key(apikeys_module.BOOTSTRAP_NAME, key):
            click.echo(f"Registered AUTH_GATEWAY_API_KEY as the API key "
                       f"'{apikeys_module.BOOTSTRAP_NAME}'.")
        else:
            click.echo("AUTH_GATEWAY_API_KEY is already registered.")


@click.group(cls=Group)
def apikeys() -> None:
    """API keys for MCP servers."""


def _scope_options(command):
    """--providers, --users, --can and --expires-in, as create and update take them."""
    options = [
        click.option("--providers", metavar="NAMES",
                     help="Only these providers, comma-separated: google,github."),
        click.option("--users", metavar="PATTERN", multiple=True,
                     help="Only users whose email matches this pattern (repeatable): the "
                          "whole address, case-insensitive, with * ? [...] as in the shell, "
                          "e.g. '*@example.com'."),
        click.option("--can", metavar="OPERATIONS",
                     help="Only these operations, comma-separated from "
                          f"{','.join(apikeys_module.OPERATIONS)}."),
        click.option("--expires-in", metavar="DURATION",
                     help="The key stops working after this long: 90d, 24h, 30m, 2w."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _read_scope(providers: str | None, users: tuple[str, ...], can: str | None,
                expires_in: str | None):
    """The scope and expiry the options name (None where an option is absent); a ClickException
    naming the option when one is not valid."""
    from .context import gateway

    try:
        scope = apikeys_module.Scope(
            providers=(apikeys_module.parse_providers(providers, gateway().providers.names())
                       if providers is not None else None),
            users=(tuple(dict.fromkeys(apikeys_module.parse_user_pattern(p) for p in users))
                   if users else None),
            operations=apikeys_module.parse_operations(can) if can is not None else None,
        )
        expires_at = (utcnow() + apikeys_module.parse_duration(expires_in, "--expires-in")
                      if expires_in is not None else None)
    except apikeys_module.ScopeError as exc:
        raise click.ClickException(str(exc)) from None
    return scope, expires_at


@apikeys.command("create")
@click.argument("name")
@_scope_options
@with_appcontext
def apikeys_create(name: str, providers: str | None, users: tuple[str, ...], can: str | None,
                   expires_in: str | None) -> None:
    """Create a key; it is shown this once and stored only as a hash. Without options it may
    do everything, for every provider and user."""
    from sqlalchemy.exc import IntegrityError

    scope, expires_at = _read_scope(providers, users, can, expires_in)
    try:
        key = apikeys_module.create_key(name, scope, expires_at)
    except IntegrityError:
        raise click.ClickException(f"An API key named '{name}' already exists.") from None
    click.echo(key)
    click.echo(f"# API key '{name}' created ({scope.summary()}). It is shown only now: store it "
               "safely.", err=True)


@apikeys.command("update")
@click.argument("name")
@_scope_options
@click.option("--all-providers", is_flag=True, help="Lift the limit on providers.")
@click.option("--all-users", is_flag=True, help="Lift the limit on users.")
@click.option("--all-operations", is_flag=True, help="Lift the limit on operations.")
@click.option("--never-expires", is_flag=True, help="Lift the expiry.")
@with_appcontext
def apikeys_update(name: str, providers: str | None, users: tuple[str, ...], can: str | None,
                   expires_in: str | None, all_providers: bool, all_users: bool,
                   all_operations: bool, never_expires: bool) -> None:
    """Change a key's scope or expiry; only the options given change. Every process applies it
    within APIKEY_CACHE_SECONDS."""
    scope, expires_at = _read_scope(providers, users, can, expires_in)
    columns = apikeys_module.scope_columns(scope)
    values = {}
    for column, given, lifted, lift_option in (
            ("providers", providers is not None, all_providers, "--all-providers"),
            ("users", bool(users), all_users, "--all-users"),
            ("operations", can is not None, all_operations, "--all-operations"),
            ("expires_at", expires_in is not None, never_expires, "--never-expires")):
        if given and lifted:
            raise click.ClickException(f"{lift_option} lifts the limit its companion option "
                                       "sets: give one of them.")
        if given:
            values[column] = expires_at if column == "expires_at" else columns[column]
        elif lifted:
            values[column] = None
    if not values:
        raise click.ClickException("Name what to change: --providers, --users, --can, "
                                   "--expires-in, or an --all-... or --never-expires flag.")
    if not apikeys_module.update_key(name, **values):
        raise click.ClickException(f"No live API key is named '{name}'.")
    row = apikeys_module.get_key(name)
    click.echo(f"API key '{name}' updated: {apikeys_module.scope_of(row).summary()}, "
               f"expires {_when(row.expires_at) if row.expires_at else 'never'}.")


@apikeys.command("rotate")
@click.argument("name")
@click.option("--grace", default="24h", show_default=True, metavar="DURATION",
              help="How long the current secret keeps working beside the new one (0: not at "
                   "all).")
@with_appcontext
def apikeys_rotate(name: str, grace: str) -> None:
    """Print a new secret for a key, same name and scope. A secret still in the grace of an
    earlier rotation stops at once."""
    try:
        period = apikeys_module.parse_duration(grace, "--grace", allow_zero=True)
    except apikeys_module.ScopeError as exc:
        raise click.ClickException(str(exc)) from None
    key = apikeys_module.rotate_key(name, period)
    if key is None:
        raise click.ClickException(f"No live API key is named '{name}'.")
    click.echo(key)
    ends = (f"works until {_when(utcnow() + period)} UTC" if period
            else "stops within APIKEY_CACHE_SECONDS")
    click.echo(f"# API key '{name}' rotated: the previous secret {ends}. The new one is shown "
               "only now: store it safely.", err=True)


@apikeys.command("list")
@with_appcontext
def apikeys_list() -> None:
    """Every key (the bootstrap one too): prefix, created, last used, expiry, state, scope."""
    rows = apikeys_module.list_keys()
    bootstrap = _bootstrap_digest()
    lines = [("NAME", "PREFIX", "CREATED", "LAST USED", "EXPIRES", "STATE", "SCOPE")]
    for row in rows:
        marked = bootstrap in (row.key_hash, row.previous_key_hash)
        lines.append((row.name, row.prefix + "…", _when(row.created_at), _when(row.last_used_at),
                      _when(row.expires_at), _state(row),
                      apikeys_module.scope_of(row).summary()
                      + (" [AUTH_GATEWAY_API_KEY]" if marked else "")))
    if bootstrap and not any(bootstrap in (row.key_hash, row.previous_key_hash) for row in rows):
        lines.append((apikeys_module.BOOTSTRAP_NAME, "(not stored)", "-", "-", "-", "active",
                      "full access [AUTH_GATEWAY_API_KEY]"))
    if len(lines) == 1:
        click.echo("No API keys are stored and AUTH_GATEWAY_API_KEY is not set.")
        return
    for line in lines:
        click.echo("  ".join(f"{cell:{width}}" for cell, width in
                             zip(line, (24, 14, 19, 19, 19, 8, 0), strict=True)).rstrip())


@apikeys.command("show")
@click.argument("name")
@with_appcontext
def apikeys_show(name: str) -> None:
    """One key's scope, expiry and state."""
    row = apikeys_module.get_key(name)
    bootstrap = _bootstrap_digest()
    if row is None and name == apikeys_module.BOOTSTRAP_NAME and bootstrap:
        click.echo(f"name:       {name} (AUTH_GATEWAY_API_KEY, not stored)\n"
                   "providers:  all\nusers:      all\ncan:        all operations\n"
                   "expires:    never\nstate:      active")
        return
    if row is None:
        raise click.ClickException(f"No API key is named '{name}'.")
    scope = apikeys_module.scope_of(row)
    lines = [
        f"name:       {row.name}"
        + (" (AUTH_GATEWAY_API_KEY)" if bootstrap in (row.key_hash, row.previous_key_hash)
           else ""),
        f"prefix:     {row.prefix}…",
        "providers:  " + (", ".join(sorted(scope.providers)) if scope.providers is not None
                          else "all"),
        "users:      " + (", ".join(scope.users) if scope.users is not None else "all"),
        "can:        " + (", ".join(op for op in apikeys_module.OPERATIONS
                                    if op in scope.operations)
                          if scope.operations is not None else "all operations"),
        f"expires:    {_when(row.expires_at) if row.expires_at else 'never'}",
        f"state:      {_state(row)}"
        + (f" since {_when(row.revoked_at)}" if row.revoked_at else ""),
        f"created:    {_when(row.created_at)}",
        f"last used:  {_when(row.last_used_at)}",
    ]
    if row.previous_key_hash and row.previous_expires_at > utcnow():
        lines.append(f"previous:   {row.previous_prefix}… works until "
                     f"{_when(row.previous_expires_at)}")
    click.echo("\n".join(lines))


def _bootstrap_digest() -> str | None:
    key = current_app.config.get("API_KEY")
    return apikeys_module.hash_key(key) if key else None


def _state(row) -> str:
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= utcnow():
        return "expired"
    if row.previous_key_hash and row.previous_expires_at > utcnow():
        return "rotating"
    return "active"


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


@apikeys.command("revoke")
@click.argument("name")
@with_appcontext
def apikeys_revoke(name: str) -> None:
    """Revoke a key (both secrets while it rotates); every process refuses it within
    APIKEY_CACHE_SECONDS."""
    if not apikeys_module.revoke_key(name):
        raise click.ClickException(f"No live API key is named '{name}'.")
    click.echo(f"API key '{name}' revoked.")


@click.group(cls=Group)
def providers() -> None:
    """OAuth providers."""


@providers.command("list")
@with_appcontext
def providers_list() -> None:
    """Installed providers, the plugin behind each, and what is missing to use it."""
    facade = gateway().providers
    if not facade.names():
        click.echo("No provider is installed: pip install authgateway-google (or another).")
        return
    for name in facade.names():
        info, missing = facade.info(name), facade.missing_settings(name)
        state = "configured" if not missing else "NOT CONFIGURED: set " + ", ".join(missing)
        click.echo(f"{name:12} {info.display_name:20} plugin={facade.owner(name):28} {state}")


@click.command("serve", cls=Command)
@click.option("--host", default=None, help="Default: HOST (127.0.0.1).")
@click.option("--port", default=None, type=int, help="Default: PORT (8000).")
@with_appcontext
def serve(host: str | None, port: int | None) -> None:
    """Serve the gateway with waitress."""
    import resource

    from waitress import create_server

    from .serving import harden_waitress_errors

    keyring_checked()
    app = current_app._get_current_object()
    if app.config["WEBHOOK_WORKER"]:
        delivery.start_worker(app)
    host = host or app.config["HOST"]
    port = port or app.config["PORT"]
    # A connection costs one open file; the rest of the process (database pool, logs, waitress's
    # own pipes) needs a few hundred more. Raise the soft limit towards that, as far as the hard
    # limit allows, else hold fewer connections than asked rather than fail accept() at EMFILE.
    spare_files = 256 + 2 * app.config["DB_POOL_SIZE"]
    connection_limit = app.config["CONNECTION_LIMIT"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connection_limit + spare_files
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft != resource.RLIM_INFINITY and soft < wanted:
        connection_limit = max(10, soft - spare_files)
        logging.getLogger("authgateway").warning(
            "AUTH_GATEWAY_CONNECTION_LIMIT=%d needs %d open files; the hard limit (ulimit -Hn) "
            "is %d, so at most %d connections are held", app.config["CONNECTION_LIMIT"],
            wanted, hard, connection_limit)
    idle_timeout = app.config["IDLE_TIMEOUT"]
    click.echo(f"authgateway serving on http://{host}:{port}", err=True)
    sys.stderr.flush()
    # `docker stop` and systemd send SIGTERM: exit the normal way, so that atexit work (the
    # audit trail's last counts of tokens served) is done.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # waitress warns "Task queue depth is N" for every request that waits for a free thread:
    # under steady load that is one log line per request, which costs more than the request.
    # The metric that says the same thing is the request latency in /metrics.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    # What exists now (modules, the app, its plugins: about 116,000 objects) lives as long as
    # the process. Left to the garbage collector, every full collection walks all of it again,
    # a pause of 50-100 ms for every request in flight, once a minute or so under load.
    gc.collect()
    gc.freeze()
    sockets: dict = {}
    server = create_server(
        app, map=sockets, host=host, port=port, threads=app.config["THREADS"], ident="authgateway",
        connection_limit=connection_limit,
        # A connection that sends nothing for this long is closed, checked this often.
        channel_timeout=idle_timeout, cleanup_interval=max(1, idle_timeout // 4),
        # waitress refuses a body of this size or more from its Content-Length alone, before
        # reading it; one byte over MAX_CONTENT_LENGTH keeps Flask's own limit the boundary.
        max_request_body_size=int(app.config["MAX_CONTENT_LENGTH"]) + 1,
        # Each half-sent header is held in memory: this bounds them to 32 MiB per 1,000.
        max_request_header_size=32 * 1024,
        # select() fails on file numbers past 1023, which a few hundred connections reach.
        asyncore_use_poll=True,
        # waitress drops X-Forwarded-* unless told otherwise; behind TRUSTED_PROXIES proxies
        # the app's ProxyFix reads the client's address from them.
        clear_untrusted_proxy_headers=not app.config["TRUSTED_PROXIES"],
    )
    # What waitress answers itself (400, 413, 431) carries the headers every answer has.
    harden_waitress_errors(sockets)
    server.run()


@click.group("audit", cls=Group)
def audit() -> None:
    """The audit trail."""


@audit.command("tail")
@click.option("--user", "user_email", metavar="EMAIL", help="Only events for this user.")
@click.option("--since", metavar="WHEN",
              help="Only events since an ISO 8601 time or an age: 30s, 10m, 2h, 7d.")
@click.option("-n", "--limit", default=50, show_default=True, type=click.IntRange(1, 100_000),
              help="How many of the newest events to show.")
@with_appcontext
def audit_tail(user_email: str | None, since: str | None, limit: int) -> None:
    """The newest audit events, oldest first: time, action, outcome, API key, user, provider."""
    try:
        moment = audit_module.parse_since(since) if since else None
    except ValueError:
        raise click.BadParameter("use an ISO 8601 time or an age such as 10m or 2h.",
                                 param_hint="--since") from None
    rows = audit_module.events(user_email=user_email, since=moment, limit=limit)
    if not rows:
        click.echo("No audit events match.")
    for row in rows:
        click.echo("  ".join([row.created_at.isoformat(timespec="seconds"), f"{row.action:16}",
                              f"{row.outcome:12}", f"actor={row.actor or '-'}",
                              f"user={row.user_email or '-'}", f"provider={row.provider or '-'}",
                              row.detail or ""]).rstrip())
