"""The device's local store: server records, the outbox of pending edits, results, conflicts,
meta and blobs, in one SQLite file (WAL) plus a folder of blob files.

Contract:
- Everything a person typed or photographed is sealed with the store's ``Cipher`` before it
  touches the disk: record fields, outbox fields, results, conflict values, meta values and
  blob files. Only ids, versions, stamps, hashes and field *names* are stored in the clear.
- ``records`` holds the server's state of each record; the user's pending edits live in
  ``outbox`` and are rebased on top when a record is read (``get``, ``records``), so a pull
  never hides an edit that has not been pushed yet.
- An outbox entry leaves the outbox only in the transaction that stores its result
  (``apply_results``); the pull cursor moves only in the transaction that applies its page
  (``apply_pulled``). A crash between two transactions therefore repeats work (the same
  ``mid`` is pushed again; the server answers with its first result) and never loses any.
- Every method is thread-safe (one connection behind a lock) so the app's UI thread may read
  while a background thread syncs. SQLite errors surface as ``sync.errors.StorageError``.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from shared_schema.entities import DEVICE_WRITABLE, ENTITIES, UNION_FIELDS, FieldsInvalid, validate_fields
from shared_schema.messages import Mutation, MutationStatus, Record, Result
from shared_schema.rules import MergeRule, field_rules
from sync.client.cipher import Cipher
from sync.client.ids import new_id
from sync.client.schema import SCHEMA
from sync.client.sealed_files import SealedFiles, is_blob_name
from sync.errors import BlobRejected, InvalidEdit, StorageError
from sync.hlc import parse_stamp
from sync.sqlite_binding import bind_plain_values_directly

# Meta keys other modules share.
META_CURSOR = "sync.cursor"
META_CLOCK_LAST = "clock.last"
META_CLOCK_OFFSET = "clock.offset_ms"
META_CLOCK_ANCHOR = "clock.anchor"  # the wall and boot clocks when the offset was learned (boot_clock)
META_DEVICE_ID = "device.id"
META_SERVER_URL = "server.url"
META_RETIRED = "device.retired"
META_LAST_SYNC = "sync.last"

# Fields that hold blob hashes; a pulled record naming one makes the blob known to the store.
BLOB_FIELDS = frozenset({"photos"})

BLOB_LOCAL = "local"  # made on this device, not yet on the server
BLOB_UPLOADED = "uploaded"  # made on this device and complete on the server
BLOB_REMOTE = "remote"  # known from a record; ``path`` is set once it is downloaded
# Made on this device for a form not saved yet (the app's drafts): kept sealed, never uploaded.
# The local edit that first names it in a record makes it ``local``; a discarded draft drops it.
BLOB_HELD = "held"


class LocalRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A record as the user sees it: the server's state with pending edits rebased on top.

    Attributes:
        version: the server version the record is based on (0 for a record never pushed).
        pending: True when edits of this record wait in the outbox.
    """

    entity: str
    id: str
    version: int
    hlc: str
    deleted: bool
    fields: dict[str, Any]
    pending: bool = False
    grid_id: str | None = None
    household_id: str | None = None


class OutboxEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One pending edit, exactly as it will be pushed (and pushed again after a crash)."""

    seq: int
    mid: str
    entity: str
    id: str
    op: str
    base_version: int
    hlc: str
    fields: dict[str, Any]
    created_at: str

    def to_mutation(self) -> Mutation:
        """The wire form of this entry."""
        return Mutation(
            mid=self.mid,
            entity=self.entity,
            id=self.id,
            op=self.op,
            base_version=self.base_version,
            hlc=self.hlc,
            fields=self.fields,
        )


class ConflictEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A value that lost a concurrent edit (or won against someone else's), kept for the user."""

    cid: int
    mid: str
    entity: str
    id: str
    field: str
    kept: Any
    lost: Any
    winner_hlc: str
    seen: bool
    created_at: str


class RejectedEdit(msgspec.Struct, frozen=True, kw_only=True):
    """A pending edit the server refused; it left the outbox and waits here for the user."""

    mid: str
    entity: str
    id: str
    op: str
    fields: dict[str, Any]
    code: str
    message: str
    received_at: str


class Unfit(msgspec.Struct, frozen=True):
    """A record a server sent that this app cannot hold, and why (``server_replies``)."""

    record: Record
    reason: str


class SetAsideRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A record kept apart until the app can read it (see ``server_replies``)."""

    record: Record
    reason: str
    seen: bool
    received_at: str


class PushSummary(msgspec.Struct, kw_only=True):
    """What one ``apply_results`` call stored."""

    applied: int = 0
    merged: int = 0
    rejected: int = 0
    conflicts: int = 0
    unanswered: int = 0


def _now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


class _Payload(msgspec.Struct, kw_only=True):
    """What a results row seals: the result and the fields the edit carried."""

    result: Result
    fields: dict[str, Any] = {}


class _ConflictValues(msgspec.Struct, array_like=True):
    kept: Any
    lost: Any


_decode_payload = msgspec.msgpack.Decoder(_Payload).decode
_decode_unfit = msgspec.msgpack.Decoder(Unfit).decode
_decode_conflict = msgspec.msgpack.Decoder(_ConflictValues).decode


def _record_aad(entity: str, id_: str) -> bytes:
    return f"rec:{entity}/{id_}".encode()


def _set_aside_aad(entity: str, id_: str) -> bytes:
    return f"set:{entity}/{id_}".encode()


def _check_stamp(hlc: str) -> None:
    # A bad stamp would make the server refuse the whole push it travels in.
    try:
        parse_stamp(hlc)
    except ValueError:
        raise InvalidEdit(f"not an hlc stamp: {hlc!r}") from None


def _lookup_ids(entity: str, id_: str, fields: dict[str, Any]) -> tuple[str | None, str | None]:
    """The plain grid and household ids a record is looked up by."""
    grid_id = id_ if entity == "grid" else fields.get("grid_id")
    return grid_id, fields.get("household_id")


class LocalStore:
    """The device's encrypted store (see the module docstring for its contract).

    Args:
        path: the SQLite file; blob files go to the folder ``<path>.blobs`` beside it.
        cipher: seals everything personal before it is written.
    """

    def __init__(self, path: Path, cipher: Cipher):
        self.path = Path(path)
        self.blob_dir = self.path.with_name(self.path.name + ".blobs")
        self._cipher = cipher
        self._lock = threading.RLock()
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot make the folder of the local store: {exc}") from exc
        self._files = SealedFiles(self.blob_dir, cipher)
        bind_plain_values_directly()
        try:
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a write never has
            # to upgrade a read lock (which fails with "database is locked" under load).
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: an edit the user saw saved must survive a power cut, not only a crash.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            # Sorting and temp tables stay in memory so no plaintext spills into temp files.
            self._db.execute("PRAGMA temp_store=MEMORY")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the local store at {self.path}: {exc}") from exc

    # ---- plumbing -------------------------------------------------------------------

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._check_open()
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise StorageError(f"local store read failed: {exc}") from exc

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: everything inside commits together or not at all."""
        with self._lock:
            self._check_open()
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StorageError(f"local store is busy or broken: {exc}") from exc
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StorageError(f"local store write failed: {exc}") from exc
                raise

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the local store is closed")

    def _seal(self, value: Any, aad: bytes) -> bytes:
        return self._cipher.encrypt(_encode(value), aad)

    def _open(self, sealed: bytes, aad: bytes) -> Any:
        return _decode(self._cipher.decrypt(sealed, aad))

    # ---- meta -----------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        """A meta value (cursor, device id, clock stamp, ...), or ``default`` when unset."""
        with self._read() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            return default
        return self._cipher.decrypt(row[0], f"meta:{key}".encode()).decode()

    def set_meta(self, key: str, value: str | None) -> None:
        """Set (or, with None, remove) a meta value; values are sealed like everything else."""
        self.set_meta_many({key: value})

    def set_meta_many(self, values: dict[str, str | None]) -> None:
        """Set several meta values in one transaction."""
        with self._write() as db:
            self._set_meta_in(db, values)

    def _set_meta_in(self, db: sqlite3.Connection, values: dict[str, str | None]) -> None:
        for key, value in values.items():
            if value is None:
                db.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                sealed = self._cipher.encrypt(value.encode(), f"meta:{key}".encode())
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, sealed))

    def _bump_clock_in(self, db: sqlite3.Connection, hlc: str) -> None:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (META_CLOCK_LAST,)).fetchone()
        last = self._cipher.decrypt(row[0], f"meta:{META_CLOCK_LAST}".encode()).decode() if row else ""
        if hlc > last:
            self._set_meta_in(db, {META_CLOCK_LAST: hlc})

    # ---- local edits ----------------------------------------------------------------

    def new_record_id(self) -> str:
        """A fresh, time-ordered id for a record created on this device."""
        return new_id()

    def create(self, entity: str, fields: dict[str, Any], *, hlc: str, id: str | None = None) -> str:
        """Create a record locally and queue it for the server.

        Args:
            entity: a device-writable entity name.
            fields: its fields; must include the entity's ``REQUIRED_ON_CREATE``.
            hlc: the edit's stamp (``SyncEngine.stamp()``).
            id: the record id; a new time-ordered UUID when omitted.

        Returns:
            The record id.

        Raises:
            InvalidEdit: unknown entity, read-only or invalid field, a required field missing.
        """
        record_id = id or new_id()
        self.edit(entity, record_id, fields, hlc=hlc)
        return record_id

    def edit(self, entity: str, id: str, fields: dict[str, Any], *, hlc: str) -> str | None:
        """Upsert the changed fields of a record: queue them in the outbox and show them at once.

        Fields equal to what the user already sees are dropped. A ``union`` field (photos,
        tags) carries the whole set the user wants. A second edit of a record whose first edit
        is still pending becomes a new outbox entry with the same ``base_version`` (the server
        never treats a device's own earlier edits as concurrent).

        Args:
            entity: a device-writable entity name.
            id: the record id (a new record when the store has never seen it).
            fields: the fields to set.
            hlc: the edit's stamp.

        Returns:
            The new entry's mutation id, or None when nothing changed.

        Raises:
            InvalidEdit: unknown entity, read-only or invalid field, a new record without its
                required fields, or a record that is another entity.
        """
        normalised = self._validate(entity, fields)
        _check_stamp(hlc)
        with self._write() as db:
            server = self._server_row(db, entity, id)
            entries = self._entries_of(db, entity, id)
            current = self._rebase(entity, id, server, entries)
            if current is None:
                missing = sorted(ENTITIES[entity].REQUIRED_ON_CREATE - normalised.keys())
                if missing:
                    raise InvalidEdit(f"a new {entity} needs: {', '.join(missing)}")
            if current is not None and not current.deleted:
                normalised = {k: v for k, v in normalised.items() if k not in current.fields or current.fields[k] != v}
            if not normalised:
                return None
            base_version = server.version if server is not None else 0
            return self._append(db, entity, id, "upsert", base_version, hlc, normalised)

    def delete(self, entity: str, id: str, *, hlc: str) -> str:
        """Queue the deletion of a record and hide it at once.

        Returns:
            The new entry's mutation id.

        Raises:
            InvalidEdit: the store knows no such record, or the entity is not device-writable.
        """
        if entity not in DEVICE_WRITABLE:
            raise InvalidEdit(f"{entity} records cannot be changed on a device")
        _check_stamp(hlc)
        with self._write() as db:
            server = self._server_row(db, entity, id)
            entries = self._entries_of(db, entity, id)
            if server is None and not entries:
                raise InvalidEdit(f"no {entity} {id} to delete")
            base_version = server.version if server is not None else 0
            return self._append(db, entity, id, "delete", base_version, hlc, {})

    def _validate(self, entity: str, fields: dict[str, Any]) -> dict[str, Any]:
        if entity not in ENTITIES:
            raise InvalidEdit(f"unknown entity {entity!r}")
        if entity not in DEVICE_WRITABLE:
            raise InvalidEdit(f"{entity} records cannot be changed on a device")
        rules = field_rules(ENTITIES[entity])
        read_only = sorted(f for f in fields if rules.get(f) is MergeRule.SERVER)
        if read_only:
            raise InvalidEdit(f"written by the server only: {', '.join(read_only)}")
        try:
            return validate_fields(entity, fields)
        except FieldsInvalid as exc:
            raise InvalidEdit(str(exc)) from None

    def _append(
        self, db: sqlite3.Connection, entity: str, id_: str, op: str, base_version: int, hlc: str, fields: dict
    ) -> str:
        mid = new_id()
        grid_id, household_id = _lookup_ids(entity, id_, fields)
        db.execute(
            "INSERT INTO outbox (mid, entity, id, op, base_version, hlc, grid_id, household_id, fields, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                mid,
                entity,
                id_,
                op,
                base_version,
                hlc,
                grid_id,
                household_id,
                self._seal(fields, f"out:{mid}".encode()),
                _now_iso(),
            ),
        )
        self._bump_clock_in(db, hlc)
        named = [(BLOB_LOCAL, sha, BLOB_HELD) for name in BLOB_FIELDS & fields.keys() for sha in fields[name] or ()]
        if named:
            # In the edit's own transaction: a record never names a photo that waits to be sent.
            db.executemany("UPDATE blobs SET state = ? WHERE sha256 = ? AND state = ?", named)
        return mid

    # ---- reading what the user sees -------------------------------------------------

    def get(self, entity: str, id: str) -> LocalRecord | None:
        """A record as the user sees it (deleted ones included, with ``deleted=True``), or None."""
        with self._read() as db:
            return self._rebase(entity, id, self._server_row(db, entity, id), self._entries_of(db, entity, id))

    def records(
        self,
        entity: str,
        *,
        grid_id: str | None = None,
        household_id: str | None = None,
        include_deleted: bool = False,
    ) -> list[LocalRecord]:
        """Every record of an entity as the user sees it, optionally of one grid or household.

        Records created here and not yet pushed are included. Ordered by id, which for ids
        made on devices is creation order.
        """
        where, params = "entity = ?", [entity]
        if grid_id is not None:
            where += " AND grid_id = ?"
            params.append(grid_id)
        if household_id is not None:
            where += " AND household_id = ?"
            params.append(household_id)
        with self._read() as db:
            servers = {r.id: r for r in self._server_rows(db, f"SELECT * FROM records WHERE {where}", params)}
            pending_ids = {row[0] for row in db.execute(f"SELECT DISTINCT id FROM outbox WHERE {where}", params)}
            # A pending edit may touch a record whose lookup ids only its server row carries.
            pending_ids |= {
                row[0] for row in db.execute("SELECT DISTINCT id FROM outbox WHERE entity = ?", (entity,))
            } & (servers.keys())
            entries: dict[str, list[OutboxEntry]] = {}
            if pending_ids:
                for entry in self._entries(db, "SELECT * FROM outbox WHERE entity = ? ORDER BY seq", (entity,)):
                    if entry.id in pending_ids:
                        entries.setdefault(entry.id, []).append(entry)
                missing = pending_ids - servers.keys()
                for rid in missing:
                    server = self._server_row(db, entity, rid)
                    if server is not None:
                        servers[rid] = server
        out = []
        for rid in sorted(servers.keys() | pending_ids):
            record = self._rebase(entity, rid, servers.get(rid), entries.get(rid, []))
            if record is None or (record.deleted and not include_deleted):
                continue
            if grid_id is not None and record.grid_id != grid_id:
                continue
            if household_id is not None and record.household_id != household_id:
                continue
            out.append(record)
        return out

    def _server_row(self, db: sqlite3.Connection, entity: str, id_: str) -> LocalRecord | None:
        rows = self._server_rows(db, "SELECT * FROM records WHERE entity = ? AND id = ?", (entity, id_))
        return rows[0] if rows else None

    def _server_rows(self, db: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[LocalRecord]:
        out = []
        for entity, id_, grid_id, household_id, version, hlc, deleted, sealed in db.execute(sql, params):
            out.append(
                LocalRecord(
                    entity=entity,
                    id=id_,
                    version=version,
                    hlc=hlc,
                    deleted=bool(deleted),
                    fields=self._open(sealed, _record_aad(entity, id_)),
                    grid_id=grid_id,
                    household_id=household_id,
                )
            )
        return out

    def _entries_of(self, db: sqlite3.Connection, entity: str, id_: str) -> list[OutboxEntry]:
        return self._entries(db, "SELECT * FROM outbox WHERE entity = ? AND id = ? ORDER BY seq", (entity, id_))

    def _entries(self, db: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[OutboxEntry]:
        out = []
        for seq, mid, entity, id_, op, base, hlc, _grid, _household, sealed, created in db.execute(sql, params):
            out.append(
                OutboxEntry(
                    seq=seq,
                    mid=mid,
                    entity=entity,
                    id=id_,
                    op=op,
                    base_version=base,
                    hlc=hlc,
                    fields=self._open(sealed, f"out:{mid}".encode()),
                    created_at=created,
                )
            )
        return out

    @staticmethod
    def _rebase(entity: str, id_: str, server: LocalRecord | None, entries: list[OutboxEntry]) -> LocalRecord | None:
        """The server state with pending edits replayed on top, the way the server will merge them
        when nobody else interferes; a ``union`` field the server changed since the edit's base
        shows both sides, as the server's merge will."""
        if not entries:
            return server
        fields = dict(server.fields) if server is not None else {}
        deleted = server.deleted if server is not None else False
        hlc = server.hlc if server is not None else ""
        server_version = server.version if server is not None else 0
        unions = UNION_FIELDS.get(entity, frozenset())
        for entry in entries:
            hlc = max(hlc, entry.hlc)
            if entry.op == "delete":
                deleted = True
                continue
            deleted = False
            for name, value in entry.fields.items():
                if name in unions and server_version > entry.base_version and name in fields:
                    fields[name] = sorted(set(fields[name] or ()) | set(value))
                else:
                    fields[name] = value
        grid_id, household_id = _lookup_ids(entity, id_, fields)
        return LocalRecord(
            entity=entity,
            id=id_,
            version=server_version,
            hlc=hlc,
            deleted=deleted,
            fields=fields,
            pending=True,
            grid_id=grid_id or (server.grid_id if server is not None else None),
            household_id=household_id or (server.household_id if server is not None else None),
        )

    # ---- the outbox and push results -------------------------------------------------

    def pending_count(self) -> int:
        """How many edits wait in the outbox."""
        with self._read() as db:
            return db.execute("SELECT count(*) FROM outbox").fetchone()[0]

    def pending_mutations(self, limit: int = 500) -> list[OutboxEntry]:
        """The oldest ``limit`` outbox entries, in the order they were made (push them in this order)."""
        with self._read() as db:
            return self._entries(db, "SELECT * FROM outbox ORDER BY seq LIMIT ?", (limit,))

    def apply_results(
        self, entries: Sequence[OutboxEntry], results: Sequence[Result], *, unfit: Sequence[Unfit] = ()
    ) -> PushSummary:
        """Store a push's results and retire the answered entries, all in one transaction.

        For each result: the result is kept (with its conflicts, sealed); an ``applied`` or
        ``merged`` result replaces the server state of its record with ``result.record``
        (unless the store already holds a later version); a ``merged`` result's conflicts go
        to the conflict log; a ``rejected`` one stays visible in ``rejections()``. Then its
        entry leaves the outbox. An entry with no result stays queued.

        Args:
            entries: the entries that were pushed.
            results: the server's results (matched to entries by ``mid``).
            unfit: the results' records this app cannot hold (taken out of their results):
                set aside in the same transaction.

        Returns:
            Counts of what was stored.
        """
        by_mid = {r.mid: r for r in results}
        summary = PushSummary()
        now = _now_iso()
        with self._write() as db:
            for entry in entries:
                result = by_mid.get(entry.mid)
                if result is None:
                    summary.unanswered += 1
                    continue
                self._store_result(db, entry, result, now)
                if result.status is MutationStatus.REJECTED:
                    summary.rejected += 1
                else:
                    if result.status is MutationStatus.MERGED:
                        summary.merged += 1
                    else:
                        summary.applied += 1
                    self._adopt_result_record(db, entry, result)
                    summary.conflicts += self._store_conflicts(db, entry, result, now)
                self._retire_entry(db, entry)
            # After the results' records: a record replayed from an edit at the set-aside
            # version must not clear the set-aside copy, which is the server's.
            self._set_aside_in(db, unfit, now)
        return summary

    def _store_result(self, db: sqlite3.Connection, entry: OutboxEntry, result: Result, now: str) -> None:
        error_code = result.error.code if result.error else None
        payload = self._cipher.encrypt(
            _encode(_Payload(result=result, fields=entry.fields)), f"res:{entry.mid}".encode()
        )
        db.execute(
            "INSERT OR REPLACE INTO results (mid, entity, id, op, status, version, error_code, payload, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.mid,
                entry.entity,
                entry.id,
                entry.op,
                result.status.value,
                result.version,
                error_code,
                payload,
                now,
            ),
        )

    def _adopt_result_record(self, db: sqlite3.Connection, entry: OutboxEntry, result: Result) -> None:
        if result.record:
            self._upsert_records(db, [result.record])
            return
        if result.status is not MutationStatus.APPLIED:
            return  # a merge we cannot replay here; the pull that follows brings its outcome
        # A server that sends no record on `applied`: replay the edit on our copy so the user
        # does not see it vanish until the next pull brings the server's state.
        server = self._server_row(db, entry.entity, entry.id)
        if server is not None and server.version >= result.version:
            return
        fields = dict(server.fields) if server is not None else {}
        if entry.op == "delete":
            fields, deleted = {}, True
        else:
            fields.update(entry.fields)
            deleted = False
        record = Record(
            entity=entry.entity, id=entry.id, version=result.version, hlc=entry.hlc, deleted=deleted, fields=fields
        )
        self._upsert_records(db, [record])

    def _store_conflicts(self, db: sqlite3.Connection, entry: OutboxEntry, result: Result, now: str) -> int:
        if not result.conflicts:
            return 0
        rows = [
            (
                entry.mid,
                entry.entity,
                entry.id,
                c.field,
                c.winner_hlc,
                self._cipher.encrypt(_encode(_ConflictValues(c.kept, c.lost)), f"cfl:{entry.mid}:{c.field}".encode()),
                now,
            )
            for c in result.conflicts
        ]
        # OR IGNORE: a repeated first result (same mid) must not log its conflicts twice.
        db.executemany(
            "INSERT OR IGNORE INTO conflicts (mid, entity, id, field, winner_hlc, payload, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        return len(rows)

    def _retire_entry(self, db: sqlite3.Connection, entry: OutboxEntry) -> None:
        db.execute("DELETE FROM outbox WHERE mid = ?", (entry.mid,))

    def result(self, mid: str) -> Result | None:
        """The stored result of a pushed mutation, or None when it has none (yet)."""
        with self._read() as db:
            row = db.execute("SELECT payload FROM results WHERE mid = ?", (mid,)).fetchone()
        if row is None:
            return None
        return _decode_payload(self._cipher.decrypt(row[0], f"res:{mid}".encode())).result

    def rejections(self, *, include_dismissed: bool = False) -> list[RejectedEdit]:
        """Edits the server refused, newest first, with the fields they carried and why."""
        sql = "SELECT mid, entity, id, op, error_code, payload, received_at FROM results WHERE status = 'rejected'"
        if not include_dismissed:
            sql += " AND dismissed = 0"
        with self._read() as db:
            rows = db.execute(sql + " ORDER BY received_at DESC, mid DESC").fetchall()
        out = []
        for mid, entity, id_, op, code, sealed, received in rows:
            payload = _decode_payload(self._cipher.decrypt(sealed, f"res:{mid}".encode()))
            message = payload.result.error.message if payload.result.error else ""
            out.append(
                RejectedEdit(
                    mid=mid,
                    entity=entity,
                    id=id_,
                    op=op,
                    fields=payload.fields,
                    code=code or "",
                    message=message,
                    received_at=received,
                )
            )
        return out

    def prune_results(self, older_than_days: float = 30.0) -> int:
        """Forget applied and merged results older than ``older_than_days``; returns how many.

        Safe at any time: a result is needed only while its entry waits in the outbox, and an
        entry leaves the outbox in the transaction that stores its result. Rejections stay
        (the user dismisses them) and so does the conflict log.
        """
        cutoff = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=older_than_days)).isoformat(
            timespec="milliseconds"
        )
        with self._write() as db:
            cursor = db.execute("DELETE FROM results WHERE status != 'rejected' AND received_at < ?", (cutoff,))
            return cursor.rowcount

    def dismiss_rejection(self, mid: str) -> None:
        """Hide a rejection the user has read (it stays stored for the logs)."""
        with self._write() as db:
            db.execute("UPDATE results SET dismissed = 1 WHERE mid = ?", (mid,))

    def conflicts(
        self, unseen_only: bool = False, *, entity: str | None = None, id: str | None = None
    ) -> list[ConflictEntry]:
        """Conflict entries the server reported for this device's edits, oldest first."""
        sql = "SELECT cid, mid, entity, id, field, winner_hlc, payload, seen, created_at FROM conflicts WHERE 1=1"
        params: list[Any] = []
        if unseen_only:
            sql += " AND seen = 0"
        if entity is not None:
            sql += " AND entity = ?"
            params.append(entity)
        if id is not None:
            sql += " AND id = ?"
            params.append(id)
        with self._read() as db:
            rows = db.execute(sql + " ORDER BY cid", params).fetchall()
        out = []
        for cid, mid, ent, id_, field, winner, sealed, seen, created in rows:
            values = _decode_conflict(self._cipher.decrypt(sealed, f"cfl:{mid}:{field}".encode()))
            out.append(
                ConflictEntry(
                    cid=cid,
                    mid=mid,
                    entity=ent,
                    id=id_,
                    field=field,
                    kept=values.kept,
                    lost=values.lost,
                    winner_hlc=winner,
                    seen=bool(seen),
                    created_at=created,
                )
            )
        return out

    def mark_conflicts_seen(self, cids: Iterable[int] | None = None) -> None:
        """Mark conflict entries as seen by the user (all of them when ``cids`` is None)."""
        with self._write() as db:
            if cids is None:
                db.execute("UPDATE conflicts SET seen = 1")
            else:
                db.executemany("UPDATE conflicts SET seen = 1 WHERE cid = ?", [(c,) for c in cids])

    # ---- pulled records -------------------------------------------------------------

    def apply_pulled(
        self,
        records: Sequence[Record],
        *,
        unfit: Sequence[Unfit] = (),
        cursor: str | None = None,
        meta: dict[str, str | None] | None = None,
    ) -> int:
        """Apply one pulled page and move the cursor, in one transaction.

        A pulled record replaces the server state of its record unless the store already holds
        a later version; pending edits stay in the outbox and are rebased on read. Blob hashes
        named by the records become known (to download later).

        Args:
            records: the page's changes.
            unfit: the page's changes this app cannot hold: set aside in the same transaction.
            cursor: the cursor that follows this page; stored in the same transaction.
            meta: other meta values to store in the same transaction (the clock's stamp).

        Returns:
            How many records were written.
        """
        with self._write() as db:
            self._upsert_records(db, records)
            self._set_aside_in(db, unfit, _now_iso())
            values = dict(meta or {})
            if cursor is not None:
                values[META_CURSOR] = cursor
            self._set_meta_in(db, values)
        return len(records)

    def _upsert_records(self, db: sqlite3.Connection, records: Sequence[Record]) -> None:
        rows = []
        blob_rows = []
        now = None
        for r in records:
            fields = {} if r.deleted else r.fields
            grid_id, household_id = _lookup_ids(r.entity, r.id, fields)
            rows.append(
                (
                    r.entity,
                    r.id,
                    grid_id,
                    household_id,
                    r.version,
                    r.hlc,
                    int(r.deleted),
                    self._cipher.encrypt(_encode(fields), _record_aad(r.entity, r.id)),
                )
            )
            for name in BLOB_FIELDS & fields.keys():
                for sha in fields[name] or ():
                    now = now or _now_iso()
                    blob_rows.append((sha, BLOB_REMOTE, now))
        # The version guard keeps a replayed (older) result or page from rolling a record back;
        # a tombstone keeps the lookup ids its live version had.
        db.executemany(
            "INSERT INTO records (entity, id, grid_id, household_id, version, hlc, deleted, fields)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (entity, id) DO UPDATE SET"
            " grid_id = coalesce(excluded.grid_id, records.grid_id),"
            " household_id = CASE WHEN excluded.deleted THEN records.household_id ELSE excluded.household_id END,"
            " version = excluded.version, hlc = excluded.hlc, deleted = excluded.deleted, fields = excluded.fields"
            " WHERE excluded.version >= records.version",
            rows,
        )
        if db.execute("SELECT 1 FROM set_aside LIMIT 1").fetchone():
            # A version this app can read replaces what was set aside of the record until then.
            db.executemany("DELETE FROM set_aside WHERE entity = ? AND id = ? AND version <= ?",
                           [(r.entity, r.id, r.version) for r in records])
        if blob_rows:
            db.executemany("INSERT OR IGNORE INTO blobs (sha256, state, created_at) VALUES (?, ?, ?)", blob_rows)
            # The same photo held for a draft here is now a record's (the server has it): never dropped.
            db.executemany("UPDATE blobs SET state = ? WHERE sha256 = ? AND state = ?",
                           [(BLOB_REMOTE, sha, BLOB_HELD) for sha, _, _ in blob_rows])

    # ---- records set aside -----------------------------------------------------------

    def _set_aside_in(self, db: sqlite3.Connection, unfit: Sequence[Unfit], now: str) -> None:
        # The newest version of each; none older than what the store holds of the record.
        rows = [
            (u.record.entity, u.record.id, u.record.version,
             self._cipher.encrypt(_encode(u), _set_aside_aad(u.record.entity, u.record.id)), now,
             u.record.entity, u.record.id, u.record.version)
            for u in unfit
        ]
        db.executemany(
            "INSERT INTO set_aside (entity, id, version, payload, seen, received_at)"
            " SELECT ?, ?, ?, ?, 0, ?"
            " WHERE NOT EXISTS (SELECT 1 FROM records WHERE entity = ? AND id = ? AND version > ?)"
            " ON CONFLICT (entity, id) DO UPDATE SET version = excluded.version, payload = excluded.payload,"
            " seen = 0, received_at = excluded.received_at WHERE excluded.version > set_aside.version",
            rows,
        )

    def set_aside(self, *, unseen_only: bool = False) -> list[SetAsideRecord]:
        """The records kept apart because this app cannot hold them, oldest first."""
        sql = "SELECT entity, id, payload, seen, received_at FROM set_aside"
        if unseen_only:
            sql += " WHERE seen = 0"
        with self._read() as db:
            rows = db.execute(sql + " ORDER BY received_at, entity, id").fetchall()
        out = []
        for entity, id_, sealed, seen, received in rows:
            unfit = _decode_unfit(self._cipher.decrypt(sealed, _set_aside_aad(entity, id_)))
            out.append(SetAsideRecord(record=unfit.record, reason=unfit.reason, seen=bool(seen), received_at=received))
        return out

    def set_aside_count(self, *, unseen_only: bool = False) -> int:
        """How many records are set aside (without opening them)."""
        sql = "SELECT count(*) FROM set_aside" + (" WHERE seen = 0" if unseen_only else "")
        with self._read() as db:
            return db.execute(sql).fetchone()[0]

    def readmit(self, records: Sequence[Record]) -> None:
        """Apply set-aside records the app can now read (their set-aside copies go with it);
        like a pulled record, none rolls back a later version."""
        with self._write() as db:
            self._upsert_records(db, records)

    def mark_set_aside_seen(self) -> None:
        """The user was told of every record set aside so far."""
        with self._write() as db:
            db.execute("UPDATE set_aside SET seen = 1")

    def record_count(self, entity: str | None = None) -> int:
        """How many server records (tombstones included) the store holds."""
        with self._read() as db:
            if entity is None:
                return db.execute("SELECT count(*) FROM records").fetchone()[0]
            return db.execute("SELECT count(*) FROM records WHERE entity = ?", (entity,)).fetchone()[0]

    # ---- blobs ----------------------------------------------------------------------

    def put_blob(self, data: bytes, *, state: str = BLOB_LOCAL) -> str:
        """Keep a blob (a photo) sealed on disk and return its SHA-256.

        Args:
            data: the plaintext bytes.
            state: ``local`` for a blob made here (queued for upload); ``remote`` for a
                downloaded one.

        Returns:
            The lowercase hex SHA-256 of ``data`` (the blob's name everywhere).
        """
        sha = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._check_open()
            self._files.write(sha, data)
            with self._write() as db:
                db.execute(
                    "INSERT INTO blobs (sha256, size, state, path, created_at) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (sha256) DO UPDATE SET size = excluded.size, path = excluded.path",
                    (sha, len(data), state, sha, _now_iso()),
                )
        return sha

    def drop_held_blobs(self, shas: Iterable[str]) -> None:
        """Erase the photos among ``shas`` that no record ever named (``held``: a discarded draft's).

        Any other blob is left alone: a record names it, or will once its download finishes.
        """
        with self._lock:
            with self._write() as db:
                drop = "DELETE FROM blobs WHERE sha256 = ? AND state = ?"
                held = [sha for sha in set(shas) if db.execute(drop, (sha, BLOB_HELD)).rowcount]
            for sha in held:
                self._files.remove(sha)

    def read_blob(self, sha: str) -> bytes | None:
        """A blob's plaintext, or None when it is not on this device."""
        self._check_open()
        return self._files.read(sha)

    def has_blob(self, sha: str) -> bool:
        """Whether a blob's bytes are on this device."""
        return self._files.exists(sha)

    def blob_state(self, sha: str) -> str | None:
        """``local``, ``uploaded`` or ``remote``, or None for a blob the store does not know."""
        with self._read() as db:
            row = db.execute("SELECT state FROM blobs WHERE sha256 = ?", (sha,)).fetchone()
        return row[0] if row else None

    def blobs_to_upload(self) -> list[str]:
        """Blobs made on this device that the server does not hold complete yet, oldest first."""
        with self._read() as db:
            return [
                r[0] for r in db.execute("SELECT sha256 FROM blobs WHERE state = ? ORDER BY created_at", (BLOB_LOCAL,))
            ]

    def mark_blob_uploaded(self, sha: str) -> None:
        """Record that the server holds a blob complete, so it is never sent again."""
        with self._write() as db:
            db.execute("UPDATE blobs SET state = ? WHERE sha256 = ? AND state = ?", (BLOB_UPLOADED, sha, BLOB_LOCAL))

    def blobs_to_download(self) -> list[str]:
        """Blobs named by records whose bytes are not on this device."""
        with self._read() as db:
            rows = [r[0] for r in db.execute("SELECT sha256 FROM blobs WHERE path IS NULL ORDER BY created_at")]
        # A name that is no hash came from a record stored before pulled records were checked:
        # it can be neither asked for nor kept.
        return [sha for sha in rows if is_blob_name(sha) and not self._files.exists(sha)]

    def blob_part_size(self, sha: str) -> int:
        """How many plaintext bytes of an interrupted download are kept (where to resume)."""
        with self._lock:
            return self._files.part_size(sha)

    def reset_blob_part(self, sha: str) -> None:
        """Drop the kept part of an interrupted download (the server is sending it from the start)."""
        with self._lock:
            self._files.reset_part(sha)

    def append_blob_part(self, sha: str, offset: int, chunk: bytes) -> None:
        """Keep a downloaded chunk (sealed) so an interrupted download resumes from here.

        Args:
            sha: the blob.
            offset: where ``chunk`` starts; must equal ``blob_part_size(sha)``.
            chunk: plaintext bytes.
        """
        with self._lock:
            self._check_open()
            self._files.append_part(sha, offset, chunk)

    def finish_blob_download(self, sha: str) -> bytes:
        """Join a complete download, check its hash, and keep it as a blob.

        Returns:
            The blob's plaintext.

        Raises:
            BlobRejected: the bytes do not hash to ``sha`` (the part is discarded).
        """
        with self._lock:
            self._check_open()
            blob = self._files.take_part(sha)
            if hashlib.sha256(blob).hexdigest() != sha:
                raise BlobRejected("invalid", f"downloaded blob does not match its hash {sha}")
            self.put_blob(blob, state=BLOB_REMOTE)
            return blob

    # ---- end of life ----------------------------------------------------------------

    def wipe(self) -> None:
        """Erase everything: every table, every blob file, and the database files themselves.

        The store is closed afterwards; open a new one to start again.
        """
        with self._lock:
            if not self._closed:
                with contextlib.suppress(sqlite3.Error):
                    # Overwrite freed pages before the files go, for storage that keeps them.
                    self._db.execute("PRAGMA secure_delete=ON")
                    self._db.execute("BEGIN IMMEDIATE")
                    for table in ("records", "outbox", "results", "conflicts", "set_aside", "meta", "blobs"):
                        self._db.execute(f"DELETE FROM {table}")
                    self._db.execute("COMMIT")
                    self._db.execute("VACUUM")
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._closed = True
            remove_store_files(self.path)
            self._files.remove_all()

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            if not self._closed:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._closed = True

    @property
    def closed(self) -> bool:
        """Whether the store was closed or wiped."""
        return self._closed


def remove_store_files(path: Path) -> None:
    """Delete a store's database files (the main file, its WAL and the rest), opened or not: a
    damaged store that cannot be opened to be wiped is still erased.

    Raises:
        StorageError: a file would not go.
    """
    try:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot erase the local store: {exc}") from exc
