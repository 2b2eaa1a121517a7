"""Alembic environment: store.migrate passes its open connection; the alembic CLI gets one from settings."""
from __future__ import annotations

from alembic import context

from store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(**kwargs) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things: later migrations go through batch (copy-and-move) mode.
        render_as_batch=kwargs.pop("dialect_name", None) == "sqlite",
        **kwargs,
    )


def run_offline() -> None:
    """`alembic upgrade head --sql`: print the DDL for a DBA instead of running it."""
    from store.db import database_url

    url = database_url()
    _configure(url=url, literal_binds=True, dialect_name=url.get_backend_name())
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from store.db import get_engine

    engine = get_engine()
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()


def _run(connection) -> None:
    _configure(connection=connection, dialect_name=connection.dialect.name)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
