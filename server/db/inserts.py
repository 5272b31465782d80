"""Inserts for the write path: many rows at once, and rows that may already be there."""

from __future__ import annotations

import functools
import operator
from typing import Any

from sqlalchemy import Connection, Table, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.dml import Insert


def insert_ignoring_duplicates(dialect_name: str, model: type) -> Insert:
    """An INSERT into ``model``'s table that skips a row whose key is already there."""
    module = postgresql if dialect_name == "postgresql" else sqlite
    return module.insert(model).on_conflict_do_nothing()


def insert_rows(connection: Connection, table: Table, rows: list[dict[str, Any]], **same: Any) -> None:
    """INSERT ``rows`` (dicts with the same keys) in one executemany, each also given the
    columns in ``same``, whose values are the same for every row.

    Each value is converted by its column's type exactly as SQLAlchemy would, but a value in
    ``same`` is converted once, not once a row, and the rows skip SQLAlchemy's per-row parameter
    building: for a push of thousands of mutations that building cost as much as SQLite's work.
    """
    if not rows:
        return
    dialect = connection.dialect
    sql, positions = _compiled(dialect, table, tuple(rows[0]), tuple(same))
    given = same | {name: _scalar_default(table, name) for name in positions if name not in rows[0] and name not in same}
    fixed = {name: _converted(dialect, table, name, value) for name, value in given.items()}
    take = operator.itemgetter(*positions)
    conversions = [
        (i, convert) for i, name in enumerate(positions) if name not in given and (convert := _converter(dialect, table, name))
    ]
    parameters = []
    for row in rows:
        values = list(take(row | fixed if fixed else row))
        for i, convert in conversions:
            values[i] = convert(values[i])
        parameters.append(tuple(values))
    connection.exec_driver_sql(sql, parameters)


def _scalar_default(table: Table, name: str) -> Any:
    # A column left out that SQLAlchemy fills from its Python default: the same for every row.
    default = table.c[name].default
    if default is None or not default.is_scalar:
        raise ValueError(f"insert_rows: give {table.name}.{name}, it has no plain default")
    return default.arg


def _converted(dialect: Dialect, table: Table, name: str, value: Any) -> Any:
    convert = _converter(dialect, table, name)
    return convert(value) if convert else value


@functools.cache
def _compiled(dialect: Dialect, table: Table, varying: tuple[str, ...], same: tuple[str, ...]) -> tuple[str, tuple]:
    compiled = insert(table).compile(dialect=dialect, column_keys=[*varying, *same])
    return str(compiled), tuple(compiled.positiontup)


@functools.cache
def _converter(dialect: Dialect, table: Table, name: str):  # noqa: ANN202
    return table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
