"""The plugin kit as a third party uses it: a provider plugin package written in a temporary
directory, installed with pip into a fresh virtualenv (on top of this one, for the core), runs
the kit's conformance suite with pytest in a subprocess; a variant that trusts unverified
emails fails it."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "authgateway-acme"
version = "0.1.0"
dependencies = ["authgateway"]

[project.entry-points.authgateway]
acme = "authgateway_acme"

[tool.setuptools]
packages = ["authgateway_acme"]
"""

# Acme is plain OAuth 2.0 without OpenID Connect: its userinfo endpoint names the account.
PLUGIN = '''\
from authgateway import Identity, IdentityError, ProviderInfo, hookimpl
import requests


@hookimpl
def authgateway_register_providers(settings):
    base = settings.get("ACME_URL", "https://acme.example")
    return [ProviderInfo(name="acme", display_name="Acme", authorize_url=base + "/authorize",
                         token_url=base + "/token", userinfo_url=base + "/userinfo",
                         revoke_url=base + "/revoke", identity_scopes=("profile",))]


@hookimpl
def authgateway_fetch_identity(provider, config, tokens):
    answer = requests.get(provider.userinfo_url, timeout=config.timeout,
                          headers={"Authorization": "Bearer " + tokens.access_token})
    if answer.status_code != 200:
        raise IdentityError("acme userinfo failed")
    claims = answer.json()
    return Identity(subject=claims["sub"], email=claims["email"],
                    email_verified=VERIFIED(claims))


VERIFIED = lambda claims: claims["email_verified"] is True  # noqa: E731
'''

CONFORMANCE = '''\
import authgateway_acme
from authgateway.testing import FakeProvider, ProviderConformance


class TestAcme(ProviderConformance):
    provider = "acme"
    plugins = [authgateway_acme]

    def make_fake(self):
        return FakeProvider(answers="form")

    def settings(self, fake, redirect_uri):
        return {"ACME_URL": fake.url, "ACME_CLIENT_ID": fake.client_id,
                "ACME_CLIENT_SECRET": fake.client_secret, "ACME_REDIRECT_URI": redirect_uri}
'''


def write_package(root: Path, plugin: str) -> Path:
    (root / "authgateway_acme").mkdir(parents=True)
    (root / "authgateway_acme" / "__init__.py").write_text(plugin)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "tests").mkdir()
    (root / "tests" / "test_acme.py").write_text(CONFORMANCE)
    return root


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory) -> Path:
    """A new virtualenv that sees this one's packages (the core, pytest) through a .pth file:
    ``--system-site-packages`` would reach the base interpreter's, not this virtualenv's."""
    home = tmp_path_factory.mktemp("venv")
    venv.create(home, with_pip=False)
    python = home / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], capture_output=True, text=True, check=True)
    Path(purelib.stdout.strip(), "outer.pth").write_text(
        "".join(f"import site; site.addsitedir({path!r})\n" for path in site.getsitepackages()))
    return python


def install_and_test(python: Path, package: Path) -> subprocess.CompletedProcess:
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--force-reinstall", "--no-deps", "--no-build-isolation", "--no-index",
                    str(package)],
                   check=True, capture_output=True, timeout=120)
    env = {key: value for key, value in os.environ.items() if key != "TEST_DATABASE_URL"}
    return subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(package),
         str(package / "tests")],
        cwd=package, env=env, capture_output=True, text=True, timeout=120)


def test_a_third_party_plugin_passes_the_kits_conformance_suite(fresh_python, tmp_path):
    package = write_package(tmp_path / "good", PLUGIN)
    run = install_and_test(fresh_python, package)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failed" not in run.stdout
    # Installed by entry point, as an operator would find it.
    found = subprocess.run([str(fresh_python), "-c", textwrap.dedent("""\
        import importlib.metadata as m
        print([p.dist.name for p in m.entry_points(group="authgateway") if p.name == "acme"])
        """)], capture_output=True, text=True, check=True, timeout=60)
    assert found.stdout.strip() == "['authgateway-acme']"


def test_a_plugin_that_trusts_unverified_emails_fails_it(fresh_python, tmp_path):
    broken = PLUGIN.replace('claims["email_verified"] is True', "True")
    package = write_package(tmp_path / "broken", broken)
    run = install_and_test(fresh_python, package)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-2000:]
    assert "FAILED tests/test_acme.py::TestAcme::test_an_unverified_or_other_email_does_not" \
        in run.stdout
    assert "1 failed" in run.stdout
