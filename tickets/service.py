"""The hotline ticket queue: what the conversation side and the agent routes call.

    view, created = create_or_get(conversation_id, channel="api", user_id=None, lang="zh",
                                  category="name.mismatch", findings=[...], summary="…")
    open_for(conversation_id)                   # the open or claimed ticket, or None (index lookup)
    get(ticket_id)                              # TicketView, or TicketNotFound
    set_callback_phone(ticket_id, "+86 138-1234-5678")   # sealed at rest; InvalidPhone
    record_user_message(ticket_id, masked_text) # for the holder's live stream
    queue_place(ticket_id)                      # QueuePlace(position, expected_wait_s, in_hours, opens_at)
    rate(ticket_id, 3)                          # a resolved ticket, once
    claim / unclaim / resolve / add_note / agent_message / reveal_phone (agent: AgentIdentity)
    list_tickets(status=, category=) / detail(ticket_id, agent) / events_after(cursor, agent_id)

**One way to change a ticket.** Every change goes through `_change`: it applies the new values,
writes the `ticket_events` row (who, when, kind, {field: [old, new]}, a masked note) and hands the
same change to `tickets.forwarding.enqueue` — all in the caller's transaction, so the ticket, its
history and the outbox row commit or roll back together. After the commit the agents' streams
are woken (`delivery.publish(AGENTS_TOPIC)`) and the relay too (`forwarding.wake()`).

**Concurrency.** A claim is one guarded `UPDATE … WHERE id = :id AND status = 'open'`: of two
agents claiming at once, the database lets exactly one match; the other gets AlreadyClaimed
(409). "One open ticket per conversation" is the unique `open_key` (the conversation id while
not resolved, NULL after): two create_or_get calls at once both try, one insert wins and the
other reads the winner's ticket. Any other change first touches the ticket's row (an UPDATE),
which locks it on PostgreSQL and takes the write lock on SQLite, so what it then reads cannot
change under it before it commits. Events are numbered in commit order (on PostgreSQL a
transaction-scoped advisory lock is taken just before the event row is inserted), so a stream
reading `events_after(cursor)` never skips an event that committed late.

**Personal data.** Every text stored or returned is masked (core.pii.mask_text: ID and phone
numbers in every written form, and for a signed-in user their own and their family's names,
looked up through an audited account read). The callback phone an anonymous user leaves is the
only raw value kept: sealed (AES-GCM, bound to the ticket), it leaves only through
`reveal_phone`, which writes a "phone_revealed" event and an audit log line. The conversation
id (an anonymous user's only credential to read their messages) is never in a public dict.

Synchronous: callers run these in worker threads. The database is the process's shared one
(store.default_sessions) unless `configure()` points elsewhere (tests).
"""
from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Sequence

from sqlalchemy import Engine, and_, case, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from accounts.sessions import AgentIdentity
from accounts.source import as_utc
from assistant.lang import localise
from core.logs import log_event
from core.pii import conversation_ref, mask_phone, mask_text
from core.sealing import data_key, seal, unseal
from core.settings import Settings
from store import default_sessions, session_factory
from store.models import Agent, ConversationMessage, Ticket, TicketEvent, utcnow
from tickets import ids, queue, texts
from tickets.queue import QueuePlace

log = logging.getLogger("hc.tickets")
audit_log = logging.getLogger("hc.tickets.audit")

STATUSES = ("open", "claimed", "resolved")
LANGS = ("zh", "zh-hant", "en")
# What every agent's stream sees of every ticket; "user_message" only reaches the holder's.
BROADCAST_KINDS = ("created", "claimed", "unclaimed", "resolved")
MAX_TEXT_CHARS = 2000            # an agent's message, note or resolution; a summary
MAX_FINDINGS = 10
TRANSCRIPT_LIMIT = 200           # the newest messages of the conversation shown with a ticket
LIST_LIMIT = 500
_CREATE_ATTEMPTS = 5
# Taken (PostgreSQL, transaction-scoped) right before an event row is inserted: event ids are
# then handed out in commit order. Any constant: the same in every process on this database.
_PG_EVENT_LOCK = 0x48435445      # "HCTE"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

_lock = threading.Lock()
_sessions: sessionmaker[Session] | None = None
_settings: Settings | None = None


# --- errors -------------------------------------------------------------------------------------
class TicketError(Exception):
    """Base of the service's refusals; `code` is the API error code, `status` its HTTP status."""
    code = "ticket_error"
    status = 400

    def __init__(self, message: str = ""):
        super().__init__(message or self.__doc__ or self.code)
        self.message = message or (self.__doc__ or self.code).strip()


class TicketNotFound(TicketError, LookupError):
    """No such ticket."""
    code, status = "not_found", 404


