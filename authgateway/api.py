"""The HTTP layer: thin views over the domain in flows.py and tokens.py."""

from __future__ import annotations

import hmac
import json

from flask import Blueprint, Response, current_app, g, jsonify, render_template, request
from sqlalchemy import text

from . import audit, flows, metrics, tokens, validation
from .context import gateway
from .errors import (
    ForbiddenError,
    GatewayError,
    InvalidApiKeyError,
    InvalidRequestError,
    MissingApiKeyError,
)
from .extensions import db
from .log_setup import ENVIRON_STARTED
from .openapi import openapi_document
from .version import __version__

auth = Blueprint("auth", __name__, url_prefix="/auth")
meta = Blueprint("meta", __name__)


def _presented_key(environ: dict) -> str | None:
    # Read from the environ, where request.headers finds them too: every request to /auth pays
    # for this, and a dict lookup costs a fraction of the headers' own.
    key = environ.get("HTTP_X_API_KEY")
    if key:
        return key
    scheme, _, credentials = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


@auth.before_request
def require_api_key() -> None:
    current = request._get_current_object()  # once, not per attribute (context.gateway)
    if current.endpoint == "auth.callback":
        return
    here, environ = gateway(), current.environ
    here.limiter.check_address(environ.get("REMOTE_ADDR"))  # = request.remote_addr
    key = _presented_key(environ)
    if key is None:
        raise MissingApiKeyError()
    caller = here.api_keys.authenticate(key)
    if caller is None:
        here.limiter.bad_key(environ.get("REMOTE_ADDR"))
        raise InvalidApiKeyError()
    g.api_key_name, g.api_key_scope = caller.name, caller.scope


def require_scope(operation: str, provider: str | None = None,
                  user_email: str | None = None) -> None:
    """403 forbidden, audited, when the caller's key may not do ``operation`` for this provider
    and user. A check in memory: each view makes it before anything about the user is read."""
    scope = g.api_key_scope
    if scope.unlimited:
        return
    refused = scope.refusal(operation, provider, user_email)
    if refused is not None:
        lacks, message = refused
        audit.refusal(g.api_key_name, user_email, provider, lacks)
        raise ForbiddenError(message)


def _may_see_flow(started_by: str | None, provider: str, user_email: str) -> bool:
    """A flow is visible to the key that started it and to keys whose scope covers its provider
    and user; to any other it does not exist."""
    if started_by == g.api_key_name or g.api_key_scope.refusal(
            "status", provider, user_email) is None:
        return True
    audit.refusal(g.api_key_name, user_email, provider, "flow")
    return False


#: POST /auth/token's answer as jsonify writes it (sorted keys, compact, ASCII), from one
#: encoder made once: jsonify makes a new encoder on every call, which on the hot path costs
#: about as much as the encoding itself. Unlike jsonify, no indentation in debug mode.
_TOKEN_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def _time(value):
    return value.isoformat() if value is not None else None


@auth.post("/init")
def init():
    body = validation.json_body()
    provider = validation.field(body, "provider", str)
    user_email = validation.email(validation.field(body, "user_email", str))
    scopes = validation.scopes(body.get("scopes"))
    require_scope("init", provider, user_email)
    # Only flows the key may start count against its budget: a refusal writes no counter.
    gateway().limiter.flow_started(g.api_key_name)
    flow = flows.start_flow(provider, user_email, scopes, g.api_key_name)
    return jsonify(auth_url=flow.auth_url, session_id=flow.session_id,
                   expires_at=_time(flow.expires_at))


@auth.get("/callback/<provider>")
def callback(provider: str):
    try:
        result = flows.finish_callback(provider, request.args)
    except flows.CallbackFailed as failure:
        return _page("failure", failure.status, provider=failure.provider,
                     user_email=failure.user_email, error=failure.code, message=failure.message)
    except GatewayError as exc:
        current_app.logger.error("callback failed: %s", exc.code)
        return _page("failure", exc.status, provider=None, user_email=None, error=exc.code,
                     message=exc.message)
    except Exception:
        # A person is reading: a page, never the JSON error or the exception's text.
        current_app.logger.exception("callback failed unexpectedly")
        error = GatewayError()
        return _page("failure", error.status, provider=None, user_email=None, error=error.code,
                     message=error.message)
    return _page("success", 200, provider=result.provider, user_email=result.user_email,
                 scopes=result.scopes, declined=result.declined)


