"""The pull feed (protocol section 6): every record in scope changed after a cursor.

The cursor is opaque to devices: base64url of msgpack ``{s, g, c}``, where ``s`` is the last
seq delivered, ``g`` the grids the device's scope held when it was made and ``c`` the state of a
catch-up. When the user's grids change, the next pulls first deliver a catch-up: every record
of the new grids, and a tombstone for every record of the grids that left, up to ``s``; then
the ordinary feed goes on from ``s`` with the new scope.
"""

from __future__ import annotations

import base64
import binascii

import msgspec
from sqlalchemy import Connection, and_, bindparam, or_, select

from server.db.models import RecordRow
from shared_schema.messages import Record


class BadCursor(ValueError):
    pass


class CatchUp(msgspec.Struct, array_like=True):
    added: list[str]
    removed: list[str]
    after: int  # the last seq the catch-up delivered


class Cursor(msgspec.Struct, omit_defaults=True):
    s: int = 0
    g: list[str] | None = None
    c: CatchUp | None = None


_cursor_decoder = msgspec.msgpack.Decoder(Cursor)


def decode_cursor(text: str | None) -> Cursor | None:
    if not text:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        cursor = _cursor_decoder.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise BadCursor("the cursor is not one this server issued") from exc
    if cursor.s < 0:
        raise BadCursor("the cursor is not one this server issued")
    return cursor


def encode_cursor(cursor: Cursor) -> str:
    return base64.urlsafe_b64encode(msgspec.msgpack.encode(cursor)).rstrip(b"=").decode()


_COLUMNS = (RecordRow.entity, RecordRow.id, RecordRow.version, RecordRow.hlc, RecordRow.deleted,
            RecordRow.fields, RecordRow.seq, RecordRow.grid_id)
# Built once: every pull runs it, and building a statement costs more than running a small one.
_FEED = (
    select(*_COLUMNS)
    .where(RecordRow.seq > bindparam("after"), RecordRow.grid_id.in_(bindparam("grids", expanding=True)))
    .order_by(RecordRow.seq)
    .limit(bindparam("limit"))
)


def pull_page(
    connection: Connection, scope: frozenset[str], cursor: Cursor | None, limit: int
) -> tuple[list[Record], Cursor, bool]:
    """One page of changes for a device whose user holds the grids in ``scope``.

    Returns:
        (records, next cursor, more)
    """
    grids = sorted(scope)
    if cursor is None:
        cursor = Cursor(s=0, g=grids)
    known = sorted(cursor.g or [])
    if known != grids:
        added = sorted(scope - set(known))
        removed = sorted(set(known) - scope)
        catch_up = cursor.c
        if catch_up is None or catch_up.added != added or catch_up.removed != removed:
            catch_up = CatchUp(added=added, removed=removed, after=0)
        return _catch_up_page(connection, grids, cursor.s, catch_up, limit)
    if not grids:
        return [], Cursor(s=cursor.s, g=grids), False
    rows = connection.execute(_FEED, {"after": cursor.s, "grids": grids, "limit": limit + 1}).all()
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1].seq if rows else cursor.s
    return [_record(r, tombstone=False) for r in rows], Cursor(s=last, g=grids), more


def _catch_up_page(
    connection: Connection, grids: list[str], upto: int, catch_up: CatchUp, limit: int
) -> tuple[list[Record], Cursor, bool]:
    # New grids: what the ordinary feed will not bring (up to the cursor). Grids that left: every
    # record, whenever it changed (the grid's own record changed when the user left it).
    rows = connection.execute(
        select(*_COLUMNS)
        .where(
            RecordRow.seq > catch_up.after,
            or_(
                and_(RecordRow.grid_id.in_(catch_up.added), RecordRow.seq <= upto),
                RecordRow.grid_id.in_(catch_up.removed),
            ),
        )
        .order_by(RecordRow.seq)
        .limit(limit + 1)
    ).all()
    removed = set(catch_up.removed)
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = Cursor(s=upto, g=_old_scope(grids, catch_up), c=CatchUp(catch_up.added, catch_up.removed, rows[-1].seq))
    else:
        # Catch-up done: from here on the ordinary feed, in the new scope, from the same seq.
        next_cursor = Cursor(s=upto, g=grids)
    return [_record(r, tombstone=r.grid_id in removed) for r in rows], next_cursor, True


def _old_scope(grids: list[str], catch_up: CatchUp) -> list[str]:
    return sorted((set(grids) - set(catch_up.added)) | set(catch_up.removed))


def _record(row, *, tombstone: bool) -> Record:  # noqa: ANN001
    deleted = row.deleted or tombstone
    return Record(
        entity=row.entity,
        id=row.id,
        version=row.version,
        hlc=row.hlc,
        deleted=deleted,
        fields={} if deleted else row.fields,
    )
