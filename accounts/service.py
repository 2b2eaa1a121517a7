"""What the API routes and the bot's actions call: accounts (audited reads), sessions, agents.

    put_account("demo-0001", account)                      # admin: create or replace (a real account)
    put_demo_account("demo-minor", account)                # accounts.demo only; is_demo_account() → True
    read_account_for("demo-0001", conversation_id=sender,  # every read leaves an audit row;
                     actor="bot", purpose="diagnosis")     # None when the source has no account
    token, expires_at = create_session("demo-0001")        # admin: stands in for the channel login
    issued = issue_session("demo-0001")                    # the same, with its public .token_id
    user_for_token(token)                                  # the chat route: token → user_id | None
    user_sessions(user_id) / revoke_session(token_id) / revoke_user_sessions(user_id)
    revoke_agent(agent_id)                                 # its token refused, its tickets back in the queue

The database is the process's shared one (store.default_sessions) and the account source is
chosen by settings (HC_ACCOUNT_SOURCE), both on first use; `configure()` points the service
elsewhere (tests). Calls are synchronous: callers run them in worker threads.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from accounts import audit
from accounts import sessions as tokens
from accounts.source import AccountSource, HttpAccountSource, SqlAccountStore
from core.logs import log_event
from core.sealing import data_key
from core.settings import Settings, get_settings
from diagnosis.account import Account
from store import default_sessions, session_factory

log = logging.getLogger("hc.accounts")

_lock = threading.Lock()
_sessions: sessionmaker[Session] | None = None
_source: AccountSource | None = None
_settings: Settings | None = None


# --- where things are ---------------------------------------------------------------------------
def configure(target: Engine | sessionmaker | None, *, source: AccountSource | None = None) -> None:
    """Use this (migrated) database from now on, and this account source (default: the built-in
    store on that database, or what settings say when target is None)."""
    global _sessions, _source
    with _lock:
        _sessions = target if target is None or isinstance(target, sessionmaker) else session_factory(target)
        _source = source


def use_settings(settings: Settings | None) -> None:
    """The app's own settings (its account source, its session lifetime), set at start-up;
    None: the environment's (CLIs, tests that configure nothing)."""
    global _settings, _source
    with _lock:
        _settings, _source = settings, None


def settings() -> Settings:
    return _settings or get_settings()


def sessions() -> sessionmaker[Session]:
    current = _sessions
    return current if current is not None else default_sessions()


def source_from_settings(settings: Settings, db: sessionmaker[Session]) -> AccountSource:
    if settings.account_source == "http":
        return HttpAccountSource(settings.account_upstream_url or "", settings.account_upstream_token,
                                 timeout_s=settings.account_upstream_timeout_s)
    return SqlAccountStore(db, data_key(settings))


def source() -> AccountSource:
    global _source
    current = _source
    if current is not None:
        return current
    with _lock:
        if _source is None:
            _source = (SqlAccountStore(_sessions, data_key(settings())) if _sessions is not None
                       else source_from_settings(settings(), default_sessions()))
        return _source


def user_ref(user_id: str) -> str:
    """What logs carry instead of a user_id (a platform may use a phone number as the id)."""
    return hashlib.sha256(f"hc-user:{user_id}".encode()).hexdigest()[:12]


# --- accounts -----------------------------------------------------------------------------------
def put_account(user_id: str, account: Account) -> datetime:
    """Create or replace the user's account (raises ReadOnlySource for the upstream source)."""
    updated_at = source().put(user_id, account)
    log_event(log, "account_stored", user=user_ref(user_id), fields=sorted(account.document()))
    return updated_at


def put_demo_account(user_id: str, account: Account) -> datetime | None:
    """Store one of accounts.demo's fictitious accounts, flagged as demo (open to HC_DEMO sign-in).

    Only the demo loader calls this. None, and nothing stored, when a real account (one stored
    through put_account) holds the user_id: a demo never replaces a person's account."""
    updated_at = source().put_demo(user_id, account)
    log_event(log, "demo_account_stored" if updated_at else "demo_account_skipped",
              user=user_ref(user_id))
    return updated_at


def is_demo_account(user_id: str) -> bool:
    """True only for an account the demo loader stored and nobody has replaced since; always
    False for the upstream source. What the demo sign-in route asks, never the id's shape."""
    return source().is_demo(user_id)


def read_account_for(user_id: str, *, conversation_id: str | None, actor: str,
                     purpose: str = "diagnosis") -> Account | None:
    """The user's account, after writing the audit row for this read.

    The audit is not optional: when its row cannot be written the read fails (the exception
    propagates) rather than hand out an account nobody will know was looked at. Raises
    SourceUnavailable when the source cannot answer."""
    account = source().get(user_id)
    with sessions().begin() as session:
        audit.record_read(session, user_id=user_id, actor=actor, purpose=purpose,
                          conversation_id=conversation_id, found=account is not None)
    log_event(log, "account_read", user=user_ref(user_id), actor=actor, purpose=purpose,
              found=account is not None,
              conversation=None if conversation_id is None else audit.conversation_ref(conversation_id))
    return account