class TicketConflict(TicketError):
    """The ticket is not in a state that allows this."""
    code, status = "conflict", 409


class AlreadyClaimed(TicketConflict):
    """Another agent holds this ticket."""
    code = "already_claimed"


class NotHolder(TicketConflict):
    """Only the agent holding (having claimed) this ticket may do that."""
    code = "not_holder"


class TicketResolved(TicketConflict):
    """The ticket is resolved already."""
    code = "ticket_resolved"


class NotResolved(TicketConflict):
    """Only a resolved ticket can be rated."""
    code = "not_resolved"


class AlreadyRated(TicketConflict):
    """This ticket has been rated already."""
    code = "already_rated"


class InvalidInput(TicketError, ValueError):
    """The value is not acceptable."""
    code, status = "invalid_request", 422


class InvalidPhone(InvalidInput):
    """Not a mainland mobile number (11 digits starting 13–19)."""
    code = "invalid_phone"


class InvalidScore(InvalidInput):
    """A rating is 1, 2 or 3."""
    code = "invalid_score"


class InvalidText(InvalidInput):
    """A text must have 1 to 2000 characters (after trimming)."""
    code = "invalid_text"


# --- where things are ---------------------------------------------------------------------------
def configure(target: Engine | sessionmaker | None, *, settings: Settings | None = None) -> None:
    """Use this (migrated) database from now on, and these settings (hotline hours, SLA, data
    key); None: the process's shared database and the app's (or the environment's) settings."""
    global _sessions, _settings
    with _lock:
        _sessions = target if target is None or isinstance(target, sessionmaker) else session_factory(target)
        _settings = settings


def sessions() -> sessionmaker[Session]:
    current = _sessions
    return current if current is not None else default_sessions()


def settings() -> Settings:
    """The configured settings, else the app's (accounts.service has them from start-up)."""
    if _settings is not None:
        return _settings
    from accounts import service as accounts

    return accounts.settings()


# --- the view -----------------------------------------------------------------------------------
def _iso(value: datetime | None) -> str | None:
    return None if value is None else as_utc(value).astimezone(timezone.utc).isoformat()


@dataclass(frozen=True)
class TicketView:
    """A ticket as the services see it (texts masked; the sealed phone only as has_callback_phone).

    `public()` is what agents and the outside hotline system get: no conversation id."""
    id: str
    conversation_id: str = field(repr=False)
    channel: str
    user_id: str | None
    lang: str
    category: str
    findings: tuple[dict, ...]
    summary: str
    status: str
    claimed_by: int | None
    claimed_by_name: str | None
    awaiting_contact: bool
    has_callback_phone: bool
    resolution: str | None
    satisfaction: int | None
    created_at: datetime
    updated_at: datetime
    claimed_at: datetime | None
    first_response_at: datetime | None
    resolved_at: datetime | None
    rated_at: datetime | None
    sla_due_at: datetime

    @property
    def diagnosis(self) -> list[str]:
        return [f["code"] for f in self.findings if f.get("code")]

    @property
    def is_open(self) -> bool:
        """Waiting or being handled (the conversation is with the hotline)."""
        return self.status in ("open", "claimed")

    def overdue(self, now: datetime | None = None) -> bool:
        """Past the first-response target without a response, and not resolved."""
        return (self.status != "resolved" and self.first_response_at is None
                and (now or utcnow()) > self.sla_due_at)

    def public(self, now: datetime | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            # A platform may use a phone number as its user id: masked like any text.
            "user_id": None if self.user_id is None else mask_text(self.user_id),
            "category": self.category,
            "status": self.status,
            "created_at": _iso(self.created_at),
            "diagnosis": self.diagnosis,
            "summary": self.summary,
            "channel": self.channel,
            "claimed_by": self.claimed_by_name,
            "claimed_by_id": self.claimed_by,
            "lang": self.lang,
            "awaiting_contact": self.awaiting_contact,
            "has_callback_phone": self.has_callback_phone,
            "sla_due_at": _iso(self.sla_due_at),
            "overdue": self.overdue(now),
            "claimed_at": _iso(self.claimed_at),
            "first_response_at": _iso(self.first_response_at),
            "resolved_at": _iso(self.resolved_at),
            "resolution": self.resolution,
            "satisfaction": self.satisfaction,
            "updated_at": _iso(self.updated_at),
        }


def _hours() -> queue.Hours:
    return queue.parse_hours(settings().hotline_hours)


def sla_due(created_at: datetime, s: Settings | None = None) -> datetime:
    """The first-response target: ticket_sla_s after the ticket was made, counted from the
    hotline's opening when it was made outside hours."""
    s = s or settings()
    start = queue.next_opening(as_utc(created_at), queue.parse_hours(s.hotline_hours))
    return start.astimezone(timezone.utc) + timedelta(seconds=s.ticket_sla_s)


