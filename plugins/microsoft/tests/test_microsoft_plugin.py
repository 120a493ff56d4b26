"""Microsoft's departures from the textbook, through whole flows against the fake Microsoft:
the ``{tenantid}`` issuer template, the tenants an operator allows, an email Microsoft does not
verify, the account as tenant + object id, and its settings."""

from __future__ import annotations

import importlib.metadata
from urllib.parse import parse_qs, urlsplit

import authgateway_microsoft
import pytest

from authgateway import create_app
from authgateway.config import Settings
from authgateway.errors import ConfigError
from authgateway.testing import Account, redirect_uri

from .fake import CONSUMERS, OTHER_TENANT, TENANT, FakeMicrosoft

EMAIL = "ada@example.com"
OID = "00000000-0000-0000-0000-00000000a0a0"
PLUGINS = [authgateway_microsoft]


def account(tenant=TENANT, oid=OID, email=EMAIL, xms_edov=True, **claims) -> Account:
    return Account(subject=oid, email=email, email_verified=xms_edov,
                   claims={"tid": tenant, **claims})


@pytest.fixture
def microsoft():
    with FakeMicrosoft() as fake:
        fake.sign_in_as(account())
        yield fake


@pytest.fixture
def make_gateway(authgateway_gateway, microsoft):
    def make(**settings):
        return authgateway_gateway(PLUGINS, **microsoft.settings(redirect_uri("microsoft"),
                                                                 **settings))
    return make


def attempt(gateway):
    """One flow for EMAIL: the callback page and the session's status."""
    flow = gateway.start("microsoft", EMAIL)
    page = gateway.consent(flow["auth_url"])
    return page, gateway.status(flow)


def declared(**settings):
    return authgateway_microsoft.authgateway_register_providers(settings=Settings(settings, {}))


# ---- the distribution and its settings ----------------------------------------------------

def test_the_distribution_registers_its_entry_point():
    points = [p for p in importlib.metadata.entry_points(group="authgateway")
              if p.name == "microsoft"]
    assert len(points) == 1 and points[0].dist.name == "authgateway-microsoft"
    assert points[0].load() is authgateway_microsoft


def test_the_defaults_are_microsofts_common_authority_and_providers_list_says_what_is_missing(
        tmp_path):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/m.sqlite", "LOAD_PLUGINS": True,
                      "ENCRYPTION_KEY": "x" * 43 + "="})
    info = app.extensions["authgateway"].providers.info("microsoft")
    assert info.discovery_url == ("https://login.microsoftonline.com/common/v2.0"
                                  "/.well-known/openid-configuration")
    assert info.authorize_url is None  # discovered when first used
    listed = app.test_cli_runner().invoke(args=["providers", "list"]).output
    line = next(line for line in listed.splitlines() if line.startswith("microsoft"))
    assert "plugin=microsoft" in line
    assert "NOT CONFIGURED: set MICROSOFT_CLIENT_ID, MICROSOFT_CLIENT_SECRET, " \
        "MICROSOFT_REDIRECT_URI" in line


def test_a_tenant_and_endpoints_can_be_set():
    (info,) = declared(MICROSOFT_AUTHORITY_URL="https://login.microsoftonline.us/",
                       MICROSOFT_TENANT="Contoso.onmicrosoft.com",
                       MICROSOFT_TOKEN_URL="https://proxy.example/token",
                       MICROSOFT_SCOPES="https://graph.microsoft.com/Mail.Read,Files.Read",
                       MICROSOFT_ALLOWED_TENANTS=f" {TENANT.upper()} ,{OTHER_TENANT}")
    assert info.discovery_url == ("https://login.microsoftonline.us/contoso.onmicrosoft.com"
                                  "/v2.0/.well-known/openid-configuration")
    assert info.token_url == "https://proxy.example/token"
    assert info.default_scopes == ("https://graph.microsoft.com/Mail.Read", "Files.Read")
    assert info.allowed_tenants == {TENANT, OTHER_TENANT}


