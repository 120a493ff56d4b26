"""OpenID Connect discovery (OpenID Connect Discovery 1.0, RFC 8414) for declared providers.

A provider declared with ``ProviderInfo.discovery_url`` is completed here from its metadata: the
endpoints it did not declare, its issuer, and whether its callbacks always carry the RFC 9207
``iss`` parameter. The document is fetched when the provider is first used, never at startup,
so a provider that is down cannot stop the gateway. It is kept for a day, and fetched again
sooner when a call with what it said failed. While only the discovery endpoint is down, the last
good document keeps serving.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from urllib.parse import urlsplit

import requests

from .providers import ProviderInfo, ProviderMisconfigured, ProviderUnavailable

log = logging.getLogger(__name__)

MAX_AGE_SECONDS = 24 * 3600.0
#: With a document in hand, a failed fetch is not retried sooner than this.
RETRY_SECONDS = 10.0
#: ProviderInfo field -> metadata name.
ENDPOINTS = {
    "authorize_url": "authorization_endpoint",
    "token_url": "token_endpoint",
    "revoke_url": "revocation_endpoint",
    "userinfo_url": "userinfo_endpoint",
    "jwks_url": "jwks_uri",
}
REQUIRED = ("issuer", "authorization_endpoint", "token_endpoint")


@dataclasses.dataclass
class _Entry:
    document: dict
    fetched_at: float
    last_attempt: float
    stale: bool = False


class Discovery:
    """One per app: discovery documents by URL, shared by every worker thread."""

    def __init__(self, timeout: float, max_age: float = MAX_AGE_SECONDS,
                 retry_seconds: float = RETRY_SECONDS) -> None:
        self._timeout = timeout
        self.max_age = max_age
        self.retry_seconds = retry_seconds
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._url_locks: dict[str, threading.Lock] = {}

    def resolve(self, info: ProviderInfo) -> ProviderInfo:
        """``info`` completed from its discovery document; unchanged when it declares none.
        Raises ``ProviderUnavailable`` or ``ProviderMisconfigured`` when it cannot be."""
        if not info.discovery_url:
            return info
        return _complete(info, self._document(info))

    def invalidate(self, info: ProviderInfo) -> None:
        """A call with the discovered endpoints failed: fetch the document again on next use."""
        if info.discovery_url:
            with self._lock:
                entry = self._entries.get(info.discovery_url)
                if entry is not None:
                    entry.stale = True

    def _document(self, info: ProviderInfo) -> dict:
        url = str(info.discovery_url)
        entry = self._entries.get(url)
        if entry is not None and self._fresh(entry, time.monotonic()):
            return entry.document
        with self._url_lock(url):
            # Another thread may have fetched it while this one waited.
            entry = self._entries.get(url)
            now = time.monotonic()
            if entry is not None and (self._fresh(entry, now)
                                      or now - entry.last_attempt < self.retry_seconds):
                return entry.document
            try:
                document = self._fetch(info)
            except ProviderUnavailable as exc:
                if entry is None:
                    raise
                entry.last_attempt = now
                log.warning("%s; using the one fetched %.0f s ago", exc, now - entry.fetched_at)
                return entry.document
            with self._lock:
                self._entries[url] = _Entry(document, fetched_at=now, last_attempt=now)
            log.info("discovered %s at %s", info.name, url)
            return document

    def _fresh(self, entry: _Entry, now: float) -> bool:
        return not entry.stale and now - entry.fetched_at < self.max_age

    def _url_lock(self, url: str) -> threading.Lock:
        with self._lock:
            return self._url_locks.setdefault(url, threading.Lock())

    def _fetch(self, info: ProviderInfo) -> dict:
        url = str(info.discovery_url)
        where = f"the discovery document of {info.name} at {url}"
        try:
            response = requests.get(url, headers={"Accept": "application/json"},
                                    timeout=self._timeout)
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"{where} could not be fetched ({type(exc).__name__})",
                                      code="discovery_unavailable") from exc
        status = response.status_code
        if status == 429 or status >= 500:
            raise ProviderUnavailable(f"{where} answered {status}", code="discovery_unavailable")
        if status != 200:
            raise ProviderMisconfigured(f"{where} answered {status}: check the issuer URL",
                                        code="discovery_not_found")
        try:
            document = response.json()
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise ProviderUnavailable(f"{where} is not a JSON object", code="discovery_malformed")
        bad = [name for name in REQUIRED if not _is_url(document.get(name))]
        if bad:
            raise ProviderMisconfigured(f"{where} lacks a valid {', '.join(bad)}",
                                        code="discovery_incomplete")
        return document


def _is_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("https", "http") and bool(parts.netloc)


def _complete(info: ProviderInfo, document: dict) -> ProviderInfo:
    issuer = document["issuer"]
    # OpenID Connect Discovery 1.0 section 4.3: identical, or the document is not the provider's.
    if info.issuer is not None and issuer != info.issuer:
        raise ProviderMisconfigured(
            f"the discovery document at {info.discovery_url} names the issuer {issuer!r}, not "
            f"{info.issuer!r} as configured for {info.name}: they must be identical",
            code="issuer_mismatch",
        )
    endpoints = {
        field: getattr(info, field) or (document[name] if _is_url(document.get(name)) else None)
        for field, name in ENDPOINTS.items()
    }
    return dataclasses.replace(
        info,
        **endpoints,
        issuer=issuer,
        requires_iss_parameter=info.requires_iss_parameter
        or document.get("authorization_response_iss_parameter_supported") is True,
    )
