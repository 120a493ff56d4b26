"""Logging: plain text or one JSON object per line, and a request id on every request.

``LOG_FORMAT`` (or ``AUTH_GATEWAY_LOG_FORMAT``) is ``text`` (the default) or ``json``. Every
record carries ``request_id``: the caller's ``X-Request-ID`` when it is a short token, else one
made here; the response returns it in ``X-Request-ID`` so a caller can quote it to an operator.
Nothing here logs a query string, a header or a body: those are where tokens travel.

What a request carries (its path, a user's email, a provider's error text) reaches log
messages. In text logs every control character of a message is written as an escape (``\n``,
``\x1b``), so no request can start a line of its own or drive a terminal; JSON lines escape
them already.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import sys
import time
from datetime import UTC, datetime

from flask import Flask, has_request_context, request
from flask.logging import default_handler

from .errors import ConfigError

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
#: What an incoming X-Request-ID may be: short, and nothing that could forge a log line.
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
REQUEST_ID_HEADER = "X-Request-ID"
#: Fields a log call may add with ``extra=`` that the JSON lines carry.
EXTRA_FIELDS = ("method", "path", "status", "duration_ms", "remote_addr")
#: Where RequestIds leaves the request's id and its start (time.perf_counter) in the environ.
ENVIRON_REQUEST_ID = "authgateway.request_id"
ENVIRON_STARTED = "authgateway.request_started"

access_log = logging.getLogger("authgateway.access")

#: C0 and C1 controls, DEL, and the characters that end a line or turn text around for a
#: terminal or an editor (line and paragraph separators, bidi marks, overrides and isolates).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def init_app(app: Flask) -> None:
    """Set the level, install the handler (unless logging is configured already), and give
    every request an id."""
    log_format = str(app.config.get("LOG_FORMAT") or "text").strip().lower()
    if log_format not in FORMATS:
        raise ConfigError(f"LOG_FORMAT must be text or json, not {app.config['LOG_FORMAT']!r}.")
    app.config["LOG_FORMAT"] = log_format
    level = getattr(logging, app.config["LOG_LEVEL"])
    _install_handler(log_format)
    # Flask's own handler on app.logger ("authgateway") would print every line a second time.
    app.logger.removeHandler(default_handler)
    app.logger.setLevel(level)
    app.wsgi_app = RequestIds(app.wsgi_app)
    app.after_request(_log_access)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record: the current request's; outside one, the id the
    log call gave in ``extra``, else ``-``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = (request.environ.get(ENVIRON_REQUEST_ID, "-")
                             if has_request_context() else getattr(record, "request_id", "-"))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback is one string field, never extra lines."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        entry.update((name, getattr(record, name)) for name in EXTRA_FIELDS
                     if hasattr(record, name))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


def escape_controls(text: str) -> str:
    """``text`` with every character of ``_UNSAFE`` written as its escape: one line, inert."""
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match) -> str:
    char = match.group()
    if char in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, the message's control characters escaped (a traceback stays as it is)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        record.message = escape_controls(message)
        try:
            return super().formatMessage(record)
        finally:
            record.message = message


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time, as test runners swap it."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _install_handler(log_format: str) -> None:
    """One handler on the root logger, ours; an application or a server that configured
    logging itself keeps its own handlers (and gets ``request_id`` only through ours)."""
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _StderrHandler)]
    if not ours and root.handlers:
        return
    handler = ours[0] if ours else _StderrHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
        handler.addFilter(RequestIdFilter())
    if not ours:
        root.addHandler(handler)


class _IdSource:
    """Ids unique across processes and time without a system call per request: a random
    prefix per process, then a counter. (uuid4 reads the kernel's random source on every call,
    and that call hands the interpreter lock to another thread: on the hot path, under load,
    each hand-off costs more than the rest of the id.) They only need to be unique, not
    secret: a caller may send its own."""

    def __init__(self) -> None:
        self._renew()
        os.register_at_fork(after_in_child=self._renew)  # a forked worker gets its own prefix

    def _renew(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


_ids = _IdSource()


def new_request_id() -> str:
    """An id for an answer no request id was made for (one waitress makes itself)."""
    return _ids.next()


class RequestIds:
    """WSGI middleware that gives every request its id and start time (in the environ, for
    the logs and the metrics) and returns the id in X-Request-ID.

    Below Flask rather than a before and an after hook: two hooks, their context lookups and
    a header assignment on the response cost several times this on the hot path, and the
    header also reaches answers no hook sees."""

    def __init__(self, wsgi_app) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        incoming = environ.get("HTTP_X_REQUEST_ID", "")  # what request.headers would read
        request_id = incoming if REQUEST_ID.fullmatch(incoming) else _ids.next()
        environ[ENVIRON_REQUEST_ID] = request_id
        environ[ENVIRON_STARTED] = time.perf_counter()

        def start_with_id(status, headers, exc_info=None):
            headers.append((REQUEST_ID_HEADER, request_id))
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start_with_id)


def _log_access(response):
    started = request.environ.get(ENVIRON_STARTED) if access_log.isEnabledFor(
        logging.DEBUG) else None
    if started is not None:
        # The path only: the query string of a callback carries the authorization code.
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        access_log.debug("%s %s %s %.2fms", request.method, request.path, response.status_code,
                         duration_ms, extra={"method": request.method, "path": request.path,
                                             "status": response.status_code,
                                             "duration_ms": duration_ms,
                                             "remote_addr": request.remote_addr})
    return response