@pytest.mark.parametrize(("settings", "named"), [
    ({"MICROSOFT_TENANT": "my tenant"}, "MICROSOFT_TENANT is"),
    ({"MICROSOFT_AUTHORITY_URL": "https://login.microsoftonline.com/common"},
     "MICROSOFT_AUTHORITY_URL is"),
    ({"MICROSOFT_ALLOWED_TENANTS": "contoso.com"}, "MICROSOFT_ALLOWED_TENANTS lists"),
    ({"MICROSOFT_TENANT": TENANT, "MICROSOFT_ALLOWED_TENANTS": OTHER_TENANT},
     "MICROSOFT_ALLOWED_TENANTS does not list MICROSOFT_TENANT"),
])
def test_a_wrong_setting_stops_startup_with_a_sentence_naming_it(settings, named):
    with pytest.raises(ConfigError, match=named):
        declared(**settings)


def test_the_authorize_url_asks_for_the_identity_scopes_and_a_refresh_token(make_gateway):
    flow = make_gateway().start("microsoft", EMAIL)
    query = parse_qs(urlsplit(flow["auth_url"]).query)
    assert urlsplit(flow["auth_url"]).path == "/common/oauth2/v2.0/authorize"
    assert set(query["scope"][0].split()) >= {"openid", "profile", "email", "offline_access",
                                              "https://graph.microsoft.com/User.Read"}
    assert query["login_hint"] == [EMAIL] and query["code_challenge_method"] == ["S256"]


# ---- the issuer template -----------------------------------------------------------------

def test_the_tenant_placeholder_is_filled_with_the_tokens_tid(make_gateway, microsoft):
    gateway = make_gateway()
    page, status = attempt(gateway)
    assert page.status_code == 200, page.get_data(as_text=True)
    assert microsoft.document()["issuer"].endswith("/{tenantid}/v2.0")
    assert gateway.connections(EMAIL)["microsoft"]["status"] == "active"


def test_the_tenant_is_returned_with_the_token_as_the_account(make_gateway, microsoft):
    gateway = make_gateway()
    page, _status = attempt(gateway)
    assert page.status_code == 200, page.get_data(as_text=True)
    assert gateway.token("microsoft", EMAIL).get_json()["account"] == {"tenant_id": TENANT}
    assert gateway.connections(EMAIL)["microsoft"]["account"] == {"tenant_id": TENANT}


def test_an_iss_naming_another_tenant_than_tid_is_refused(make_gateway, microsoft):
    microsoft.issuer_override = microsoft.issuer_of(OTHER_TENANT)
    page, status = attempt(make_gateway())
    assert page.status_code == 502 and status["error"] == "identity_unverified"


def test_an_iss_with_the_placeholder_left_in_is_refused(make_gateway, microsoft):
    microsoft.issuer_override = microsoft.issuer_of("{tenantid}")
    page, status = attempt(make_gateway())
    assert page.status_code == 502 and status["error"] == "identity_unverified"


def test_a_token_without_tid_is_refused(make_gateway, microsoft):
    microsoft.sign_in_as(account(tenant=None))
    page, status = attempt(make_gateway())
    assert page.status_code == 502 and status["error"] == "identity_unverified"


@pytest.mark.parametrize("tenant", [TENANT, "consumers"])
def test_a_tenant_of_its_own_has_a_fixed_issuer(authgateway_gateway, tenant):
    with FakeMicrosoft(tenant=tenant) as fake:
        token_tenant = CONSUMERS if tenant == "consumers" else TENANT
        fake.sign_in_as(account(tenant=token_tenant))
        gateway = authgateway_gateway(PLUGINS, **fake.settings(redirect_uri("microsoft")))
        page, _ = attempt(gateway)
        assert page.status_code == 200, page.get_data(as_text=True)
        fake.sign_in_as(account(tenant=OTHER_TENANT, oid="o2"))
        gateway.revoke("microsoft", EMAIL)
        page, status = attempt(gateway)
        assert page.status_code == 502 and status["error"] == "identity_unverified"


