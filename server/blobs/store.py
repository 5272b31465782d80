"""Where blob bytes live. ``FileBlobStore`` keeps them as files under the data folder; an
object store could fill the same interface later.

Contract: a blob is either absent, partial (``partial_size`` bytes received, in order) or
complete (its bytes hash to its name). ``append`` only ever extends a partial blob at its
current end; ``finish`` checks the hash and either publishes the blob or discards it. Both hold
whatever number of server processes share the store: a phone whose reply was lost may send the
same chunk again to another process while the first still writes it.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
from pathlib import Path
from typing import Protocol


class BlobStore(Protocol):
    def is_complete(self, sha256: str) -> bool: ...
    def partial_size(self, sha256: str) -> int | None: ...
    def append(self, sha256: str, offset: int, data: bytes) -> int: ...
    def finish(self, sha256: str) -> bool: ...
    def discard(self, sha256: str) -> None: ...
    def size(self, sha256: str) -> int: ...
    def read(self, sha256: str, start: int = 0, end: int | None = None) -> bytes: ...


class StorageFull(Exception):
    """The disk holding the blobs is full: nothing of the chunk was kept."""


# Out of space, or over a quota: the same to a device, which tries the chunk again later.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class AlreadyComplete(Exception):
    """Another writer finished the blob while this one waited for it."""


class OffsetMismatch(Exception):
    def __init__(self, expected: int):
        super().__init__(f"upload continues at offset {expected}")
        self.expected = expected


class FileBlobStore:
    """Blobs as files: ``<root>/<aa>/<sha256>``, uploads in progress in ``<root>/partial``."""

    def __init__(self, root: Path):
        self.root = root
        (root / "partial").mkdir(parents=True, exist_ok=True)

    def _final(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def _partial(self, sha256: str) -> Path:
        return self.root / "partial" / f"{sha256}.part"

    def is_complete(self, sha256: str) -> bool:
        return self._final(sha256).exists()

    def partial_size(self, sha256: str) -> int | None:
        try:
            return self._partial(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def append(self, sha256: str, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset``, which must be the partial blob's end; returns the new end.

        Raises:
            OffsetMismatch: the partial blob ends elsewhere (the exception says where).
            AlreadyComplete: the blob was finished meanwhile.
            StorageFull: no space for the chunk (nothing of it kept).
        """
        path = self._partial(sha256)
        while True:
            with open(path, "ab") as handle:
                if not _lock_current(handle, path):
                    continue  # published or discarded while this writer waited: look again
                if self.is_complete(sha256):
                    if handle.tell() == 0:
                        path.unlink(missing_ok=True)  # made by this open, after the blob was published
                    raise AlreadyComplete(sha256)
                # Where the file ends now, after any writer this one waited for.
                current = handle.seek(0, os.SEEK_END)
                if current != offset:
                    raise OffsetMismatch(current)
                try:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                except OSError as exc:
                    if exc.errno not in _NO_SPACE:
                        raise
                    # Whatever part of the chunk reached the file goes: the upload stands where it stood.
                    os.truncate(path, offset)
                    raise StorageFull(f"no space left for blob {sha256}") from exc
                return handle.tell()

    def finish(self, sha256: str) -> bool:
        """Publish the partial blob if its bytes hash to its name (discard it if not); whether
        the blob is complete now (also when another writer published it meanwhile)."""
        path = self._partial(sha256)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - held open, and locked, until the blob is moved
        except FileNotFoundError:
            return self.is_complete(sha256)
        with handle:
            if not _lock_current(handle, path):
                return self.is_complete(sha256)
            digest = hashlib.sha256()
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
            if digest.hexdigest() != sha256:
                path.unlink(missing_ok=True)
                return False
            final = self._final(sha256)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, final)
            return True

    def discard(self, sha256: str) -> None:
        self._partial(sha256).unlink(missing_ok=True)

    def size(self, sha256: str) -> int:
        return self._final(sha256).stat().st_size

    def read(self, sha256: str, start: int = 0, end: int | None = None) -> bytes:
        with open(self._final(sha256), "rb") as handle:
            handle.seek(start)
            return handle.read(-1 if end is None else end - start)


def _lock_current(handle, path: Path) -> bool:  # noqa: ANN001
    """Take the exclusive lock on an open partial blob, across processes (the store's files are
    the one thing they share besides the database). False when the file was published, moved or
    removed while this writer waited: ``path`` now names another file, or none."""
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(handle.fileno())
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)
