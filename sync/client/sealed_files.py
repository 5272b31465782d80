"""Blob files on the device, sealed with the store's cipher, named by the SHA-256 of their plaintext.

Two formats, both written so that a crash leaves either the old state or the new one:

- ``<sha>``: one sealed value (``aad = blob:<sha>``), written to a temporary name, synced,
  then renamed into place.
- ``<sha>.part``: an interrupted download, a run of records ``[plain length: 4 bytes]
  [sealed length: 4 bytes][sealed chunk]``, each chunk sealed with ``aad = part:<sha>:<offset>``.
  A torn last record (a crash mid-append) is ignored and overwritten by the next append.

No plaintext byte of a blob reaches the disk. OSErrors surface as ``StorageError``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from shared_schema.types import SHA256_PATTERN
from sync.client.cipher import Cipher
from sync.errors import StorageError

_HEADER = 8
_SHA256 = re.compile(SHA256_PATTERN)


def is_blob_name(sha: object) -> bool:
    """Whether ``sha`` is a lowercase hex SHA-256, the only name a blob file may have."""
    return isinstance(sha, str) and _SHA256.fullmatch(sha) is not None


@contextlib.contextmanager
def _io(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise StorageError(f"cannot {what}: {exc}") from exc


class SealedFiles:
    """The folder of sealed blob files beside a local store.

    Args:
        folder: where the files live (made when missing).
        cipher: seals and opens every file.
    """

    def __init__(self, folder: Path, cipher: Cipher):
        self.folder = Path(folder)
        self._cipher = cipher
        with _io("make the blob folder"):
            self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, sha: str) -> Path:
        """Where a complete blob's sealed file lives.

        Raises:
            StorageError: ``sha`` is not a SHA-256. Hashes come from records the server sent:
                ``../../x`` or ``/x`` would name a file outside the folder.
        """
        if not is_blob_name(sha):
            raise StorageError(f"not a blob hash: {str(sha)[:80]!r}")
        return self.folder / sha

    def _part(self, sha: str) -> Path:
        return self.path(sha).with_name(f"{sha}.part")

    def exists(self, sha: str) -> bool:
        """Whether a complete blob's file is here."""
        return self.path(sha).exists()

    def write(self, sha: str, data: bytes) -> None:
        """Seal ``data`` into the blob's file (atomically; nothing is done if it is there)."""
        target = self.path(sha)
        if target.exists():
            return
        sealed = self._cipher.encrypt(data, f"blob:{sha}".encode())
        tmp = target.with_name(target.name + ".tmp")
        with _io("write a blob"):
            with open(tmp, "wb") as fh:
                fh.write(sealed)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)

    def read(self, sha: str) -> bytes | None:
        """A blob's plaintext, or None when its file is not here."""
        with _io("read a blob"):
            try:
                sealed = self.path(sha).read_bytes()
            except FileNotFoundError:
                return None
        return self._cipher.decrypt(sealed, f"blob:{sha}".encode())

    def remove(self, sha: str) -> None:
        """Delete a complete blob's file (nothing to do when it is not here)."""
        with _io("remove a blob"):
            self.path(sha).unlink(missing_ok=True)

    def _scan_part(self, sha: str) -> tuple[int, int, bytes]:
        """(plaintext bytes, file bytes) of the whole records of a part file, and the file's bytes."""
        path = self._part(sha)
        if not path.exists():
            return 0, 0, b""
        data = path.read_bytes()
        pos = plain = 0
        while pos + _HEADER <= len(data):
            plain_len = int.from_bytes(data[pos : pos + 4], "big")
            sealed_len = int.from_bytes(data[pos + 4 : pos + 8], "big")
            if pos + _HEADER + sealed_len > len(data):
                break
            pos += _HEADER + sealed_len
            plain += plain_len
        return plain, pos, data

    def part_size(self, sha: str) -> int:
        """How many plaintext bytes of an interrupted download are kept (where to resume)."""
        with _io("read a partial download"):
            return self._scan_part(sha)[0]

    def reset_part(self, sha: str) -> None:
        """Drop the kept part of a download."""
        with _io("remove a partial download"):
            self._part(sha).unlink(missing_ok=True)

    def append_part(self, sha: str, offset: int, chunk: bytes) -> None:
        """Keep one downloaded chunk, sealed, after those already kept.

        Raises:
            StorageError: ``offset`` is not the end of what is kept.
        """
        with _io("keep a downloaded chunk"):
            plain, good, _ = self._scan_part(sha)
            if offset != plain:
                raise StorageError(f"blob part out of order: have {plain} bytes, got a chunk at {offset}")
            sealed = self._cipher.encrypt(chunk, f"part:{sha}:{offset}".encode())
            with open(self._part(sha), "ab") as fh:
                fh.truncate(good)  # drop a torn tail left by a crash
                fh.write(len(chunk).to_bytes(4, "big") + len(sealed).to_bytes(4, "big") + sealed)
                fh.flush()
                os.fsync(fh.fileno())

    def take_part(self, sha: str) -> bytes:
        """The plaintext of every kept chunk, joined; the part file is removed."""
        with _io("read a partial download"):
            _, good, data = self._scan_part(sha)
            pieces, pos, offset = [], 0, 0
            while pos < good:
                plain_len = int.from_bytes(data[pos : pos + 4], "big")
                sealed_len = int.from_bytes(data[pos + 4 : pos + 8], "big")
                sealed = data[pos + _HEADER : pos + _HEADER + sealed_len]
                pieces.append(self._cipher.decrypt(sealed, f"part:{sha}:{offset}".encode()))
                pos += _HEADER + sealed_len
                offset += plain_len
            self._part(sha).unlink(missing_ok=True)
        return b"".join(pieces)

    def remove_all(self) -> None:
        """Delete the folder and every file in it."""
        shutil.rmtree(self.folder, ignore_errors=True)
