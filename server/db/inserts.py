"""Inserts for the write path: many rows at once, and rows that may already be there."""

from __future__ import annotations

import functools
import itertools
import operator
from typing import Any

from sqlalchemy import Connection, Table, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.dml import Insert


# SQLite's limit on parameters in one statement since 3.32 (Debian's build allows more).
SQLITE_MAX_PARAMETERS = 32766


def insert_ignoring_duplicates(dialect_name: str, model: type) -> Insert:
    """An INSERT into ``model``'s table that skips a row whose key is already there."""
    module = postgresql if dialect_name == "postgresql" else sqlite
    return module.insert(model).on_conflict_do_nothing()


def insert_rows(connection: Connection, table: Table, rows: list[dict[str, Any]], **same: Any) -> None:
    """INSERT ``rows`` (dicts with the same keys), each also given the columns in ``same``,
    whose values are the same for every row: an executemany, or on SQLite a few INSERTs of
    many rows each.

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
    if dialect.name == "sqlite":
        _insert_multirow(connection, sql, parameters)
    else:
        connection.exec_driver_sql(sql, parameters)


def _insert_multirow(connection: Connection, sql: str, parameters: list[tuple]) -> None:
    # SQLite's executemany releases and retakes the GIL for every row; while the event loop's
    # thread is busy each retake waits, and a push's insert took three times as long under load.
    # One INSERT of many rows runs whole with the GIL released.
    head, _, one_row = sql.partition(" VALUES ")
    per_statement = SQLITE_MAX_PARAMETERS // len(parameters[0])
    for start in range(0, len(parameters), per_statement):
        chunk = parameters[start : start + per_statement]
        values = ", ".join([one_row] * len(chunk))
        connection.exec_driver_sql(f"{head} VALUES {values}", tuple(itertools.chain.from_iterable(chunk)))


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
