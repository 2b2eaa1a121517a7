"""The embedded default tracker store: Rasa's SQL `events` table in SQLite, without SQLAlchemy.

Rasa's SQLTrackerStore spent about a fifth of the Rasa process's CPU per chat turn in SQLAlchemy
(ORM sessions, statement cache keys, a counting subquery on every save; py-spy at 16 clients).
This store keeps the same table and columns, so anything that reads Rasa's SQL store reads this
one, and does the same work with three plain statements over one connection. PostgreSQL (for
several instances) keeps Rasa's own SQLTrackerStore.

    tracker_store:
      type: stores.sqlite_tracker_store.SqliteTrackerStore
      db: /path/to/rasa_tracker.db

Several Rasa processes may share the file: WAL lets readers run beside the one writer, and a
writer waits (busy_timeout) instead of failing while another commits.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from typing import Any, Dict, Iterable, Optional, Text

from rasa.core.brokers.broker import EventBroker
from rasa.core.tracker_store import SerializedTrackerAsText, TrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import SessionStarted
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.nlu.constants import INTENT_NAME_KEY

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    sender_id VARCHAR(255) NOT NULL,
    type_name VARCHAR(255) NOT NULL,
    timestamp FLOAT,
    intent_name VARCHAR(255),
    action_name VARCHAR(255),
    data TEXT
);
CREATE INDEX IF NOT EXISTS ix_events_sender_id ON events (sender_id);
"""

# Events of the latest session: from its SessionStarted on (Rasa's store compares timestamps,
# which are not unique; the row id is the order events were written in).
LATEST_SESSION = f"""
SELECT data FROM events WHERE sender_id = ? AND id >= COALESCE(
    (SELECT MAX(id) FROM events WHERE sender_id = ? AND type_name = '{SessionStarted.type_name}'), 0)
ORDER BY id
"""
ALL_SESSIONS = "SELECT data FROM events WHERE sender_id = ? ORDER BY id"
COUNT_LATEST = f"SELECT COUNT(*) FROM ({LATEST_SESSION})"
INSERT = ("INSERT INTO events (sender_id, type_name, timestamp, intent_name, action_name, data) "
          "VALUES (?, ?, ?, ?, ?, ?)")

# How many of a tracker's events are already stored, set on trackers this store loaded or saved.
_STORED = "_hc_stored_events"


class SqliteTrackerStore(TrackerStore, SerializedTrackerAsText):
    def __init__(self, domain: Optional[Domain] = None, host: Optional[Text] = None,
                 db: Text = "rasa.db", event_broker: Optional[EventBroker] = None,
                 **kwargs: Dict[Text, Any]) -> None:
        super().__init__(domain, event_broker, **kwargs)
        # One connection for the process: Rasa runs every turn on one event-loop thread; the
        # lock covers anything that calls from another thread.
        self._conn = sqlite3.connect(db, check_same_thread=False, isolation_level=None, timeout=10)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(SCHEMA)

    async def keys(self) -> Iterable[Text]:
        with self._lock:
            return [row[0] for row in self._conn.execute("SELECT DISTINCT sender_id FROM events")]

    async def retrieve(self, sender_id: Text) -> Optional[DialogueStateTracker]:
        return self._retrieve(sender_id, LATEST_SESSION, (sender_id, sender_id))

    async def retrieve_full_tracker(self, conversation_id: Text) -> Optional[DialogueStateTracker]:
        tracker = self._retrieve(conversation_id, ALL_SESSIONS, (conversation_id,))
        if tracker is not None:
            delattr(tracker, _STORED)   # holds every session: its length says nothing for save
        return tracker

    def _retrieve(self, sender_id: Text, query: str, args: tuple) -> Optional[DialogueStateTracker]:
        with self._lock:
            rows = self._conn.execute(query, args).fetchall()
        if not rows or not self.domain:
            return None
        tracker = DialogueStateTracker.from_dict(sender_id, [json.loads(r[0]) for r in rows],
                                                 self.domain.slots)
        setattr(tracker, _STORED, len(tracker.events))
        return tracker

    async def save(self, tracker: DialogueStateTracker) -> None:
        await self.stream_events(tracker)
        with self._lock:
            stored = getattr(tracker, _STORED, None)
            if stored is None or stored > len(tracker.events):
                stored = self._conn.execute(COUNT_LATEST, (tracker.sender_id,) * 2).fetchone()[0]
            rows = [self._row(tracker.sender_id, e) for e in list(tracker.events)[stored:]]
            if rows:
                with self._conn:   # one transaction: a turn's events land together or not at all
                    self._conn.execute("BEGIN IMMEDIATE")
                    self._conn.executemany(INSERT, rows)
        setattr(tracker, _STORED, len(tracker.events))

    @staticmethod
    def _row(sender_id: Text, event: Any) -> tuple:
        data = event.as_dict()
        intent = (data.get("parse_data") or {}).get("intent", {}).get(INTENT_NAME_KEY)
        return (sender_id, event.type_name, data.get("timestamp"), intent, data.get("name"),
                json.dumps(data))