def _agent_names(session: Session, agent_ids: set[int]) -> dict[int, str]:
    if not agent_ids:
        return {}
    rows = session.execute(select(Agent.id, Agent.name).where(Agent.id.in_(agent_ids)))
    return {agent_id: name for agent_id, name in rows}


def _view(row: Ticket, names: dict[int, str], s: Settings | None = None) -> TicketView:
    return TicketView(
        id=row.id, conversation_id=row.conversation_id, channel=row.channel, user_id=row.user_id,
        lang=row.lang, category=row.category, findings=tuple(dict(f) for f in row.findings or ()),
        summary=row.summary, status=row.status, claimed_by=row.claimed_by,
        claimed_by_name=names.get(row.claimed_by) if row.claimed_by is not None else None,
        awaiting_contact=bool(row.awaiting_contact), has_callback_phone=row.callback_phone is not None,
        resolution=row.resolution, satisfaction=row.satisfaction,
        created_at=as_utc(row.created_at), updated_at=as_utc(row.updated_at),
        claimed_at=row.claimed_at and as_utc(row.claimed_at),
        first_response_at=row.first_response_at and as_utc(row.first_response_at),
        resolved_at=row.resolved_at and as_utc(row.resolved_at), rated_at=row.rated_at and as_utc(row.rated_at),
        sla_due_at=sla_due(row.created_at, s))


def _view_of(session: Session, row: Ticket) -> TicketView:
    ids_ = {row.claimed_by} if row.claimed_by is not None else set()
    return _view(row, _agent_names(session, ids_))


def _views(session: Session, rows: Sequence[Ticket]) -> list[TicketView]:
    names = _agent_names(session, {r.claimed_by for r in rows if r.claimed_by is not None})
    s = settings()
    return [_view(r, names, s) for r in rows]


# --- masking ------------------------------------------------------------------------------------
def _names(user_id: str | None, *, conversation_id: str | None, actor: str) -> tuple[str, ...]:
    """The signed-in user's own and family's names (and numbers), to mask in free text; read
    through the audited account service. () for an anonymous ticket or when the source is down:
    the ID and phone patterns still apply."""
    if not user_id:
        return ()
    from accounts import service as accounts

    try:
        account = accounts.read_account_for(user_id, conversation_id=conversation_id, actor=actor,
                                            purpose="ticket_masking")
    except Exception as exc:     # a masking aid, not a gate: the regexes still run
        log.warning("ticket masking without names", extra={"fields": {"error": type(exc).__name__}})
        return ()
    return accounts.personal_strings(account)


def _masker(user_id: str | None, *, conversation_id: str | None, actor: str) -> Callable[[str], str]:
    names = _names(user_id, conversation_id=conversation_id, actor=actor)
    return lambda value: mask_text(value or "", names)


def clean_text(value: str | None, limit: int = MAX_TEXT_CHARS) -> str:
    """An agent's text: control characters out, trimmed, 1..limit characters (else InvalidText)."""
    cleaned = _CONTROL.sub("", value or "").strip()
    if not cleaned or len(cleaned) > limit:
        raise InvalidText(f"a text must have 1 to {limit} characters")
    return cleaned


_PHONE_SEPARATORS = re.compile(r"[\s\-.()（）]")
_MOBILE = re.compile(r"^1[3-9]\d{9}$")


def normalise_phone(value: str | None) -> str:
    """A mainland mobile number as 11 digits: spaces, hyphens, dots, brackets and a +86 / 0086 /
    86 prefix are allowed; anything else is InvalidPhone."""
    digits = _PHONE_SEPARATORS.sub("", (value or "").strip())
    for prefix in ("+86", "0086", "86"):
        if digits.startswith(prefix) and len(digits) == len(prefix) + 11:
            digits = digits[len(prefix):]
            break
    if not _MOBILE.match(digits):
        raise InvalidPhone("a callback number must be a mainland mobile number (11 digits, 1[3-9]…)")
    return digits


def _phone_binding(ticket_id: str) -> str:
    return f"ticket-phone:{ticket_id}"


# --- the one function every change goes through -------------------------------------------------
def _plain(value: Any) -> Any:
    return _iso(value) if isinstance(value, datetime) else value


