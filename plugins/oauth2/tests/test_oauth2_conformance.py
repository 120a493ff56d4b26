"""The generic OAuth 2.0 plugin through the kit's conformance suite, against a provider that
is not OpenID Connect: comma-separated scopes in its token answers, identity in a nested
userinfo answer found by JSON pointers, RFC 7009 revocation at a path of its own."""

from __future__ import annotations

import authgateway_oauth2

from authgateway.testing import FakeProvider, ProviderConformance


def nested_userinfo(fake):
    """``GET /api/v2/me`` as such a provider answers: a numeric id, the email elsewhere."""
    def answer(request):
        account = fake.account_for(request.bearer)
        if account is None:
            return 401, {"error": "invalid_token"}
        return 200, {"data": {"id": int(account.subject), "type": "user", "attributes": {
            "primary_email": {"address": account.email,
                              "confirmed": account.email_verified}}}}
    return answer


def acme_fake(**options) -> FakeProvider:
    fake = FakeProvider(authorize_path="/oauth/authorize", token_path="/oauth/token",
                        revoke_path="/oauth/revoke", scope_separator=",", **options)
    fake.routes[("GET", "/api/v2/me")] = nested_userinfo(fake)
    return fake


def acme_settings(fake, redirect_uri, **extra) -> dict:
    return {"OAUTH2_PROVIDERS": "acme", "ACME_AUTHORIZE_URL": fake.url + "/oauth/authorize",
            "ACME_TOKEN_URL": fake.url + "/oauth/token",
            "ACME_REVOKE_URL": fake.url + "/oauth/revoke",
            "ACME_USERINFO_URL": fake.url + "/api/v2/me", "ACME_SCOPES": "profile,email",
            "ACME_SCOPE_SEPARATOR": "comma", "ACME_SUBJECT_POINTER": "/data/id",
            "ACME_EMAIL_POINTER": "/data/attributes/primary_email/address",
            "ACME_EMAIL_VERIFIED_POINTER": "/data/attributes/primary_email/confirmed",
            "ACME_CLIENT_ID": fake.client_id, "ACME_CLIENT_SECRET": fake.client_secret,
            "ACME_REDIRECT_URI": redirect_uri, **extra}


class TestOAuth2Conformance(ProviderConformance):
    provider = "acme"
    plugins = [authgateway_oauth2]

    def make_fake(self):
        return acme_fake()

    def settings(self, fake, redirect_uri):
        return acme_settings(fake, redirect_uri)
