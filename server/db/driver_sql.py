"""Statements of the sync API's hot paths, compiled once per dialect and run on the driver.

A pull, an authentication or the bookkeeping of a push (lock the change counter, look up
mutation ids and records) is a few small indexed statements. Through SQLAlchemy's execution
machinery (statement coercion, cache key, execution context, result wrapping, type processing of
every row) each cost several times what the database spent on it: a push of one mutation took
2 ms. Here a Core statement is compiled once per dialect to the driver's SQL and parameter
order, and each run is the driver's own ``execute``: rows come back as the driver's tuples,
values as the driver gives them (SQLite: booleans as 0/1; JSON columns as text on both), so
callers convert what they read.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Executable


class DriverStatement:
    """A Core statement run with the driver's cursor of a SQLAlchemy ``Connection`` (so inside
    whatever transaction that connection holds).

    Args:
        statement: the statement; its bind parameters are given by name. Expanding parameters
            (``IN`` lists) cannot be compiled once: use ``server.db.keys.one_of``.
    """

    def __init__(self, statement: Executable):
        self._statement = statement
        self._compiled: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {}

    def _for(self, dialect: Dialect) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            sql = self._statement.compile(dialect=dialect)
            # Parameters the statement fixes itself (e.g. SQLite's OFFSET beside a LIMIT).
            fixed = {name: value for name, value in sql.params.items() if value is not None}
            compiled = self._compiled[dialect.name] = (str(sql), tuple(sql.positiontup or ()), fixed)
        return compiled

    def rows(self, connection: Connection, **parameters: Any) -> list[tuple]:
        """Run the statement and return all its rows (none for a statement that returns none)."""
        sql, names, fixed = self._for(connection.dialect)
        values = fixed | parameters if fixed else parameters
        cursor = connection.connection.cursor()
        try:
            cursor.execute(sql, tuple(values[name] for name in names))
            return cursor.fetchall() if cursor.description else []
        finally:
            cursor.close()
