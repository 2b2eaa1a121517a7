"""The app's database: engine and sessions from settings, Alembic migrations, the table models.

    engine = get_engine(settings)      # SQLite (WAL) under var/ by default, or HC_DATABASE_URL
    migrate(engine)                    # alembic upgrade head; safe to run at every start-up
    Session = session_factory(engine)
    Session = default_sessions()       # the process's shared one: settings' database, migrated

Nothing connects at import time: the engine is created on first use.
"""
from store.db import (database_url, default_sessions, dispose_default, engine_of, get_engine, migrate,
                      session_factory)

__all__ = ["database_url", "default_sessions", "dispose_default", "engine_of", "get_engine", "migrate",
           "session_factory"]
