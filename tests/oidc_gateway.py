"""The gateway in front of the real OpenID Connect peer, for the interop and browser tests.

The peer must know the gateway's redirect URIs before it starts, and the gateway's settings name
the peer's issuer, so a module binds the gateway's port first (``GatewayServer``), starts the peer
for it, and then each test serves its own app on that port (``GatewayServer.serve``).
"""

from __future__ import annotations

import threading

import authgateway_google
import authgateway_oidc
import pytest
from waitress.server import create_server

from tests.conftest import LiveGateway, in_ci
from tests.oidc_peer import OIDCPeer, node_available

#: The generic provider's name in these tests: its settings are PEER_ISSUER and friends.
PROVIDER = "peer"
DISPLAY_NAME = "Example Identity"
CLIENT_SECRETS = {
    "client_secret_basic": "basic-secret-0123456789",
    "client_secret_post": "post-secret-0123456789",
}
GOOGLE_CLIENT = ("gw-google", "google-secret-0123456789")


def require(reason: str | None) -> None:
    """Skip with the reason outside CI; in CI a missing tool fails the run."""
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


class GatewayServer:
    """waitress on a free loopback port, serving whichever app the current test built."""

    def __init__(self) -> None:
        self._app = None
        self._stopping = threading.Event()
        self._server = create_server(self._dispatch, host="127.0.0.1", port=0, threads=8)
        self.url = f"http://127.0.0.1:{self._server.effective_port}"
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def callback(self, provider: str) -> str:
        return f"{self.url}/auth/callback/{provider}"

    def serve(self, app) -> LiveGateway:
        self._app = app
        return LiveGateway(self.url, app)

    def close(self) -> None:
        self._stopping.set()
        self._server.close()
        self._thread.join(timeout=5)

    def _dispatch(self, environ, start_response):
        return self._app(environ, start_response)

    def _run(self) -> None:
        try:
            self._server.run()
        except (OSError, ValueError):
            # Closing the socket under waitress's select loop is how it stops from outside.
            if not self._stopping.is_set():
                raise


def start_peer(server: GatewayServer, **options) -> OIDCPeer:
    """The peer, with one client per authentication method for the generic provider and a
    client_secret_post one for the Google plugin (which authenticates that way)."""
    require(node_available())
    clients = [
        {"client_id": f"gw-{method}", "client_secret": secret,
         "redirect_uris": [server.callback(PROVIDER)], "token_endpoint_auth_method": method}
        for method, secret in CLIENT_SECRETS.items()
    ]
    clients.append({"client_id": GOOGLE_CLIENT[0], "client_secret": GOOGLE_CLIENT[1],
                    "redirect_uris": [server.callback("google")],
                    "token_endpoint_auth_method": "client_secret_post"})
    return OIDCPeer(clients, **options).start()


def oidc_settings(peer: OIDCPeer, server: GatewayServer,
                  method: str = "client_secret_basic") -> dict:
    """The gateway's settings for the peer through the generic plugin, as an operator writes
    them; ``offline_access`` with ``prompt=consent`` is how this peer issues refresh tokens."""
    return {
        "PLUGINS": [authgateway_oidc, authgateway_google],
        "OIDC_PROVIDERS": PROVIDER,
        "PEER_ISSUER": peer.issuer,
        "PEER_DISPLAY_NAME": DISPLAY_NAME,
        "PEER_CLIENT_ID": f"gw-{method}",
        "PEER_CLIENT_SECRET": CLIENT_SECRETS[method],
        "PEER_REDIRECT_URI": server.callback(PROVIDER),
        "PEER_CLIENT_AUTH_METHOD": method,
        "PEER_SCOPES": "openid email offline_access",
        "PEER_EXTRA_AUTHORIZE_PARAMS": "prompt=consent",
    }
