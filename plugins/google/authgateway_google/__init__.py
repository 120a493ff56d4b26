"""Google for authgateway: a declaration. The core's default OAuth 2.0 / OIDC plugin does the
rest, because Google's web-server flow is standard apart from the parameters named here."""

from __future__ import annotations

from authgateway import ProviderInfo, hookimpl

ISSUER = "https://accounts.google.com"
API = "https://www.googleapis.com/auth/"
#: What a granted Google scope covers besides itself. Google answers ``email`` and ``profile``
#: with their ``userinfo`` names; a full-access scope covers its read-only one.
IMPLIED_SCOPES = {
    API + "userinfo.email": ("email",),
    API + "userinfo.profile": ("profile",),
    API + "drive": (API + "drive.readonly",),
    API + "calendar": (API + "calendar.readonly",),
    API + "spreadsheets": (API + "spreadsheets.readonly",),
    API + "gmail.modify": (API + "gmail.readonly",),
}
ENDPOINTS = {
    "AUTHORIZE_URL": "https://accounts.google.com/o/oauth2/v2/auth",
    "TOKEN_URL": "https://oauth2.googleapis.com/token",
    "REVOKE_URL": "https://oauth2.googleapis.com/revoke",
    "USERINFO_URL": "https://openidconnect.googleapis.com/v1/userinfo",
    "JWKS_URL": "https://www.googleapis.com/oauth2/v3/certs",
}


@hookimpl
def authgateway_register_providers(settings) -> list[ProviderInfo]:
    urls = {key: settings.get(f"GOOGLE_{key}", default) for key, default in ENDPOINTS.items()}
    issuer = settings.get("GOOGLE_ISSUER", ISSUER)
    # Google's id_tokens name the issuer with or without the scheme. The signature, checked
    # against the configured JWKS, is what the trust rests on; the configured issuer comes first.
    id_token_issuers = tuple(dict.fromkeys((issuer, ISSUER, "accounts.google.com")))
    return [
        ProviderInfo(
            name="google",
            display_name="Google",
            authorize_url=urls["AUTHORIZE_URL"],
            token_url=urls["TOKEN_URL"],
            revoke_url=urls["REVOKE_URL"],
            userinfo_url=urls["USERINFO_URL"],
            jwks_url=urls["JWKS_URL"],
            issuer=issuer,
            id_token_issuers=id_token_issuers,
            default_scopes=("openid", "email", "profile"),
            implied_scopes=IMPLIED_SCOPES,
            extra_authorize_params={
                "access_type": "offline",
                "prompt": "consent",
                "include_granted_scopes": "true",
            },
            # Google accepts both; the body keeps secrets with special characters intact.
            client_auth_method="client_secret_post",
            # Revoking any token of a user's grant revokes the app's whole access for that
            # user at Google, the grant a new flow just stored included.
            revoke_replaced_grants=False,
        )
    ]
