"""The authorization-code flow: start it for a user, finish it when the provider calls back."""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from flask import current_app
from sqlalchemy import Connection, select, update

from . import audit, emails, events, outbox, rotation
from .context import gateway
from .errors import GatewayError, SessionNotFoundError
from .extensions import db
from .models import COMPLETED, FAILED, PENDING, AuthSession, utcnow
from .providers import Identity, IdentityError, ProviderError, ProviderInfo, TokenSet
from .tokens import AccountMismatch, granted_scopes, revoke_replaced, store_credential

log = logging.getLogger(__name__)

STATE_LENGTH = 48  # characters from a 62-letter alphabet: about 285 bits
VERIFIER_LENGTH = 64
ERROR_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class StartedFlow:
    auth_url: str
    session_id: str
    expires_at: datetime


class CallbackFailed(Exception):
    """The callback ends in a failure page with this status, error code and sentence."""

    def __init__(self, status: int, code: str, message: str, provider: ProviderInfo | None = None,
                 user_email: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.provider, self.user_email = provider, user_email


@dataclass(frozen=True)
class CallbackSucceeded:
    provider: ProviderInfo
    user_email: str
    scopes: list[str]
    #: Requested but not granted: the person unticked them on a granular consent screen.
    declined: list[str]


def state_hash(state: str) -> str:
    return hashlib.sha256(state.encode("utf-8")).hexdigest()


def requested_scopes(info: ProviderInfo, scopes: list[str] | None,
                     granted: Iterable[str] = ()) -> list[str]:
    """The identity scopes first (the gateway must see who signs in), then the caller's, then
    those already granted: a flow for a user who has a grant asks for the union (incremental
    authorization), so that the grant it stores covers what the old one did. The old grant
    stays stored, and keeps working, until the provider's answer replaces it."""
    wanted = [*info.identity_scopes, *(scopes if scopes else info.default_scopes), *granted]
    return list(dict.fromkeys(wanted))


def check_startable(provider: str) -> ProviderInfo:
    """The provider, installed (else 400) and configured (else 503): checked before a flow is
    counted against its key's budget or anything is stored."""
    providers = gateway().providers
    info = providers.info(provider)
    providers.config(provider)
    return info


def start_flow(provider: str, user_email: str, scopes: list[str] | None,
               api_key_name: str | None) -> StartedFlow:
    gw = gateway()
    info = check_startable(provider)
    state = generate_token(STATE_LENGTH)
    verifier = generate_token(VERIFIER_LENGTH)
    all_scopes = requested_scopes(info, scopes, granted_scopes(user_email, provider))
    auth_url = gw.providers.authorization_url(
        provider,
        state=state,
        code_challenge=create_s256_code_challenge(verifier),
        scopes=all_scopes,
        login_hint=user_email,
    )
    expires_at = utcnow() + timedelta(minutes=current_app.config["SESSION_EXPIRY_MINUTES"])
    session = AuthSession(
        id=str(uuid.uuid4()),
        state_hash=state_hash(state),
        code_verifier_encrypted=gw.keyring.encrypt(verifier),
        key_id=gw.keyring.primary_id,
        user_email=user_email,
        provider=provider,
        scopes=" ".join(all_scopes),
        status=PENDING,
        api_key_name=api_key_name,
        expires_at=expires_at,
    )
    db.session.add(session)
    audit.record("flow_started", actor=api_key_name, user_email=user_email, provider=provider)
    db.session.commit()
    if gw.flow_purge.due():
        _purge_expired_flows()
    return StartedFlow(auth_url=auth_url, session_id=session.id, expires_at=expires_at)


def _purge_expired_flows() -> None:
    """A bounded purge of long-expired flows, after this flow is committed: a failure costs
    the purge, never the flow."""
    try:
        purged = rotation.purge_some_sessions()
    except Exception:
        log.warning("purging expired flows failed; a flow started a minute later tries again",
                    exc_info=True)
        return
    if purged:
        log.info("purged %d flows that expired more than a day ago", purged)


def session_status(session_id: str,
                   visible: Callable[[str | None, str, str], bool] | None = None) -> dict:
    """The flow's state; not found unless ``visible(started_by, provider, user_email)``."""
    try:
        uuid.UUID(session_id)
    except ValueError:
        raise SessionNotFoundError() from None
    session = db.session.get(AuthSession, session_id)
    if session is None or (visible is not None and not visible(
            session.api_key_name, session.provider, session.user_email)):
        raise SessionNotFoundError()
    answer = {"session_id": session.id, "user_email": session.user_email,
              "provider": session.provider}
    if session.status == PENDING and session.expires_at <= utcnow():
        answer.update(status=FAILED, error="expired")
    elif session.status == PENDING:
        answer.update(status=PENDING, expires_at=session.expires_at)
    elif session.status == FAILED:
        answer.update(status=FAILED, error=session.error)
    else:
        answer.update(status=COMPLETED)
    return answer


def finish_callback(provider: str, args) -> CallbackSucceeded:
    """Check the callback in the order RFC 9700 and RFC 9207 ask, then store the credential.
    Each step either returns what the next needs or ends the flow with a CallbackFailed."""
    info = _callback_provider(provider)
    session = _claim_pending_session(info, args.get("state"))
    _check_issuer(session, info, args.get("iss"))
    code = _authorization_code(session, info, args)
    tokens, identity = _exchange(session, info, code)
    _check_identity(session, info, identity)
    return _complete(session, info, identity, tokens)


def _callback_provider(provider: str) -> ProviderInfo:
    try:
        return gateway().providers.info(provider)
    except GatewayError:
        raise CallbackFailed(404, "unsupported_provider",
                             "This provider is not known here.") from None


def _claim_pending_session(info: ProviderInfo, state: str | None) -> AuthSession:
    """The pending, unexpired session this state belongs to, claimed so that no second
    callback with the same state gets past this point."""
    if not state:
        raise CallbackFailed(400, "invalid_request", "The provider's answer carried no state.",
                             info)
    session = db.session.scalar(select(AuthSession).where(AuthSession.state_hash ==
                                                          state_hash(state)))
    if session is None:
        raise CallbackFailed(404, "session_not_found",
                             "This sign-in link is unknown or was already used.", info)
    if session.provider != info.name:
        raise CallbackFailed(400, "invalid_request",
                             "This sign-in was started for another provider.", info)
    if session.status != PENDING or session.consumed_at is not None:
        raise CallbackFailed(400, "state_already_used",
                             "This sign-in link was already used; start again.", info,
                             session.user_email)
    if session.expires_at <= utcnow():
        _fail(session, "expired")
        raise CallbackFailed(410, "expired", "This sign-in link has expired; start again.", info,
                             session.user_email)
    if not _claim(session):
        raise CallbackFailed(400, "state_already_used",
                             "This sign-in link was already used; start again.", info,
                             session.user_email)
    return session


def _authorization_code(session: AuthSession, info: ProviderInfo, args) -> str:
    """The code the provider sent, or the flow fails with the error it sent instead."""
    if args.get("error"):
        code = args["error"] if ERROR_CODE.match(args["error"]) else "provider_error"
        _fail(session, code)
        message = (f"The sign-in at {info.display_name} was cancelled, so access was not granted."
                   if code == "access_denied" else
                   f"{info.display_name} did not grant access ({code}).")
        raise CallbackFailed(400, code, message, info, session.user_email)
    code = args.get("code")
    if not code:
        _fail(session, "invalid_request")
        raise CallbackFailed(400, "invalid_request", "The provider's answer carried no code.",
                             info, session.user_email)
    return code


def _exchange(session: AuthSession, info: ProviderInfo, code: str) -> tuple[TokenSet, Identity]:
    """The code exchanged with the session's PKCE verifier, and who the provider says signed in."""
    gw = gateway()
    verifier = gw.keyring.decrypt(session.code_verifier_encrypted, session.key_id)
    try:
        tokens = gw.providers.exchange_code(info.name, code=code, code_verifier=verifier)
        return tokens, gw.providers.identity(info.name, tokens=tokens)
    except IdentityError as exc:
        log.warning("identity check failed for session %s: %s", session.id, exc)
        _fail(session, "identity_unverified")
        raise CallbackFailed(502, "identity_unverified",
                             f"{info.display_name} did not confirm which account signed in.",
                             info, session.user_email) from None
    except ProviderError as exc:
        log.warning("code exchange failed for session %s: %s (%s)", session.id, exc, exc.code)
        _fail(session, "exchange_failed")
        raise CallbackFailed(502, "exchange_failed",
                             f"{info.display_name} did not complete the sign-in; start again.",
                             info, session.user_email) from None


def _check_identity(session: AuthSession, info: ProviderInfo, identity: Identity) -> None:
    """The account that signed in must have the session's email, verified by the provider."""
    if not any(emails.same(session.user_email, email) for email in identity.proven_emails):
        _fail(session, "email_mismatch")
        why = (identity.unproven_reason or "You signed in with a different account than the "
               "one this connection was started for.")
        raise CallbackFailed(403, "email_mismatch", why + " Nothing was stored.", info,
                             session.user_email)


def _complete(session: AuthSession, info: ProviderInfo, identity: Identity,
              tokens: TokenSet) -> CallbackSucceeded:
    """Store the credential and mark the session completed, in one transaction."""
    session_id, user_email, actor = session.id, session.user_email, session.api_key_name
    requested = session.scopes.split()
    # The credential is written on a connection of its own (store_credential): return this one
    # to the pool instead of holding two while waiting for the credential's lock.
    db.session.close()

    def complete(connection: Connection) -> None:
        # In the credential's transaction: a session reads completed only with its tokens stored.
        connection.execute(update(AuthSession).where(AuthSession.id == session_id)
                           .values(status=COMPLETED, completed_at=utcnow()))
        audit.record("flow_completed", actor=actor, user_email=user_email, provider=info.name,
                     connection=connection)

    try:
        stored = store_credential(user_email, info.name, identity.subject, tokens,
                                  requested=requested, also=complete,
                                  account=_account(tokens, identity), api_key_name=actor)
    except AccountMismatch:
        _fail(db.session.get(AuthSession, session_id), "account_mismatch")
        raise CallbackFailed(400, "account_mismatch",
                             f"This user is connected to another {info.display_name} account. "
                             "Nothing was stored; revoke that connection first to switch "
                             "accounts.", info, user_email) from None
    if stored.replaced is not None:  # committed: the new grant is the user's now
        revoke_replaced(user_email, info.name, actor, stored.replaced)
    return CallbackSucceeded(provider=info, user_email=user_email, scopes=stored.scopes,
                             declined=info.missing_scopes(stored.scopes, requested))


def _account(tokens: TokenSet, identity: Identity) -> dict | None:
    """The account object of a completed flow: the token answer's, with what the identity
    call said over it; None when neither said anything."""
    account = {**(tokens.account or {}), **(identity.account or {})}
    return account or None


def _claim(session: AuthSession) -> bool:
    """Mark the state used, atomically: of two concurrent callbacks only one goes on."""
    result = db.session.execute(
        update(AuthSession)
        .where(AuthSession.id == session.id, AuthSession.consumed_at.is_(None))
        .values(consumed_at=utcnow())
    )
    db.session.commit()
    return result.rowcount == 1


def _check_issuer(session: AuthSession, info: ProviderInfo, iss: str | None) -> None:
    # RFC 9207 section 2.4: simple string comparison, for error callbacks too. The issuer, and
    # whether the provider always sends it, may come from its discovery document.
    try:
        info = gateway().providers.resolved(info.name)
    except ProviderError as exc:
        log.warning("issuer of %s unknown for session %s: %s", info.name, session.id, exc)
        _fail(session, "provider_unavailable")
        raise CallbackFailed(502, "provider_unavailable",
                             f"{info.display_name} could not be reached to finish the sign-in; "
                             "start again.", info, session.user_email) from None
    if info.issuer is None:
        return
    if iss is None and not info.requires_iss_parameter:
        return
    if iss != info.issuer:
        _fail(session, "iss_mismatch")
        raise CallbackFailed(400, "iss_mismatch",
                             "The answer did not come from the expected provider.", info,
                             session.user_email)


def _fail(session: AuthSession, code: str) -> None:
    with outbox.announced():
        session.status = FAILED
        session.error = code
        audit.record("flow_failed", actor=session.api_key_name, user_email=session.user_email,
                     provider=session.provider, outcome=code)
        outbox.record(events.Event(events.FLOW_FAILED, session.provider, session.user_email,
                                   session.api_key_name,
                                   {"code": code, "session_id": session.id}))
        db.session.commit()
