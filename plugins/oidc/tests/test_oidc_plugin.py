"""The generic OIDC plugin: settings in, a discovered provider out, and the core's discovery,
JWKS and RFC 9207 behaviour around it."""

from __future__ import annotations

import importlib.metadata
import socket
from urllib.parse import parse_qs, urlencode, urlsplit

import authgateway_oidc
import pytest
from cryptography.fernet import Fernet

from authgateway import ProviderInfo, create_app
from authgateway.config import Settings
from authgateway.errors import ConfigError

from .conftest import HEADERS

EMAIL = "ada@example.com"


def settings_for(issuer: str, name: str = "acme", **extra) -> dict:
    prefix = name.upper()
    return {"OIDC_PROVIDERS": name, f"{prefix}_ISSUER": issuer,
            f"{prefix}_CLIENT_ID": "gw-client", f"{prefix}_CLIENT_SECRET": "gw-secret",
            f"{prefix}_REDIRECT_URI": f"https://gw.example/auth/callback/{name}", **extra}


def declared(**settings):
    return authgateway_oidc.authgateway_register_providers(settings=Settings(settings, {}))


def init(client, provider: str = "acme"):
    return client.post("/auth/init", json={"provider": provider, "user_email": EMAIL},
                       headers=HEADERS)


def query(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def callback(client, flow: dict, provider: str = "acme", **params):
    state = query(flow["auth_url"])["state"]
    return client.get(f"/auth/callback/{provider}?" + urlencode({"state": state, **params}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the distribution and its settings ---------------------------------------------------------


def test_the_distribution_registers_its_entry_point():
    points = [p for p in importlib.metadata.entry_points(group="authgateway") if p.name == "oidc"]
    assert len(points) == 1 and points[0].dist.name == "authgateway-oidc"
    assert points[0].load() is authgateway_oidc


def test_the_gateway_finds_it_by_entry_point(tmp_path):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/e.sqlite",
                      "ENCRYPTION_KEY": Fernet.generate_key().decode(), "LOAD_PLUGINS": True,
                      **settings_for("https://idp.example.com")})
    providers = app.extensions["authgateway"].providers
    assert providers.owner("acme") == "oidc"


def test_nothing_is_declared_until_a_provider_is_listed():
    assert declared() == []


def test_the_environment_variable_and_the_app_config_name_both_work():
    by_env = authgateway_oidc.authgateway_register_providers(settings=Settings(
        {}, {"AUTH_GATEWAY_OIDC_PROVIDERS": "acme", "ACME_ISSUER": "https://idp.example.com"}))
    by_config = declared(OIDC_PROVIDERS="acme", ACME_ISSUER="https://idp.example.com")
    assert by_env == by_config and [p.name for p in by_env] == ["acme"]


def test_each_listed_name_is_declared_from_its_own_settings():
    okta, corp = declared(
        OIDC_PROVIDERS=" Okta, corp_sso ,okta",
        OKTA_ISSUER="https://dev-1.okta.com/oauth2/default",
        CORP_SSO_ISSUER="https://sso.corp.example/",
        CORP_SSO_DISPLAY_NAME="Corp SSO",
        CORP_SSO_SCOPES="openid,email offline_access",
        CORP_SSO_CLIENT_AUTH_METHOD="client_secret_post",
        CORP_SSO_EXTRA_AUTHORIZE_PARAMS="prompt=consent&acr_values=urn:mfa&audience=",
    )
    assert (okta.name, okta.display_name) == ("okta", "Okta")
    assert okta.issuer == "https://dev-1.okta.com/oauth2/default"
    assert okta.discovery_url == ("https://dev-1.okta.com/oauth2/default"
                                  "/.well-known/openid-configuration")
    assert okta.authorize_url is None and okta.token_url is None  # discovered when first used
    assert okta.default_scopes == ("openid", "email", "profile")
    assert okta.client_auth_method == "client_secret_basic"
    assert okta.extra_authorize_params == {}

    assert (corp.name, corp.display_name) == ("corp_sso", "Corp SSO")
    assert corp.issuer == "https://sso.corp.example/"  # compared with the document as written
    assert corp.discovery_url == "https://sso.corp.example/.well-known/openid-configuration"
    assert corp.default_scopes == ("openid", "email", "offline_access")
    assert corp.client_auth_method == "client_secret_post"
    assert corp.extra_authorize_params == {"prompt": "consent", "acr_values": "urn:mfa",
                                           "audience": ""}


@pytest.mark.parametrize(("settings", "message"), [
    ({"OIDC_PROVIDERS": "my-idp"}, "not a provider name"),
    ({"OIDC_PROVIDERS": "acme"}, "ACME_ISSUER is not set"),
    ({"OIDC_PROVIDERS": "acme", "ACME_ISSUER": "idp.example.com"}, "ACME_ISSUER is"),
    ({"OIDC_PROVIDERS": "acme", "ACME_ISSUER": "https://idp.example.com/?tenant=1"},
     "without query"),
    ({"OIDC_PROVIDERS": "acme", "ACME_ISSUER": "https://i.example",
      "ACME_CLIENT_AUTH_METHOD": "private_key_jwt"}, "ACME_CLIENT_AUTH_METHOD"),
    ({"OIDC_PROVIDERS": "acme", "ACME_ISSUER": "https://i.example",
      "ACME_EXTRA_AUTHORIZE_PARAMS": "prompt"}, "query-string syntax"),
    ({"OIDC_PROVIDERS": "acme", "ACME_ISSUER": "https://i.example",
      "ACME_EXTRA_AUTHORIZE_PARAMS": "prompt=consent&scope=admin"}, "sets scope"),
])
def test_a_wrong_setting_stops_startup_with_a_sentence_naming_it(settings, message):
    with pytest.raises(ConfigError, match=message):
        declared(**settings)


def test_a_declaration_needs_endpoints_or_a_discovery_document():
    with pytest.raises(ValueError, match="discovery_url"):
        ProviderInfo(name="x", display_name="X", authorize_url="https://x.example/authorize")


# -- discovery -----------------------------------------------------------------------------


def test_a_provider_that_is_down_does_not_stop_the_gateway(make_app):
    app = make_app(**settings_for(f"http://127.0.0.1:{free_port()}"))  # nothing listens there
    answer = init(app.test_client())
    assert answer.status_code == 502
    assert answer.get_json()["detail"]["error"] == "provider_unavailable"
    assert app.test_client().get("/health").status_code == 200


def test_discovery_is_fetched_on_first_use_then_cached(make_app, issuer):
    app = make_app(**settings_for(issuer.issuer))
    assert issuer.hits == {}  # not at startup
    client = app.test_client()
    flows = [init(client).get_json() for _ in range(3)]
    assert issuer.hits == {"/.well-known/openid-configuration": 1}
    assert all(f["auth_url"].startswith(issuer.issuer + "/authorize?") for f in flows)


def test_discovery_that_failed_is_fetched_again(make_app, issuer):
    issuer.discovery_status = 503
    client = make_app(**settings_for(issuer.issuer)).test_client()
    assert init(client).status_code == 502
    issuer.discovery_status = 200
    assert init(client).status_code == 200
    assert issuer.hits["/.well-known/openid-configuration"] == 2


def test_a_failed_call_fetches_discovery_again_and_a_stale_document_keeps_serving(
        make_app, issuer):
    app = make_app(**settings_for(issuer.issuer))
    app.extensions["authgateway"].providers.discovery.retry_seconds = 0
    client = app.test_client()
    flow = init(client).get_json()
    issuer.token_status = 503
    assert callback(client, flow, code="c", iss=issuer.issuer).status_code == 502
    issuer.discovery_status = 503  # and now discovery is down as well
    assert init(client).status_code == 200  # served from the last good document
    assert issuer.hits["/.well-known/openid-configuration"] == 2


def test_a_document_naming_another_issuer_is_refused(make_app, issuer):
    issuer.claimed_issuer = "https://elsewhere.example"
    answer = init(make_app(**settings_for(issuer.issuer)).test_client())
    assert answer.status_code == 502
    assert answer.get_json()["detail"]["error"] == "provider_misconfigured"


def test_a_wrong_issuer_url_is_named_as_an_operator_error(make_app, issuer):
    answer = init(make_app(**settings_for(issuer.issuer + "/realms/missing")).test_client())
    assert answer.get_json()["detail"]["error"] == "provider_misconfigured"


# -- the flow with discovered endpoints ------------------------------------------------------


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_a_flow_completes_with_the_configured_client_authentication(make_app, issuer, method):
    client = make_app(**settings_for(issuer.issuer, ACME_CLIENT_AUTH_METHOD=method,
                                     ACME_EXTRA_AUTHORIZE_PARAMS="prompt=consent")).test_client()
    flow = init(client).get_json()
    assert query(flow["auth_url"])["prompt"] == "consent"
    page = callback(client, flow, code="c", iss=issuer.issuer)
    assert page.status_code == 200, page.get_data(as_text=True)
    assert "Acme is connected" in page.get_data(as_text=True)
    assert issuer.client_auth == [method]


def test_iss_is_required_when_the_provider_advertises_it(make_app, issuer):
    client = make_app(**settings_for(issuer.issuer)).test_client()
    page = callback(client, init(client).get_json(), code="c")
    assert page.status_code == 400 and "/token" not in issuer.hits


def test_iss_may_be_absent_when_the_provider_does_not_advertise_it(make_app, issuer):
    issuer.advertise_iss = False
    client = make_app(**settings_for(issuer.issuer)).test_client()
    assert callback(client, init(client).get_json(), code="c").status_code == 200
    wrong = callback(client, init(client).get_json(), code="c", iss="https://other.example")
    assert wrong.status_code == 400


def test_an_id_token_without_email_is_completed_from_userinfo(make_app, issuer):
    issuer.email_in_id_token = False
    client = make_app(**settings_for(issuer.issuer)).test_client()
    page = callback(client, init(client).get_json(), code="c", iss=issuer.issuer)
    assert page.status_code == 200 and issuer.hits["/userinfo"] == 1


def test_userinfo_about_another_subject_is_not_believed(make_app, issuer):
    issuer.email_in_id_token = False
    issuer.userinfo_sub = "someone-else"
    client = make_app(**settings_for(issuer.issuer)).test_client()
    page = callback(client, init(client).get_json(), code="c", iss=issuer.issuer)
    assert page.status_code == 502


def test_an_id_token_not_signed_by_the_jwks_keys_is_refused(make_app, issuer):
    issuer.sign_with_unknown_key = True
    client = make_app(**settings_for(issuer.issuer)).test_client()
    flow = init(client).get_json()
    page = callback(client, flow, code="c", iss=issuer.issuer)
    assert page.status_code == 502
    status = client.get(f"/auth/status/{flow['session_id']}", headers=HEADERS).get_json()
    assert status["error"] == "identity_unverified"
