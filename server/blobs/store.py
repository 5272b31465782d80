"""Where blob bytes live. ``FileBlobStore`` keeps them as files under the data folder; an
object store could fill the same interface later.

Contract: a blob is either absent, partial (``partial_size`` bytes received, in order) or
complete (its bytes hash to its name). ``append`` only ever extends a partial blob at its
current end; ``finish`` checks the hash and either publishes the blob or discards it.
"""

from __future__ import annotations

import errno
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
        """Write ``data`` at ``offset``, which must be the partial blob's end; returns the new end."""
        path = self._partial(sha256)
        try:
            with open(path, "ab") as handle:
                current = handle.tell()
                if current != offset:
                    raise OffsetMismatch(current)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
                return handle.tell()
        except OSError as exc:
            if exc.errno not in _NO_SPACE:
                raise
            # Whatever part of the chunk reached the file goes: the upload stands where it stood.
            os.truncate(path, offset)
            raise StorageFull(f"no space left for blob {sha256}") from exc

    def finish(self, sha256: str) -> bool:
        path = self._partial(sha256)
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
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
