"""store/: engine from settings, Alembic migrations, the feedback tables, on SQLite and PostgreSQL."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError

from _store_fixtures import DATABASES, engine_for, pg_schema_url
from core.settings import Settings
from store import database_url, get_engine, migrate, session_factory
from store.db import alembic_config, current_revision
from store.models import Base, FaqFeedback, UnansweredQuestion

ROOT = Path(__file__).resolve().parent.parent


def head() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_url_mapping():
    assert database_url(url="postgresql://u@db:5432/hc").drivername == "postgresql+psycopg"
    assert database_url(url="postgres://u@db/hc").drivername == "postgresql+psycopg"
    assert database_url(url="postgresql+psycopg://u@db/hc").drivername == "postgresql+psycopg"
    assert database_url(url="sqlite:////tmp/x.db").drivername == "sqlite"


def test_default_is_sqlite_under_var(tmp_path):
    settings = Settings(var_dir=tmp_path / "var", database_url=None)
    url = database_url(settings)
    assert url.get_backend_name() == "sqlite"
    assert url.database == str(tmp_path / "var" / "hc.db")
    engine = get_engine(settings)
    try:
        with engine.connect() as conn:       # the folder is created on demand, WAL is on
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert (tmp_path / "var" / "hc.db").exists()
    finally:
        engine.dispose()


def test_settings_url_used(tmp_path):
    settings = Settings(var_dir=tmp_path, database_url="postgresql://someone@example.invalid/hc")
    assert database_url(settings).drivername == "postgresql+psycopg"
    assert database_url(settings).host == "example.invalid"


@pytest.mark.parametrize("kind", DATABASES)
def test_migrate_twice_and_round_trip(kind, tmp_path):
    with engine_for(kind, tmp_path) as engine:
        assert current_revision(engine) is None
        migrate(engine)
        migrate(engine)     # already at head: nothing to do, no error
        assert current_revision(engine) == head()
        tables = set(inspect(engine).get_table_names())
        assert {"faq_feedback", "unanswered_question", "alembic_version"} <= tables

        Session = session_factory(engine)
        with Session.begin() as s:
            s.add(FaqFeedback(conversation="c1", faq_id="personal.screenshot", helpful=False,
                              lang="zh", kb_version="kb1"))
            s.add(UnansweredQuestion(conversation="c1", text_masked="码咋是橙的", text_normalised="码咋是橙的",
                                     decision="clarify", lang="zh", kb_version="kb1",
                                     candidates=[{"faq_id": "domestic.mutual_orange", "score": 0.41}]))
        with Session() as s:
            fb = s.scalars(select(FaqFeedback)).one()
            uq = s.scalars(select(UnansweredQuestion)).one()
        assert (fb.faq_id, fb.helpful, fb.lang, fb.kb_version) == ("personal.screenshot", False, "zh", "kb1")
        assert isinstance(fb.created_at, datetime)
        created = fb.created_at if fb.created_at.tzinfo else fb.created_at.replace(tzinfo=timezone.utc)
        assert abs((datetime.now(timezone.utc) - created).total_seconds()) < 60
        assert uq.candidates == [{"faq_id": "domestic.mutual_orange", "score": 0.41}]
        assert uq.decision == "clarify"


@pytest.mark.parametrize("kind", DATABASES)
def test_migrations_match_models(kind, tmp_path):
    """The models and the migrations describe the same schema (autogenerate finds no difference)."""
    with engine_for(kind, tmp_path) as engine:
        migrate(engine)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                    Base.metadata)
        assert diff == []


@pytest.mark.parametrize("kind", DATABASES)
def test_decision_is_checked(kind, tmp_path):
    with engine_for(kind, tmp_path) as engine:
        migrate(engine)
        with pytest.raises(IntegrityError):
            with session_factory(engine).begin() as s:
                s.add(UnansweredQuestion(conversation="c", text_masked="x", text_normalised="x",
                                         decision="answer", candidates=[], lang="zh", kb_version=None))


@pytest.mark.postgres
def test_concurrent_migrations_on_postgres():
    """Several app processes starting at once: the advisory lock makes the others wait, not fail."""
    with pg_schema_url() as (url, schema):
        code = "import sys; from store import get_engine, migrate; migrate(get_engine(url=sys.argv[1]))"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        procs = [subprocess.Popen([sys.executable, "-c", code, url], env=env, stderr=subprocess.PIPE,
                                  text=True) for _ in range(3)]
        results = [(p.wait(60), p.stderr.read()) for p in procs]
        assert [rc for rc, _ in results] == [0, 0, 0], [err[-500:] for _, err in results]
        engine = get_engine(url=url)
        try:
            assert current_revision(engine) == head()
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT current_schema()").scalar() == schema
                assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
        finally:
            engine.dispose()


@pytest.mark.parametrize("kind", DATABASES)
def test_concurrent_migrations_in_one_process(kind, tmp_path):
    """Start-up and a lazy first use may migrate at the same moment from two threads."""
    with engine_for(kind, tmp_path) as engine:
        errors: list[BaseException] = []

        def run():
            try:
                migrate(engine)
            except BaseException as exc:   # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert current_revision(engine) == head()


@pytest.mark.parametrize("kind", DATABASES)
def test_account_is_demo_migration_keeps_rows_and_closes_them(kind, tmp_path):
    """0003 adds accounts.is_demo (not null, false) to a table that already has rows, and back."""
    from alembic import command
    from sqlalchemy import text

    with engine_for(kind, tmp_path) as engine:
        migrate(engine, "0002")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO accounts (user_id, document, updated_at) "
                              "VALUES ('demo-minor', :doc, :at)"),
                         {"doc": '{"user_id": "demo-minor"}', "at": datetime.now(timezone.utc)})
        migrate(engine)
        assert current_revision(engine) == head()
        [column] = [c for c in inspect(engine).get_columns("accounts") if c["name"] == "is_demo"]
        assert column["nullable"] is False
        with engine.connect() as conn:
            # A row from before the flag existed is a real account: never opened by inference.
            assert conn.execute(text("SELECT user_id, is_demo FROM accounts")).all() == \
                [("demo-minor", False)]
        with engine.begin() as conn:     # the default also fills rows inserted without the column
            conn.execute(text("INSERT INTO accounts (user_id, document, updated_at) "
                              "VALUES ('u2', '{}', :at)"), {"at": datetime.now(timezone.utc)})
            assert conn.execute(text("SELECT is_demo FROM accounts WHERE user_id = 'u2'")).scalar() \
                in (False, 0)

    with engine_for(kind, tmp_path / "down") as engine:
        migrate(engine, "0003")
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0002")
        assert "is_demo" not in {c["name"] for c in inspect(engine).get_columns("accounts")}
        assert current_revision(engine) == "0002"