def _change(session: Session, row: Ticket, kind: str, actor: str, *, values: dict[str, Any] | None = None,
            applied: dict[str, list] | None = None, shown: dict[str, list] | None = None,
            note: str | None = None, at: datetime | None = None) -> TicketEvent:
    """Apply `values` to the ticket and record the change: one ticket_events row and one outbox
    message (tickets.forwarding), in the caller's transaction.

    applied: changes already made by a guarded UPDATE ({field: [old, new]}); shown: how a field
    appears in the history instead of its stored value (the sealed phone: masked)."""
    at = at or utcnow()
    changes: dict[str, list] = {k: [_plain(o), _plain(n)] for k, (o, n) in (applied or {}).items()}
    for name, new in (values or {}).items():
        old = getattr(row, name)
        if old != new:
            setattr(row, name, new)
            changes[name] = [_plain(old), _plain(new)]
    for name, pair in (shown or {}).items():
        if name in changes:
            changes[name] = list(pair)
    row.updated_at = at
    session.flush()                       # the ticket's own row first (locked by us already)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_EVENT_LOCK})
    event = TicketEvent(ticket_id=row.id, at=at, actor=mask_text(actor)[:64], kind=kind,
                        changes=changes, note=None if note is None else mask_text(note))
    session.add(event)
    session.flush()
    from tickets import forwarding        # lazily: the relay and its HTTP client are optional

    payload = {**_view_of(session, row).public(at),
               "event": {"id": event.id, "kind": kind, "actor": event.actor, "at": _iso(at),
                         "changes": changes}}
    forwarding.enqueue(session, f"ticket.{kind}", payload)
    return event


def _after_commit(kind: str, ticket_id: str, actor: str) -> None:
    """Wake the agents' streams and the forwarding relay; log the change (no text)."""
    log_event(log, f"ticket_{kind}", ticket=ticket_id, actor=mask_text(actor)[:64])
    try:
        import delivery
        from tickets import forwarding

        delivery.publish(delivery.AGENTS_TOPIC)
        forwarding.wake()
    except Exception as exc:   # a hint only: the streams re-read at every ping anyway
        log.warning("waking the agents' streams failed", extra={"fields": {"error": type(exc).__name__}})


def _locked(session: Session, ticket_id: str, now: datetime) -> Ticket:
    """The ticket's row, locked until this transaction ends (see the module docstring)."""
    result = session.execute(update(Ticket).where(Ticket.id == ticket_id).values(updated_at=now)
                             .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        raise TicketNotFound(f"no ticket {ticket_id}")
    return session.get(Ticket, ticket_id, populate_existing=True)


def _read(ticket_id: str) -> Ticket:
    with sessions()() as session:
        row = session.get(Ticket, ticket_id)
        if row is None:
            raise TicketNotFound(f"no ticket {ticket_id}")
        return row


# --- creating and finding -----------------------------------------------------------------------
def _findings(findings: Sequence[dict] | None, mask: Callable[[str], str]) -> list[dict]:
    out = []
    for f in list(findings or ())[:MAX_FINDINGS]:
        if not isinstance(f, dict) or not f.get("code"):
            continue
        item = {"code": mask(str(f["code"]))[:64], "text": mask(str(f.get("text") or ""))[:MAX_TEXT_CHARS]}
        basis = (f.get("facts") or {}).get("basis") if isinstance(f.get("facts"), dict) else f.get("basis")
        if isinstance(basis, str) and basis:
            item["basis"] = basis[:32]     # which next-step variant applies (a label, not data)
        out.append(item)
    return out


def create_or_get(conversation_id: str, *, channel: str, user_id: str | None, lang: str, category: str,
                  findings: list[dict], summary: str, awaiting_contact: bool = False,
                  actor: str = "bot") -> tuple[TicketView, bool]:
    """The conversation's open ticket, or a new one: (view, created?). Race-safe: two calls at
    once for one conversation give one ticket."""
    if not conversation_id:
        raise InvalidInput("a ticket needs a conversation id")
    existing = open_for(conversation_id)
    if existing is not None:
        return existing, False
    mask = _masker(user_id, conversation_id=conversation_id, actor=actor)
    fields = {
        "conversation_id": conversation_id[:255], "channel": (channel or "api")[:32],
        "user_id": user_id[:128] if user_id else None, "lang": lang if lang in LANGS else "zh",
        "category": mask((category or "").strip())[:64] or "other",
        "findings": _findings(findings, mask),
        "summary": mask(_CONTROL.sub("", summary or "").strip())[:MAX_TEXT_CHARS],
        "awaiting_contact": bool(awaiting_contact),
    }
    for _attempt in range(_CREATE_ATTEMPTS):
        now = utcnow()
        try:
            with sessions().begin() as session:
                # The counter's upsert comes first: it is a write, so on SQLite this transaction
                # holds the write lock from its first statement (no read-then-write upgrade).
                ticket_id = ids.allocate(session, now)
                row = Ticket(id=ticket_id, open_key=conversation_id[:255], status="open", claimed_by=None,
                             callback_phone=None, created_at=now, updated_at=now, **fields)
                session.add(row)
                session.flush()       # the unique open_key decides here
                _change(session, row, "created", actor, at=now,
                        applied={"status": [None, "open"], "category": [None, row.category]},
                        note=row.summary)
                view = _view_of(session, row)
        except IntegrityError:
            # Another call made this conversation's ticket a moment ago: that one is ours too.
            existing = open_for(conversation_id)
            if existing is not None:
                return existing, False
            continue
        _after_commit("created", view.id, actor)
        return view, True
    raise RuntimeError("could not create the ticket (conflicts kept repeating)")


def open_for(conversation_id: str) -> TicketView | None:
    """The conversation's ticket while it is open or claimed (the unique open_key's index)."""
    if not conversation_id:
        return None
    with sessions()() as session:
        row = session.scalars(select(Ticket).where(Ticket.open_key == conversation_id)).first()
        return None if row is None else _view_of(session, row)


def latest_for(conversation_id: str) -> TicketView | None:
    """The conversation's current ticket, or else its most recent one (resolved): what the
    user's widget shows as the hand-off state."""
    if not conversation_id:
        return None
    with sessions()() as session:
        row = session.scalars(select(Ticket).where(Ticket.conversation_id == conversation_id)
                              .order_by(case((Ticket.open_key.is_not(None), 0), else_=1),
                                        Ticket.created_at.desc()).limit(1)).first()
        return None if row is None else _view_of(session, row)


def get(ticket_id: str) -> TicketView:
    with sessions()() as session:
        row = session.get(Ticket, ticket_id)
        if row is None:
            raise TicketNotFound(f"no ticket {ticket_id}")
        return _view_of(session, row)


def list_tickets(status: str | None = None, category: str | None = None,
                 limit: int = LIST_LIMIT) -> list[TicketView]:
    """Tickets, longest waiting (oldest) first; optionally one status and/or one category.
    Unfiltered, the open and claimed ones come before the resolved ones (so a long history of
    resolved tickets never pushes a waiting one past the limit)."""
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}")
    done_last = case((Ticket.status == "resolved", 1), else_=0)
    stmt = select(Ticket).order_by(done_last, Ticket.created_at, Ticket.id).limit(max(1, min(limit, LIST_LIMIT)))
    if status is not None:
        stmt = stmt.where(Ticket.status == status)
    if category:
        stmt = stmt.where(Ticket.category == category)
    with sessions()() as session:
        return _views(session, list(session.scalars(stmt)))


