"""Two phones that set a field to the same value offline, one of which then changes it again
before it has seen the other's edit (found by the chaos probe, seed 101 on PostgreSQL).

Protocol section 5: a field is concurrent when someone other than the mutation's sender changed it
after ``base_version``. The other phone did; so the second edit is concurrent with it, and the
value it replaces goes to the conflict log (G1). Before, the server remembered only the last writer
of the value (the phone that wrote it again), took that phone's next edit for its own, and the
other phone's edit vanished without an entry.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import FieldSetup
from tests.support.httpx_session import enrolled_engine as phone


@pytest.mark.parametrize("a_stamps_first", [False, True], ids=["a-later", "a-earlier"])
def test_an_edit_over_a_value_two_phones_set_alike_logs_the_other_phones_value(
        tmp_path: Path, field: FieldSetup, a_stamps_first: bool):
    grid = field.grid("所前一网格")
    field.user("li", ["所前一网格"])
    field.user("wang", ["所前一网格"])
    a = phone(tmp_path / "a" / "store.db", field, "li")
    b = phone(tmp_path / "b" / "store.db", field, "wang")
    hid = a.create("household", {"grid_id": grid, "address": "3幢2单元401", "head_name": "王建国"})
    a.sync()
    b.sync()

    # Both set the head to 李秀英 without seeing each other's edit; a then corrects it to 张伟.
    first, second = (a, b) if a_stamps_first else (b, a)
    first.edit("household", hid, {"head_name": "李秀英"})
    time.sleep(0.005)
    second.edit("household", hid, {"head_name": "李秀英"})
    b.sync()
    time.sleep(0.005)
    a.edit("household", hid, {"head_name": "张伟"})
    a.sync()
    b.sync()

    for engine in (a, b):
        assert engine.store.get("household", hid).fields["head_name"] == "张伟"
    conflicts = [(c.kept, c.lost) for e in (a, b) for c in e.store.conflicts() if c.field == "head_name"]
    assert ("张伟", "李秀英") in conflicts, conflicts
    for engine in (a, b):
        engine.store.close()
