"""Fixes to Rasa 3.6 internals that cost us latency, applied when the hc channel is imported.

Both keep Rasa's behaviour and only remove repeated work; measured with py-spy on a chat turn.

1. RemoteAction validates every action-server response with `jsonschema.validate`, which re-checks
the (constant) schema itself on every call: measured with py-spy, two thirds of the Rasa
process's CPU per chat turn. The same validation with the validator built once keeps the
check and drops that cost.
2. Event.resolve_by_type walks every Event subclass (recursively, with an abstractness check)
   for every event of every tracker it deserialises; the answer for a type name never changes
   once the classes are imported, so it is remembered.
3. The channel needs the intent NLU chose; reading it back from the tracker store costs a second
   tracker load per turn. The parse result is kept in a context variable instead (the whole
   turn runs in one asyncio task, so the channel sees what parse_message set).
4. SQLite tracker store: WAL journal and synchronous=NORMAL, so a turn's commit does not wait
   for an fsync and readers do not block the writer (the design's embedded default).
5. SQLite tracker store: SQLAlchemy 1.4 opens a new SQLite connection for every session
   (NullPool) and so re-runs the connect pragmas twice a turn; a small QueuePool keeps them open
   (py-spy: ~7 % of the Rasa process's CPU at 16 clients).
6. SQLTrackerStore.save finds the events to append by counting the stored ones with a
   subquery (~10 % of the CPU). A tracker this store loaded already knows that number: it is
   how many events it was built from, so save uses it (and still counts for any other tracker).
   The lock store serialises turns per conversation, so nobody else appends in between.
"""
from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Dict, Optional, Text

import jsonschema
from rasa.core.processor import MessageProcessor
from sqlalchemy import event
from sqlalchemy.engine import Engine
from rasa.core import tracker_store as rasa_tracker_store
from rasa.core.actions import action as rasa_action
from rasa.shared.core import events as rasa_events

_validator = None


def _validate_action_result(self: rasa_action.RemoteAction, result: Dict[Text, Any]) -> bool:
    global _validator
    if _validator is None:
        schema = self.action_response_format_spec()
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        _validator = cls(schema)
    try:
        _validator.validate(result)
        return True
    except jsonschema.ValidationError as e:
        e.message += (". Failed to validate Action server response from API, make sure your "
                      "response from the Action endpoint is valid.")
        raise e


_resolve_uncached = rasa_events.Event.resolve_by_type
_event_classes: Dict[Text, Any] = {}


def _resolve_by_type(type_name: Text, default: Any = None) -> Any:
    cls = _event_classes.get(type_name)
    if cls is None:
        cls = _resolve_uncached(type_name, default)
        if cls is not None and getattr(cls, "type_name", None) == type_name:
            _event_classes[type_name] = cls
    return cls


last_parse: ContextVar[Optional[Dict[Text, Any]]] = ContextVar("hc_last_parse", default=None)
_parse_uncached = MessageProcessor.parse_message


async def _parse_message(self: MessageProcessor, *args: Any, **kwargs: Any) -> Dict[Text, Any]:
    parsed = await _parse_uncached(self, *args, **kwargs)
    last_parse.set(parsed)
    return parsed


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


_engine_kwargs_uncached = rasa_tracker_store.create_engine_kwargs


def _engine_kwargs(url: Any) -> Dict[Text, Any]:
    kwargs = _engine_kwargs_uncached(url)
    if str(getattr(url, "drivername", url)).startswith("sqlite"):
        from sqlalchemy.pool import QueuePool

        # Pooled connections may be checked out from another thread than the one that opened
        # them; each is still used by one session at a time.
        kwargs.update(poolclass=QueuePool, pool_size=4, max_overflow=4,
                      connect_args={**kwargs.get("connect_args", {}), "check_same_thread": False})
    return kwargs


_STORED = "_hc_stored_events"
_sql_retrieve_uncached = rasa_tracker_store.SQLTrackerStore._retrieve
_sql_save_uncached = rasa_tracker_store.SQLTrackerStore.save
_sql_additional_uncached = rasa_tracker_store.SQLTrackerStore._additional_events


async def _sql_retrieve(self: Any, sender_id: Text, fetch_events_from_all_sessions: bool) -> Any:
    tracker = await _sql_retrieve_uncached(self, sender_id, fetch_events_from_all_sessions)
    if tracker is not None and not fetch_events_from_all_sessions:
        setattr(tracker, _STORED, len(tracker.events))
    return tracker


def _sql_additional_events(self: Any, session: Any, tracker: Any) -> Any:
    import itertools

    stored = getattr(tracker, _STORED, None)
    if stored is None or stored > len(tracker.events):
        return _sql_additional_uncached(self, session, tracker)
    return itertools.islice(tracker.events, stored, len(tracker.events))


async def _sql_save(self: Any, tracker: Any) -> None:
    await _sql_save_uncached(self, tracker)
    if getattr(tracker, _STORED, None) is not None:
        setattr(tracker, _STORED, len(tracker.events))


# The conversation's reply language after the turn (slot `lang`), for the app to put replies in
# the user's script: a button press or a short ambiguous text carries no language of its own.
last_lang: ContextVar[Optional[Text]] = ContextVar("hc_last_lang", default=None)
_save_tracker_plain = MessageProcessor.save_tracker


async def _save_tracker(self: MessageProcessor, tracker: Any) -> None:
    last_lang.set(tracker.get_slot("lang"))
    await _save_tracker_plain(self, tracker)


def apply() -> None:
    MessageProcessor.save_tracker = _save_tracker
    rasa_tracker_store.create_engine_kwargs = _engine_kwargs
    rasa_tracker_store.SQLTrackerStore._retrieve = _sql_retrieve
    rasa_tracker_store.SQLTrackerStore._additional_events = _sql_additional_events
    rasa_tracker_store.SQLTrackerStore.save = _sql_save
    MessageProcessor.parse_message = _parse_message
    if not event.contains(Engine, "connect", _sqlite_pragmas):
        event.listen(Engine, "connect", _sqlite_pragmas)
    rasa_action.RemoteAction._validate_action_result = _validate_action_result
    rasa_events.Event.resolve_by_type = staticmethod(_resolve_by_type)