# --- the user's side ----------------------------------------------------------------------------
def set_callback_phone(ticket_id: str, phone: str) -> TicketView:
    """Keep the number an (anonymous) user left for a callback: sealed, bound to this ticket;
    the history shows it masked. Clears awaiting_contact."""
    number = normalise_phone(phone)
    key = data_key(settings())
    now = utcnow()
    with sessions().begin() as session:
        row = _locked(session, ticket_id, now)
        if row.status == "resolved":
            raise TicketResolved(f"ticket {ticket_id} is resolved")
        old = None
        if row.callback_phone is not None:
            old = mask_phone(unseal(row.callback_phone, key, bound_to=_phone_binding(row.id)))
        new = mask_phone(number)
        sealed = seal(number, key, bound_to=_phone_binding(row.id))
        _change(session, row, "callback_phone", "user", at=now,
                values={"callback_phone": sealed, "awaiting_contact": False},
                shown={"callback_phone": [old, new]}, note=new)
        view = _view_of(session, row)
    _after_commit("callback_phone", ticket_id, "user")
    return view


def record_user_message(ticket_id: str, text_masked: str) -> None:
    """A user's message while the ticket is with the hotline: an event for the holder's stream
    (masked once more here)."""
    now = utcnow()
    with sessions().begin() as session:
        row = _locked(session, ticket_id, now)
        _change(session, row, "user_message", "user", at=now,
                note=mask_text(_CONTROL.sub("", text_masked or ""))[:MAX_TEXT_CHARS])
    _after_commit("user_message", ticket_id, "user")


def _recent_claim_waits(session: Session, hours: queue.Hours) -> list[float]:
    """Seconds from creation to claim of the latest claimed tickets that were made in hours
    (one made at night waits for the morning: that says nothing about the daytime queue)."""
    rows = session.execute(select(Ticket.created_at, Ticket.claimed_at).where(Ticket.claimed_at.is_not(None))
                           .order_by(Ticket.claimed_at.desc()).limit(queue.RECENT_CLAIMS * 3))
    waits = [(as_utc(c2) - as_utc(c1)).total_seconds() for c1, c2 in rows if queue.in_hours(as_utc(c1), hours)]
    return [max(w, 0.0) for w in waits[:queue.RECENT_CLAIMS]]


