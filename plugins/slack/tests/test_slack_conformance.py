"""The Slack plugin through the kit's conformance suite, for both settings of a Slack app:
token rotation off (user tokens that never expire) and on (12-hour tokens, rotating xoxe-
refresh tokens), against the fake Slack."""

from __future__ import annotations

import authgateway_slack

from authgateway.testing import ProviderConformance

from .fake import FakeSlack

EMAIL = "ada@example.com"


class TestSlackConformance(ProviderConformance):
    provider = "slack"
    plugins = [authgateway_slack]
    refreshes = False

    def make_fake(self):
        return FakeSlack(rotation=self.refreshes)

    def settings(self, fake, redirect_uri):
        return fake.settings(redirect_uri)

    def account(self, subject="U0ADA0001", email=EMAIL, **fields):
        return super().account(subject=subject, email=email, **fields)


class TestSlackRotationConformance(TestSlackConformance):
    refreshes = True
