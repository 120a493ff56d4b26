"""The Atlassian plugin through the kit's conformance suite, against the fake Atlassian:
expiring tokens, rotating refresh tokens, and no revocation endpoint."""

from __future__ import annotations

import authgateway_atlassian

from authgateway.testing import ProviderConformance

from .fake import FakeAtlassian

EMAIL = "ada@example.com"


class TestAtlassianConformance(ProviderConformance):
    provider = "atlassian"
    plugins = [authgateway_atlassian]

    def make_fake(self):
        return FakeAtlassian()

    def settings(self, fake, redirect_uri):
        return fake.settings(redirect_uri)

    def account(self, subject="557058:f5a2b3c4-0d1e-4f20-8a9b-7c6d5e4f3a21", **fields):
        return super().account(subject=subject, **fields)

    def test_revocation_ends_the_grant_at_the_provider(self, gateway, fake):
        """Atlassian has no revocation endpoint for 3LO apps: the credential is deleted here
        and the answer says the provider was not told."""
        gateway.connect(self.provider, EMAIL)
        access_token = gateway.token(self.provider, EMAIL).get_json()["access_token"]
        answer = gateway.revoke(self.provider, EMAIL)
        assert answer.status_code == 200 and answer.get_json()["provider_revoked"] is False
        assert fake.token_is_live(access_token)
        assert gateway.connections(EMAIL) == {}
        assert gateway.token(self.provider, EMAIL).status_code == 404
