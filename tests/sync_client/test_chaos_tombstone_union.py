"""A union field set on a deleted record (found by the chaos probe, seed 111 on SQLite).

A tombstone reaches phones with empty fields while the server keeps the fields hidden. A phone
that edits a record it saw deleted brings it back with those hidden fields; its next edit of a
``union`` field sends the whole list as it sees it (without what was hidden), and since it was
the set's last writer the server takes that as a removal it had seen (Changes 11): a photo the
record held before the delete is dropped, which Changes 11 says never happens ("a photo is never
dropped by an edit that had not seen the set as stored"). The merge now takes a set the
tombstone kept as unseen by the writer that brings the record back, and by its next edits
based on the tombstone: they unite with it.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import FieldSetup
from tests.support.httpx_session import enrolled_engine as phone

VISITED = "2026-11-25T08:00:00+08:00"


def test_a_photo_held_before_a_delete_survives_an_edit_made_on_the_tombstone(tmp_path: Path, field: FieldSetup):
    grid = field.grid("所前一网格")
    field.user("li", ["所前一网格"])
    field.user("wang", ["所前一网格"])
    a = phone(tmp_path / "a" / "store.db", field, "li")
    b = phone(tmp_path / "b" / "store.db", field, "wang")
    hid = a.create("household", {"grid_id": grid, "address": "3幢2单元401"})
    first = a.add_photo(os.urandom(20_000))
    vid = a.create("visit", {"grid_id": grid, "household_id": hid, "method": "inquiry", "visited_at": VISITED,
                             "photos": [first]})
    a.sync()
    b.sync()
    b.delete("visit", vid)
    b.sync()
    a.sync()  # a holds the tombstone: deleted, no fields
    a.edit("visit", vid, {"notes": "还在"})  # brings it back, with the photo the server kept hidden
    seen = a.store.get("visit", vid).fields.get("photos") or []
    second = a.add_photo(os.urandom(20_000))
    a.edit("visit", vid, {"photos": sorted({*seen, second})})
    a.sync()
    b.sync()
    photos = b.store.get("visit", vid).fields["photos"]
    assert first in photos and second in photos, photos
    for engine in (a, b):
        engine.store.close()
