"""The one write path for records: device pushes, console actions and the server's own moves.

``commit_mutations`` applies a list of mutations in one transaction. The transaction first
takes the lock on the ``change_seq`` counter row, so record writers run one at a time and every
``seq`` it hands out is larger than any seq already committed: the pull feed, ordered by seq,
never skips a change that commits later (G4). On SQLite, ``BEGIN IMMEDIATE`` gives the same
serialisation. Within one process, writers queue on an asyncio lock, and those that queued
while another committed are applied together in the next transaction (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import os
import secrets
import weakref
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import Connection, Table, bindparam, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from server.db import units
from server.db.driver_sql import DriverStatement
from server.db.inserts import (
    copy_rows,
    insert_ignoring_duplicates,
    insert_rows,
    json_text,
    update_rows,
    update_rows_on_driver,
)
from server.db.keys import key_list, one_of
from server.db.models import AppliedMutation, BlobRef, ChangeLogEntry, ConflictEntry, Counter, RecordRow
from server.records.state import RECORD_COLUMNS, STORED_COLUMNS, record_row, state_from_stored
from shared_schema.entities import UNION_FIELDS
from shared_schema.messages import (
    MAX_CLOCK_SKEW_MS,
    REJECTED,
    Mutation,
    MutationStatus,
    Record,
    RejectCode,
    Result,
    ResultError,
)
from shared_schema.workflow import Actor
from sync.hlc import HybridClock, format_stamp, wall_now_ms
from sync.merge import RecordState, apply_mutation

CHANGE_SEQ = "change_seq"
_result_encoder = msgspec.msgpack.Encoder()
_result_decoder = msgspec.msgpack.Decoder(Result)
_clock: HybridClock | None = None


def server_clock() -> HybridClock:
    """This process's clock; its node id names the process so two servers never tie."""
    global _clock
    if _clock is None:
        _clock = HybridClock(node=f"server.{os.getpid()}.{secrets.token_hex(2)}")
    return _clock


@dataclass(frozen=True)
class Sender:
    """Who writes: a device, a console user, or the server itself.

    Args:
        origin: the device id, ``console:<user id>`` or ``server``; a field last changed by the
            same origin is not concurrent with its next edit.
        actor: decides which fields and workflow moves are allowed.
        scope: the grids the sender may touch; None for administrators and the server.
    """

    origin: str
    actor: Actor
    scope: frozenset[str] | None
    device_id: str | None = None
    user_id: str | None = None


SERVER = Sender(origin="server", actor=Actor.SERVER, scope=None)


async def commit_mutations(
    sessionmaker: async_sessionmaker, mutations: list[Mutation], sender: Sender
) -> list[Result]:
    """Apply mutations in order, each on its own, in one transaction; one result per mutation.

    A mutation id seen before returns the result stored for it the first time (G2). Writers
    that arrive while another commits are committed together in the next transaction (group
    commit): each keeps its own order and results, and 200 phones syncing at once cost a
    handful of commits instead of 200.
    """
    return await _committer(sessionmaker).submit(mutations, sender)


# Past this many mutations, a waiting writer goes in the next group: a group's transaction
# holds the write lock, and pulls of the same process wait for nothing but it.
MAX_GROUP_MUTATIONS = 2000

_committers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def write_transaction(sessionmaker: async_sessionmaker) -> AsyncIterator[AsyncSession]:
    """A write transaction queued with this process's other record writers, for a writer that
    must do more than apply mutations in it (e.g. mark a conflict resolved by the change it
    applies with ``apply_in_transaction``): both commit together or not at all."""
    async with _committer(sessionmaker).lock, sessionmaker() as session, session.begin():
        yield session


def _committer(sessionmaker: async_sessionmaker) -> "_GroupCommitter":
    committer = _committers.get(sessionmaker)
    if committer is None:
        committer = _committers[sessionmaker] = _GroupCommitter(sessionmaker)
    return committer


