"""Protocol section 7: resumable uploads checked against their hash, dedup, scoped reads, Range."""

from __future__ import annotations

import errno
import hashlib
import os
import time

import pytest


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def phone(field):
    grid = field.grid("g1")
    field.user("wang", ["g1"])
    device = field.device("wang")
    device.grid = grid
    return device


def patch(device, digest: str, offset: int, length: int, chunk: bytes):  # noqa: ANN001, ANN201
    return device.call("PATCH", f"/v1/blobs/{digest}", content=chunk,
                       headers={"Upload-Offset": str(offset), "Upload-Length": str(length),
                                "Content-Type": "application/offset+octet-stream"})


def attach(device, digest: str) -> None:  # noqa: ANN001
    """A visit in the phone's grid that refers to the photo, so the phone may read it."""
    device.push([device.mutation("patrol", fields={"grid_id": device.grid, "started_at": "2026-11-25T08:00:00+08:00",
                                                   "photos": [digest]})])


def test_an_upload_cut_halfway_resumes_from_the_servers_offset(phone):
    photo = os.urandom(300_000)
    digest = sha(photo)
    assert phone.call("HEAD", f"/v1/blobs/{digest}").status_code == 404
    first = patch(phone, digest, 0, len(photo), photo[:120_000])
    assert first.status_code == 204 and first.headers["Upload-Offset"] == "120000"
    head = phone.call("HEAD", f"/v1/blobs/{digest}")
    assert head.status_code == 200 and head.headers["Upload-Offset"] == "120000"
    stale = patch(phone, digest, 0, len(photo), photo[:1000])
    assert stale.status_code == 409 and stale.headers["Upload-Offset"] == "120000"
    done = patch(phone, digest, 120_000, len(photo), photo[120_000:])
    assert done.status_code == 201
    attach(phone, digest)
    assert phone.call("GET", f"/v1/blobs/{digest}").content == photo


def test_a_wrong_hash_is_refused_and_discarded(phone):
    photo = os.urandom(10_000)
    digest = sha(b"something else")
    response = patch(phone, digest, 0, len(photo), photo)
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid"
    assert phone.call("HEAD", f"/v1/blobs/{digest}").status_code == 404


def test_a_known_blob_is_not_taken_twice(phone):
    photo = os.urandom(5_000)
    digest = sha(photo)
    assert patch(phone, digest, 0, len(photo), photo).status_code == 201
    head = phone.call("HEAD", f"/v1/blobs/{digest}")
    assert head.status_code == 200 and "Upload-Offset" not in head.headers
    again = patch(phone, digest, 0, len(photo), photo)
    assert again.status_code == 200


def test_a_blob_is_read_only_through_a_record_in_scope(field, phone):
    field.grid("g2")
    field.user("zhao", ["g2"])
    stranger = field.device("zhao")
    photo = os.urandom(2_000)
    digest = sha(photo)
    patch(phone, digest, 0, len(photo), photo)
    assert phone.call("GET", f"/v1/blobs/{digest}").status_code == 404  # no record refers to it yet
    attach(phone, digest)
    assert phone.call("GET", f"/v1/blobs/{digest}").status_code == 200
    assert stranger.call("GET", f"/v1/blobs/{digest}").status_code == 404


def test_range_reads_resume_a_download(phone):
    photo = os.urandom(50_000)
    digest = sha(photo)
    patch(phone, digest, 0, len(photo), photo)
    attach(phone, digest)
    part = phone.call("GET", f"/v1/blobs/{digest}", headers={"Range": "bytes=20000-"})
    assert part.status_code == 206 and part.content == photo[20000:]
    assert part.headers["Content-Range"] == f"bytes 20000-49999/{len(photo)}"
    assert phone.call("GET", f"/v1/blobs/{digest}", headers={"Range": "pages=1"}).status_code == 400


def test_bad_blob_requests_get_clear_errors(phone):
    assert phone.call("HEAD", "/v1/blobs/NOT-A-HASH").status_code == 400
    digest = sha(b"x")
    # A name that ends in a newline would otherwise become a second file beside the real one.
    assert patch(phone, digest + "%0A", 0, 1, b"x").status_code == 400
    no_headers = phone.call("PATCH", f"/v1/blobs/{digest}", content=b"x")
    assert no_headers.status_code == 400 and "Upload-Offset" in no_headers.json()["error"]["message"]
    too_big = patch(phone, digest, 0, 26 * 1024 * 1024, b"x")
    assert too_big.status_code == 413
    past_end = patch(phone, digest, 0, 1, b"xx")
    assert past_end.status_code == 400


def test_every_blob_reply_carries_the_server_time(phone):
    photo = os.urandom(5_000)
    digest = sha(photo)
    replies = [
        phone.call("HEAD", f"/v1/blobs/{digest}"),  # 404
        patch(phone, digest, 0, len(photo), photo[:1000]),  # 204
        patch(phone, digest, 0, len(photo), photo[:1000]),  # 409
        patch(phone, digest, 1000, len(photo), photo[1000:]),  # 201
        phone.call("HEAD", f"/v1/blobs/{digest}"),  # 200
    ]
    attach(phone, digest)
    replies.append(phone.call("GET", f"/v1/blobs/{digest}"))
    assert [r.status_code for r in replies] == [404, 204, 409, 201, 200, 200]
    now = time.time() * 1000
    for reply in replies:
        assert abs(int(reply.headers["Server-Time"]) - now) < 60_000, reply.headers


def test_a_full_disk_refuses_the_chunk_with_503_and_keeps_nothing_of_it(phone, monkeypatch):
    photo = os.urandom(200_000)
    digest = sha(photo)
    assert patch(phone, digest, 0, len(photo), photo[:80_000]).status_code == 204

    def disk_full(fd: int) -> None:  # where a full disk shows itself on many filesystems
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr("server.blobs.store.os.fsync", disk_full)
        refused = patch(phone, digest, 80_000, len(photo), photo[80_000:])
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
    assert refused.json()["error"]["code"] == "unavailable"
    # The chunk that met the full disk left nothing behind: the upload resumes where it stood.
    assert phone.call("HEAD", f"/v1/blobs/{digest}").headers["Upload-Offset"] == "80000"
    assert patch(phone, digest, 80_000, len(photo), photo[80_000:]).status_code == 201
    attach(phone, digest)
    assert phone.call("GET", f"/v1/blobs/{digest}").content == photo
