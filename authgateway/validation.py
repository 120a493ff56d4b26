"""Reading a request body: a JSON object whose fields have the types API.md names."""

from __future__ import annotations

import re

from flask import request

from .errors import InvalidRequestError

# Not RFC 5322 in full: one @, no spaces or control characters, a dot in the domain.
EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$")
MAX_EMAIL_LENGTH = 320


def json_body() -> dict:
    body = request.get_json(silent=True, force=True) if request.content_length != 0 else None
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    return body


def field(body: dict, name: str, kind: type, *, required: bool = True, default=None):
    if name not in body or body[name] is None:
        if required:
            raise InvalidRequestError(f"The field '{name}' is required.")
        return default
    value = body[name]
    # bool is an int in Python; a JSON true is not a number of seconds.
    if not isinstance(value, kind) or (kind in (int, float, (int, float)) and isinstance(value, bool)):
        raise InvalidRequestError(f"The field '{name}' has the wrong type.")
    return value


def email(value: str, name: str = "user_email") -> str:
    normalised = value.strip().lower()
    if len(normalised) > MAX_EMAIL_LENGTH or not EMAIL.match(normalised):
        raise InvalidRequestError(f"The field '{name}' is not a valid email address.")
    return normalised


def scopes(value) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(scope, str) and scope and not any(c.isspace() for c in scope) and len(scope) < 512
        for scope in value
    ):
        raise InvalidRequestError("The field 'scopes' must be a list of scope strings.")
    if len(value) > 100:
        raise InvalidRequestError("The field 'scopes' lists too many scopes.")
    return value

