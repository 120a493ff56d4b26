"""A fake Microsoft identity platform (v2.0 endpoints) on loopback, built on the kit's
``FakeProvider``: discovery under ``/{tenant}/v2.0``, a JWKS, and id_tokens as Microsoft signs
them.

What it answers, as Microsoft's documents say: the ``common`` and ``organizations`` documents
name the issuer ``{url}/{tenantid}/v2.0`` (a template), a tenant's own document names its
issuer; an id_token's ``iss`` names the signed-in account's tenant (``tid``), ``oid`` is the
account in that tenant, ``sub`` is pairwise (per app); there is no ``email_verified``, only the
optional claim ``xms_edov`` (sent here when the account's ``email_verified`` is not None);
every refresh returns a new refresh token; there is no revocation endpoint and no ``iss`` on
the callback.

An ``Account``'s ``subject`` is its ``oid`` and ``claims["tid"]`` its tenant (``TENANT`` when
absent); other ``claims`` are added to the id_token as they are.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import time

from joserfc import jwt
from joserfc.jwk import RSAKey

from authgateway.testing import Account, FakeProvider

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TENANT = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
CONSUMERS = "9188040d-6c67-4c5b-b112-36a304b66dad"
DISCOVERY = re.compile(r"^/([^/]+)/v2\.0/\.well-known/openid-configuration$")


@functools.cache
def signing_key() -> RSAKey:
    """One key for every fake of the test session: generating one costs a tenth of a second."""
    return RSAKey.generate_key(2048, private=True, parameters={
        "kid": secrets.token_hex(4), "use": "sig", "alg": "RS256"})


class FakeMicrosoft(FakeProvider):
    def __init__(self, tenant: str = "common", **options) -> None:
        self.tenant = tenant
        base = f"/{tenant}"
        options = {"oidc": True, "authorize_path": base + "/oauth2/v2.0/authorize",
                   "token_path": base + "/oauth2/v2.0/token",
                   "jwks_path": base + "/discovery/v2.0/keys", "userinfo_path": "/oidc/userinfo",
                   "revoke_path": None, "rotate_refresh_tokens": True, **options}
        super().__init__(**options)
        self._key = signing_key()
        #: When set, id_tokens carry this ``iss`` instead of their tenant's.
        self.issuer_override: str | None = None

    def discovery_url(self, tenant: str | None = None) -> str:
        return f"{self.url}/{tenant or self.tenant}/v2.0/.well-known/openid-configuration"

    def issuer_of(self, tenant: str) -> str:
        return f"{self.url}/{tenant}/v2.0"

    def handle(self, request):
        match = DISCOVERY.match(request.path)
        if request.method == "GET" and match:
            with self._lock:
                self.requests.append((request.method, request.path))
            if match.group(1) != self.tenant:
                return 400, {"error": "invalid_tenant"}, {}
            return 200, self.document(), {}
        return super().handle(request)

    def document(self) -> dict:
        doc = super().document()
        if self.tenant in ("common", "organizations"):
            doc["issuer"] = self.issuer_of("{tenantid}")
        elif self.tenant == "consumers":
            doc["issuer"] = self.issuer_of(CONSUMERS)
        else:
            doc["issuer"] = self.issuer_of(self.tenant)
        doc["jwks_uri"] = self.url + self.jwks_path
        doc["subject_types_supported"] = ["pairwise"]
        doc["token_endpoint_auth_methods_supported"] = ["client_secret_post", "private_key_jwt",
                                                        "client_secret_basic"]
        return doc

    def id_token(self, account: Account, client_id: str, nonce: str | None = None) -> str:
        now = int(time.time())
        extra = dict(account.claims)
        tenant = extra.pop("tid", TENANT)
        pairwise = hashlib.sha256(f"{client_id}|{tenant}|{account.subject}".encode()).hexdigest()
        claims = {"iss": self.issuer_override or self.issuer_of(tenant), "aud": client_id,
                  "iat": now, "nbf": now, "exp": now + 3600, "ver": "2.0", "tid": tenant,
                  "oid": account.subject, "sub": pairwise[:43], "name": "Ada Lovelace",
                  "preferred_username": account.email, "email": account.email}
        if account.email_verified is not None:
            claims["xms_edov"] = account.email_verified
        claims.update(extra)
        claims = {key: value for key, value in claims.items() if value is not None}
        if nonce:
            claims["nonce"] = nonce
        return jwt.encode({"alg": "RS256", "kid": self._key.kid, "typ": "JWT"}, claims, self._key)

    def settings(self, redirect_uri: str, **extra) -> dict:
        """The gateway's settings pointing the plugin at this fake."""
        return {"MICROSOFT_AUTHORITY_URL": self.url, "MICROSOFT_TENANT": self.tenant,
                "MICROSOFT_CLIENT_ID": self.client_id,
                "MICROSOFT_CLIENT_SECRET": self.client_secret,
                "MICROSOFT_REDIRECT_URI": redirect_uri, **extra}
