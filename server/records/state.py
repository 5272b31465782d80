"""Conversions between stored rows and ``sync.merge.RecordState``."""

from __future__ import annotations

from typing import Any

import msgspec

from server.db.inserts import json_text
from sync.merge import FieldMeta, RecordState

_wire_encoder = msgspec.msgpack.Encoder()
_fields_decoder = msgspec.json.Decoder(dict)
_meta_decoder = msgspec.json.Decoder(dict[str, FieldMeta])
_deleted_meta_decoder = msgspec.json.Decoder(FieldMeta | None)

# The columns ``state_from_stored`` reads, in its order.
STORED_COLUMNS = ("entity", "id", "grid_id", "version", "hlc", "deleted", "fields", "meta", "deleted_meta")
# The columns ``record_row`` fills, then the seq of the change the row shows (updated_at is given
# per transaction).
RECORD_COLUMNS = ("id", "entity", "grid_id", "version", "hlc", "deleted", "fields", "meta", "deleted_meta", "wire",
                  "seq")


def state_from_stored(row: tuple) -> RecordState:
    """The state of a record from its ``STORED_COLUMNS`` as the driver gives them."""
    entity, id_, grid_id, version, hlc, deleted, fields, meta, deleted_meta = row
    return RecordState(
        entity=entity,
        id=id_,
        grid_id=grid_id,
        version=version,
        hlc=hlc,
        deleted=bool(deleted),  # SQLite's driver gives 0/1
        fields=_from_json(fields, _fields_decoder, dict),
        meta=_from_json(meta, _meta_decoder, dict[str, FieldMeta]),
        deleted_meta=_from_json(deleted_meta, _deleted_meta_decoder, FieldMeta | None),
    )


def _from_json(value: Any, decoder: msgspec.json.Decoder, type_: Any) -> Any:
    # SQLite's driver gives a JSON column as text; asyncpg, through the codec SQLAlchemy installs
    # on its connections, as the value already decoded.
    if isinstance(value, str):
        return decoder.decode(value)
    return msgspec.convert(value, type_)


def record_row(state: RecordState) -> tuple:
    """The values of ``RECORD_COLUMNS`` but the last (seq) for ``state``, as the driver takes
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
        _wire_encoder.encode(state.to_record()),
    )
