"""Conversions between stored rows and ``sync.merge.RecordState``."""

from __future__ import annotations

from typing import Any

import msgspec

from server.db.inserts import json_text
from sync.merge import FieldMeta, RecordState

_meta_type = dict[str, FieldMeta]
_wire_encoder = msgspec.msgpack.Encoder()

# The columns ``record_row`` fills, in the table's order (updated_at is given per transaction).
RECORD_COLUMNS = ("id", "entity", "grid_id", "version", "hlc", "deleted", "fields", "meta", "deleted_meta", "seq",
                  "wire")


def state_from_row(row: Any) -> RecordState:
    return RecordState(
        entity=row.entity,
        id=row.id,
        grid_id=row.grid_id,
        version=row.version,
        hlc=row.hlc,
        deleted=row.deleted,
        fields=row.fields,
        meta=msgspec.convert(row.meta, _meta_type),
        deleted_meta=msgspec.convert(row.deleted_meta, FieldMeta) if row.deleted_meta else None,
    )


def record_row(state: RecordState, seq: int) -> tuple:
    """The values of ``RECORD_COLUMNS`` for ``state`` as of change ``seq``, as the driver takes
    them. ``meta`` encodes its FieldMeta Structs as arrays (``[version, hlc, origin]``)."""
    return (
        state.id,
        state.entity,
        state.grid_id,
        state.version,
        state.hlc,
        state.deleted,
        json_text(state.fields),
        json_text(state.meta),
        json_text(state.deleted_meta),
        seq,
        _wire_encoder.encode(state.to_record()),
    )
