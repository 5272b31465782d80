"""The pull feed (protocol section 6): every record in scope changed after a cursor.

The cursor is opaque to devices: base64url of msgpack ``{s, g, c}`` followed by a MAC, where
``s`` is the last seq delivered, ``g`` the grids the device's scope held when it was made and
``c`` the state of a catch-up. When the user's grids change, the next pulls first deliver a
catch-up: every record of the new grids, and a tombstone for every record of the grids that
left (and for each such grid's own record), up to ``s``; then the ordinary feed goes on from
``s`` with the new scope. A record made in a grid after it left was never the device's: it
gets no tombstone either (G5).

While a catch-up runs, ``g`` is the scope before it: the device fully holds ``g`` less the
catch-up's ``removed`` grids, and may hold some records of its ``added`` grids and tombstones
of some of its ``removed`` ones. When the grids change again before the catch-up ends, a new
catch-up starts from what the device may hold: every grid of the new scope it does not fully
hold comes in full, and every grid it may hold anything of and that is not in the new scope
comes as tombstones.

The server believes what a cursor says (``g`` decides which grids' records come back as
tombstones, ``s`` where the feed goes on), so a cursor must be one the server made: the MAC is
HMAC-SHA256, truncated to 16 bytes, over the user id and the msgpack, under a key derived from
the secret every server process reads from the database (``cursor_key``). A cursor that was
forged, altered, or issued to another user is a ``BadCursor`` (``400 malformed``). It is bound
to the user and not the device: a user's re-enrolled phone may carry its cursor over.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import itertools

import msgspec
from sqlalchemy import Connection, and_, bindparam, or_, select

from server.db.driver_sql import DriverStatement
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
_CURSOR_MAC_BYTES = 16
# What the server's secret is keyed with to give the cursor key: a key of its own, so that a
# cursor's MAC can never be taken for a token's, nor the other way round.
_CURSOR_KEY_LABEL = b"fieldloop pull cursor v1"


def cursor_key(secret: bytes) -> bytes:
    """The key that signs pull cursors, from the server's shared secret (``load_token_secret``):
    every process on one database gets the same key, so a cursor from one is good at another
    and after a restart."""
    return hmac.new(secret, _CURSOR_KEY_LABEL, hashlib.sha256).digest()


def _cursor_mac(key: bytes, user_id: str, body: bytes) -> bytes:
    # The user id goes first as a msgpack string: its length prefix keeps it apart from the body.
    message = msgspec.msgpack.encode(user_id) + body
    return hmac.new(key, message, hashlib.sha256).digest()[:_CURSOR_MAC_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def decode_cursor(text: str | None, key: bytes, user_id: str) -> Cursor | None:
    """The cursor ``text`` names, when this server issued it to ``user_id``; None for no cursor.

    Raises:
        BadCursor: the text does not decode, or its MAC is not ours for this user.
    """
    if not text:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise BadCursor("the cursor is not one this server issued") from exc
    body, mac = raw[:-_CURSOR_MAC_BYTES], raw[-_CURSOR_MAC_BYTES:]
    # The decoder skips characters outside the alphabet, so only the text encode_cursor made is
    # taken: one cursor, one spelling.
    if not body or _b64(raw) != text or not hmac.compare_digest(mac, _cursor_mac(key, user_id, body)):
        raise BadCursor("the cursor is not one this server issued")
    try:
        cursor = _cursor_decoder.decode(body)
    except (ValueError, msgspec.DecodeError) as exc:
        raise BadCursor("the cursor is not one this server issued") from exc
    if cursor.s < 0:
        raise BadCursor("the cursor is not one this server issued")
    return cursor


def encode_cursor(cursor: Cursor, key: bytes, user_id: str) -> str:
    """The text of ``cursor`` for a device of ``user_id``, signed with ``key`` (``cursor_key``)."""
    body = msgspec.msgpack.encode(cursor)
    return _b64(body + _cursor_mac(key, user_id, body))


# One grid's changes after a seq, in seq order: a range of the (grid_id, seq) index read in order,
# which stops at the limit.
_GRID_FEED = DriverStatement(
    select(RecordRow.seq, RecordRow.wire)
    .where(RecordRow.grid_id == bindparam("grid"), RecordRow.seq > bindparam("after"))
    .order_by(RecordRow.seq)
    .limit(bindparam("limit"))
)
_record_encoder = msgspec.msgpack.Encoder()


def _feed_rows(connection: Connection, grids: list[str], after: int, limit: int) -> list[tuple[int, bytes]]:
    """The first ``limit`` (seq, wire) changes after ``after`` in any of ``grids``, in seq order.

    Each grid's own ordered range, merged here: one query over all the grids (``grid_id IN``)
    cannot read the index in seq order, so it read and sorted every later change of every grid
    for each page, and a cold pull of 100,000 records read some five million rows. (On
    PostgreSQL the sync API's reading connections have sorts turned off, so that the planner
    reads the range in order whatever its statistics say: ``create_postgres_read_engine``.)
    """
    ranges = [_GRID_FEED.rows(connection, grid=grid, after=after, limit=limit) for grid in grids]
    if len(ranges) == 1:
        return ranges[0]
    return list(itertools.islice(heapq.merge(*ranges), limit))


def pull_page(
    connection: Connection, scope: frozenset[str], cursor: Cursor | None, limit: int
) -> tuple[list[bytes], Cursor, bool]:
    """One page of changes for a device whose user holds the grids in ``scope``.

    Returns:
        (records, each msgpack-encoded as a ``shared_schema.messages.Record``; next cursor; more)
    """
    grids = sorted(scope)
    if cursor is None:
        cursor = Cursor(s=0, g=grids)
    catch_up = _catch_up_for(scope, cursor)
    if catch_up is not None:
        return _catch_up_page(connection, grids, cursor.s, catch_up, limit)
    if not grids:
        return [], Cursor(s=cursor.s, g=grids), False
    rows = _feed_rows(connection, grids, cursor.s, limit + 1)
    more = len(rows) > limit
    if more:
        del rows[limit:]
    last = rows[-1][0] if rows else cursor.s
    return [wire for _, wire in rows], Cursor(s=last, g=grids), more


def _catch_up_for(scope: frozenset[str], cursor: Cursor) -> CatchUp | None:
    """The catch-up a device with ``cursor`` needs to hold ``scope``, or None when it holds it."""
    before = set(cursor.g or [])
    ongoing = cursor.c
    if ongoing is None:
        if before == scope:
            return None
        return CatchUp(added=sorted(scope - before), removed=sorted(before - scope), after=0)
    held_fully = before - set(ongoing.removed)
    if held_fully | set(ongoing.added) == scope:
        return ongoing
    # The grids changed again mid-catch-up: the device may hold part of what the first one sent.
    held_in_part = before | set(ongoing.added)
    return CatchUp(added=sorted(scope - held_fully), removed=sorted(held_in_part - scope), after=0)


def _catch_up_page(
    connection: Connection, grids: list[str], upto: int, catch_up: CatchUp, limit: int
) -> tuple[list[bytes], Cursor, bool]:
    # New grids: what the ordinary feed will not bring (up to the cursor). Grids that left: as
    # tombstones, what the device may hold (up to the cursor), and the grid's own record whenever
    # it changed (it changed when the user left the grid).
    rows = connection.execute(
        select(RecordRow.seq, RecordRow.wire, RecordRow.grid_id, RecordRow.entity, RecordRow.id, RecordRow.version,
               RecordRow.hlc)
        .where(
            RecordRow.seq > catch_up.after,
            or_(
                and_(RecordRow.grid_id.in_(catch_up.added + catch_up.removed), RecordRow.seq <= upto),
                and_(RecordRow.grid_id.in_(catch_up.removed), RecordRow.entity == "grid"),
            ),
        )
        .order_by(RecordRow.seq)
        .limit(limit + 1)
    ).all()
    removed = set(catch_up.removed)
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = Cursor(
            s=upto, g=_old_scope(grids, catch_up), c=CatchUp(catch_up.added, catch_up.removed, rows[-1].seq)
        )
    else:
        # Catch-up done: from here on the ordinary feed, in the new scope, from the same seq.
        next_cursor = Cursor(s=upto, g=grids)
    return [_tombstone(r) if r.grid_id in removed else r.wire for r in rows], next_cursor, True


def _tombstone(row) -> bytes:
    return _record_encoder.encode(Record(entity=row.entity, id=row.id, version=row.version, hlc=row.hlc, deleted=True))


def _old_scope(grids: list[str], catch_up: CatchUp) -> list[str]:
    return sorted((set(grids) - set(catch_up.added)) | set(catch_up.removed))
