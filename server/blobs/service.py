"""Resumable, content-checked uploads and scoped reads of blobs."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from server.blobs.store import AlreadyComplete, BlobStore, OffsetMismatch, StorageFull
from server.db.models import BlobRef, RecordRow
from server.errors import Conflict, Invalid, Malformed, TooLarge, Unavailable
from shared_schema.messages import MAX_BLOB_BYTES
from shared_schema.types import SHA256_PATTERN

log = logging.getLogger("fieldloop")

SHA256 = re.compile(SHA256_PATTERN)


def check_hash(sha256: str) -> str:
    if not SHA256.fullmatch(sha256):
        raise Malformed("a blob is named by its lowercase hex SHA-256")
    return sha256


@dataclass(frozen=True)
class UploadState:
    complete: bool
    offset: int | None  # bytes held of an upload in progress; None when unknown


def upload_state(store: BlobStore, sha256: str) -> UploadState:
    if store.is_complete(sha256):
        return UploadState(True, None)
    return UploadState(False, store.partial_size(sha256))


class _UploadLocks:
    """One asyncio lock per blob being uploaded in this process, dropped when no request holds or
    waits for it (a lock kept for every blob ever uploaded grew with every photo). Across
    processes the store's own file lock serialises writers; this one keeps a second chunk of the
    same blob from tying up a worker thread while it waits."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: collections.Counter[str] = collections.Counter()

    @contextlib.asynccontextmanager
    async def hold(self, sha256: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(sha256, asyncio.Lock())
        self._users[sha256] += 1
        try:
            async with lock:
                yield
        finally:
            self._users[sha256] -= 1
            if not self._users[sha256]:
                del self._users[sha256], self._locks[sha256]

    def __len__(self) -> int:
        return len(self._locks)


_upload_locks = _UploadLocks()


async def receive_chunk(store: BlobStore, sha256: str, offset: int, length: int, data: bytes) -> tuple[bool, int]:
    """Append one chunk. Returns (complete, offset now held).

    Raises:
        TooLarge: the declared length exceeds the limit.
        Conflict: the offset is not where the upload stands (the reply carries the right one).
        Invalid: the bytes do not hash to the name (the partial data is discarded).
        Unavailable: the disk is full (nothing of the chunk kept).
    """
    if length > MAX_BLOB_BYTES:
        raise TooLarge(f"a blob may have at most {MAX_BLOB_BYTES} bytes")
    if offset + len(data) > length:
        raise Malformed("the chunk runs past Upload-Length")
    async with _upload_locks.hold(sha256):
        if store.is_complete(sha256):
            return True, length
        try:
            held = await asyncio.to_thread(store.append, sha256, offset, data)
        except AlreadyComplete:
            return True, length
        except OffsetMismatch as exc:
            raise Conflict(f"this upload continues at offset {exc.expected}", offset=exc.expected) from None
        except StorageFull:
            log.warning("blob storage is full: a chunk of %s was refused", sha256)
            raise Unavailable("the server's storage is full; nothing of this chunk was kept, try again later") \
                from None
        if held < length:
            return False, held
        if not await asyncio.to_thread(store.finish, sha256):
            raise Invalid("the uploaded bytes do not match their SHA-256; the upload was discarded")
        return True, held


async def may_read(sessionmaker: async_sessionmaker, sha256: str, scope: frozenset[str]) -> bool:
    """A device may read a blob only when a record of its grids refers to it now.

    ``blob_refs`` names every record that ever held the blob (a row is written when a photo is
    added and kept): the record's current photos decide. A photo taken off the record by an edit
    that had seen it, or a deleted record (pulled with empty fields), no longer refers to it.
    """
    if not scope:
        return False
    async with sessionmaker() as session:
        held = await session.scalars(
            select(RecordRow.fields)
            .join(BlobRef, BlobRef.record_id == RecordRow.id)
            .where(BlobRef.sha256 == sha256, BlobRef.grid_id.in_(sorted(scope)), RecordRow.deleted.is_(False))
        )
        return any(sha256 in (fields.get("photos") or ()) for fields in held)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) for a ``Range: bytes=a-b`` header, None for the whole blob."""
    if not header:
        return None
    match = re.fullmatch(r"bytes=([0-9]*)-([0-9]*)", header.strip())
    if not match or (not match[1] and not match[2]):
        raise Malformed("Range must be bytes=start-end")
    if match[1]:
        start = int(match[1])
        end = min(int(match[2]) + 1, size) if match[2] else size
    else:
        start, end = max(size - int(match[2]), 0), size
    if start >= size or start >= end:
        raise Malformed("the range is outside the blob")
    return start, end
