"""Inserts and updates for the write path: many rows at once, and rows that may already be there."""

from __future__ import annotations

import functools
import itertools
import operator
from typing import Any

import msgspec
from sqlalchemy import Connection, Table, bindparam, insert, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.dml import Insert

# SQLite's limit on parameters in one statement since 3.32 (Debian's build allows more).
SQLITE_MAX_PARAMETERS = 32766

_json_encoder = msgspec.json.Encoder()


def insert_ignoring_duplicates(dialect_name: str, model: type) -> Insert:
    """An INSERT into ``model``'s table that skips a row whose key is already there."""
    module = postgresql if dialect_name == "postgresql" else sqlite
    return module.insert(model).on_conflict_do_nothing()


def json_text(value: Any) -> str:
    """A JSON column's value as both drivers take it (what SQLAlchemy's JSON type would send,
    ``None`` included, which it stores as JSON ``null``)."""
    return _json_encoder.encode(value).decode()


def insert_rows(
    connection: Connection, table: Table, columns: tuple[str, ...], rows: list[tuple], **same: Any
) -> None:
    """INSERT ``rows`` into ``columns`` of ``table``, each row also given the columns in
    ``same``, whose values are the same for every row.

    A row is a tuple of values as the driver takes them: JSON columns already ``json_text``,
    strings, numbers, booleans and bytes as they are. A value in ``same`` is converted by its
    column's type, once. Why not SQLAlchemy's executemany: for a push of thousands of
    mutations its per-row parameter building and type processing cost as much as the
    database's own work.
    """
    if not rows:
        return
    if connection.dialect.name == "sqlite":
        sql, _, parameters = _insert_parameters(connection.dialect, table, columns, rows, same)
        _insert_multirow(connection, sql, parameters)
    else:
        connection.connection.dbapi_connection.run_async(
            lambda driver: copy_rows(driver, connection.dialect, table, columns, rows, **same)
        )


def update_rows(connection: Connection, table: Table, columns: tuple[str, ...], rows: list[tuple], **same: Any) -> None:
    """UPDATE rows of ``table`` by primary key: each row is a tuple of driver-ready values for
    ``columns`` (as in ``insert_rows``) followed by the key; ``same`` as in ``insert_rows``."""
    if not rows:
        return
    sql, parameters = _update_parameters(connection.dialect, table, columns, rows, same)
    connection.exec_driver_sql(sql, parameters)


async def copy_rows(
    driver: Any, dialect: Dialect, table: Table, columns: tuple[str, ...], rows: list[tuple], **same: Any
) -> None:
    """``insert_rows`` on PostgreSQL, awaited on the asyncpg connection itself: the rows go in by
    COPY (asyncpg's binary copy). An executemany is a round of bind and execute per row, whose
    server-side work cost as much as the insert itself."""
    if rows:
        _, names, parameters = _insert_parameters(dialect, table, columns, rows, same)
        await driver.copy_records_to_table(table.name, records=parameters, columns=names)


async def update_rows_on_driver(
    driver: Any, dialect: Dialect, table: Table, columns: tuple[str, ...], rows: list[tuple], **same: Any
) -> None:
    """``update_rows`` on PostgreSQL, awaited on the asyncpg connection itself."""
    if rows:
        sql, parameters = _update_parameters(dialect, table, columns, rows, same)
        await driver.executemany(sql, parameters)


def _insert_parameters(
    dialect: Dialect, table: Table, columns: tuple[str, ...], rows: list[tuple], same: dict[str, Any]
) -> tuple[str, tuple[str, ...], list[tuple]]:
    """The INSERT's SQL, its parameters' column names and each row's parameters in their order."""
    sql, names, order, defaults = _compiled(dialect, table, columns, tuple(same))
    fixed = tuple(_converted(dialect, table, name, value) for name, value in same.items()) + defaults
    if order is None:
        return sql, names, [row + fixed for row in rows] if fixed else rows
    return sql, names, [order(row + fixed) for row in rows]


def _update_parameters(
    dialect: Dialect, table: Table, columns: tuple[str, ...], rows: list[tuple], same: dict[str, Any]
) -> tuple[str, list[tuple]]:
    sql, order = _compiled_update(dialect, table, columns, tuple(same))
    fixed = tuple(_converted(dialect, table, name, value) for name, value in same.items())
    return sql, [order(row[:-1] + fixed + row[-1:]) for row in rows]


def _insert_multirow(connection: Connection, sql: str, parameters: list[tuple]) -> None:
    # SQLite's executemany releases and retakes the GIL for every row; while the event loop's
    # thread is busy each retake waits, and a push's insert took three times as long under load.
    # One INSERT of many rows runs whole with the GIL released.
    head, _, one_row = sql.partition(" VALUES ")
    per_statement = SQLITE_MAX_PARAMETERS // len(parameters[0])
    cursor = connection.connection.cursor()
    try:
        for start in range(0, len(parameters), per_statement):
            chunk = parameters[start : start + per_statement]
            cursor.execute(f"{head} VALUES {', '.join([one_row] * len(chunk))}",
                           tuple(itertools.chain.from_iterable(chunk)))
    finally:
        cursor.close()


@functools.cache
def _compiled(
    dialect: Dialect, table: Table, columns: tuple[str, ...], same: tuple[str, ...]
) -> tuple[str, tuple[str, ...], operator.itemgetter | None, tuple]:
    """The INSERT's SQL and its parameters' column names; how to order a row's values (row,
    then ``same``, then defaults) as those parameters, or None when they are in order already;
    and the converted values of the columns left out that have a plain Python default (the
    same for every row)."""
    compiled = insert(table).compile(dialect=dialect, column_keys=[*columns, *same])
    positions = tuple(compiled.positiontup)
    left_out = tuple(name for name in positions if name not in columns and name not in same)
    defaults = tuple(_converted(dialect, table, name, _scalar_default(table, name)) for name in left_out)
    given = (*columns, *same, *left_out)
    order = None if positions == given else operator.itemgetter(*(given.index(name) for name in positions))
    return str(compiled), positions, order, defaults


@functools.cache
def _compiled_update(
    dialect: Dialect, table: Table, columns: tuple[str, ...], same: tuple[str, ...]
) -> tuple[str, operator.itemgetter]:
    [key] = table.primary_key.columns
    # A bind parameter may not share its column's name in a SET clause: each is "set_<column>".
    given = (*(f"set_{name}" for name in (*columns, *same)), "key")
    compiled = (
        update(table)
        .where(key == bindparam("key"))
        .values({name: bindparam(f"set_{name}") for name in (*columns, *same)})
    ).compile(dialect=dialect)
    return str(compiled), operator.itemgetter(*(given.index(name) for name in compiled.positiontup))


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
def _converter(dialect: Dialect, table: Table, name: str):
    return table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
