"""The provider contract: loading, the facade, routing each provider to its own plugin, and a
plugin that overrides one hook."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import authgateway_google
import pytest
import requests
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from authgateway import (
    IdentityError,
    ProviderInfo,
    ProviderMisconfigured,
    ProviderUnavailable,
    TokenSet,
    create_app,
    hookimpl,
    hookspecs,
)
from authgateway.errors import ConfigError
from authgateway.providers import InvalidGrant
from tests.conftest import base_config
from tests.flow import connect, token

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("authgateway_"))


def test_every_hook_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for hook in HOOKS:
        assert hook in readme, f"{hook} is not documented in README.md"


def test_every_hook_has_a_test():
    """Datasette's habit: adding a hook without a test_hook_<name> below fails here."""
    for hook in HOOKS:
        name = "test_hook_" + hook.removeprefix("authgateway_")
        assert callable(globals().get(name)), f"{hook} has no {name}"


class SecondGoogle:
    @hookimpl
    def authgateway_register_providers(self, settings):
        return [ProviderInfo(name="google", display_name="Also Google",
                             authorize_url="https://x", token_url="https://x/token")]


def test_two_plugins_registering_one_name_stop_startup(tmp_path):
    config = base_config(f"sqlite:///{tmp_path}/p.sqlite")
    config["PLUGINS"] = [*config["PLUGINS"], SecondGoogle()]
    with pytest.raises(ConfigError, match="Two plugins register the provider 'google'"):
        create_app(config)


def test_a_blocked_plugin_is_not_loaded(tmp_path):
    app = create_app(base_config(f"sqlite:///{tmp_path}/p.sqlite", LOAD_PLUGINS=True,
                                 PLUGINS=[], BLOCK_PLUGINS="google"))
    assert "google" not in app.extensions["authgateway"].providers.names()


# The default plugin's answer to each hook, against the fake Google over HTTP.


@pytest.fixture
def facade(app):
    with app.app_context():
        yield app.extensions["authgateway"].providers


def a_code(facade, google, verifier="v" * 64):
    url = facade.authorization_url("google", state="s" * 30,
                                   code_challenge=create_s256_code_challenge(verifier),
                                   scopes=["openid", "email"], login_hint="ada@example.com")
    location = requests.get(url, allow_redirects=False, timeout=10).headers["Location"]
    return parse_qs(urlsplit(location).query)["code"][0], verifier


def test_hook_register_providers(app):
    results = app.extensions["authgateway"].providers.pm.hook.authgateway_register_providers(
        settings=app.extensions["authgateway"].settings)
    assert [info.name for infos in results for info in infos] == ["google"]


class HeardEvents:
    def __init__(self) -> None:
        self.events = []

    @hookimpl
    def authgateway_event(self, event):
        self.events.append(event)


class BrokenListener:
    @hookimpl
    def authgateway_event(self, event):
        raise RuntimeError("a bug in a listening plugin")


def test_hook_event(make_app, caplog):
    """Every plugin hears the event once the change committed; one that raises is logged, and
    neither the others nor the person's request notice."""
    heard = HeardEvents()
    app = make_app(PLUGINS=[authgateway_google, BrokenListener(), heard])
    connect(app.test_client())
    assert [(e.type, e.provider, e.user_email, e.api_key) for e in heard.events] == [
        ("credential.connected", "google", "ada@example.com", "bootstrap")]
    assert "failed in authgateway_event for credential.connected" in caplog.text


def test_hook_authorization_url(facade, google):
    code, _ = a_code(facade, google)
    assert code and google.last_authorize_params["code_challenge_method"] == "S256"


def test_hook_exchange_code(facade, google):
    code, verifier = a_code(facade, google)
    tokens = facade.exchange_code("google", code=code, code_verifier=verifier)
    assert tokens.refresh_token and tokens.id_token and tokens.expires_in > 0
    assert "openid" in tokens.scopes
    assert "refresh_token" not in repr(tokens) and tokens.access_token not in repr(tokens)
    with pytest.raises(InvalidGrant):  # a code is single use
        facade.exchange_code("google", code=code, code_verifier=verifier)


def test_hook_exchange_code_checks_pkce_at_the_provider(facade, google):
    code, _ = a_code(facade, google)
    with pytest.raises(InvalidGrant):
        facade.exchange_code("google", code=code, code_verifier="w" * 64)


def test_hook_refresh_token(facade, google):
    code, verifier = a_code(facade, google)
    tokens = facade.exchange_code("google", code=code, code_verifier=verifier)
    fresh = facade.refresh("google", refresh_token=tokens.refresh_token)
    assert fresh.access_token != tokens.access_token and google.token_is_live(fresh.access_token)
    assert google.refresh_requests_with_scope == 0  # Google asks for no scope on refresh
    for status, error, raised in [(400, "invalid_grant", InvalidGrant),
                                  (500, None, ProviderUnavailable),
                                  (429, None, ProviderUnavailable),
                                  (401, "invalid_client", ProviderMisconfigured),
                                  (400, "unauthorized_client", ProviderMisconfigured)]:
        google.fail_next(status, error)
        with pytest.raises(raised):
            facade.refresh("google", refresh_token=tokens.refresh_token)


