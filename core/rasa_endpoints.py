"""Rasa's endpoints.yml, derived from the app settings so both processes agree on every address."""
from __future__ import annotations

import json
from urllib.parse import urlsplit

from core.settings import INTERNAL_TOKEN_HEADER, Settings

SQLITE_TRACKER_STORE = "stores.sqlite_tracker_store.SqliteTrackerStore"


def tracker_store(settings: Settings) -> dict:
    url = settings.database_url
    if url and url.startswith("postgresql"):
        parts = urlsplit(url.replace("postgresql+psycopg", "postgresql"))
        store = {"type": "SQL", "dialect": "postgresql", "url": parts.hostname or "127.0.0.1",
                 "port": parts.port or 5432, "db": parts.path.lstrip("/") or "postgres"}
        if parts.username:
            store["username"] = parts.username
        if parts.password:
            store["password"] = parts.password
        return store
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    # Rasa's `events` table without SQLAlchemy (bot/stores/sqlite_tracker_store.py).
    return {"type": SQLITE_TRACKER_STORE, "db": str(settings.var_dir / "rasa_tracker.db")}


def lock_store(settings: Settings) -> dict | None:
    if not settings.redis_url:
        return None  # Rasa's in-memory lock store: fine for one Rasa process
    parts = urlsplit(settings.redis_url)
    store = {"type": "redis", "url": parts.hostname or "127.0.0.1", "port": parts.port or 6379,
             "db": int(parts.path.lstrip("/") or 0), "key_prefix": "hc"}
    if parts.password:
        store["password"] = parts.password
    return store


def endpoints(settings: Settings) -> dict:
    doc = {
        "action_endpoint": {
            "url": f"http://127.0.0.1:{settings.actions_port}/webhook",
            # A header, not Rasa's `token` (a query parameter: URLs end up in logs).
            "headers": {INTERNAL_TOKEN_HEADER: settings.internal_token},
            # The domain goes to the action server once (it answers 449 and keeps it), not with
            # every call: our actions read no domain, and serialising it cost every turn.
            "enable_selective_domain": True,
        },
        "tracker_store": tracker_store(settings),
    }
    lock = lock_store(settings)
    if lock:
        doc["lock_store"] = lock
    return doc


def write_endpoints(settings: Settings) -> str:
    """YAML is a superset of JSON: writing JSON avoids a YAML dependency in the app."""
    path = settings.var_dir / "endpoints.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(endpoints(settings), indent=2) + "\n")
    path.chmod(0o600)  # it holds the internal token
    return str(path)
