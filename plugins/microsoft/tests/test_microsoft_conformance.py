"""The Microsoft plugin through the kit's conformance suite, against the fake Microsoft
identity platform with the multi-tenant ``common`` authority."""

from __future__ import annotations

import authgateway_microsoft

from authgateway.testing import ProviderConformance

from .fake import TENANT, FakeMicrosoft

EMAIL = "ada@example.com"


class TestMicrosoftConformance(ProviderConformance):
    provider = "microsoft"
    plugins = [authgateway_microsoft]

    def make_fake(self):
        return FakeMicrosoft()

    def settings(self, fake, redirect_uri):
        return fake.settings(redirect_uri)

    def account(self, subject="00000000-0000-0000-0000-000000010001", email=EMAIL, **fields):
        # oid is a GUID; an organisation that proved its domain (xms_edov) unless told otherwise.
        claims = {"tid": TENANT, **fields.pop("claims", {})}
        return super().account(subject=subject, email=email, claims=claims, **fields)

    def test_revocation_ends_the_grant_at_the_provider(self, gateway, fake):
        """Microsoft has no revocation endpoint: the credential is deleted here and the answer
        says the provider was not told (the person removes the app at Microsoft)."""
        gateway.connect(self.provider, EMAIL)
        access_token = gateway.token(self.provider, EMAIL).get_json()["access_token"]
        answer = gateway.revoke(self.provider, EMAIL)
        assert answer.status_code == 200 and answer.get_json()["provider_revoked"] is False
        assert fake.token_is_live(access_token)
        assert not any(path.endswith("/revoke") for _method, path in fake.requests)
        assert gateway.connections(EMAIL) == {}
        assert gateway.token(self.provider, EMAIL).status_code == 404
