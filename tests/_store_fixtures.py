"""Throwaway databases for store tests: a SQLite file under tmp, or a fresh PostgreSQL schema.

Each PostgreSQL user of this gets its own schema (search_path set through the URL), so parallel
test runs on the shared server never see each other's tables; the schema is dropped afterwards.
"""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager

import pytest
from sqlalchemy import text

from _env import missing
from store import get_engine, migrate

PG_URL = os.environ.get("HC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def postgres_reachable() -> bool:
    import psycopg

    try:
        with psycopg.connect(PG_URL, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@contextmanager
def pg_schema_url():
    """A URL whose connections live in a new, empty schema (dropped on exit)."""
    if not postgres_reachable():
        missing(f"PostgreSQL unreachable at {PG_URL}")
    schema = f"hc_test_{uuid.uuid4().hex[:12]}"
    admin = get_engine(url=PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}", schema
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def engine_for(kind: str, tmp_path):
    """('sqlite' | 'postgres') → an engine on an empty database, disposed on exit."""
    if kind == "sqlite":
        engine = get_engine(url=f"sqlite:///{tmp_path / 'hc.db'}")
        try:
            yield engine
        finally:
            engine.dispose()
        return
    with pg_schema_url() as (url, _schema):
        engine = get_engine(url=url)
        try:
            yield engine
        finally:
            engine.dispose()


# Parametrise over both databases; the PostgreSQL case carries the marker the suite selects on.
DATABASES = [pytest.param("sqlite", id="sqlite"),
             pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)]


@contextmanager
def migrated_for(kind: str, tmp_path, *services):
    """An empty, migrated database that the given services (modules with configure()) use."""
    with engine_for(kind, tmp_path) as engine:
        migrate(engine)
        for service in services:
            service.configure(engine)
        try:
            yield engine
        finally:
            for service in services:
                service.configure(None)


@contextmanager
def migrated_with_tickets(kind: str, tmp_path, settings, *services):
    """migrated_for, with the ticket service on the same database and these settings."""
    from tickets import service

    with migrated_for(kind, tmp_path, *services) as engine:
        service.configure(engine, settings=settings)
        try:
            yield engine
        finally:
            service.configure(None)
