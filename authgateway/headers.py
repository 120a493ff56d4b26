"""The security headers every answer carries, whoever makes it: Flask's answers get them from
the WSGI middleware below, waitress's own error answers from authgateway.serving."""

from __future__ import annotations

#: On every answer, not only pages: a JSON answer or a stylesheet opened in a browser must not
#: run anything, be framed or be cached either, and one rule has no gap to forget.
SECURITY_HEADERS = [
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy",
     "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
     "form-action 'none'; frame-ancestors 'none'"),
    ("X-Frame-Options", "DENY"),
]
_SECURITY_HEADER_NAMES = frozenset(name.lower() for name, _value in SECURITY_HEADERS)


class SecurityHeaders:
    """WSGI middleware that puts SECURITY_HEADERS on every answer, replacing any the answer
    had (a static file's Cache-Control). Below Flask rather than an after_request hook: it
    also covers what no hook sees, and costs a list, not five header assignments per request
    on the hot path."""

    def __init__(self, wsgi_app) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        def start_hardened(status, headers, exc_info=None):
            headers = [header for header in headers
                       if header[0].lower() not in _SECURITY_HEADER_NAMES]
            headers.extend(SECURITY_HEADERS)
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start_hardened)