def queue_place(ticket_id: str) -> QueuePlace:
    """Where the ticket stands: its position among open tickets (1 = next), the expected wait
    (from the queue's own recent claims), and, outside hotline hours, when it opens."""
    s = settings()
    hours = queue.parse_hours(s.hotline_hours)
    now = utcnow()
    with sessions()() as session:
        row = session.get(Ticket, ticket_id)
        if row is None:
            raise TicketNotFound(f"no ticket {ticket_id}")
        position = 0
        if row.status == "open":
            ahead = session.scalar(select(func.count()).select_from(Ticket).where(
                Ticket.status == "open",
                or_(Ticket.created_at < row.created_at,
                    and_(Ticket.created_at == row.created_at, Ticket.id < row.id))))
            position = int(ahead or 0) + 1
        waits = _recent_claim_waits(session, hours) if position else []
    open_now = queue.in_hours(now, hours)
    opens_at = None if open_now else queue.next_opening(now, hours)
    wait = queue.expected_wait_s(position, waits, s.ticket_default_wait_s)
    if opens_at is not None and position:
        wait += int((opens_at - now).total_seconds())
    return QueuePlace(position=position, expected_wait_s=wait, in_hours=open_now,
                      opens_at=None if opens_at is None else opens_at.isoformat())


def rate(ticket_id: str, score: int, actor: str = "user") -> TicketView:
    """The user's satisfaction (1 bad … 3 good) with a resolved ticket; once."""
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 3:
        raise InvalidScore("a rating is 1, 2 or 3")
    now = utcnow()
    with sessions().begin() as session:
        row = _locked(session, ticket_id, now)
        if row.status != "resolved":
            raise NotResolved(f"ticket {ticket_id} is not resolved")
        if row.satisfaction is not None:
            raise AlreadyRated(f"ticket {ticket_id} has been rated")
        _change(session, row, "rated", actor, at=now, values={"satisfaction": score, "rated_at": now})
        view = _view_of(session, row)
    _after_commit("rated", ticket_id, actor)
    return view


# --- the agents' side ---------------------------------------------------------------------------
def _holds(row: Ticket, agent: AgentIdentity) -> bool:
    return row.status == "claimed" and row.claimed_by == agent.id


def claim(ticket_id: str, agent: AgentIdentity) -> TicketView:
    """Take an open ticket: one guarded UPDATE, so of two agents at once exactly one wins (the
    other gets AlreadyClaimed). Claiming a ticket one already holds just returns it."""
    now = utcnow()
    with sessions().begin() as session:
        result = session.execute(
            update(Ticket).where(Ticket.id == ticket_id, Ticket.status == "open")
            .values(status="claimed", claimed_by=agent.id, updated_at=now,
                    claimed_at=func.coalesce(Ticket.claimed_at, now))
            .execution_options(synchronize_session=False))
        row = session.get(Ticket, ticket_id, populate_existing=True)
        if result.rowcount != 1:
            if row is None:
                raise TicketNotFound(f"no ticket {ticket_id}")
            if _holds(row, agent):
                return _view_of(session, row)
            if row.status == "resolved":
                raise TicketResolved(f"ticket {ticket_id} is resolved")
            raise AlreadyClaimed(f"ticket {ticket_id} is held by another agent")
        _change(session, row, "claimed", agent.actor, at=now,
                applied={"status": ["open", "claimed"], "claimed_by": [None, agent.id]})
        view = _view_of(session, row)
    _after_commit("claimed", ticket_id, agent.actor)
    # The user learns at once that a person is there (every channel: the same delivery path).
    [notice] = localise([{"text": texts.text("claimed", view.lang, ticket_id=ticket_id), "buttons": []}], view.lang)
    _deliver(view.conversation_id, "system", notice["text"], ticket_id=ticket_id)
    return view


def unclaim(ticket_id: str, agent: AgentIdentity) -> TicketView:
    """Give a held ticket back to the queue (in its old place: it keeps its creation time)."""
    now = utcnow()
    with sessions().begin() as session:
        row = _locked(session, ticket_id, now)
        if row.status == "resolved":
            raise TicketResolved(f"ticket {ticket_id} is resolved")
        if not _holds(row, agent):
            raise NotHolder(f"ticket {ticket_id} is not held by this agent")
        _change(session, row, "unclaimed", agent.actor, at=now, values={"status": "open", "claimed_by": None})
        view = _view_of(session, row)
    _after_commit("unclaimed", ticket_id, agent.actor)
    return view


def _check_may_answer(row: Ticket, agent: AgentIdentity, *, open_ok: bool) -> None:
    if row.status == "resolved":
        raise TicketResolved(f"ticket {row.id} is resolved")
    if row.status == "open" and open_ok:
        return
    if not _holds(row, agent):
        raise NotHolder(f"ticket {row.id} is not held by this agent")


def _deliver(conversation_id: str, sender: str, message: str, buttons: Sequence[dict] = (),
             ticket_id: str | None = None):
    import delivery            # lazily: the delivery package and its broker are optional here

    return delivery.deliver(conversation_id, sender, message, buttons, ticket_id=ticket_id)


