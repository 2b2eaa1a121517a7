"""Engine, sessions and migrations for the app's own tables (feedback now; accounts, tickets later)."""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings, get_settings

log = logging.getLogger("hc.store")
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant will do: it only has to be the same in every process that migrates this database.
_PG_MIGRATION_LOCK = 0x48434D47   # "HCMG"
# Alembic's `context`/`op` are module-level proxies: two migrations in one process at once
# (start-up and a lazy first use) would trample each other, so they take turns.
_migrate_lock = threading.Lock()


def database_url(settings: Settings | None = None, url: str | URL | None = None) -> URL:
    """HC_DATABASE_URL (or the SQLite file under var/) with the driver we ship made explicit.

    `postgresql://` and `postgres://` mean psycopg 3 here; SQLAlchemy would otherwise pick
    psycopg2, which is not installed."""
    if url is None:
        url = (settings or get_settings()).db_url
    url = make_url(url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def get_engine(settings: Settings | None = None, *, url: str | URL | None = None, **kwargs) -> Engine:
    url = database_url(settings, url)
    # A database error's message would otherwise carry the bound values (an account document,
    # a masked-or-not text) into whatever logs or shows the exception.
    kwargs.setdefault("hide_parameters", True)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, **kwargs)
    # pre_ping: a PostgreSQL restart (or an idle timeout on a proxy) leaves dead pooled connections.
    kwargs.setdefault("pool_pre_ping", True)
    if url.get_backend_name() == "postgresql":
        # A server that accepts but never answers (a partition, a hung proxy) must cost a request a
        # few seconds and a 503, not a worker thread forever: libpq has no connect timeout by
        # default, and keepalives find a dead peer under an idle pooled connection.
        kwargs.setdefault("pool_timeout", 10)
        args = kwargs.setdefault("connect_args", {})
        args.setdefault("connect_timeout", 5)
        for key, value in (("keepalives", 1), ("keepalives_idle", 30), ("keepalives_interval", 10),
                           ("keepalives_count", 3)):
            args.setdefault(key, value)
    return create_engine(url, **kwargs)


def _sqlite_engine(url: URL, **kwargs) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    # Several worker threads write feedback at once: wait for the lock instead of failing.
    kwargs.setdefault("connect_args", {}).setdefault("timeout", 15)
    engine = create_engine(url, **kwargs)

    _serialise_writes(engine, _write_lock(url.database or ":memory:"))

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        # WAL: readers (the report, the agent panel) never block the chat's writes. NORMAL sync is
        # durable across an app crash, which is what matters for feedback rows.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


# One write lock per SQLite file in this process. SQLite lets one writer in at a time; a second
# connection that tries meets SQLITE_BUSY and its busy handler *sleeps* (1, 2, 5, 10, ... ms) before
# trying again, so 16 chat turns writing at once spent most of their time asleep. Taken at a
# transaction's first write and given back at its end, the lock queues them instead: each goes in
# the moment the previous one commits. Reentrant: a transaction that opens another on a second
# connection in the same thread keeps working as it did (SQLite decides, as before).
_write_locks: dict[str, threading.RLock] = {}
_write_locks_guard = threading.Lock()
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")
_HELD = "hc_write_lock"


def _write_lock(database: str) -> threading.RLock:
    key = database if database == ":memory:" else str(Path(database).resolve())
    with _write_locks_guard:
        return _write_locks.setdefault(key, threading.RLock())


def _serialise_writes(engine: Engine, lock: threading.RLock) -> None:
    def release(info: dict) -> None:
        held = info.pop(_HELD, None)
        if held is not None:
            try:
                held.release()
            except RuntimeError:     # released from another thread than it was taken in
                log.warning("sqlite write lock released by another thread")

    @event.listens_for(engine, "before_cursor_execute")
    def _take(conn, _cursor, statement, _params, _context, _many):
        if _HELD not in conn.info and statement.lstrip()[:7].upper().startswith(_WRITES):
            lock.acquire()
            conn.info[_HELD] = lock

    @event.listens_for(engine, "commit")
    def _after_commit(conn):
        release(conn.info)

    @event.listens_for(engine, "rollback")
    def _after_rollback(conn):
        release(conn.info)

    # A connection going back to the pool without either (its transaction reset on return).
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection, record):
        release(record.info)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    # Rows outlive their session (they are returned to callers and formatted later).
    return sessionmaker(engine, expire_on_commit=False)


def engine_of(sessions: sessionmaker[Session]) -> Engine:
    """The engine a session factory opens sessions on: for the hot paths that write with Core
    statements on a plain connection (no ORM session to build per call)."""
    return sessions.kw["bind"]


def alembic_config(connection=None):
    """An Alembic config without an ini file; `store/alembic.ini` is only for the alembic CLI."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to `revision`; a no-op when it is there already.

    One transaction for the whole upgrade; on PostgreSQL an advisory lock taken inside it makes
    concurrent start-ups (several app processes) wait for each other instead of racing to create
    the same tables."""
    from alembic import command

    with _migrate_lock, engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
        command.upgrade(alembic_config(connection), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


# --- the process's database ---------------------------------------------------------------------
# One engine per process, shared by every service that stores something (feedback now, accounts
# and tickets later). Created and migrated on first use, not at import.
_default_lock = threading.Lock()
_default: sessionmaker[Session] | None = None


def default_sessions(settings: Settings | None = None) -> sessionmaker[Session]:
    """The session factory on the settings' database (migrated to head on first call).

    The app passes its own settings at start-up, before anything else opens the database;
    without them (a CLI) the environment's settings are used."""
    global _default
    current = _default
    if current is not None:
        return current
    with _default_lock:
        if _default is None:
            engine = get_engine(settings or get_settings())
            migrate(engine)
            _default = session_factory(engine)
        return _default


def dispose_default() -> None:
    """Close the process's pool (shutdown, or tests that changed HC_DATABASE_URL)."""
    global _default
    with _default_lock:
        if _default is not None:
            bind = _default.kw.get("bind")
            if bind is not None:
                bind.dispose()
        _default = None
