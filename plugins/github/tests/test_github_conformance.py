"""The GitHub plugin through the kit's conformance suite, for both kinds of GitHub client: an
OAuth App (tokens that never expire) and a GitHub App (expiring tokens, rotating refresh
tokens), against the fake GitHub."""

from __future__ import annotations

import authgateway_github

from authgateway.testing import ProviderConformance
from tests.fakes.github import FakeGitHub


class TestOAuthAppConformance(ProviderConformance):
    provider = "github"
    plugins = [authgateway_github]
    refreshes = False

    def make_fake(self):
        return FakeGitHub(expiring=self.refreshes)

    def settings(self, fake, redirect_uri):
        return fake.settings(redirect_uri)


class TestGitHubAppConformance(TestOAuthAppConformance):
    refreshes = True
