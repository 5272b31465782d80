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

import msgspec
from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from server.db import units
from server.db.driver_sql import DriverStatement
from server.db.inserts import insert_ignoring_duplicates, insert_rows, json_text, update_rows
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
    """Apply several writers' mutations in one pass: one read of what is stored, one insert per
    table, whatever the number of requests; each request keeps its order and gets its results.

    On PostgreSQL the merge runs before the change counter's lock is taken, so that another
    server process's group can commit meanwhile; under the lock, two lookups check that nothing
    the merge read has changed since (else it runs again, under the lock). Seqs are handed out
    under the lock either way (G4). On SQLite the transaction holds the database's write lock
    from its start (BEGIN IMMEDIATE), so the merge simply runs under it.
    """
    with _collector_paused():
        # The group's rows and states are freed when _apply_group returns, before the collector
        # resumes: its first pass then scans the results alone, not everything the group made.
        return _apply_group(connection, requests)


def _apply_group(connection: Connection, requests: list[tuple[list[Mutation], Sender]]) -> list[list[Result]]:
    if connection.dialect.name != "postgresql":
        [(seq,)] = _LOCK_COUNTER.rows(connection)
        merged = _merge(connection, requests)
    else:
        merged = _merge(connection, requests)
        [(seq,)] = _LOCK_COUNTER.rows(connection)
        if not merged.still_current(connection):
            merged = _merge(connection, requests)
    merged.write(connection, seq)
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


class _Merged:
    """What a group of mutations does, before it has seqs: its results, and its rows.

    The rows are whole but for their seq, which is the change counter's value (read under its
    lock) plus the change's place in the group: on PostgreSQL they are built before the lock is
    taken, so the lock is held only to write them (every other process's write waits on it)."""

    def __init__(self, read_versions: dict[str, int], new_mids: list[str]):
        self.read_versions = read_versions  # every record read, by id: its version then
        self.new_mids = new_mids  # the mutation ids that were not stored yet
        self.results: list[list[Result]] = []
        # One per accepted change, in order: the change-log row without its seq (the k-th change's
        # seq is the counter's value plus k).
        self.changes: list[tuple] = []
        # The changed records as the group leaves them, by id, with the place of their last change
        # (from 1).
        self.final: dict[str, tuple[int, RecordState]] = {}
        # The changed records' rows without their seq, with the place of the change they show:
        # records stored before, with their id last (an UPDATE's key), and new ones.
        self.updated_rows: list[tuple[int, tuple]] = []
        self.new_rows: list[tuple[int, tuple]] = []
        self.conflicts: list[tuple] = []
        self.applied: list[tuple] = []
        self.blob_refs: list[dict] = []

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

    def build_rows(self) -> None:
        """The changed records' rows, as the group leaves them (see the class)."""
        for record_id, (place, state) in self.final.items():
            if self.read_versions.get(record_id):
                self.updated_rows.append((place, record_row(state) + (record_id,)))
            else:
                self.new_rows.append((place, record_row(state)))

    def write(self, connection: Connection, seq: int) -> None:
        """Give the k-th change the seq ``seq`` + k and write every row."""
        log_rows = [(*row, seq + place) for place, row in enumerate(self.changes, 1)]
        changed = [(*row[:-1], seq + place, row[-1]) for place, row in self.updated_rows]
        new = [(*row, seq + place) for place, row in self.new_rows]
        records = RecordRow.__table__
        now = datetime.datetime.now(datetime.UTC)
        update_rows(connection, records, RECORD_COLUMNS, changed, updated_at=now)
        insert_rows(connection, records, RECORD_COLUMNS, new, updated_at=now)
        insert_rows(connection, ChangeLogEntry.__table__, _LOG_COLUMNS, log_rows, received_at=now)
        insert_rows(connection, ConflictEntry.__table__, _CONFLICT_COLUMNS, self.conflicts, created_at=now)
        insert_rows(connection, AppliedMutation.__table__, _APPLIED_COLUMNS, self.applied, received_at=now)
        if self.blob_refs:
            connection.execute(insert_ignoring_duplicates(connection.dialect.name, BlobRef), self.blob_refs)
        if self.changes:
            _SET_COUNTER.rows(connection, new_value=seq + len(self.changes))


def _merge(connection: Connection, requests: list[tuple[list[Mutation], Sender]]) -> _Merged:
    dialect = connection.dialect.name
    mids = list({m.mid for mutations, _ in requests for m in mutations})
    stored: dict[str, tuple[str | None, Result]] = {}  # mid: the device that sent it, its first result
    for mid, device, blob in _STORED_RESULTS[dialect].rows(connection, keys=key_list(dialect, mids)):
        stored[mid] = (device, _result_decoder.decode(blob))
    ids = list({m.id for mutations, _ in requests for m in mutations if m.mid not in stored})
    states: dict[str, RecordState] = {}
    if ids:
        for row in _STORED_RECORDS[dialect].rows(connection, keys=key_list(dialect, ids)):
            states[row[1]] = state_from_stored(row)
    # 0 stands for "not stored": the check under the lock expects it still absent.
    merged = _Merged({id_: (states[id_].version if id_ in states else 0) for id_ in ids},
                     [mid for mid in mids if mid not in stored])
    clock = server_clock()
    # Stamps sort as strings: one comparison against the latest acceptable stamp replaces parsing each.
    too_far = format_stamp(wall_now_ms() + MAX_CLOCK_SKEW_MS + 1, 0, "")
    latest_seen = None
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
    merged.build_rows()
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

