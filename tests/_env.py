"""What a test needs from the machine (PostgreSQL, Redis, the Rasa venv, the built model).

Outside CI a missing piece skips the test, so a laptop without PostgreSQL still runs the rest.
With CI=true it fails the run: `make test` sets everything up and the services run on CI's
machine, so a green CI must mean these tests ran, not that they were skipped."""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(reason: str) -> None:
    """Skip the test, or under CI fail it: `reason` says what is missing."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: this must be available, so the test fails instead of skipping)",
                    pytrace=False)
    pytest.skip(reason)


PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"


@contextmanager
def throwaway_postgres_database(prefix: str = "hc_e2e"):
    """The URL of a new, empty PostgreSQL database on the local server, dropped afterwards
    (a whole stack, Rasa's tracker store included, gets its own)."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(f"{PG_SERVER}/test", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        missing(f"PostgreSQL unreachable at {PG_SERVER}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{PG_SERVER}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def require_redis(url: str = REDIS_URL) -> str:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.exceptions.ConnectionError:
        missing(f"Redis unreachable at {url}")
    return url
