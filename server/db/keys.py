"""A column that is one of a list of keys, as one bind parameter whatever the list's length.

``column IN (:k1, ..., :k2000)`` is rendered anew for each length (7 ms for a push of 500 on
PostgreSQL, which then prepares each length as a new statement). One parameter instead: an
array on PostgreSQL, a JSON array unpacked by ``json_each`` on SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from sqlalchemy import ARRAY, ColumnElement, String, any_, bindparam, func, literal_column, select


def one_of(dialect_name: str, column: ColumnElement, name: str) -> ColumnElement[bool]:
    """``column`` is one of the keys given as the parameter ``name`` (see ``key_list``)."""
    if dialect_name == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(String)))
    return column.in_(select(literal_column("value")).select_from(func.json_each(bindparam(name, type_=String))))


def key_list(dialect_name: str, keys: Sequence[str]) -> object:
    """The value for a parameter of ``one_of``."""
    if dialect_name == "postgresql":
        return list(keys)
    return msgspec.json.encode(list(keys)).decode()
