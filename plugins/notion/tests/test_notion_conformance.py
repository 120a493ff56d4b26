"""The Notion plugin through the kit's conformance suite, against the fake Notion: a connection
whose tokens expire and rotate, and one whose tokens never expire (no refresh token issued)."""

from __future__ import annotations

import authgateway_notion

from authgateway.testing import ProviderConformance

from .fake import FakeNotion


class TestExpiringConformance(ProviderConformance):
    provider = "notion"
    plugins = [authgateway_notion]

    def make_fake(self):
        return FakeNotion()

    def settings(self, fake, redirect_uri):
        return fake.settings(redirect_uri)

    def account(self, subject="6f1d0c4e-2b8a-4e3f-9c71-0a5b3d2e1f40", **fields):
        return super().account(subject=subject, **fields)


class TestNeverExpiringConformance(TestExpiringConformance):
    refreshes = False

    def make_fake(self):
        return FakeNotion(expires_in=None, refresh_tokens=False)