def _page(outcome: str, status: int, **context):
    html = render_template("callback.html", outcome=outcome, **context)
    return html, status, {"Content-Type": "text/html; charset=utf-8"}


@auth.get("/status/<path:session_id>")
def status(session_id: str):
    require_scope("status")
    answer = flows.session_status(session_id, visible=_may_see_flow)
    if "expires_at" in answer:
        answer["expires_at"] = _time(answer["expires_at"])
    return jsonify(answer)


@auth.post("/token")
def token():
    body = validation.json_body()
    provider = validation.field(body, "provider", str)
    user_email = validation.email(validation.field(body, "user_email", str))
    here = gateway()
    min_valid = validation.field(body, "min_valid_seconds", (int, float), required=False,
                                 default=here.settings.get("TOKEN_REFRESH_BUFFER_SECONDS"))
    if not 0 <= min_valid <= 86400:
        raise InvalidRequestError("The field 'min_valid_seconds' must be between 0 and 86400.")
    force = validation.field(body, "force_refresh", bool, required=False, default=False)
    scopes = validation.scopes(body.get("scopes"))
    require_scope("token", provider, user_email)
    info = here.providers.info(provider)
    try:
        answer = tokens.get_token(user_email, provider, min_valid_seconds=min_valid,
                                  force_refresh=force, scopes=scopes)
    except GatewayError as exc:
        metrics.token_answered(provider, exc.code)
        if exc.auth_required:  # for the sentence a caller shows the person
            exc.extra["provider_display_name"] = info.display_name
        raise
    audit.token_served(g.api_key_name, user_email, provider)
    fields = {"access_token": answer.access_token, "token_type": answer.token_type,
              "expires_at": _time(answer.expires_at), "scopes": answer.scopes}
    if answer.account is not None:  # absent, not null, for providers that have none
        fields["account"] = answer.account
    body = _TOKEN_JSON.encode(fields)
    return Response(body + "\n", mimetype="application/json")


@auth.get("/providers/<path:user_email>")
def user_providers(user_email: str):
    user_email = validation.email(user_email)
    require_scope("providers", user_email=user_email)
    scope = g.api_key_scope
    connected = [entry for entry in tokens.user_providers(user_email)
                 if scope.covers_provider(entry["provider"])]
    for entry in connected:
        entry["authenticated_at"] = _time(entry["authenticated_at"])
        entry["token_expires_at"] = _time(entry["token_expires_at"])
    return jsonify(user_email=user_email, providers=connected)


@auth.delete("/revoke")
def revoke():
    body = validation.json_body()
    provider = validation.field(body, "provider", str)
    user_email = validation.email(validation.field(body, "user_email", str))
    require_scope("revoke", provider, user_email)
    gateway().providers.info(provider)
    revoked = tokens.revoke(user_email, provider, g.api_key_name)
    message = ("Revoked at the provider and deleted." if revoked else
               "Deleted here; the provider could not confirm the revocation.")
    return jsonify(success=True, message=message, provider_revoked=revoked)


@meta.get("/health")
def health():
    answer = {"status": "healthy", "database": "connected", "encryption": "operational",
              "version": __version__}
    try:
        db.session.execute(text("SELECT 1"))
        db.session.rollback()
    except Exception:
        current_app.logger.exception("health check: database unreachable")
        answer.update(status="degraded", database="unavailable")
    try:
        gateway().keyring.check()
    except Exception:
        current_app.logger.exception("health check: encryption failed")
        answer.update(status="degraded", encryption="failed")
    return jsonify(answer), 200 if answer["status"] == "healthy" else 503


@meta.get("/openapi.json")
def openapi():
    return jsonify(openapi_document(__version__, gateway().providers.names()))


@meta.get("/metrics")
def metrics_view():
    """The metrics token, else exactly the check every /auth endpoint makes (401/403)."""
    token = current_app.config.get("METRICS_TOKEN")
    presented = request.authorization
    if not (token and presented is not None and presented.type == "bearer" and presented.token
            and hmac.compare_digest(presented.token.encode(), token.encode())):
        require_api_key()
    body, content_type = metrics.exposition(request.headers.get("Accept"))
    return Response(body, content_type=content_type)


def count_request(response: Response) -> Response:
    """Counts every answer Flask makes (registered app-wide by the factory)."""
    current = request._get_current_object()  # once, not per attribute (context.gateway)
    metrics.http_answered(current.endpoint, current.method, response.status_code,
                          current.environ.get(ENVIRON_STARTED))
    return response