class _GroupCommitter:
    """One process's record writers, queued on an asyncio lock rather than in the database
    (SQLite's busy handler sleeps up to 100 ms between tries), and committed in groups.

    The groups are committed by a task of their own, not by the request that came first: a
    request that is cancelled (its phone went away) stops waiting, while the group it was in,
    which carries other phones' work, still commits."""

    def __init__(self, sessionmaker: async_sessionmaker):
        self._engine = sessionmaker.kw["bind"]
        self.lock = asyncio.Lock()
        self._waiting: list[tuple[list[Mutation], Sender, asyncio.Future]] = []
        self._draining: asyncio.Task | None = None

    async def submit(self, mutations: list[Mutation], sender: Sender) -> list[Result]:
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((mutations, sender, done))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain())
        return await done

    def _take_group(self) -> list[tuple[list[Mutation], Sender, asyncio.Future]]:
        group, size = [], 0
        while self._waiting and (not group or size + len(self._waiting[0][0]) <= MAX_GROUP_MUTATIONS):
            entry = self._waiting.pop(0)
            group.append(entry)
            size += len(entry[0])
        return group

    async def _drain(self) -> None:
        while self._waiting:
            async with self.lock:
                group = self._take_group()
                try:
                    results = await units.write(self._engine, apply_requests, [(m, s) for m, s, _ in group])
                except Exception as exc:  # noqa: BLE001 - each writer gets the error (nothing committed)
                    for _, _, done in group:
                        if not done.done():
                            done.set_exception(exc)
                    continue
            for (_, _, done), result in zip(group, results):
                if not done.done():
                    done.set_result(result)


async def apply_in_transaction(session: AsyncSession, mutations: list[Mutation], sender: Sender) -> list[Result]:
    """``commit_mutations`` inside a transaction the caller holds (see ``write_transaction``)."""
    [results] = await session.run_sync(_apply_on_session, [(mutations, sender)])
    return results


def _apply_on_session(session: Session, requests: list[tuple[list[Mutation], Sender]]) -> list[list[Result]]:
    return apply_requests(session.connection(), requests)


def apply_requests(connection: Connection, requests: list[tuple[list[Mutation], Sender]]) -> list[list[Result]]:
    """Apply several writers' mutations in one pass: one read of what is stored, then one
    insert per table (and chunk), whatever the number of requests; each request keeps its order
    and gets its results.

    Seqs are handed out under the change counter's lock, so in commit order (G4). On SQLite
    the transaction holds the database's write lock from its start (BEGIN IMMEDIATE), so the
    group takes the counter and merges under it. On PostgreSQL it depends on whether another
    server process is writing:

    - the lock is free: the group takes it and merges, and its rows go to the database a chunk
      at a time while the next chunk merges (``_ChunkPipe``), so that PostgreSQL's inserts and
      this process's merging overlap instead of taking turns;
    - another process holds it: the group merges while it waits, so that its merge overlaps the
      other's write. Under the lock, two lookups check that nothing the merge read has changed
      since (else it merges again, under the lock).
    """
    with _collector_paused():
        # The group's rows and states are freed when _apply_group returns, before the collector
        # resumes: its first pass then scans the results alone, not everything the group made.
        return _apply_group(connection, requests)


def _apply_group(connection: Connection, requests: list[tuple[list[Mutation], Sender]]) -> list[list[Result]]:
    if connection.dialect.name != "postgresql":
        [(seq,)] = _LOCK_COUNTER.rows(connection)
        merged = _merge(connection, requests)
        _write_chunk(connection, merged.take(None, seq))
    elif len(requests) == 1 and (locked := _LOCK_COUNTER_IF_FREE.rows(connection)):
        [(seq,)] = locked
        pipe = _ChunkPipe(connection, seq)
        try:
            merged = _merge(connection, requests, pipe)
            pipe.send(merged.take(None, seq))
            pipe.wait()
        except BaseException:
            pipe.abandon()
            raise
    else:
        merged = _merge(connection, requests)
        [(seq,)] = _LOCK_COUNTER.rows(connection)
        if not merged.still_current(connection):
            merged = _merge(connection, requests)
        _write_chunk(connection, merged.take(None, seq))
    if merged.blob_refs:
        connection.execute(insert_ignoring_duplicates(connection.dialect.name, BlobRef), merged.blob_refs)
    if merged.changes:
        _SET_COUNTER.rows(connection, new_value=seq + len(merged.changes))
    return merged.results


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    # A group of 2,000 mutations keeps some 200,000 objects alive until it commits; the cyclic
    # collector, run by those allocations, rescanned them (pauses of some 20 ms, 3% of a
    # group's time). They hold no cycles, refcounting frees them; collection resumes after.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass
class _Chunk:
    """Rows of a group ready to be written: every table's rows as the driver takes them."""

    updated_records: list[tuple]  # RECORD_COLUMNS, then the id (an UPDATE's key)
    new_records: list[tuple]
    changes: list[tuple]
    conflicts: list[tuple]
    applied: list[tuple]
    at: datetime.datetime


