"""The Google plugin as an installed distribution: found by its entry point, configurable."""

from __future__ import annotations

import importlib.metadata
from urllib.parse import parse_qs, urlsplit

import authgateway_google
from cryptography.fernet import Fernet

from authgateway import create_app


def app_with(tmp_path, **settings):
    return create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/g.sqlite",
                       "ENCRYPTION_KEY": Fernet.generate_key().decode(),
                       "LOAD_PLUGINS": True, **settings})


def test_the_distribution_registers_its_entry_point():
    points = importlib.metadata.entry_points(group="authgateway")
    google = [p for p in points if p.name == "google"]
    assert len(google) == 1 and google[0].dist.name == "authgateway-google"
    assert google[0].load() is authgateway_google


def test_the_gateway_finds_it_by_entry_point(tmp_path):
    providers = app_with(tmp_path).extensions["authgateway"].providers
    assert "google" in providers.names()
    assert providers.owner("google") == "google"


def test_the_defaults_are_googles_real_endpoints(tmp_path):
    info = app_with(tmp_path).extensions["authgateway"].providers.info("google")
    assert info.authorize_url == "https://accounts.google.com/o/oauth2/v2/auth"
    assert info.token_url == "https://oauth2.googleapis.com/token"
    assert info.revoke_url == "https://oauth2.googleapis.com/revoke"
    assert info.jwks_url == "https://www.googleapis.com/oauth2/v3/certs"
    assert info.issuer == "https://accounts.google.com"
    assert set(info.accepted_id_token_issuers) == {"https://accounts.google.com",
                                                   "accounts.google.com"}


def test_every_endpoint_is_overridable(tmp_path):
    overrides = {f"GOOGLE_{key}": f"http://127.0.0.1:9/{key.lower()}"
                 for key in authgateway_google.ENDPOINTS}
    info = app_with(tmp_path, GOOGLE_ISSUER="http://127.0.0.1:9", **overrides)
    info = info.extensions["authgateway"].providers.info("google")
    assert info.token_url == "http://127.0.0.1:9/token_url"
    assert info.userinfo_url == "http://127.0.0.1:9/userinfo_url"
    assert info.issuer == "http://127.0.0.1:9"
    assert info.accepted_id_token_issuers[0] == "http://127.0.0.1:9"


def test_the_authorize_url_carries_googles_parameters(tmp_path):
    app = app_with(tmp_path, GOOGLE_CLIENT_ID="cid", GOOGLE_CLIENT_SECRET="s",
                   GOOGLE_REDIRECT_URI="https://gw.example/auth/callback/google")
    with app.app_context():
        url = app.extensions["authgateway"].providers.authorization_url(
            "google", state="st", code_challenge="ch", scopes=["openid", "email"],
            login_hint="ada@example.com")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query == {
        "client_id": "cid", "redirect_uri": "https://gw.example/auth/callback/google",
        "response_type": "code", "scope": "openid email", "state": "st",
        "code_challenge": "ch", "code_challenge_method": "S256", "access_type": "offline",
        "prompt": "consent", "include_granted_scopes": "true", "login_hint": "ada@example.com",
    }
