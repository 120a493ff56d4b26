"""Assembling the Flask app: config, extensions, plugins, blueprints, error shape, headers."""

from __future__ import annotations

from pathlib import Path

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge

from . import breaker, log_setup, outage, ratelimit
from . import config as settings_module
from .api import auth, count_request, meta
from .apikeys import ApiKeyCache
from .cli import register_commands
from .context import Gateway
from .errors import (
    GatewayError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
)
from .extensions import db, migrate
from .headers import SecurityHeaders
from .models import render_item
from .plugins import Providers, build_plugin_manager
from .storage import RowReader, configure_engine, engine_options
from .webhook_commands import webhooks as webhook_commands

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def build_app(test_config: dict | None = None, *, key_required: bool = True) -> Flask:
    folder = settings_module.instance_folder() if test_config is None else None
    app = Flask("authgateway", instance_path=folder, instance_relative_config=True)
    app.config.update(settings_module.DEFAULTS)
    if test_config is None:
        environ = settings_module.environ()
        app.config.update(settings_module.from_environ(environ))
    else:
        environ = {}
        app.config.update(test_config)
    keyring = settings_module.validate(app.config, app.instance_path, key_required=key_required)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///"):
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(
        app.config["SQLALCHEMY_DATABASE_URI"], app.config["DB_POOL_SIZE"],
        app.config["DB_PREPARE_THRESHOLD"], app.config["DB_TIMEOUT"],
    )
    log_setup.init_app(app)

    db.init_app(app)
    directory = app.config.get("MIGRATIONS_DIR") or (
        str(MIGRATIONS_DIR) if MIGRATIONS_DIR.is_dir() else "migrations"
    )
    migrate.init_app(app, db, directory=directory, render_as_batch=True, compare_type=True,
                     render_item=render_item)
    with app.app_context():
        configure_engine(db.engine)
        reader = RowReader(db.engine, prepare=app.config["DB_PREPARE_THRESHOLD"] is not None,
                           raw=app.config["PG_RAW_READ"])

    settings = settings_module.Settings(app.config, environ)
    pm = build_plugin_manager(
        load_entrypoints=app.config["LOAD_PLUGINS"],
        block=app.config["BLOCK_PLUGINS"],
        extra=app.config.get("PLUGINS", ()),
    )
    limiter = ratelimit.init_app(app)
    database = outage.init_app(app)
    providers = Providers(pm, settings, app.config["PROVIDER_TIMEOUT"])
    breaker.init_app(app, providers.names())
    app.extensions["authgateway"] = Gateway(
        keyring=keyring,
        providers=providers,
        settings=settings,
        api_keys=ApiKeyCache(app.config["API_KEY"], app.config["APIKEY_CACHE_SECONDS"]),
        reader=reader,
        limiter=limiter,
    )
    if not app.config["API_KEY"]:
        app.logger.warning(
            "AUTH_GATEWAY_API_KEY is not set: only keys made with `flask apikeys create` work."
        )

    app.register_blueprint(auth)
    app.register_blueprint(meta)
    app.after_request(count_request)

    @app.after_request
    def probe_during_outage(response):
        # An answer that did not fail, during an outage, may not have used the database:
        # the outage ends when a probe says so (at most one a second).
        if database.active and response.status_code < 500:
            database.probe()
        return response

    _register_error_handlers(app)
    app.wsgi_app = SecurityHeaders(app.wsgi_app)
    register_commands(app)
    app.cli.add_command(webhook_commands)
    return app


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(GatewayError)
    def gateway_error(exc: GatewayError):
        return jsonify(exc.to_dict()), exc.status, exc.headers

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        # Under /auth/ (and for our JSON endpoints) an error is JSON, never an HTML page.
        mapped = {
            NotFound: NotFoundError,
            MethodNotAllowed: MethodNotAllowedError,
            RequestEntityTooLarge: PayloadTooLargeError,
        }.get(type(exc))
        error = mapped() if mapped else InvalidRequestError(exc.description or None)
        if not mapped and exc.code and exc.code >= 500:
            error = GatewayError()
        response = jsonify(error.to_dict())
        response.status_code = exc.code or error.status
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        if outage.is_unavailable(exc):
            refusal = outage.of(app).refused(exc)
            return jsonify(refusal.to_dict()), refusal.status, refusal.headers
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(GatewayError().to_dict()), 500

