"""Photos: resumable uploads and downloads, hash checks, no blob sent twice."""

from __future__ import annotations

import hashlib
import os

import pytest

from sync.client import PlainCipher
from shared_schema.messages import MAX_BLOB_BYTES
from sync.client.blobs import BlobTransfer
from sync.errors import BlobRejected, TransportError
from tests.sync_client.fake_server import GRID, FakeServer

VISITED = "2026-11-25T08:00:00+00:00"
PHOTO = os.urandom(700 * 1024)  # three chunks of 256 KiB


def visit_with(device, sha: str, household_id: str = "0190a000-0000-7000-8000-000000000099") -> str:
    return device.engine.create(
        "visit",
        {"grid_id": GRID, "household_id": household_id, "method": "inquiry", "visited_at": VISITED, "photos": [sha]},
    )


def test_a_photo_goes_up_before_its_record_and_comes_down_to_another_device(make_device, server: FakeServer):
    a, b = make_device("a"), make_device("b")
    sha = a.engine.add_photo(PHOTO)
    assert sha == hashlib.sha256(PHOTO).hexdigest()
    visit_with(a, sha)
    report = a.engine.sync()
    assert report.blobs_uploaded == 1 and server.blobs[sha] == PHOTO
    assert a.store.blob_state(sha) == "uploaded"

    report = b.engine.sync()
    assert report.blobs_downloaded == 1
    assert b.store.read_blob(sha) == PHOTO and b.store.blobs_to_download() == []


def test_an_upload_cut_halfway_resumes_from_the_servers_offset(make_device, server: FakeServer):
    a = make_device("a")
    sha = a.engine.add_photo(PHOTO)
    server.cut_upload_after = 300 * 1024  # the link drops inside the second chunk
    with pytest.raises(TransportError):
        a.engine.sync()
    assert len(server.partial[sha]) == 300 * 1024
    assert a.store.blobs_to_upload() == [sha]

    a.engine.sync()
    assert server.blobs[sha] == PHOTO
    resumed = [offset for s, offset, _ in server.patch_calls if s == sha]
    assert resumed == [0, 256 * 1024, 300 * 1024, 300 * 1024 + 256 * 1024]
    # Only the part the server lost mid-chunk was sent twice, never the part it held.
    assert server.patch_bytes[sha] == len(PHOTO) + (512 * 1024 - 300 * 1024)


def test_an_offset_the_server_does_not_expect_is_corrected_from_its_409(make_device, server: FakeServer):
    a = make_device("a")
    sha = a.engine.add_photo(PHOTO)
    server.partial[sha] = bytearray(PHOTO[:100_000])
    transfer = BlobTransfer(a.store, server.connect())
    token = a.engine.ensure_token()
    original = server.connect().blob_head
    # The HEAD reply is stale: it says nothing is held, so the first PATCH meets a 409.
    transfer._transport.blob_head = lambda token, sha: (404, None) if sha in server.partial else original(token, sha)
    assert transfer.upload(token, sha) is True
    assert server.blobs[sha] == PHOTO
    assert [(o, size) for _, o, size in server.patch_calls][:2] == [(0, 256 * 1024), (100_000, 256 * 1024)]


def test_a_blob_the_server_already_holds_is_not_sent_again(make_device, server: FakeServer):
    a, b = make_device("a"), make_device("b")
    sha = a.engine.add_photo(PHOTO)
    a.engine.sync()
    assert server.patch_bytes[sha] == len(PHOTO)
    # The same photo taken on another phone: HEAD says complete, no PATCH goes.
    calls = len(server.patch_calls)
    assert b.engine.add_photo(PHOTO) == sha
    report = b.engine.sync()
    assert report.blobs_uploaded == 0 and len(server.patch_calls) == calls
    assert b.store.blob_state(sha) == "uploaded"
    # And a device that uploaded it once never asks about it again.
    heads = len(server.head_calls)
    a.engine.sync()
    assert len(server.head_calls) == heads