def agent_message(ticket_id: str, agent: AgentIdentity, text_in: str) -> dict:
    """Send the agent's text to the user's conversation (whatever channel it came from) and
    record it; the first one sets first_response_at. NotHolder unless this agent holds it."""
    body = clean_text(text_in)
    row = _read(ticket_id)
    _check_may_answer(row, agent, open_ok=False)
    masked = _masker(row.user_id, conversation_id=row.conversation_id, actor=agent.actor)(body)
    message = _deliver(row.conversation_id, "agent", masked, ticket_id=ticket_id)
    now = utcnow()
    with sessions().begin() as session:
        row = _locked(session, ticket_id, now)
        _change(session, row, "message", agent.actor, at=now, note=masked,
                values={"first_response_at": row.first_response_at or now},
                applied={"message_id": [None, str(message.id)]})
        view = _view_of(session, row)
    _after_commit("message", ticket_id, agent.actor)
    return {"message_id": str(message.id), "at": message.at, "text": masked,
            "undelivered": getattr(message, "undelivered", None), "ticket": view.public(now)}


def resolve(ticket_id: str, agent: AgentIdentity, resolution: str) -> TicketView:
    """Tell the user the resolution and ask how satisfied they are (three buttons), then mark the
    ticket resolved: the conversation is the bot's again, and a new request makes a new ticket.

    The holder resolves a claimed ticket; an open one any agent may resolve (taking it)."""
    body = clean_text(resolution)
    row = _read(ticket_id)
    _check_may_answer(row, agent, open_ok=True)
    masked = _masker(row.user_id, conversation_id=row.conversation_id, actor=agent.actor)(body)
    # A conversation in Traditional Chinese sees the notice in its script (no reply path converts
    # a delivered message for it).
    [notice] = localise([{"text": texts.resolution_message(ticket_id, masked, row.lang),
                          "buttons": texts.rating_buttons(ticket_id, row.lang)}], row.lang)
    now = utcnow()
    with sessions().begin() as session:
        row = _locked(session, ticket_id, now)
        _check_may_answer(row, agent, open_ok=True)
        _change(session, row, "resolved", agent.actor, at=now, values={
            "status": "resolved", "open_key": None, "resolution": masked, "resolved_at": now,
            "claimed_by": agent.id, "claimed_at": row.claimed_at or now,
            "first_response_at": row.first_response_at or now})
        view = _view_of(session, row)
    _after_commit("resolved", ticket_id, agent.actor)
    # Told after the status has changed: a client that re-reads the hand-off state on this
    # message sees "resolved" (and a resolve that lost a race tells the user nothing).
    _deliver(view.conversation_id, "system", notice["text"], notice["buttons"], ticket_id=ticket_id)
    return view


def add_note(ticket_id: str, agent: AgentIdentity, text_in: str) -> dict:
    """A private note on the ticket (an event of kind "note"): never delivered to the user."""
    body = clean_text(text_in)
    row = _read(ticket_id)
    masked = _masker(row.user_id, conversation_id=row.conversation_id, actor=agent.actor)(body)
    now = utcnow()
    with sessions().begin() as session:
        row = _locked(session, ticket_id, now)
        event = _change(session, row, "note", agent.actor, at=now, note=masked)
        note = {"id": event.id, "text": masked, "at": _iso(now), "by": agent.name}
    _after_commit("note", ticket_id, agent.actor)
    return note


def reveal_phone(ticket_id: str, agent: AgentIdentity) -> str | None:
    """The raw callback number, for the agent who holds (or resolved) the ticket, to call back.
    The only place it leaves: every reveal is a "phone_revealed" event and an audit log line."""
    key = data_key(settings())
    now = utcnow()
    with sessions().begin() as session:
        row = _locked(session, ticket_id, now)
        if row.claimed_by != agent.id or row.status == "open":
            raise NotHolder(f"ticket {ticket_id} is not held by this agent")
        phone = None
        if row.callback_phone is not None:
            phone = unseal(row.callback_phone, key, bound_to=_phone_binding(row.id))
        _change(session, row, "phone_revealed", agent.actor, at=now,
                applied={"revealed": [None, phone is not None]},
                note=None if phone is None else mask_phone(phone))
    log_event(audit_log, "ticket_phone_revealed", ticket=ticket_id, actor=agent.actor,
              found=phone is not None, conversation=conversation_ref(row.conversation_id))
    _after_commit("phone_revealed", ticket_id, agent.actor)
    return phone