def test_hook_revoke_token(facade, google):
    code, verifier = a_code(facade, google)
    tokens = facade.exchange_code("google", code=code, code_verifier=verifier)
    assert facade.revoke("google", token=tokens.refresh_token, token_type_hint="refresh_token")
    # Google answers 400 invalid_token for a token that is already dead: revoked either way.
    assert facade.revoke("google", token=tokens.refresh_token, token_type_hint="refresh_token")
    google.stop()
    assert not facade.revoke("google", token="t", token_type_hint="access_token")


def test_hook_fetch_identity(facade, google):
    code, verifier = a_code(facade, google)
    tokens = facade.exchange_code("google", code=code, code_verifier=verifier)
    identity = facade.identity("google", tokens=tokens)
    assert (identity.email, identity.email_verified) == ("ada@example.com", True)
    from_userinfo = facade.identity("google", tokens=TokenSet(access_token=tokens.access_token))
    assert from_userinfo == identity
    forged = tokens.id_token[:-4] + ("AAAA" if not tokens.id_token.endswith("AAAA") else "BBBB")
    with pytest.raises(IdentityError):
        facade.identity("google", tokens=TokenSet(access_token="x", id_token=forged))



class Acme:
    """A third-party plugin: it registers its own provider (served by the fake Google) and
    overrides only authgateway_refresh_token; the default plugin does the rest."""

    def __init__(self, outcome):
        self.outcome, self.calls = outcome, 0

    @hookimpl
    def authgateway_register_providers(self, settings):
        google = authgateway_google.authgateway_register_providers(settings)[0]
        return [replace(google, name="acme", display_name="Acme")]

    @hookimpl
    def authgateway_refresh_token(self, provider, config, refresh_token):
        self.calls += 1
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def acme_app(make_app, google, *plugins):
    """An app with the Google plugin and ``plugins``, Acme's settings naming the fake Google."""
    redirect_uri = "http://localhost/auth/callback/acme"
    settings = {key.replace("GOOGLE_", "ACME_"): value for key, value in google.settings().items()}
    app = make_app(PLUGINS=[authgateway_google, *plugins], ACME_REDIRECT_URI=redirect_uri,
                   **settings)
    google.redirect_uris.append(redirect_uri)
    return app


def test_a_plugin_overrides_one_hook_and_the_default_does_the_rest(make_app, google):
    plugin = Acme(TokenSet(access_token="from-the-plugin", expires_in=3600))
    client = acme_app(make_app, google, plugin).test_client()
    connect(client, provider="acme")  # authorization URL, code exchange, identity: the default
    answer = token(client, provider="acme", force_refresh=True)
    assert answer.get_json()["access_token"] == "from-the-plugin"
    assert plugin.calls == 1 and google.refresh_count == 0 and google.exchange_count == 1


class AnswersForEveryone:
    """A plugin that answers every refresh without looking at the provider's name."""

    def __init__(self):
        self.calls = 0

    @hookimpl
    def authgateway_register_providers(self, settings):
        return []

    @hookimpl(tryfirst=True)
    def authgateway_refresh_token(self, provider, config, refresh_token):
        self.calls += 1
        return TokenSet(access_token="not-yours", expires_in=3600)


def test_a_plugin_cannot_answer_for_another_plugins_provider(make_app, google):
    intruder = AnswersForEveryone()
    acme = Acme(TokenSet(access_token="from-acme", expires_in=3600))
    client = acme_app(make_app, google, intruder, acme).test_client()
    connect(client)
    connect(client, provider="acme")
    served = token(client, force_refresh=True).get_json()["access_token"]
    assert served != "not-yours" and google.token_is_live(served) and google.refresh_count == 1
    assert token(client, provider="acme", force_refresh=True).get_json()["access_token"] \
        == "from-acme"
    assert intruder.calls == 0 and acme.calls == 1


def test_a_crashing_plugin_is_transient_not_a_dead_grant(make_app, google):
    client = acme_app(make_app, google, Acme(RuntimeError("bug in a plugin"))).test_client()
    connect(client, provider="acme")
    answer = token(client, provider="acme", force_refresh=True)
    assert answer.status_code == 502
    assert answer.get_json()["detail"]["error"] == "provider_unavailable"
    assert "bug in a plugin" not in answer.get_data(as_text=True)


def test_a_plugin_may_classify_its_own_errors(make_app, google):
    client = acme_app(make_app, google, Acme(InvalidGrant("dead"))).test_client()
    connect(client, provider="acme")
    assert token(client, provider="acme", force_refresh=True).status_code == 401


def test_revocation_goes_through_authgateway_revoke_token(client, google):
    connect(client)
    client.delete("/auth/revoke", json={"provider": "google", "user_email": "ada@example.com"},
                  headers={"X-API-Key": "test-bootstrap-api-key"})
    assert len(google.revoked) == 1
