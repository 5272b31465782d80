"""The server's tables.

Records of every entity share one table: the sync protocol treats them alike, and the pull
feed is one ordered index over ``seq``. ``seq`` is handed out under the lock on the
``counters`` row, so it grows in commit order (see docs/protocol.md, "How the server keeps G4").
"""

from __future__ import annotations

import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    and_,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from server.db.expressions import Instant, entity_condition, json_text


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Base(DeclarativeBase):
    type_annotation_map = {
        dict[str, Any]: JSON,
        list[Any]: JSON,
        datetime.datetime: DateTime(timezone=True),
    }


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str | None] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime.datetime] = mapped_column(default=utcnow)


class Grid(Base):
    __tablename__ = "grids"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    community: Mapped[str] = mapped_column(String(100), index=True)
    created_at: Mapped[datetime.datetime] = mapped_column(default=utcnow)


class UserGrid(Base):
    __tablename__ = "user_grids"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    grid_id: Mapped[str] = mapped_column(ForeignKey("grids.id", ondelete="CASCADE"), primary_key=True, index=True)


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    label: Mapped[str] = mapped_column(String(100), default="")
    app_version: Mapped[str] = mapped_column(String(40), default="")
    # active | retired | revoked
    status: Mapped[str] = mapped_column(String(10), default="active")
    wipe: Mapped[bool] = mapped_column(Boolean, default=False)
    enrolled_at: Mapped[datetime.datetime] = mapped_column(default=utcnow)
    last_sync_at: Mapped[datetime.datetime | None]
    revoked_at: Mapped[datetime.datetime | None]


class EnrollmentCode(Base):
    __tablename__ = "enrollment_codes"

    # Only the code's SHA-256 is stored: a copy of the database enrolls nothing.
    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime.datetime]
    used_at: Mapped[datetime.datetime | None]
    device_id: Mapped[str | None] = mapped_column(String(36))


class AuthChallenge(Base):
    __tablename__ = "auth_challenges"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(36), index=True)
    expires_at: Mapped[datetime.datetime]


