"""Logging: plain text or one JSON object per line, and a request id on every request.

``LOG_FORMAT`` (or ``AUTH_GATEWAY_LOG_FORMAT``) is ``text`` (the default) or ``json``. Every
record carries ``request_id``: the caller's ``X-Request-ID`` when it is a short token, else one
made here; the response returns it in ``X-Request-ID`` so a caller can quote it to an operator.
Nothing here logs a query string, a header or a body: those are where tokens travel.
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

from flask import Flask, g, has_request_context, request
from flask.logging import default_handler

from .errors import ConfigError

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
#: What an incoming X-Request-ID may be: short, and nothing that could forge a log line.
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
REQUEST_ID_HEADER = "X-Request-ID"
#: Fields a log call may add with ``extra=`` that the JSON lines carry.
EXTRA_FIELDS = ("method", "path", "status", "duration_ms", "remote_addr")

access_log = logging.getLogger("authgateway.access")


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
    app.before_request(_start_request)
    app.after_request(_finish_request)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record: the current request's, or ``-`` outside one."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = (g.get("request_id", "-") if has_request_context() else "-")
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
    handler.setFormatter(JsonFormatter() if log_format == "json" else
                         logging.Formatter(TEXT_FORMAT))
    if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
        handler.addFilter(RequestIdFilter())
    if not ours:
        root.addHandler(handler)


class _RequestIds:
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


_request_ids = _RequestIds()


def _start_request() -> None:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = incoming if REQUEST_ID.fullmatch(incoming) else _request_ids.next()
    g.request_started = time.perf_counter()


def _finish_request(response):
    request_id = g.get("request_id")
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
    if access_log.isEnabledFor(logging.DEBUG) and "request_started" in g:
        # The path only: the query string of a callback carries the authorization code.
        duration_ms = round((time.perf_counter() - g.request_started) * 1000, 2)
        access_log.debug("%s %s %s %.2fms", request.method, request.path, response.status_code,
                         duration_ms, extra={"method": request.method, "path": request.path,
                                             "status": response.status_code,
                                             "duration_ms": duration_ms,
                                             "remote_addr": request.remote_addr})
    return response
