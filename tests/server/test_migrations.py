"""The models and the Alembic migrations agree, on both databases."""

from __future__ import annotations

import asyncio

from server.db.engine import create_engine
from server.db.migrate import check, upgrade


def test_migrations_match_the_models(settings):
    async def migrate_and_check() -> None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(settings.url)
        try:
            await upgrade(engine)
            await upgrade(engine)  # a second run is a no-op
            await check(engine)  # raises when a model changed without a migration
        finally:
            await engine.dispose()

    asyncio.run(migrate_and_check())