# --- what the agents' panel shows ---------------------------------------------------------------
def history(ticket_id: str) -> list[dict]:
    """Every event of the ticket, oldest first ({id, kind, actor, at, changes, note})."""
    with sessions()() as session:
        rows = session.scalars(select(TicketEvent).where(TicketEvent.ticket_id == ticket_id)
                               .order_by(TicketEvent.id))
        return [{"id": e.id, "kind": e.kind, "actor": e.actor, "at": _iso(e.at),
                 "changes": dict(e.changes or {}), "note": e.note} for e in rows]


def transcript(conversation_id: str, *, mask: Callable[[str], str] = mask_text,
               limit: int = TRANSCRIPT_LIMIT) -> list[dict]:
    """The conversation's messages, oldest first (the newest `limit`), masked: [{from, text, at}]."""
    stmt = (select(ConversationMessage).where(ConversationMessage.conversation_id == conversation_id)
            .order_by(ConversationMessage.id.desc()).limit(limit))
    with sessions()() as session:
        rows = list(session.scalars(stmt))
    return [{"from": r.sender, "text": mask(r.text), "at": _iso(r.at)} for r in reversed(rows)]


def detail(ticket_id: str, agent: AgentIdentity) -> dict:
    """The ticket's public fields plus its transcript, findings, suggested answers (the same FAQ
    retrieval and diagnosis texts the bot uses), private notes and history."""
    from tickets import assist

    view = get(ticket_id)
    mask = _masker(view.user_id, conversation_id=view.conversation_id, actor=agent.actor)
    lines = transcript(view.conversation_id, mask=mask)
    events = history(ticket_id)
    names = _agent_names_for_actors({e["actor"] for e in events})
    notes = [{"id": e["id"], "text": e["note"] or "", "at": e["at"], "by": names.get(e["actor"], e["actor"])}
             for e in events if e["kind"] == "note"]
    findings = [{"code": f["code"], "text": mask(f.get("text") or "")} for f in view.findings]
    suggestions = assist.suggestions([m["text"] for m in lines if m["from"] == "user"],
                                     list(view.findings), view.lang)
    return {**view.public(), "transcript": lines, "findings": findings, "suggestions": suggestions,
            "account": _account_summary(view, agent),
            "notes": notes, "history": [{k: e[k] for k in ("id", "kind", "actor", "at", "changes")}
                                        for e in events]}


def _account_summary(view: TicketView, agent: AgentIdentity) -> list[dict] | None:
    """The masked summary of the ticket's account (an audited read by this agent); None for an
    anonymous ticket, or when the account source cannot answer (the panel says so)."""
    from accounts import service as accounts
    from tickets import account_summary

    if not view.user_id:
        return None
    try:
        account = accounts.read_account_for(view.user_id, conversation_id=view.conversation_id,
                                            actor=agent.actor, purpose="ticket_summary")
    except Exception as exc:
        log.warning("ticket without account summary", extra={"fields": {"error": type(exc).__name__}})
        return None
    return account_summary.summary(account)


def _agent_names_for_actors(actors: set[str]) -> dict[str, str]:
    agent_ids = {int(a.split(":", 1)[1]) for a in actors if a.startswith("agent:") and a[6:].isdigit()}
    with sessions()() as session:
        return {f"agent:{k}": v for k, v in _agent_names(session, agent_ids).items()}


def events_after(cursor: int, agent_id: int, limit: int = 100) -> list[dict]:
    """The agents' live stream after `cursor` (an event id), oldest first: every created,
    claimed, unclaimed and resolved event of any ticket, and the user's messages of the tickets
    this agent holds. Each {"id", "ticket_id", "kind", "at", "actor", "ticket": public dict}
    (+ "text" for a user message)."""
    limit = max(1, min(int(limit), 500))
    stmt = (select(TicketEvent, Ticket).join(Ticket, Ticket.id == TicketEvent.ticket_id)
            .where(TicketEvent.id > int(cursor or 0),
                   or_(TicketEvent.kind.in_(BROADCAST_KINDS),
                       and_(TicketEvent.kind == "user_message", Ticket.status == "claimed",
                            Ticket.claimed_by == agent_id)))
            .order_by(TicketEvent.id).limit(limit))
    with sessions()() as session:
        pairs = list(session.execute(stmt).tuples())
        views = {v.id: v for v in _views(session, list({t.id: t for _e, t in pairs}.values()))}
    now = utcnow()
    out = []
    for event, ticket in pairs:
        item = {"id": event.id, "ticket_id": event.ticket_id, "kind": event.kind, "at": _iso(event.at),
                "actor": event.actor, "ticket": views[ticket.id].public(now)}
        if event.kind == "user_message":
            item["text"] = event.note or ""
        out.append(item)
    return out


def last_event_id() -> int:
    """The newest event id (where a fresh agents' stream starts)."""
    with sessions()() as session:
        return int(session.scalar(select(func.max(TicketEvent.id))) or 0)
