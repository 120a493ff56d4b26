"""Reading a request body: a JSON object whose fields have the types API.md names."""

from __future__ import annotations

import json
import re
import unicodedata

from flask import request

from . import emails
from .errors import InvalidRequestError, PayloadTooLargeError

# Not RFC 5322 in full: one @, no spaces or control characters, a dot in the domain.
EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$")
MAX_EMAIL_LENGTH = 320
#: RFC 6749 section 3.3: printable ASCII but space, '"' and '\\'.
SCOPE = re.compile(r'[\x21\x23-\x5b\x5d-\x7e]{1,511}')


def json_body() -> dict:
    current = request._get_current_object()  # once, not per attribute (context.gateway)
    if current.content_length is None:
        data = current.get_data()
        # A chunked body is cut at the limit, not refused: refuse it when it reached the limit.
        if current.max_content_length is not None and len(data) >= current.max_content_length:
            raise PayloadTooLargeError()
    else:
        # Exactly the declared length (the stream refuses more than MAX_CONTENT_LENGTH with
        # 413): get_data() reads in 64 KiB chunks, each into a new zeroed 64 KiB buffer, for
        # the small body of every /auth/token call.
        data = current.stream.read(current.content_length)
    try:
        body = json.loads(data) if data else None
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser's stack
        body = None
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
    numeric = kind in (int, float, (int, float))
    if not isinstance(value, kind) or (numeric and isinstance(value, bool)):
        raise InvalidRequestError(f"The field '{name}' has the wrong type.")
    return value


def email(value: str, name: str = "user_email") -> str:
    normalised = emails.normalise(value)
    if normalised is None:
        raise InvalidRequestError(
            f"The field '{name}' is not a valid email address: it holds a character that "
            "changes case into an ASCII letter (such as the Kelvin sign); write that letter.")
    if (len(normalised) > MAX_EMAIL_LENGTH or not EMAIL.match(normalised)
            or not normalised.isascii() and any(unicodedata.category(c)[0] == "C"
                                                for c in normalised)):
        # Category C: control, format (bidi overrides, zero-width), surrogate, unassigned.
        raise InvalidRequestError(f"The field '{name}' is not a valid email address.")
    return normalised


def scopes(value) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(scope, str) and SCOPE.fullmatch(scope) for scope in value
    ):
        raise InvalidRequestError("The field 'scopes' must be a list of scope strings.")
    if len(value) > 100:
        raise InvalidRequestError("The field 'scopes' lists too many scopes.")
    return value

