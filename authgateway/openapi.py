"""The OpenAPI 3.1 description of API.md, served at /openapi.json.

tests/test_openapi_fuzz.py keeps it true: every status, body and header an operation can
answer with is written here."""

from __future__ import annotations

ERROR_CODES = [
    "invalid_request", "unsupported_provider", "provider_not_configured", "missing_api_key",
    "invalid_api_key", "not_found", "method_not_allowed", "session_not_found",
    "not_authenticated", "refresh_failed", "provider_unavailable", "provider_misconfigured",
    "decryption_failed", "rate_limited", "internal_error", "forbidden", "insufficient_scope",
]

TIME = {"type": "string", "format": "date-time"}
EMAIL = {"type": "string", "format": "email", "maxLength": 320,
         "description": "Compared case-insensitively."}
#: A provider a caller names: one of those installed (the enum of this deployment's document).
PROVIDER = {"$ref": "#/components/schemas/Provider"}
PROVIDER_NAME = {"type": "string", "description": "A provider, e.g. google."}
STORED_EMAIL = {"type": "string", "description": "Trimmed and lower-cased."}
ACCOUNT = {"$ref": "#/components/schemas/Account"}
#: RFC 6749 section 3.3: printable ASCII but space, '"' and '\\'.
SCOPE = {"type": "string", "pattern": "^[\\x21\\x23-\\x5b\\x5d-\\x7e]{1,511}$"}


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(schema_name: str, description: str = "OK") -> dict:
    return {"description": description, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}}}


def _body(schema_name: str) -> dict:
    return {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}}}


AUTH_ERRORS = {
    "401": _error("missing_api_key"),
    "403": _error("invalid_api_key"),
    "429": {**_error("rate_limited: too many wrong API keys from this address (or, on "
                     "/auth/init, too many flows started with this key)"),
            "headers": {"Retry-After": {"description": "Seconds until the limit resets.",
                                        "required": True,
                                        "schema": {"type": "integer", "minimum": 1}}}},
}

#: The /auth endpoints also check the key's scope.
FORBIDDEN = _error("invalid_api_key, or forbidden: the key is valid but its scope does not "
                   "cover this provider, this user or this operation (the message says which)")
SCOPED_ERRORS = {**AUTH_ERRORS, "403": FORBIDDEN}


def openapi_document(version: str, providers: list[str] | None = None) -> dict:
    """The document; ``providers`` (the installed ones) become the enum a caller picks from."""
    document = _document(version)
    provider = {"type": "string", "description": "An installed provider."}
    if providers:
        provider["enum"] = list(providers)
    document["components"]["schemas"] = {**SCHEMAS, "Provider": provider}
    _add_request_id(document)
    return document


