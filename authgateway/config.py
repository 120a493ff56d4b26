"""Settings: defaults, then the environment (the seed's names and ``AUTH_GATEWAY_<NAME>``),
then a test config. Validation turns a bad setting into one sentence that says how to fix it."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from flask import Flask

from .crypto import KeyRing, KeyRingError
from .errors import ConfigError

PREFIX = "AUTH_GATEWAY_"

#: The development settings `make run` writes into the instance folder when no key is set.
DEV_SETTINGS = "dev.env"

#: Variables the seed gateway read without a prefix; they keep working.
SEED_NAMES = (
    "DATABASE_URL",
    "SESSION_EXPIRY_MINUTES",
    "TOKEN_REFRESH_BUFFER_SECONDS",
    "HOST",
    "PORT",
    "LOG_LEVEL",
    "LOG_FORMAT",
)

DEFAULTS: dict[str, object] = {
    "DATABASE_URL": None,  # None: instance/authgateway.sqlite
    "ENCRYPTION_KEY": None,
    "ROTATION_KEYS": "",
    "API_KEY": None,
    "SESSION_EXPIRY_MINUTES": 10,
    "TOKEN_REFRESH_BUFFER_SECONDS": 300,
    "PROVIDER_TIMEOUT": 10.0,
    # Refreshes at one provider in flight at once, per process; None: a quarter of THREADS.
    "REFRESH_CONCURRENCY": None,
    "BREAKER_FAILURES": 5,  # transient failures in a row that open a provider's breaker
    "BREAKER_COOLDOWN_SECONDS": 30.0,  # how long an open breaker fails fast before a trial
    "APIKEY_CACHE_SECONDS": 5.0,
    "HOST": "127.0.0.1",
    "PORT": 8000,
    "THREADS": 8,
    "CONNECTION_LIMIT": 1000,  # open connections waitress holds; past it new ones wait unaccepted
    "IDLE_TIMEOUT": 30,  # seconds a connection may send nothing before waitress closes it
    "LOG_LEVEL": "INFO",
    "LOG_FORMAT": "text",  # or json: one object per line
    "RATELIMIT_INIT": "120/minute",  # per API key; 0 turns it off
    "RATELIMIT_BAD_KEY": "20/minute",  # wrong API keys per client address; 0 turns it off
    "TRUSTED_PROXIES": 0,  # proxies in front whose X-Forwarded-For is believed
    "AUDIT_FLUSH_SECONDS": 5.0,  # how long token_served counts wait before being written
    "LOAD_PLUGINS": True,
    "BLOCK_PLUGINS": "",
    "DB_POOL_SIZE": 10,
    "DB_TIMEOUT": 5.0,  # seconds: connecting, waiting for a pooled connection, one statement
    "DB_PREPARE_THRESHOLD": 5,  # psycopg's default; "none" behind PgBouncer < 1.21
    "PG_RAW_READ": True,  # the token read through libpq below psycopg (storage.RowReader)
    "METRICS_TOKEN": None,
    "MIGRATIONS_DIR": None,  # None: migrations/ beside the package, else ./migrations
    "MAX_CONTENT_LENGTH": 64 * 1024,
    "WEBHOOK_WORKER": True,  # `serve` delivers webhooks from a thread of its own
    "WEBHOOK_TIMEOUT": 5.0,  # seconds a receiver has to answer one delivery
    "WEBHOOK_RETRY_SECONDS": 5.0,  # the first retry's delay; each later one doubles, up to 1 h
    "WEBHOOK_RETRY_HOURS": 24.0,  # how long a delivery is retried before it is marked failed
    "WEBHOOK_POLL_SECONDS": 2.0,  # how often the worker looks for other processes' events
    "WEBHOOK_KEEP_DAYS": 7,  # delivered and failed deliveries are purged after this
    "WEBHOOK_ALLOW_PRIVATE": False,  # receivers on private networks (loopback needs not)
}


def env_name(key: str) -> str:
    """The environment variable an operator sets for a config key."""
    return key if key in SEED_NAMES else PREFIX + key


def from_environ(environ: Mapping[str, str]) -> dict[str, str]:
    values = {name: environ[name] for name in SEED_NAMES if name in environ}
    for name, value in environ.items():
        if name.startswith(PREFIX):
            values[name[len(PREFIX):]] = value
    return values


class Settings:
    """Read access to every setting, including provider ones (``GOOGLE_CLIENT_ID``) that the
    core does not know in advance: the app config first, then the environment."""

    def __init__(self, config: Mapping[str, object], environ: Mapping[str, str]) -> None:
        self._config = config
        self._environ = environ

    def get(self, name: str, default: object = None) -> object:
        if name in self._config and self._config[name] not in (None, ""):
            return self._config[name]
        return self._environ.get(name) or default


def database_url(value: object, instance_path: str) -> str:
    if not value:
        return "sqlite:///" + str(Path(instance_path) / "authgateway.sqlite")
    url = str(value)
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(
            "DATABASE_URL is not a URL: use postgresql://user:pass@host/db or sqlite:///path."
        )
    # The seed's asyncpg URLs and Heroku-style postgres:// URLs are served by psycopg 3.
    if scheme in ("postgres", "postgresql", "postgresql+psycopg", "postgresql+asyncpg",
                  "postgresql+psycopg2"):
        return "postgresql+psycopg://" + rest
    if scheme in ("sqlite", "sqlite+pysqlite"):
        return url
    raise ConfigError(
        f"DATABASE_URL uses the unsupported scheme '{scheme}': use postgresql:// or sqlite://."
    )


def _number(config: dict, key: str, kind: type, minimum: float, maximum: float | None = None):
    value = config[key]
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number < minimum or (maximum is not None and number > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(f"{env_name(key)} must be a number {bound}, not {value!r}.")
    config[key] = number


def _flag(value: object) -> bool:
    return str(value).strip().lower() not in ("0", "false", "no", "off", "")


def _names(value: object) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [part.strip() for part in str(value or "").split(",") if part.strip()]


def validate(config: dict, instance_path: str, *,
             key_required: bool = True) -> KeyRing | MissingKey:
    """Check and normalise ``config`` in place; return the key ring it describes. Without
    ``key_required``, a missing key gives a MissingKey that stops whatever uses it."""
    config["SQLALCHEMY_DATABASE_URI"] = database_url(config.get("DATABASE_URL"), instance_path)
    _number(config, "SESSION_EXPIRY_MINUTES", int, 1, 24 * 60)
    _number(config, "TOKEN_REFRESH_BUFFER_SECONDS", int, 0, 24 * 3600)
    _number(config, "PROVIDER_TIMEOUT", float, 0.1, 300)
    _number(config, "APIKEY_CACHE_SECONDS", float, 0, 300)
    _number(config, "PORT", int, 1, 65535)
    _number(config, "THREADS", int, 1, 256)
    _number(config, "CONNECTION_LIMIT", int, 10, 100_000)
    _number(config, "IDLE_TIMEOUT", int, 1, 3600)
    _number(config, "MAX_CONTENT_LENGTH", int, 1024, 1 << 30)
    _number(config, "DB_POOL_SIZE", int, 1, 1000)
    _number(config, "DB_TIMEOUT", float, 0.5, 300)
    if config["REFRESH_CONCURRENCY"] in (None, ""):
        config["REFRESH_CONCURRENCY"] = max(1, config["THREADS"] // 4)
    _number(config, "REFRESH_CONCURRENCY", int, 1, 256)
    _number(config, "BREAKER_FAILURES", int, 1, 1000)
    _number(config, "BREAKER_COOLDOWN_SECONDS", float, 0.1, 3600)
    _number(config, "TRUSTED_PROXIES", int, 0, 10)
    _number(config, "AUDIT_FLUSH_SECONDS", float, 0.01, 3600)
    _number(config, "WEBHOOK_TIMEOUT", float, 0.1, 60)
    _number(config, "WEBHOOK_RETRY_SECONDS", float, 0.01, 3600)
    _number(config, "WEBHOOK_RETRY_HOURS", float, 0, 24 * 30)
    _number(config, "WEBHOOK_POLL_SECONDS", float, 0.01, 300)
    _number(config, "WEBHOOK_KEEP_DAYS", int, 1, 3650)
    config["WEBHOOK_WORKER"] = _flag(config["WEBHOOK_WORKER"])
    config["WEBHOOK_ALLOW_PRIVATE"] = _flag(config["WEBHOOK_ALLOW_PRIVATE"])
    if str(config["DB_PREPARE_THRESHOLD"]).strip().lower() in ("none", "off", ""):
        config["DB_PREPARE_THRESHOLD"] = None
    else:
        _number(config, "DB_PREPARE_THRESHOLD", int, 0, 1_000_000)
    level = str(config["LOG_LEVEL"]).upper()
    if not isinstance(logging.getLevelName(level), int):
        raise ConfigError(
            f"LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, not {config['LOG_LEVEL']!r}."
        )
    config["LOG_LEVEL"] = level
    config["LOAD_PLUGINS"] = _flag(config["LOAD_PLUGINS"])
    config["PG_RAW_READ"] = _flag(config["PG_RAW_READ"])
    config["BLOCK_PLUGINS"] = _names(config["BLOCK_PLUGINS"])
    if config.get("API_KEY") is not None:
        config["API_KEY"] = str(config["API_KEY"]).strip() or None
    config["METRICS_TOKEN"] = str(config.get("METRICS_TOKEN") or "").strip() or None
    if config["METRICS_TOKEN"] is not None and len(config["METRICS_TOKEN"]) < 16:
        raise ConfigError(
            "AUTH_GATEWAY_METRICS_TOKEN must be at least 16 characters: generate one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
        )
    try:
        return key_ring(config, instance_path)
    except MissingKeyError as exc:
        if key_required:
            raise
        return MissingKey(str(exc))


class MissingKeyError(ConfigError):
    """AUTH_GATEWAY_ENCRYPTION_KEY is not set."""


class MissingKey:
    """The key ring of an app that a command started without a key (`providers list` needs
    none): anything that would encrypt or decrypt stops with the sentence."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __getattr__(self, name: str):
        raise MissingKeyError(self.message)


