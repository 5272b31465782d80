"""Moving photos (blobs) between the local store and the server (protocol section 7).

Uploads resume: a HEAD asks how much of an interrupted upload the server holds, PATCH sends
the rest in chunks, and a 409 names the offset to go on from. A blob the server already
holds complete is never sent again. Downloads resume too: each received chunk is kept sealed
in a part file, and the next attempt asks for ``Range: bytes=<kept>-``.
"""

from __future__ import annotations

import contextlib

from shared_schema.messages import MAX_BLOB_BYTES
from sync.client.store import LocalStore
from sync.client.transport import Transport
from sync.errors import BlobRejected, ProtocolError, StorageError

UPLOAD_CHUNK = 256 * 1024
# More 409s than this in one upload means the server and we disagree for good, not a race.
MAX_OFFSET_CORRECTIONS = 8


class BlobTransfer:
    """Uploads and downloads blobs for one store over one transport.

    Args:
        store: where blobs are kept, sealed.
        transport: the server.
        chunk_size: bytes per PATCH.
    """

    def __init__(self, store: LocalStore, transport: Transport, *, chunk_size: int = UPLOAD_CHUNK):
        self._store = store
        self._transport = transport
        self.chunk_size = chunk_size

    def upload(self, token: str, sha: str) -> bool:
        """Make sure the server holds a local blob complete.

        Args:
            token: an access token.
            sha: a blob kept in the store.

        Returns:
            True when bytes were sent, False when the server already had the blob.

        Raises:
            StorageError: the blob's bytes are not on this device.
            BlobRejected: the server refused the completed blob (hash mismatch).
            ProtocolError: the server's answers leave nowhere to go on from (an offset outside the
                blob or one that does not move, a status the protocol does not give).
            TransportError: the upload was cut; the next call resumes where the server stopped.
        """
        data = self._store.read_blob(sha)
        if data is None:
            raise StorageError(f"blob {sha} is queued for upload but its file is missing")
        status, offset = self._transport.blob_head(token, sha)
        if status == 200 and offset is None:
            self._store.mark_blob_uploaded(sha)
            return False
        offset = offset or 0
        corrections = 0
        sent = False
        while True:
            if not 0 <= offset <= len(data):
                raise ProtocolError("invalid", f"server asked to resume blob {sha} at {offset} of {len(data)}")
            chunk = data[offset : offset + self.chunk_size]
            status, next_offset = self._transport.blob_patch(token, sha, offset, len(data), chunk)
            if status in (200, 201):
                self._store.mark_blob_uploaded(sha)
                return sent or status == 201
            if status == 409:
                corrections += 1
                if corrections > MAX_OFFSET_CORRECTIONS or next_offset is None:
                    raise ProtocolError("conflict", f"server keeps refusing the offset of blob {sha}", status=409)
                offset = next_offset
                continue
            if not 200 <= status < 300:
                raise ProtocolError("invalid", f"server answered {status} to a chunk of blob {sha}", status=status)
            sent = True
            moved_to = next_offset if next_offset is not None else offset + len(chunk)
            if chunk and moved_to <= offset:
                # Taken at its word, a server that keeps the offset where it was (or moves it
                # back) would be sent the same chunk forever.
                raise ProtocolError(
                    "invalid", f"server took a chunk of blob {sha} but moved its offset from {offset} to {moved_to}"
                )
            offset = moved_to
            if offset >= len(data) and not chunk:
                # The last byte went and the server neither finished nor refused: ask it.
                status, held = self._transport.blob_head(token, sha)
                if status == 200 and held is None:
                    self._store.mark_blob_uploaded(sha)
                    return True
                raise ProtocolError("invalid", f"server did not complete blob {sha} at its full length")

    def download(self, token: str, sha: str) -> bytes:
        """Fetch a blob into the store, resuming an interrupted download.

        Returns:
            The blob's plaintext.

        Raises:
            BlobRejected: the bytes received do not hash to ``sha``, or run past the largest blob.
            ProtocolError: the server has no such blob or will not give it to this device.
            TransportError: the download was cut; the next call resumes from what was kept.
        """
        start = self._store.blob_part_size(sha)
        first = True
        with contextlib.closing(self._transport.blob_chunks(token, sha, start)) as pieces:
            for offset, piece in pieces:
                if first and offset != start:
                    # The server ignored our Range and starts over: so do we.
                    self._store.reset_blob_part(sha)
                    start = offset
                first = False
                if offset + len(piece) > MAX_BLOB_BYTES:
                    # No blob is larger (protocol section 7): a server that keeps sending would
                    # fill the phone's storage before the hash check could refuse the bytes.
                    self._store.reset_blob_part(sha)
                    raise BlobRejected("too_large", f"server sent more than {MAX_BLOB_BYTES} bytes of blob {sha}")
                self._store.append_blob_part(sha, offset, piece)
        return self._store.finish_blob_download(sha)