def _write_chunk(connection: Connection, chunk: _Chunk) -> None:
    if connection.dialect.name == "postgresql":
        connection.connection.dbapi_connection.run_async(
            lambda driver: _write_chunk_on_driver(driver, connection.dialect, chunk))
        return
    for table, columns, rows, same, by_key in _chunk_tables(chunk):
        (update_rows if by_key else insert_rows)(connection, table, columns, rows, **same)


async def _write_chunk_on_driver(driver: Any, dialect: Dialect, chunk: _Chunk) -> None:
    for table, columns, rows, same, by_key in _chunk_tables(chunk):
        await (update_rows_on_driver if by_key else copy_rows)(driver, dialect, table, columns, rows, **same)


def _chunk_tables(chunk: _Chunk) -> list[tuple[Table, tuple[str, ...], list[tuple], dict[str, Any], bool]]:
    """What a chunk writes, in order: (table, columns, rows, the values the same for every row,
    whether the rows are UPDATEs by key)."""
    records = RecordRow.__table__
    return [
        (records, RECORD_COLUMNS, chunk.updated_records, {"updated_at": chunk.at}, True),
        (records, RECORD_COLUMNS, chunk.new_records, {"updated_at": chunk.at}, False),
        (ChangeLogEntry.__table__, _LOG_COLUMNS, chunk.changes, {"received_at": chunk.at}, False),
        (ConflictEntry.__table__, _CONFLICT_COLUMNS, chunk.conflicts, {"created_at": chunk.at}, False),
        (AppliedMutation.__table__, _APPLIED_COLUMNS, chunk.applied, {"received_at": chunk.at}, False),
    ]


# A chunk this many mutations long goes to PostgreSQL while the next merges. Between chunks the
# merge lets the event loop run every YIELD_EVERY mutations, so that the chunk's statements (a
# round trip each) follow one another. More, smaller chunks overlap more but cost more: on this
# kind of machine a statement's round trip costs some 200 us of CPU.
CHUNK_MUTATIONS = 100
YIELD_EVERY = 10


class _ChunkPipe:
    """Sends a group's chunks on the transaction's asyncpg connection, each in a task of its own,
    so that the caller (the merge, in SQLAlchemy's greenlet) goes on while PostgreSQL writes.
    One chunk at a time: a chunk is sent once the one before it is written."""

    def __init__(self, connection: Connection, seq: int):
        self.seq = seq  # the counter's value, under its lock
        self._connection = connection.connection.dbapi_connection
        self._dialect = connection.dialect
        self._writing: asyncio.Task | None = None

    def send(self, chunk: _Chunk) -> None:
        self.wait()
        self._writing = self._connection.run_async(lambda driver: self._started(driver, chunk))

    async def _started(self, driver: Any, chunk: _Chunk) -> asyncio.Task:
        return asyncio.ensure_future(_write_chunk_on_driver(driver, self._dialect, chunk))

    def let_run(self) -> None:
        """Let the chunk being written take its next step (the event loop runs once)."""
        if self._writing is not None:
            self._connection.run_async(lambda _: asyncio.sleep(0))

    def wait(self) -> None:
        """Wait until the chunk sent last is written; raise what writing it raised."""
        writing, self._writing = self._writing, None
        if writing is not None:
            self._connection.run_async(lambda _: writing)

    def abandon(self) -> None:
        """After an error elsewhere: wait for the chunk in flight, whatever it raises, so that
        the connection is free for the rollback."""
        with contextlib.suppress(Exception):
            self.wait()


