"""Which stored records a phone could not hold: run after an upgrade that tightens the schema.

Every phone checks each pulled record against its entity in shared_schema and sets aside one
that does not fit (``sync.client.server_replies``): its user no longer sees the record's later
changes until it fits again. The server validated each record when it was written, so this
happens only when shared_schema tightens over data stored before (a shorter limit, an enum value
taken away) or a new entity or value reaches phones that do not know it yet. This reads every
stored record, a page at a time, with the phones' own check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from server.db.models import RecordRow
from shared_schema.messages import Record
from sync.client.server_replies import check_record
from sync.errors import ProtocolError

_decode_record = msgspec.msgpack.Decoder(Record).decode


@dataclass(frozen=True)
class UnfitRecord:
    entity: str
    id: str
    version: int
    reason: str


@dataclass
class RecordCheck:
    read: int = 0
    unfit: list[UnfitRecord] = field(default_factory=list)


async def check_stored_records(sessionmaker: async_sessionmaker, page: int = 1000) -> RecordCheck:
    """Read every stored record, ``page`` at a time in id order, and keep those a phone would not hold."""
    found = RecordCheck()
    after = ""
    query = select(RecordRow.id, RecordRow.entity, RecordRow.version, RecordRow.wire).order_by(RecordRow.id)
    while True:
        async with sessionmaker() as session:
            rows = (await session.execute(query.where(RecordRow.id > after).limit(page))).all()
        for id_, entity, version, wire in rows:
            reason = _unfit_reason(wire)
            if reason is not None:
                found.unfit.append(UnfitRecord(entity, id_, version, reason))
        found.read += len(rows)
        if len(rows) < page:
            return found
        after = rows[-1][0]


def _unfit_reason(wire: bytes) -> str | None:
    try:
        return check_record(_decode_record(wire))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return f"the stored record cannot be read: {exc}"
    except ProtocolError as exc:
        return exc.message or str(exc)
