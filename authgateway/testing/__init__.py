"""A kit for testing provider plugins: a gateway on a throwaway database and a client that runs
whole flows (``Gateway``), a scriptable fake OAuth 2.0 / OpenID Connect provider served over
real HTTP on loopback (``FakeProvider``), and a conformance suite a plugin's tests subclass
(``ProviderConformance``). The pytest fixtures are in ``authgateway.testing.pytest_plugin``,
which pytest loads through the ``pytest11`` entry point; docs/plugins.md shows a whole example.

The names below are imported on first use, so loading the pytest plugin costs nothing.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Account": "fake", "Email": "fake", "FakeProvider": "fake", "Request": "fake",
    "Gateway": "gateway", "build_gateway": "gateway", "redirect_uri": "gateway",
    "ProviderConformance": "suite",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'authgateway.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