class _Merged:
    """What a group of mutations does: its results, and its rows, handed out in chunks.

    The rows have no seq until they are handed out: a change's seq is the counter's value
    (read under its lock) plus the change's place in the group. A record's row is ready once no
    later mutation of the group names it."""

    def __init__(self, read_versions: dict[str, int], new_mids: list[str], last_use: dict[str, int]):
        self.read_versions = read_versions  # every record read, by id: its version then (0: not stored)
        self.new_mids = new_mids  # the mutation ids that were not stored yet
        # Record id: the place of the last mutation naming it (from 1); only when written in chunks.
        self.last_use = last_use
        self.at = datetime.datetime.now(datetime.UTC)
        self.results: list[list[Result]] = []
        self.changes: list[tuple] = []  # change-log rows without their seq, in order
        # The changed records not yet handed out, by id: the place of their last change (from 1),
        # their state.
        self.final: dict[str, tuple[int, RecordState]] = {}
        self.conflicts: list[tuple] = []
        self.applied: list[tuple] = []
        self.blob_refs: list[dict] = []
        self._taken = (0, 0, 0)  # how many changes, conflicts and applied rows are handed out

    def still_current(self, connection: Connection) -> bool:
        """Whether what the merge read is still what is stored (no other writer since)."""
        dialect = connection.dialect.name
        if self.new_mids and _STORED_MIDS[dialect].rows(connection, keys=key_list(dialect, self.new_mids)):
            return False
        if not self.read_versions:
            return True
        found = _VERSIONS[dialect].rows(connection, keys=key_list(dialect, list(self.read_versions)))
        return {id_: version for id_, version in found} == {
            id_: version for id_, version in self.read_versions.items() if version
        }

    def take(self, place: int | None, seq: int) -> _Chunk:
        """The rows not handed out yet of the mutations before ``place`` (of all when None),
        the k-th change of the group given the seq ``seq`` + k."""
        updated, new = [], []
        ready = list(self.final) if place is None else [id_ for id_ in self.final if self.last_use[id_] < place]
        for record_id in ready:
            changed_at, state = self.final.pop(record_id)
            if self.read_versions.get(record_id):
                updated.append((*record_row(state), seq + changed_at, record_id))
            else:
                new.append((*record_row(state), seq + changed_at))
        changes, conflicts, applied = self._taken
        self._taken = (len(self.changes), len(self.conflicts), len(self.applied))
        log_rows = [(*row, seq + changed_at) for changed_at, row in enumerate(self.changes[changes:], changes + 1)]
        return _Chunk(updated, new, log_rows, self.conflicts[conflicts:], self.applied[applied:], self.at)


def _merge(
    connection: Connection, requests: list[tuple[list[Mutation], Sender]], pipe: _ChunkPipe | None = None
) -> _Merged:
    dialect = connection.dialect.name
    mids = list({m.mid for mutations, _ in requests for m in mutations})
    stored: dict[str, tuple[str | None, Result]] = {}  # mid: the device that sent it, its first result
    for mid, device, blob in _STORED_RESULTS[dialect].rows(connection, keys=key_list(dialect, mids)):
        stored[mid] = (device, _result_decoder.decode(blob))
    last_use: dict[str, int] = {}
    if pipe is not None:  # only a chunk asks which records no later mutation of the group names
        for place, mutation in enumerate((m for mutations, _ in requests for m in mutations), 1):
            last_use[mutation.id] = place
    ids = list({m.id for mutations, _ in requests for m in mutations if m.mid not in stored})
    states: dict[str, RecordState] = {}
    if ids:
        for row in _STORED_RECORDS[dialect].rows(connection, keys=key_list(dialect, ids)):
            states[row[1]] = state_from_stored(row)
    # 0 stands for "not stored": the check under the lock expects it still absent.
    merged = _Merged({id_: (states[id_].version if id_ in states else 0) for id_ in ids},
                     [mid for mid in mids if mid not in stored], last_use)
    clock = server_clock()
    # Stamps sort as strings: one comparison against the latest acceptable stamp replaces parsing each.
    too_far = format_stamp(wall_now_ms() + MAX_CLOCK_SKEW_MS + 1, 0, "")
    latest_seen = None
    place = 0
    for mutations, sender in requests:
        results: list[Result] = []
        merged.results.append(results)
        origin, actor, scope, device_id, user_id = (
            sender.origin,
            sender.actor,
            sender.scope,
            sender.device_id,
            sender.user_id,
        )
        for mutation in mutations:
            place += 1
            if pipe is not None:
                if place % CHUNK_MUTATIONS == 0:
                    pipe.send(merged.take(place, pipe.seq))
                elif place % YIELD_EVERY == 0:
                    pipe.let_run()
            mid = mutation.mid
            if mid in stored:
                sent_by, first = stored[mid]
                # A mutation id is one device's: another's result, with its record, is not for this sender.
                results.append(first if sent_by == device_id else _foreign_mid(mutation))
                continue
            stamp, original = mutation.hlc, None
            if stamp >= too_far:
                # A clock a year ahead must not win every later conflict: re-stamp, keep the original.
                if latest_seen is not None:
                    clock.observe(latest_seen)
                stamp, original = clock.now(), mutation.hlc
            elif latest_seen is None or stamp > latest_seen:
                latest_seen = stamp
            outcome = apply_mutation(states.get(mutation.id), mutation, stamp=stamp, origin=origin, actor=actor,
                                     scope=scope)
            state = outcome.state
            if outcome.changed:
                states[mutation.id] = state
                changes = outcome.changes
                merged.changes.append((state.id, state.entity, state.grid_id, state.version, mutation.op, stamp,
                                       original, mid, device_id, user_id, json_text(changes)))
                merged.final[mutation.id] = (len(merged.changes), state)
                if "photos" in changes and "photos" in UNION_FIELDS.get(state.entity, ()):
                    merged.blob_refs.extend(
                        {"sha256": sha, "record_id": state.id, "grid_id": state.grid_id}
                        for sha in changes["photos"][1] or ()
                    )
            for conflict in outcome.conflicts:
                merged.conflicts.append((mutation.id, mutation.entity, state.grid_id, conflict.field,
                                         json_text(conflict.kept), json_text(conflict.lost), conflict.winner_hlc, mid,
                                         device_id, user_id))
            result = _result(mutation, outcome, state)
            stored[mid] = (device_id, result)
            results.append(result)
            merged.applied.append((mid, device_id, mutation.id, _STATUS_TEXT[result.status],
                                   _result_encoder.encode(result)))
    if latest_seen is not None:
        clock.observe(latest_seen)
    return merged


