"""Two writers of one upload at once, as two server processes sharing a data folder see them: a
phone whose reply was lost sends the same chunk again, and the other process takes it while the
first still writes. Each writer here is a thread with its own open file, which is what the
store's lock (flock) tells apart, exactly as it tells processes apart."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import threading
import time

import pytest

from server.blobs import service
from server.blobs.store import AlreadyComplete, FileBlobStore, OffsetMismatch

CHUNK = b"\x89PNG" + os.urandom(4000)
REST = os.urandom(3000)
BLOB = CHUNK + REST
SHA = hashlib.sha256(BLOB).hexdigest()


class OtherWriter:
    """Another process in the middle of its own call: it holds the partial blob's lock."""

    def __init__(self, store: FileBlobStore):
        self.path = store.root / "partial" / f"{SHA}.part"
        self.handle = open(self.path, "ab")  # noqa: SIM115
        fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX)

    def publish(self) -> None:
        """Its hash check passed: the partial file becomes the blob."""
        final = self.path.parent.parent / SHA[:2] / SHA
        final.parent.mkdir(exist_ok=True)
        os.replace(self.path, final)

    def release(self) -> None:
        self.handle.close()


def started_behind(fn, *args):  # noqa: ANN001, ANN202
    """``fn(*args)`` in a thread of its own, given time to reach the lock the other writer holds;
    the thread and, once it ends, its outcome (``value`` or ``error``)."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = fn(*args)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.3)
    return thread, outcome


def test_a_chunk_sent_again_while_the_first_is_written_is_not_written_twice(tmp_path):
    store = FileBlobStore(tmp_path)
    other = OtherWriter(store)
    thread, outcome = started_behind(store.append, SHA, 0, CHUNK)
    assert thread.is_alive(), "the second writer must wait for the first"
    other.handle.write(CHUNK)  # the first writer's copy of the same chunk
    other.release()
    thread.join(5)
    assert isinstance(outcome.get("error"), OffsetMismatch) and outcome["error"].expected == len(CHUNK)
    assert store.partial_size(SHA) == len(CHUNK)
    assert store.append(SHA, len(CHUNK), REST) == len(BLOB)
    assert store.finish(SHA) and store.read(SHA) == BLOB


def test_two_writers_that_finish_the_same_blob_both_see_it_complete(tmp_path):
    store = FileBlobStore(tmp_path)
    store.append(SHA, 0, BLOB)
    other = OtherWriter(store)
    thread, outcome = started_behind(store.finish, SHA)
    assert thread.is_alive()
    other.publish()
    other.release()
    thread.join(5)
    assert outcome == {"value": True}
    assert store.read(SHA) == BLOB


def test_a_chunk_that_waited_for_the_blob_to_be_published_leaves_no_upload_behind(tmp_path):
    store = FileBlobStore(tmp_path)
    store.append(SHA, 0, CHUNK)
    other = OtherWriter(store)
    thread, outcome = started_behind(store.append, SHA, len(CHUNK), REST)
    other.handle.write(REST)
    other.handle.flush()
    other.publish()
    other.release()
    thread.join(5)
    assert isinstance(outcome.get("error"), AlreadyComplete)
    assert store.partial_size(SHA) is None
    assert store.read(SHA) == BLOB


def test_a_chunk_that_waited_for_a_discarded_upload_starts_it_again(tmp_path):
    store = FileBlobStore(tmp_path)
    store.append(SHA, 0, CHUNK)
    other = OtherWriter(store)
    thread, outcome = started_behind(store.append, SHA, len(CHUNK), REST)
    other.path.unlink()  # the other process's hash check failed: the upload was discarded
    other.release()
    thread.join(5)
    assert isinstance(outcome.get("error"), OffsetMismatch) and outcome["error"].expected == 0


@pytest.mark.parametrize("chunks", [1, 3])
def test_an_upload_leaves_no_lock_behind_in_the_process(tmp_path, chunks):
    store = FileBlobStore(tmp_path)
    size = -(-len(BLOB) // chunks)

    async def upload() -> list[tuple[bool, int]]:
        replies = []
        for offset in range(0, len(BLOB), size):
            replies.append(await service.receive_chunk(store, SHA, offset, len(BLOB), BLOB[offset:offset + size]))
        replies.append(await service.receive_chunk(store, SHA, 0, len(BLOB), BLOB[:size]))  # sent again
        return replies

    replies = asyncio.run(upload())
    assert replies[-2] == (True, len(BLOB)) and replies[-1] == (True, len(BLOB))
    assert len(service._upload_locks) == 0
