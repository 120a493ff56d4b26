"""The conformance suite a provider plugin's tests run: subclass ``ProviderConformance`` in a
test module (its name must start with ``Test`` for pytest to collect it), say which provider and
plugin it is, and how to script a ``FakeProvider`` to answer as that provider does::

    from authgateway.testing import FakeProvider, ProviderConformance

    class TestAcme(ProviderConformance):
        provider = "acme"
        plugins = [authgateway_acme]

        def make_fake(self):
            return FakeProvider(token_path="/oauth/token", error_status=200)

        def settings(self, fake, redirect_uri):
            return {"ACME_CLIENT_ID": fake.client_id, ...}

Each test runs a gateway with only ``plugins`` loaded against the fake, over real HTTP, and
asserts what a user or an MCP server sees. The suite drives the fake through ``FakeProvider``'s
controls (``sign_in_as``, ``fail_next``, ``end_grants``, ``token_is_live``, the counters), so a
plugin whose provider needs other endpoints adds them as ``routes`` or in a subclass.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from .fake import Account, FakeProvider
from .gateway import Gateway, redirect_uri

__all__ = ["ProviderConformance"]

EMAIL = "ada@example.com"


class ProviderConformance:
    #: The provider's name, as the plugin registers it.
    provider: str = ""
    #: The plugins to load (modules or objects), usually just the plugin under test.
    plugins: Sequence[object] = ()
    #: False when the provider's tokens never expire (no refresh at all, ``expires_at`` null).
    refreshes: bool = True

    def make_fake(self) -> FakeProvider:
        """A ``FakeProvider`` (not yet started) scripted to answer as the provider does."""
        raise NotImplementedError("a conformance class says how to script its provider's fake")

    def settings(self, fake: FakeProvider, redirect_uri: str) -> dict[str, object]:
        """The gateway settings that point the plugin at the started ``fake``."""
        raise NotImplementedError("a conformance class says how to point its plugin at the fake")

    def account(self, subject: str = "10001", email: str = EMAIL, **fields) -> Account:
        """The account the person signs in with; a provider whose subjects have a particular
        shape (numeric ids) overrides this."""
        return Account(subject=subject, email=email, **fields)

    # ---- fixtures ---------------------------------------------------------------------------

    @pytest.fixture
    def fake(self):
        with self.make_fake() as fake:
            fake.sign_in_as(self.account())
            yield fake

    @pytest.fixture
    def gateway(self, fake, authgateway_gateway) -> Gateway:
        return authgateway_gateway(self.plugins, **self.settings(fake, redirect_uri(self.provider)))

    def _refreshing(self) -> None:
        if not self.refreshes:
            pytest.skip(f"{self.provider}'s tokens never expire, so they are never refreshed")

    # ---- the flow ---------------------------------------------------------------------------

    def test_a_flow_connects_and_serves_the_token(self, gateway, fake):
        flow = gateway.start(self.provider, EMAIL)
        page = gateway.consent(flow["auth_url"])
        assert page.status_code == 200, page.get_data(as_text=True)[:500]
        assert gateway.status(flow)["status"] == "completed"
        answer = gateway.token(self.provider, EMAIL)
        assert answer.status_code == 200, answer.get_json()
        access_token = answer.get_json()["access_token"]
        assert fake.token_is_live(access_token)
        assert access_token not in page.get_data(as_text=True)
        assert (answer.get_json()["expires_at"] is None) is (fake.expires_in is None)
        assert gateway.connections(EMAIL)[self.provider]["status"] == "active"
        assert fake.last_authorize["code_challenge_method"] == "S256"

    # ---- who signed in ----------------------------------------------------------------------

    def test_an_unverified_or_other_email_does_not_connect(self, gateway, fake):
        for account in (self.account(email_verified=False),
                        self.account(email="mallory@example.com")):
            fake.sign_in_as(account)
            flow = gateway.start(self.provider, EMAIL)
            page = gateway.consent(flow["auth_url"])
            assert page.status_code == 403, page.get_data(as_text=True)[:500]
            assert gateway.status(flow)["error"] == "email_mismatch"
        assert gateway.connections(EMAIL) == {}
        assert gateway.token(self.provider, EMAIL).status_code == 404

    def test_another_account_for_the_same_user_is_an_account_mismatch(self, gateway, fake):
        gateway.connect(self.provider, EMAIL)
        first = gateway.token(self.provider, EMAIL).get_json()["access_token"]
        fake.sign_in_as(self.account(subject="20002"))
        flow = gateway.start(self.provider, EMAIL)
        page = gateway.consent(flow["auth_url"])
        assert page.status_code == 400
        assert gateway.status(flow)["error"] == "account_mismatch"
        assert gateway.token(self.provider, EMAIL).get_json()["access_token"] == first

    # ---- refresh ----------------------------------------------------------------------------

    def test_a_token_that_never_expires_is_never_refreshed(self, gateway, fake):
        if self.refreshes:
            pytest.skip(f"{self.provider}'s tokens expire")
        gateway.connect(self.provider, EMAIL)
        for _ in range(3):
            answer = gateway.token(self.provider, EMAIL, min_valid_seconds=86400)
            assert answer.status_code == 200 and answer.get_json()["expires_at"] is None
        assert fake.refresh_count == 0

    @pytest.mark.parametrize("rotation", [False, True], ids=["kept", "rotated"])
    def test_refresh_with_the_refresh_token_kept_or_rotated(self, gateway, fake, rotation):
        self._refreshing()
        fake.rotate_refresh_tokens = rotation
        gateway.connect(self.provider, EMAIL)
        served = [gateway.token(self.provider, EMAIL).get_json()["access_token"]]
        for _ in range(2):
            answer = gateway.token(self.provider, EMAIL, force_refresh=True)
            assert answer.status_code == 200, answer.get_json()
            served.append(answer.get_json()["access_token"])
            assert fake.token_is_live(served[-1])
        assert len(set(served)) == 3 and fake.refresh_count == 2
        assert fake.reused_refresh == []  # a rotated-away refresh token is never sent again

    def test_a_dead_grant_needs_the_user_again(self, gateway, fake):
        self._refreshing()
        gateway.connect(self.provider, EMAIL)
        fake.end_grants()  # the person withdrew the app's access at the provider
        answer = gateway.token(self.provider, EMAIL, force_refresh=True)
        assert answer.status_code == 401, answer.get_json()
        assert answer.get_json()["detail"]["error"] == "refresh_failed"
        assert gateway.connections(EMAIL)[self.provider]["status"] == "needs_reauth"

    @pytest.mark.parametrize("status", [500, 503, 429])
    def test_a_transient_failure_changes_nothing(self, gateway, fake, status):
        self._refreshing()
        gateway.connect(self.provider, EMAIL)
        before = gateway.token(self.provider, EMAIL).get_json()["access_token"]
        fake.fail_next(status)
        answer = gateway.token(self.provider, EMAIL, force_refresh=True)
        assert answer.status_code == 502, answer.get_json()
        assert answer.get_json()["detail"]["error"] == "provider_unavailable"
        assert gateway.connections(EMAIL)[self.provider]["status"] == "active"
        assert gateway.token(self.provider, EMAIL).get_json()["access_token"] == before
        assert gateway.token(self.provider, EMAIL, force_refresh=True).status_code == 200

    # ---- revocation -------------------------------------------------------------------------

    def test_revocation_ends_the_grant_at_the_provider(self, gateway, fake):
        gateway.connect(self.provider, EMAIL)
        access_token = gateway.token(self.provider, EMAIL).get_json()["access_token"]
        answer = gateway.revoke(self.provider, EMAIL)
        assert answer.status_code == 200 and answer.get_json()["provider_revoked"] is True
        assert not fake.token_is_live(access_token)
        assert gateway.connections(EMAIL) == {}
        assert gateway.token(self.provider, EMAIL).status_code == 404

    # ---- secrets ----------------------------------------------------------------------------

    def test_no_secret_is_ever_logged(self, gateway, fake, caplog):
        caplog.set_level(logging.DEBUG)
        flow = gateway.start(self.provider, EMAIL)
        code = None
        page = gateway.consent(flow["auth_url"])
        assert page.status_code == 200
        code = fake.issued_codes[-1]
        tokens = [gateway.token(self.provider, EMAIL).get_json()["access_token"]]
        if self.refreshes:
            fake.fail_next(503)
            gateway.token(self.provider, EMAIL, force_refresh=True)
            tokens.append(gateway.token(self.provider, EMAIL,
                                        force_refresh=True).get_json()["access_token"])
        gateway.revoke(self.provider, EMAIL)
        logged = caplog.text + "".join(repr(record.args) for record in caplog.records)
        assert caplog.records, "the gateway logged nothing: the check would prove nothing"
        for secret in {fake.client_secret, code, *tokens, *fake.issued_secrets()}:
            assert secret not in logged