def missing_key_message(instance_path: str | None) -> str:
    """Where the key is: generating a new one would make every stored token unreadable, so
    that is offered only for a new installation."""
    dev_settings = Path(instance_path) / DEV_SETTINGS if instance_path else None
    if dev_settings is not None and dev_settings.is_file():
        return (
            f"AUTH_GATEWAY_ENCRYPTION_KEY is not set, and {dev_settings} holds the development "
            "one: run the command as `flask --app authgateway ...` or `authgateway ...`, which "
            f"read it, or load it first with `set -a; . {dev_settings}; set +a`."
        )
    return (
        "AUTH_GATEWAY_ENCRYPTION_KEY is not set: set it in the environment to the key the "
        "stored tokens were encrypted with; for a new installation, generate one with "
        "`flask --app authgateway keys generate`."
    )


def key_ring(config: Mapping[str, object], instance_path: str | None = None) -> KeyRing:
    primary = str(config.get("ENCRYPTION_KEY") or "").strip()
    if not primary:
        raise MissingKeyError(missing_key_message(instance_path))
    try:
        return KeyRing(primary, _names(config.get("ROTATION_KEYS")))
    except KeyRingError as exc:
        raise ConfigError(
            f"AUTH_GATEWAY_ENCRYPTION_KEY / AUTH_GATEWAY_ROTATION_KEYS: {exc}; generate a key "
            "with `flask --app authgateway keys generate` and list each key once."
        ) from exc


def environ() -> Mapping[str, str]:
    return os.environ


def instance_folder() -> str:
    """Where the SQLite database and `make run`'s development settings live:
    AUTH_GATEWAY_INSTANCE_PATH, else Flask's instance folder (instance/ in a checkout)."""
    configured = os.environ.get("AUTH_GATEWAY_INSTANCE_PATH")
    return os.path.abspath(configured) if configured else Flask("authgateway").instance_path