class ServerSecret(Base):
    """Secrets every server process shares (the token signing key)."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary(64))


class Counter(Base):
    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class RecordRow(Base):
    __tablename__ = "records"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    entity: Mapped[str] = mapped_column(String(20))
    grid_id: Mapped[str] = mapped_column(String(36))
    version: Mapped[int] = mapped_column(Integer)
    hlc: Mapped[str] = mapped_column(String(84))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    # jsonb on PostgreSQL: the console's indexes read fields by key (migration 0005).
    fields: Mapped[dict[str, Any]] = mapped_column(JSON().with_variant(JSONB(), "postgresql"))
    # {field: [version, hlc, origin]}: when each field last changed, and who changed it.
    meta: Mapped[dict[str, Any]]
    deleted_meta: Mapped[list[Any] | None]
    seq: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime.datetime] = mapped_column(default=utcnow)
    # The record as a pull sends it (msgpack of shared_schema.messages.Record, empty fields when
    # deleted), written with each change: a pull page is these bytes laid side by side, with no
    # decoding and re-encoding of every record it carries. Deferred: the console's pages read
    # records through the ORM and never need it.
    wire: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)

    __table_args__ = (
        Index("ix_records_seq", "seq", unique=True),
        Index("ix_records_grid_seq", "grid_id", "seq"),
        Index("ix_records_entity_grid", "entity", "grid_id"),
    )


# The console's lists of a year of records, each read a page at a time in its own order instead of
# sorting or filtering every record of the entity (migration 0004). Each is partial on the entity
# (spelled as ``expressions.entity_is`` spells it): a push of other entities writes no entry in it.
_records = RecordRow.__table__


def _partial(*names: str, also: Any = None) -> dict[str, Any]:
    where = {d: text(entity_condition(d, *names)) for d in ("sqlite", "postgresql")}
    return {f"{d}_where": w if also is None else and_(w, also) for d, w in where.items()}


_follow_up_on = json_text(_records.c.fields, "follow_up_on")
# Visits newest first by the moment they name (the visit lists, and their export).
Index("ix_records_visit_time", Instant(json_text(_records.c.fields, "visited_at")), _records.c.seq,
      **_partial("visit"))
# The follow-ups due (the dashboard's and their list): a window of days, soonest first.
Index("ix_records_follow_up", _follow_up_on, _records.c.seq, **_partial("visit", also=_follow_up_on.is_not(None)))
# A case board column, a status's list: the cases of one status, newest first.
Index("ix_records_case_status", json_text(_records.c.fields, "status"), _records.c.seq, **_partial("case"))
# The households by address (their list, a page at a time).
Index("ix_records_address", json_text(_records.c.fields, "address"), _records.c.id, **_partial("household"))
# A household's history: its visits and cases.
Index("ix_records_household", json_text(_records.c.fields, "household_id"), **_partial("visit", "case"))


class ChangeLogEntry(Base):
    """Every change to every record; read by record (its history). Each index here costs every
    push one more B-tree write, so only what is read is indexed."""

    __tablename__ = "change_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    record_id: Mapped[str] = mapped_column(String(36), index=True)
    entity: Mapped[str] = mapped_column(String(20))
    grid_id: Mapped[str] = mapped_column(String(36))
    version: Mapped[int] = mapped_column(Integer)
    op: Mapped[str] = mapped_column(String(10))
    hlc: Mapped[str] = mapped_column(String(84))
    # The stamp the device sent, when the server re-stamped it (a clock too far ahead).
    original_hlc: Mapped[str | None] = mapped_column(String(84))
    mid: Mapped[str | None] = mapped_column(String(36))
    device_id: Mapped[str | None] = mapped_column(String(36))
    user_id: Mapped[str | None] = mapped_column(String(36))
    received_at: Mapped[datetime.datetime] = mapped_column(default=utcnow)
    # {field: [before, after]}
    changes: Mapped[dict[str, Any]]


class AppliedMutation(Base):
    """Every mutation id ever pushed, with the result first returned for it (G2)."""

    __tablename__ = "applied_mutations"

    mid: Mapped[str] = mapped_column(String(36), primary_key=True)
    device_id: Mapped[str | None] = mapped_column(String(36))
    record_id: Mapped[str] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(10))
    result: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime.datetime] = mapped_column(default=utcnow)


class ConflictEntry(Base):
    __tablename__ = "conflicts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    record_id: Mapped[str] = mapped_column(String(36), index=True)
    entity: Mapped[str] = mapped_column(String(20))
    grid_id: Mapped[str] = mapped_column(String(36), index=True)
    field: Mapped[str] = mapped_column(String(40))
    kept: Mapped[Any] = mapped_column(JSON, nullable=True)
    lost: Mapped[Any] = mapped_column(JSON, nullable=True)
    winner_hlc: Mapped[str] = mapped_column(String(84))
    mid: Mapped[str | None] = mapped_column(String(36))
    device_id: Mapped[str | None] = mapped_column(String(36), index=True)
    user_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime.datetime] = mapped_column(default=utcnow)
    # open | kept | taken
    status: Mapped[str] = mapped_column(String(10), default="open", index=True)
    resolved_by: Mapped[str | None] = mapped_column(String(36))
    resolved_at: Mapped[datetime.datetime | None]


class SyncLogEntry(Base):
    __tablename__ = "sync_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    device_id: Mapped[str | None] = mapped_column(String(36), index=True)
    user_id: Mapped[str | None] = mapped_column(String(36), index=True)
    kind: Mapped[str] = mapped_column(String(10))  # push | pull
    at: Mapped[datetime.datetime] = mapped_column(default=utcnow, index=True)
    app_version: Mapped[str] = mapped_column(String(40), default="")
    mutations: Mapped[int] = mapped_column(Integer, default=0)
    applied: Mapped[int] = mapped_column(Integer, default=0)
    merged: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    changes: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(40))
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)


class Blob(Base):
    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    length: Mapped[int] = mapped_column(BigInteger)
    received: Mapped[int] = mapped_column(BigInteger, default=0)
    complete: Mapped[bool] = mapped_column(Boolean, default=False)
    content_type: Mapped[str] = mapped_column(String(100), default="application/octet-stream")
    device_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime.datetime] = mapped_column(default=utcnow)


class BlobRef(Base):
    """Which records refer to which blobs: a device reads a blob only through a record in scope."""

    __tablename__ = "blob_refs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    record_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    grid_id: Mapped[str] = mapped_column(String(36), index=True)
