"""SQL expressions over a record's JSON fields that indexes serve (see ``models.RecordRow``).

An index on an expression serves only a query that spells the expression the same way: a JSON
path sent as a bound parameter (what ``RecordRow.fields["status"].as_string()`` compiles to)
does not match the path written in the index. These write the path into the SQL.
"""

from __future__ import annotations

import re

from sqlalchemy import String, literal_column
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

_KEY = re.compile(r"\A[a-z_]{1,40}\Z")

class JsonText(FunctionElement):
    """The text of a top-level JSON field: ``json_text(RecordRow.fields, "household_id")``."""

    inherit_cache = True
    type = String()
    name = "json_text"


def json_text(column, key: str) -> JsonText:  # noqa: ANN001
    if not _KEY.match(key):
        raise ValueError(f"not a field name: {key!r}")
    return JsonText(column, literal_column(key))


def _parts(element: JsonText) -> tuple:
    column, key = element.clauses.clauses
    # Alembic's comparison of index expressions hands the key back as a plain column of that name.
    return column, getattr(key, "text", None) or key.name


@compiles(JsonText, "sqlite")
def _json_text_on_sqlite(element, compiler, **kw):  # noqa: ANN001, ANN202
    column, key = _parts(element)
    return f"json_extract({compiler.process(column, **kw)}, '$.{key}')"


@compiles(JsonText, "postgresql")
def _json_text_on_postgresql(element, compiler, **kw):  # noqa: ANN001, ANN202
    column, key = _parts(element)
    return f"({compiler.process(column, **kw)} ->> '{key}')"


class Instant(FunctionElement):
    """An ISO 8601 time with a UTC offset, as the moment it names: as text, "09:00+08:00" sorts after
    "02:00+00:00", an hour earlier, and phones send their own zone's offset."""

    inherit_cache = True
    name = "instant"


# On PostgreSQL through fieldloop_instant() (migration 0004): an index takes only IMMUTABLE
# expressions, and a cast of text to timestamptz is STABLE (a time without an offset is read in the
# session's zone). Every entity time carries an offset, so the cast of a stored one is the same in
# any zone.
@compiles(Instant, "postgresql")
def _instant_on_postgresql(element, compiler, **kw):  # noqa: ANN001, ANN202
    inner = compiler.process(element.clauses, **kw)
    if isinstance(element.clauses.clauses[0], JsonText):  # as PostgreSQL prints the index back
        inner = inner[1:-1]
    return f"fieldloop_instant({inner})"


@compiles(Instant, "sqlite")
def _instant_on_sqlite(element, compiler, **kw):  # noqa: ANN001, ANN202
    # SQLite's date functions read the offset and answer in UTC (to the second; seq breaks ties).
    return f"datetime({compiler.process(element.clauses, **kw)})"


def entity_is(column, *names: str):  # noqa: ANN001, ANN201
    """``records.entity`` is one of the names, as the partial indexes on records spell their
    condition (``entity_condition``): the names written into the SQL (a bound name proves nothing
    to the planner) and, on SQLite, the column behind a unary ``+``
    (https://sqlite.org/optoverview.html#disqualifying_where_clause_terms_using_unary_): without
    statistics SQLite takes any index whose first column a condition names (``ix_records_entity_grid``)
    and sorts everything it found, the whole year, where a partial index reads a page in order."""
    for name in names:
        if not _KEY.match(name):
            raise ValueError(f"not an entity: {name!r}")
    literals = [literal_column(f"'{name}'") for name in names]
    if len(literals) == 1:
        return not_indexed(column) == literals[0]
    return not_indexed(column).in_(literals)


def entity_condition(dialect_name: str, *names: str, column: str = "entity") -> str:
    """The same condition as DDL text, for an index's WHERE (``models``; the migration writes it out)."""
    plus = "+" if dialect_name == "sqlite" else ""
    if len(names) == 1:
        return f"{plus}{column} = '{names[0]}'"
    return f"{plus}{column} IN ({', '.join(repr(n) for n in names)})"


class NotIndexed(FunctionElement):
    """A column the query planner must not look up through an index: SQLite's unary ``+``, for
    a list read a page at a time along another index (the grids of a scope, which
    ``ix_records_grid_seq`` would otherwise serve by reading all their records)."""

    inherit_cache = True
    name = "not_indexed"

    @property
    def type(self):  # noqa: ANN201
        return self.clauses.clauses[0].type


def not_indexed(column) -> NotIndexed:  # noqa: ANN001
    return NotIndexed(column)


@compiles(NotIndexed)
def _not_indexed(element, compiler, **kw):  # noqa: ANN001, ANN202
    return compiler.process(element.clauses, **kw)


@compiles(NotIndexed, "sqlite")
def _not_indexed_on_sqlite(element, compiler, **kw):  # noqa: ANN001, ANN202
    return f"+{compiler.process(element.clauses, **kw)}"
