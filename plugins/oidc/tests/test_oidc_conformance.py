"""The OIDC plugin through the kit's conformance suite: a provider declared by its issuer alone,
its endpoints read from the fake's discovery document."""

from __future__ import annotations

import authgateway_oidc

from authgateway.testing import FakeProvider, ProviderConformance


class TestOidcConformance(ProviderConformance):
    provider = "corp"
    plugins = [authgateway_oidc]

    def make_fake(self):
        return FakeProvider(oidc=True, discovery=True)

    def settings(self, fake, redirect_uri):
        return {"OIDC_PROVIDERS": "corp", "CORP_ISSUER": fake.issuer,
                "CORP_CLIENT_ID": fake.client_id, "CORP_CLIENT_SECRET": fake.client_secret,
                "CORP_REDIRECT_URI": redirect_uri}
