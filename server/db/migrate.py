"""Apply Alembic migrations from inside the running server or the CLI."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script.revision import ResolutionError
from alembic.util import CommandError
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).parent / "migrations"
# Any fixed number: several server processes starting at once migrate one at a time.
_PG_MIGRATION_LOCK = 0x0F1E1D


class MigrationRefused(RuntimeError):
    """The database is not one this FieldLoop can bring to its newest revision."""


class UnknownRevision(MigrationRefused):
    """The database stands at a revision this FieldLoop does not have: a newer one migrated it."""


class NotFieldLoopDatabase(MigrationRefused):
    """The database has tables named like FieldLoop's that FieldLoop's migrations did not make."""


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the database to the newest revision; safe to call from several processes."""
    async with engine.connect() as connection:
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            await connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            await connection.commit()
        try:
            await connection.run_sync(_upgrade_on)
            await connection.commit()
        except CommandError as exc:
            if not isinstance(exc.__cause__, ResolutionError):
                raise
            raise UnknownRevision(
                f"the database is at revision {exc.__cause__.argument}, which this FieldLoop does not have: a newer "
                "FieldLoop migrated it; run that version, or restore the backup taken before it upgraded") from exc
        finally:
            if postgres:
                # After a failed statement the transaction is aborted: the unlock would fail in it,
                # and its error would replace the one that says why (permission denied...).
                await connection.rollback()
                await connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK})
                await connection.commit()


def _upgrade_on(connection) -> None:  # noqa: ANN001
    from server.db.models import Base

    tables = set(inspect(connection).get_table_names())
    taken = sorted(tables & set(Base.metadata.tables)) if "alembic_version" not in tables else []
    if taken:
        # The first migration would stop at CREATE TABLE with "relation ... already exists".
        raise NotFieldLoopDatabase(f"the database has tables FieldLoop would make ({', '.join(taken)}) but was never "
                                   "migrated by FieldLoop: give FieldLoop a database of its own")
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def check(engine: AsyncEngine) -> None:
    """Raise when the models and the migrations disagree (``alembic check``)."""
    async with engine.connect() as connection:
        await connection.run_sync(_check_on)


def _check_on(connection) -> None:  # noqa: ANN001
    config = alembic_config()
    config.attributes["connection"] = connection
    command.check(config)
