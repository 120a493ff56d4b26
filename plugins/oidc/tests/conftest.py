"""Fixtures for the OIDC plugin: an app on SQLite, and a minimal OpenID Connect issuer on
loopback whose failures a test can choose.

The issuer is not a conformance peer (tests/test_interop_oidc.py uses a real one); it exists to
make discovery outages, a foreign issuer, id_tokens without email or signed by an unknown key
happen on demand, and to count what the gateway asked for.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import authgateway_oidc
import pytest
from cryptography.fernet import Fernet
from joserfc import jwt
from joserfc.jwk import RSAKey

from authgateway import create_app
from authgateway.extensions import db

DISCOVERY_PATH = "/.well-known/openid-configuration"


def _key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": secrets.token_hex(4), "use": "sig",
                                                 "alg": "RS256"}, private=True)


class FakeIssuer:
    def __init__(self, *, email: str = "ada@example.com", advertise_iss: bool = True) -> None:
        self.email = email
        self.advertise_iss = advertise_iss
        self.discovery_status = 200  # anything else: the discovery endpoint answers that
        self.token_status = 200
        self.claimed_issuer: str | None = None  # a document naming another issuer
        self.email_in_id_token = True
        self.userinfo_sub: str | None = None  # None: the id_token's subject
        self.sign_with_unknown_key = False
        self.hits: dict[str, int] = {}
        self.client_auth: list[str] = []  # how each token request authenticated
        self._key, self._stranger = _key(), _key()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.issuer = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeIssuer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def document(self) -> dict:
        doc = {
            "issuer": self.claimed_issuer or self.issuer,
            "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token",
            "userinfo_endpoint": self.issuer + "/userinfo",
            "jwks_uri": self.issuer + "/jwks",
            "revocation_endpoint": self.issuer + "/revoke",
        }
        if self.advertise_iss:
            doc["authorization_response_iss_parameter_supported"] = True
        return doc

    def id_token(self, client_id: str) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": client_id, "sub": "sub-" + self.email,
                  "iat": now, "exp": now + 300}
        if self.email_in_id_token:
            claims.update(email=self.email, email_verified=True)
        key = self._stranger if self.sign_with_unknown_key else self._key
        return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                path = urlsplit(self.path).path
                fake.hits[path] = fake.hits.get(path, 0) + 1
                if path == DISCOVERY_PATH:
                    if fake.discovery_status != 200:
                        return self._send(fake.discovery_status, {"error": "unavailable"})
                    return self._send(200, fake.document())
                if path == "/jwks":
                    return self._send(200, {"keys": [fake._key.as_dict(private=False)]})
                if path == "/userinfo":
                    sub = fake.userinfo_sub or "sub-" + fake.email
                    return self._send(200, {"sub": sub, "email": fake.email,
                                            "email_verified": True})
                self._send(404, {"error": "not_found"})

            def do_POST(self):
                path = urlsplit(self.path).path
                fake.hits[path] = fake.hits.get(path, 0) + 1
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if path == "/revoke":
                    return self._send(200, {})
                if path != "/token":
                    return self._send(404, {"error": "not_found"})
                if fake.token_status != 200:
                    return self._send(fake.token_status, {"error": "temporarily_unavailable"})
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    client_id = base64.b64decode(auth[6:]).decode().split(":", 1)[0]
                    fake.client_auth.append("client_secret_basic")
                else:
                    client_id = form.get("client_id", "")
                    fake.client_auth.append("client_secret_post" if "client_secret" in form
                                            else "none")
                self._send(200, {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
                                 "expires_in": 300, "refresh_token": secrets.token_urlsafe(16),
                                 "scope": "openid email", "id_token": fake.id_token(client_id)})

        return Handler


API_KEY = "oidc-plugin-test-key"
HEADERS = {"X-API-Key": API_KEY}


@pytest.fixture
def issuer():
    with FakeIssuer() as fake:
        yield fake


@pytest.fixture
def make_app(tmp_path):
    """An app with only this plugin, on a migrated SQLite database of its own."""
    apps = []

    def make(**settings):
        config = {"DATABASE_URL": f"sqlite:///{tmp_path}/oidc-{len(apps)}.sqlite",
                  "ENCRYPTION_KEY": Fernet.generate_key().decode(), "API_KEY": API_KEY,
                  "LOAD_PLUGINS": False, "PLUGINS": [authgateway_oidc], "PROVIDER_TIMEOUT": 2,
                  **settings}
        app = create_app(config)
        with app.app_context():
            from flask_migrate import upgrade

            upgrade()
        apps.append(app)
        return app

    yield make
    for app in apps:
        with app.app_context():
            db.engine.dispose()
