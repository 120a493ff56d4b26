"""Fake external services (real loopback HTTP servers) for the authgateway tests."""

from .google import Account, FakeGoogle

__all__ = ["Account", "FakeGoogle"]