def personal_strings(account: Account | None) -> tuple[str, ...]:
    """The user's and family's names, ID and phone numbers: what to mask in the user's own text.

    Regexes catch the usual ID and phone shapes, not a name, nor every permit number format."""
    if account is None:
        return ()
    values = [account.name, account.id_number, account.phone]
    for member in account.family or ():
        values += [member.name, member.id_number]
    # Longest first: a family member's name containing the user's must not be half-masked.
    return tuple(sorted({v for v in values if isinstance(v, str) and len(v) >= 2}, key=len, reverse=True))


# --- sessions and agents ------------------------------------------------------------------------
def issue_session(user_id: str, *, ttl_s: float | None = None) -> tokens.IssuedSession:
    """A new session for user_id: .token (shown once), .token_id (public), .expires_at."""
    ttl = ttl_s if ttl_s is not None else settings().session_ttl_s
    issued = tokens.issue_session(sessions(), user_id, ttl_s=ttl)
    log_event(log, "session_created", user=user_ref(user_id), session=issued.token_id,
              expires_at=issued.expires_at.isoformat())
    return issued


def create_session(user_id: str, *, ttl_s: float | None = None) -> tuple[str, datetime]:
    issued = issue_session(user_id, ttl_s=ttl_s)
    return issued.token, issued.expires_at


def issue_anonymous_session(*, ttl_s: float | None = None) -> tokens.IssuedSession:
    """A session that signs in nobody (a channel user without a linked account)."""
    ttl = ttl_s if ttl_s is not None else settings().session_ttl_s
    issued = tokens.issue_session(sessions(), "", ttl_s=ttl, anonymous=True)
    log_event(log, "session_created", user=None, session=issued.token_id,
              expires_at=issued.expires_at.isoformat())
    return issued


def create_anonymous_session(*, ttl_s: float | None = None) -> tuple[str, datetime]:
    issued = issue_anonymous_session(ttl_s=ttl_s)
    return issued.token, issued.expires_at


def user_for_token(token: str | None) -> str | None:
    return tokens.resolve(sessions(), token)


def session_for_token(token: str | None) -> tokens.SessionInfo | None:
    """The live session of a token (its public token_id among others), None when not live."""
    return tokens.session_for_token(sessions(), token)


def session_live(token_id: str | None) -> bool:
    """Whether the session with this public id still signs its user in (for streams to re-check)."""
    return tokens.session_live(sessions(), token_id)


def user_sessions(user_id: str) -> list[tokens.SessionInfo]:
    """The user's live sessions (token_id, created_at, expires_at), oldest first."""
    return tokens.live_sessions(sessions(), user_id)


def revoke_session(token_id: str, *, actor: str = "admin") -> tokens.SessionInfo | None:
    """Revoke one session by its public id; None when no live session has it."""
    info = tokens.revoke_session(sessions(), token_id)
    if info is not None:
        log_event(log, "session_revoked", session=info.token_id,
                  user=user_ref(info.user_id) if info.user_id else None, by=actor)
    return info


def revoke_user_sessions(user_id: str, *, actor: str = "admin") -> int:
    """Revoke every session of the user; how many live ones there were."""
    revoked = tokens.revoke_user_sessions(sessions(), user_id)
    log_event(log, "user_sessions_revoked", user=user_ref(user_id), count=len(revoked),
              sessions=[info.token_id for info in revoked], by=actor)
    return len(revoked)


def create_agent(name: str) -> tuple[int, str]:
    agent_id, token = tokens.create_agent(sessions(), name)
    log_event(log, "agent_created", agent_id=agent_id)
    return agent_id, token


def agent_for_token(token: str | None) -> tokens.AgentIdentity | None:
    return tokens.resolve_agent(sessions(), token)


def agent_active(agent_id: int) -> bool:
    """Whether this agent's token still works (for streams to re-check)."""
    return tokens.agent_active(sessions(), agent_id)


@dataclass(frozen=True)
class _OnBehalfOf(tokens.AgentIdentity):
    """The revoked agent's identity (so the ticket service sees its holder), acting as `by`."""
    by: str = "admin"

    @property
    def actor(self) -> str:
        return self.by


def revoke_agent(agent_id: int, *, actor: str = "admin") -> bool:
    """Revoke the agent's token (refused from the next request on) and give the tickets it held
    back to the queue, so no conversation stays with an agent who cannot answer. False when there
    is no such agent, or it is revoked already."""
    agent = tokens.revoke_agent(sessions(), agent_id)
    if agent is None:
        return False
    released = _release_tickets_of(agent, actor)
    log_event(log, "agent_revoked", agent_id=agent.id, released=released, by=actor)
    return True


def _release_tickets_of(agent: tokens.AgentIdentity, actor: str) -> list[str]:
    from sqlalchemy import select

    from store.models import Ticket
    from tickets import service as tickets

    with tickets.sessions()() as session:
        held = session.scalars(select(Ticket.id).where(Ticket.claimed_by == agent.id,
                                                       Ticket.status == "claimed")).all()
    released = []
    for ticket_id in held:
        try:
            tickets.unclaim(ticket_id, _OnBehalfOf(agent.id, agent.name, by=actor))
        except tickets.TicketError:
            continue                  # resolved or handed on meanwhile: nothing to give back
        released.append(ticket_id)
    return released