def test_a_wrong_hash_is_refused_by_the_server_and_reported(make_device, server: FakeServer):
    a = make_device("a", cipher=PlainCipher())
    sha = a.engine.add_photo(PHOTO)
    (a.store.blob_dir / sha).write_bytes(b"tampered" + PHOTO[8:])  # the file rotted on the SD card
    report = a.engine.sync()
    assert sha not in server.blobs and sha not in server.partial
    assert any("not uploaded" in e for e in report.errors)
    assert a.store.blob_state(sha) == "local"


def test_a_download_that_does_not_match_its_hash_is_not_kept(make_device, server: FakeServer):
    a, b = make_device("a"), make_device("b")
    sha = a.engine.add_photo(PHOTO)
    visit_with(a, sha)
    a.engine.sync()
    server.corrupt_downloads = True
    report = b.engine.sync()
    assert report.blobs_downloaded == 0 and any("not downloaded" in e for e in report.errors)
    assert b.store.read_blob(sha) is None and not b.store.has_blob(sha)
    with pytest.raises(BlobRejected):
        b.engine.fetch_blob(sha)


def photo_to_download(make_device):  # noqa: ANN001, ANN201
    """Device a's photo, synced; device b has pulled the visit naming it and not the photo yet."""
    a = make_device("a")
    b = make_device("b", download_blobs=False)
    sha = a.engine.add_photo(PHOTO)
    visit_with(a, sha)
    a.engine.sync()
    b.engine.sync()
    return a, b, sha


def test_a_cut_download_resumes_with_a_range(make_device, server: FakeServer):
    a, b, sha = photo_to_download(make_device)
    assert b.store.blobs_to_download() == [sha]
    server.cut_download_after = 400_000
    with pytest.raises(TransportError):
        b.engine.fetch_blob(sha)
    assert b.store.blob_part_size(sha) == 400_000
    assert b.engine.fetch_blob(sha) == PHOTO
    assert server.get_calls == [(sha, 0), (sha, 400_000)]
    assert b.store.blobs_to_download() == []
    # The kept part was sealed too: no plaintext of the photo in the part or the blob file.
    assert PHOTO[:64] not in b"".join(p.read_bytes() for p in b.store.blob_dir.iterdir())


@pytest.mark.parametrize("answer", [(204, 0), (204, None), (204, 100_000), (302, None)])
def test_an_upload_whose_offset_does_not_move_on_is_reported_not_resent_forever(
    make_device, server: FakeServer, answer
):
    a = make_device("a")
    sha = a.engine.add_photo(PHOTO)
    hid = a.engine.create("household", {"grid_id": GRID, "address": "所前社区3幢"})
    patches: list[int] = []

    def stuck(token, sha, offset, length, chunk):  # noqa: ANN001
        patches.append(offset)
        if len(patches) > 50:
            raise AssertionError("the same chunk was sent forever")
        status, moved_to = answer
        # (204, None): the chunk "taken" but no offset said, until the end of the blob, then again.
        return status, moved_to if moved_to is not None or offset < len(PHOTO) else None

    a.engine.transport.blob_patch = stuck
    report = a.engine.sync()
    assert any("not uploaded" in e for e in report.errors)
    assert a.store.blob_state(sha) == "local" and a.store.blobs_to_upload() == [sha]
    assert a.store.get("household", hid).version == 1  # the records went all the same


def test_a_download_that_runs_past_the_largest_blob_is_cut_and_not_kept(make_device, server: FakeServer):
    a, b, sha = photo_to_download(make_device)
    piece = bytes(1024 * 1024)

    def endless(token, sha, range_start=0):  # noqa: ANN001
        for n in range(MAX_BLOB_BYTES // len(piece) + 10):
            yield n * len(piece), piece
        raise AssertionError("read past the largest blob")

    b.engine.transport.blob_chunks = endless
    with pytest.raises(BlobRejected, match="more than"):
        b.engine.fetch_blob(sha)
    assert b.store.blob_part_size(sha) == 0 and not b.store.has_blob(sha)
