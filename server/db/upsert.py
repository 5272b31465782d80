"""Inserts that skip rows already present, on either database."""

from __future__ import annotations

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


async def insert_ignoring_duplicates(session: AsyncSession, model: type, rows: list[dict]) -> None:
    dialect = session.bind.dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    await session.execute(module.insert(model).on_conflict_do_nothing(), rows)