def _add_request_id(document: dict) -> None:
    """Every operation takes an optional X-Request-ID and every answer returns one."""
    document["components"]["parameters"] = {"RequestId": {
        "name": "X-Request-ID", "in": "header", "required": False,
        "description": "Your id for this request, echoed back and logged: 1 to 64 of "
                       "A-Z a-z 0-9 . _ - (anything else is replaced by one made here).",
        "schema": {"type": "string"}}}
    document["components"]["headers"] = {"RequestId": {
        "description": "The request's id in the gateway's logs.", "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}}}
    header = {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}}
    for operations in document["paths"].values():
        for operation in operations.values():
            operation["parameters"] = [*operation.get("parameters", ()),
                                       {"$ref": "#/components/parameters/RequestId"}]
            operation["responses"] = {
                status: {**response, "headers": {**response.get("headers", {}), **header}}
                for status, response in operation["responses"].items()}


def _document(version: str) -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "authgateway", "version": version,
                 "description": "OAuth token gateway for MCP servers."},
        "security": [{"ApiKey": []}, {"Bearer": []}],
        "paths": {
            "/auth/init": {"post": {
                "summary": "Start an OAuth flow for a user",
                "requestBody": _body("InitRequest"),
                "responses": {"200": _json("InitResponse"),
                              "400": _error("invalid_request or unsupported_provider"),
                              "413": _error("invalid_request: body over 64 KiB"),
                              "503": _error("provider_not_configured"), **SCOPED_ERRORS},
            }},
            "/auth/callback/{provider}": {"get": {
                "summary": "Where the provider sends the person back (an HTML page)",
                "security": [],
                "parameters": [
                    {"name": "provider", "in": "path", "required": True, "schema": PROVIDER},
                    # state always; code on success, error (and error_description) on refusal.
                    *({"name": name, "in": "query", "required": name == "state",
                       "schema": {"type": "string", "minLength": 1}}
                      for name in ("state", "code", "iss", "error", "error_description")),
                ],
                "responses": {status: {"description": text,
                                       "content": {"text/html": {"schema": {"type": "string"}}}}
                              for status, text in (
                                  ("200", "Connected"), ("400", "Refused, or account_mismatch"),
                                  ("403", "email_mismatch"), ("404", "Unknown state"),
                                  ("410", "Expired"), ("500", "decryption_failed"),
                                  ("502", "The code exchange failed"))},
            }},
            "/auth/status/{session_id}": {"get": {
                "summary": "Poll a flow",
                "parameters": [{"name": "session_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": _json("StatusResponse"),
                              "404": _error("session_not_found: unknown, or started by "
                                            "another key whose flows this key may not see"),
                              **SCOPED_ERRORS},
            }},
            "/auth/token": {"post": {
                "summary": "A valid access token for a user",
                "requestBody": _body("TokenRequest"),
                "responses": {"200": _json("TokenResponse"),
                              "400": _error("invalid_request or unsupported_provider"),
                              "404": _error("not_authenticated"),
                              "401": _error("refresh_failed, or missing_api_key"),
                              "403": _error("insufficient_scope: the grant lacks scopes the "
                                            "call needs (missing_scopes); forbidden: the key's "
                                            "scope does not cover this provider, user or "
                                            "operation; or invalid_api_key"),
                              "413": _error("invalid_request: body over 64 KiB"),
                              "429": AUTH_ERRORS["429"],
                              "500": _error("decryption_failed"),
                              "502": _error("provider_unavailable or provider_misconfigured"),
                              "503": _error("provider_not_configured")},
            }},
            "/auth/providers/{user_email}": {"get": {
                "summary": "What a user has connected",
                "parameters": [{"name": "user_email", "in": "path", "required": True,
                                "schema": EMAIL}],
                "responses": {"200": _json("ProvidersResponse"),
                              "400": _error("invalid_request"),
                              "404": _error("not_found: a path that names no email at all"),
                              **SCOPED_ERRORS},
            }},
            "/auth/revoke": {"delete": {
                "summary": "Revoke at the provider and forget a user's credential",
                "requestBody": _body("RevokeRequest"),
                "responses": {"200": _json("RevokeResponse"),
                              "400": _error("invalid_request or unsupported_provider"),
                              "404": _error("not_authenticated"),
                              "413": _error("invalid_request: body over 64 KiB"),
                              "503": _error("provider_not_configured"), **SCOPED_ERRORS},
            }},
            "/health": {"get": {
                "summary": "Health for load balancers", "security": [],
                "responses": {"200": _json("Health"), "503": _json("Health", "Degraded")},
            }},
            "/metrics": {"get": {
                "summary": "Prometheus metrics of this process (the API key, or "
                           "AUTH_GATEWAY_METRICS_TOKEN as a Bearer token)",
                "responses": {"200": {"description": "The Prometheus text format",
                                      "content": {media: {"schema": {"type": "string"}}
                                                  for media in ("text/plain",
                                                                "application/openmetrics-text")}},
                              **AUTH_ERRORS},
            }},
            "/openapi.json": {"get": {
                "summary": "This document", "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1",
                                      "content": {"application/json": {"schema": {
                                          "type": "object"}}}}},
            }},
        },
        "components": {
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "Bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


SCHEMAS = {
    "Account": {
        "type": "object", "additionalProperties": True,
        "description": "What the provider says about the account the token belongs to, beside "
                       "the token: its own fields, as its plugin documents them (Slack: "
                       "team_id, team_name; Microsoft: tenant_id). Never a token or a secret. "
                       "Absent when the provider has none; updated when a refresh brings a "
                       "new one.",
        "examples": [{"team_id": "T0123ABCD", "team_name": "Example Inc"}]},
    "Error": {"type": "object", "required": ["detail"], "properties": {"detail": {
        "type": "object", "required": ["error", "message", "auth_required"],
        "properties": {"error": {"type": "string", "enum": ERROR_CODES},
                       "message": {"type": "string"},
                       "auth_required": {"type": "boolean"},
                       "retry_after": {"type": "integer", "minimum": 1,
                                       "description": "With rate_limited: as Retry-After."},
                       "missing_scopes": {"type": "array", "items": {"type": "string"},
                                          "description": "With insufficient_scope: the scopes "
                                                         "the call asked for that the grant "
                                                         "does not cover."},
                       "provider_display_name": {
                           "type": "string",
                           "description": "With auth_required on /auth/token: the provider's "
                                          "name for people (Google), for the sentence that "
                                          "sends the person to connect it."}}}}},
    "InitRequest": {"type": "object", "required": ["provider", "user_email"], "properties": {
        "provider": PROVIDER, "user_email": EMAIL,
        "scopes": {"type": "array", "items": SCOPE, "maxItems": 100}}},
    "InitResponse": {"type": "object", "required": ["auth_url", "session_id", "expires_at"],
                     "properties": {"auth_url": {"type": "string", "format": "uri"},
                                    "session_id": {"type": "string", "format": "uuid"},
                                    "expires_at": TIME}},
    "StatusResponse": {"type": "object", "required": ["status", "session_id", "user_email",
                                                      "provider"], "properties": {
        "status": {"type": "string", "enum": ["pending", "completed", "failed"]},
        "session_id": {"type": "string"}, "user_email": STORED_EMAIL, "provider": PROVIDER_NAME,
        "expires_at": TIME, "error": {"type": "string"}}},
    "TokenRequest": {"type": "object", "required": ["provider", "user_email"], "properties": {
        "provider": PROVIDER, "user_email": EMAIL,
        "min_valid_seconds": {"type": "number", "minimum": 0, "maximum": 86400,
                              "default": 300},
        "force_refresh": {"type": "boolean", "default": False},
        "scopes": {"type": "array", "items": SCOPE, "maxItems": 100,
                   "description": "The scopes this call needs; compared with the granted "
                                  "ones as exact strings, or covered by a scope the provider "
                                  "declares implies them. Any missing: 403 insufficient_scope, "
                                  "and nothing is asked of the provider."}}},
    "TokenResponse": {"type": "object", "required": ["access_token", "token_type", "expires_at",
                                                     "scopes"], "properties": {
        "access_token": {"type": "string"}, "token_type": {"type": "string", "const": "Bearer"},
        "expires_at": {"type": ["string", "null"], "format": "date-time"},
        "scopes": {"type": "array", "items": {"type": "string"}}, "account": ACCOUNT}},
    "ProvidersResponse": {"type": "object", "required": ["user_email", "providers"],
                          "properties": {"user_email": STORED_EMAIL, "providers": {
                              "type": "array", "items": {
                                  "type": "object",
                                  "required": ["provider", "scopes", "status"],
                                  "properties": {
                                      "provider": PROVIDER_NAME,
                                      "scopes": {"type": "array", "items": {"type": "string"}},
                                      "status": {"type": "string",
                                                 "enum": ["active", "needs_reauth"]},
                                      "authenticated_at": TIME,
                                      "token_expires_at": {"type": ["string", "null"],
                                                           "format": "date-time"},
                                      "account": ACCOUNT}}}}},
    "RevokeRequest": {"type": "object", "required": ["provider", "user_email"],
                      "properties": {"provider": PROVIDER, "user_email": EMAIL}},
    "RevokeResponse": {"type": "object", "required": ["success", "message", "provider_revoked"],
                       "properties": {"success": {"type": "boolean"},
                                      "message": {"type": "string"},
                                      "provider_revoked": {"type": "boolean"}}},
    "Health": {"type": "object", "required": ["status", "database", "encryption", "version"],
               "properties": {"status": {"type": "string", "enum": ["healthy", "degraded"]},
                              "database": {"type": "string"}, "encryption": {"type": "string"},
                              "version": {"type": "string"}}},
}