# A status as the driver binds it (a plain str), without MutationStatus's ``.value`` property.
_STATUS_TEXT = {status: status.value for status in MutationStatus}

_LOG_COLUMNS = ("record_id", "entity", "grid_id", "version", "op", "hlc", "original_hlc", "mid", "device_id",
                "user_id", "changes", "seq")
_CONFLICT_COLUMNS = ("record_id", "entity", "grid_id", "field", "kept", "lost", "winner_hlc", "mid", "device_id",
                     "user_id")
_APPLIED_COLUMNS = ("mid", "device_id", "record_id", "status", "result")


# Every write transaction runs these: compiled once, run on the driver (server.db.driver_sql).
_LOCK_COUNTER = DriverStatement(select(Counter.value).where(Counter.name == CHANGE_SEQ).with_for_update())
# The counter if no other transaction holds its lock (then locked), else no row (PostgreSQL).
_LOCK_COUNTER_IF_FREE = DriverStatement(
    select(Counter.value).where(Counter.name == CHANGE_SEQ).with_for_update(skip_locked=True)
)
_SET_COUNTER = DriverStatement(
    update(Counter).where(Counter.name == CHANGE_SEQ).values(value=bindparam("new_value"))
)
_STORED_MIDS = {
    dialect: DriverStatement(select(AppliedMutation.mid).where(one_of(dialect, AppliedMutation.mid, "keys")))
    for dialect in ("sqlite", "postgresql")
}
_VERSIONS = {
    dialect: DriverStatement(select(RecordRow.id, RecordRow.version).where(one_of(dialect, RecordRow.id, "keys")))
    for dialect in ("sqlite", "postgresql")
}
_STORED_RESULTS = {
    dialect: DriverStatement(
        select(AppliedMutation.mid, AppliedMutation.device_id, AppliedMutation.result)
        .where(one_of(dialect, AppliedMutation.mid, "keys"))
    )
    for dialect in ("sqlite", "postgresql")
}
_STORED_RECORDS = {
    dialect: DriverStatement(
        select(*(RecordRow.__table__.c[name] for name in STORED_COLUMNS)).where(one_of(dialect, RecordRow.id, "keys"))
    )
    for dialect in ("sqlite", "postgresql")
}


def _foreign_mid(mutation: Mutation) -> Result:
    # Not stored: the id stays the first sender's, and this answer is the same however often it comes.
    error = ResultError(code=RejectCode.INVALID.value, message="this mutation id was used by another device")
    return Result(mid=mutation.mid, status=REJECTED, version=0, error=error)


def _result(mutation: Mutation, outcome, state: RecordState | None) -> Result:  # noqa: ANN001
    if outcome.status is REJECTED:
        rejection = outcome.rejection
        return Result(
            mid=mutation.mid,
            status=outcome.status,
            version=state.version if state else 0,
            error=ResultError(code=rejection.code.value, message=rejection.message),
        )
    record: Record = state.to_record()
    if outcome.conflicts:
        return Result(mid=mutation.mid, status=outcome.status, version=state.version, record=record,
                      conflicts=outcome.conflicts)
    return Result(mid=mutation.mid, status=outcome.status, version=state.version, record=record)

