"""Statements of the sync API's hot paths, compiled once per dialect and run on the driver.

A pull or an authentication is one or two small indexed lookups. Through SQLAlchemy's execution
machinery (cache key, execution context, result wrapping, type processing of every row) such a
lookup cost several times what the database spent on it. Here a Core statement is compiled once
per dialect to the driver's SQL and parameter order, and each run is the driver's own
``execute`` and ``fetchall``: rows come back as the driver's tuples, values as the driver gives
them (SQLite: booleans as 0/1; JSON as text), so only statements whose callers expect that
belong here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Executable


class DriverQuery:
    """A Core query whose rows are fetched with the driver's cursor.

    Args:
        statement: the query; its bind parameters are given by name to ``rows``. Expanding
            parameters (``IN`` lists) cannot be compiled once: use ``server.db.keys.one_of``.
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
        """Run the query on ``connection``'s driver connection and return all its rows."""
        sql, names, fixed = self._for(connection.dialect)
        values = fixed | parameters if fixed else parameters
        cursor = connection.connection.cursor()
        try:
            cursor.execute(sql, tuple(values[name] for name in names))
            return cursor.fetchall()
        finally:
            cursor.close()
