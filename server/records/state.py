"""Conversions between stored rows and ``sync.merge.RecordState``."""

from __future__ import annotations

from typing import Any

import msgspec

from sync.merge import FieldMeta, RecordState

_meta_type = dict[str, FieldMeta]


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


def row_values(state: RecordState, seq: int) -> dict[str, Any]:
    return {
        "id": state.id,
        "entity": state.entity,
        "grid_id": state.grid_id,
        "version": state.version,
        "hlc": state.hlc,
        "deleted": state.deleted,
        "fields": state.fields,
        # The JSON columns encode with msgspec, which writes FieldMeta Structs as arrays itself.
        "meta": state.meta,
        "deleted_meta": state.deleted_meta,
        "seq": seq,
    }
