"""Alembic environment: runs on a connection the caller shares (inside the server's event
loop), or opens one from the URL in the Alembic config (the ``alembic`` command)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from server.db.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_url(url: str) -> None:
    from server.db.engine import create_engine, database_url
    from pathlib import Path

    engine = create_engine(database_url(url, Path(".")))
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    asyncio.run(_run_from_url(context.config.get_main_option("sqlalchemy.url")))