# ---- allowed tenants ----------------------------------------------------------------------

def test_an_account_of_a_tenant_not_allowed_is_refused_with_a_page_that_says_why(
        make_gateway, microsoft):
    microsoft.sign_in_as(account(tenant=OTHER_TENANT))
    gateway = make_gateway(MICROSOFT_ALLOWED_TENANTS=TENANT)
    page, status = attempt(gateway)
    assert page.status_code == 403 and status["error"] == "email_mismatch"
    assert "does not accept accounts of your organisation" in page.get_data(as_text=True)
    assert gateway.connections(EMAIL) == {}


def test_an_allowed_tenant_is_trusted_for_its_email_without_xms_edov(make_gateway, microsoft):
    microsoft.sign_in_as(account(xms_edov=None))
    gateway = make_gateway(MICROSOFT_ALLOWED_TENANTS=f"{OTHER_TENANT},{TENANT}")
    page, _ = attempt(gateway)
    assert page.status_code == 200, page.get_data(as_text=True)


# ---- the email Microsoft does not verify ------------------------------------------------

@pytest.mark.parametrize("xms_edov", [None, False], ids=["absent", "false"])
def test_an_unverified_email_is_refused_with_a_page_that_says_why(make_gateway, microsoft,
                                                                  xms_edov):
    """The nOAuth pattern: an administrator of any tenant can give an account any email."""
    microsoft.sign_in_as(account(xms_edov=xms_edov))
    gateway = make_gateway()
    page, status = attempt(gateway)
    assert page.status_code == 403 and status["error"] == "email_mismatch"
    text = page.get_data(as_text=True)
    assert "Microsoft does not vouch for this account&#39;s email address" in text
    assert "Nothing was stored" in text
    assert gateway.connections(EMAIL) == {}


def test_an_account_without_email_is_refused_with_a_page_that_says_why(make_gateway, microsoft):
    microsoft.sign_in_as(account(email=None))
    page, status = attempt(make_gateway())
    assert page.status_code == 403 and status["error"] == "email_mismatch"
    assert "did not share this account" in page.get_data(as_text=True)


def test_a_verified_email_of_another_person_is_refused(make_gateway, microsoft):
    microsoft.sign_in_as(account(email="mallory@example.com"))
    page, status = attempt(make_gateway())
    assert page.status_code == 403 and status["error"] == "email_mismatch"
    assert "different account" in page.get_data(as_text=True)


# ---- the account is tenant + object id ------------------------------------------------------

def test_the_same_object_id_in_another_tenant_is_another_account(make_gateway, microsoft):
    gateway = make_gateway()
    assert attempt(gateway)[0].status_code == 200
    microsoft.sign_in_as(account(tenant=OTHER_TENANT))  # same oid, same email, other tenant
    page, status = attempt(gateway)
    assert page.status_code == 400 and status["error"] == "account_mismatch"


def test_a_new_email_on_the_same_account_still_connects(make_gateway, microsoft):
    gateway = make_gateway()
    assert attempt(gateway)[0].status_code == 200
    microsoft.sign_in_as(account(preferred_username="renamed@example.com"))
    assert attempt(gateway)[0].status_code == 200


# ---- refresh tokens replace themselves --------------------------------------------------------

def test_each_refresh_stores_the_new_refresh_token(make_gateway, microsoft):
    gateway = make_gateway()
    gateway.connect("microsoft", EMAIL)
    for _ in range(3):
        answer = gateway.token("microsoft", EMAIL, force_refresh=True)
        assert answer.status_code == 200, answer.get_json()
    assert microsoft.refresh_count == 3 and microsoft.reused_refresh == []
