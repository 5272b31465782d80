"""A column that is one of a list of keys, as one bind parameter whatever the list's length.

``column IN (:k1, ..., :k2000)`` is rendered anew for each length (7 ms for a push of 500 on
PostgreSQL, which then prepares each length as a new statement). One parameter instead: an
array on PostgreSQL, a JSON array unpacked by ``json_each`` on SQLite.

On PostgreSQL the array is unnested into a semi-join rather than compared with ``= ANY``: for a
group of 2,000 mutation ids among 110,000 stored, ``= ANY`` was planned as a parallel scan of every
stored mutation (29 ms, and a second process's CPU) or a bitmap scan (16 ms); the unnested keys
are read one index probe each (4-6 ms). The planner still weighs the two ways: among a few
thousand stored rows it may scan them all, which is then the cheaper.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from sqlalchemy import ARRAY, ColumnElement, String, bindparam, func, literal_column, select


def one_of(dialect_name: str, column: ColumnElement, name: str) -> ColumnElement[bool]:
    """``column`` is one of the keys given as the parameter ``name`` (see ``key_list``)."""
    if dialect_name == "postgresql":
        return column.in_(select(func.unnest(bindparam(name, type_=ARRAY(String)))).scalar_subquery())
    return column.in_(select(literal_column("value")).select_from(func.json_each(bindparam(name, type_=String))))


def key_list(dialect_name: str, keys: Sequence[str]) -> object:
    """The value for a parameter of ``one_of``."""
    if dialect_name == "postgresql":
        return list(keys)
    return msgspec.json.encode(list(keys)).decode()
