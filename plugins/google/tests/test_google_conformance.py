"""The Google plugin through the kit's conformance suite, against a fake scripted as Google's
web-server flow: OpenID Connect id_tokens, JSON answers, RFC 7009 revocation."""

from __future__ import annotations

import authgateway_google

from authgateway.testing import FakeProvider, ProviderConformance


class TestGoogleConformance(ProviderConformance):
    provider = "google"
    plugins = [authgateway_google]

    def make_fake(self):
        return FakeProvider(oidc=True, authorize_path="/o/oauth2/v2/auth",
                            userinfo_path="/v1/userinfo", jwks_path="/oauth2/v3/certs")

    def settings(self, fake, redirect_uri):
        urls = fake.endpoints()
        return {"GOOGLE_CLIENT_ID": fake.client_id, "GOOGLE_CLIENT_SECRET": fake.client_secret,
                "GOOGLE_REDIRECT_URI": redirect_uri, "GOOGLE_ISSUER": fake.issuer,
                **{f"GOOGLE_{key.upper()}": urls[key.lower()]
                   for key in authgateway_google.ENDPOINTS}}
