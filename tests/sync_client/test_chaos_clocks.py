"""A phone whose clock is set by hand while it is offline (the chaos probe's clock jumps): its
edits are stamped from the time the server taught it, corrected by how far the clock was moved
(told by the boot clock, ``sync.client.boot_clock``), so ``lww`` still lets the later edit win.

Protocol section 2: a device whose wall clock is off by more than 5 minutes stamps new edits
from the server-corrected time. Before, the engine corrected only by the offset it learned at
the last sync: a clock set a year ahead offline stamped a year ahead (the server re-stamps such
an edit with its own time on arrival, so it beat every edit made before it arrived), and a clock
set back two days stamped at the last stamp it had seen (so it lost to edits made before it).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sync.client import SyncEngine
from sync.client.boot_clock import BootReading
from sync.hlc import parse_stamp, wall_now_ms
from tests.conftest import FieldSetup
from tests.support.httpx_session import enrolled_engine

DAY_MS = 86_400_000


class HandSetClock:
    """A phone's wall clock its user can move, beside a boot clock nobody moves."""

    def __init__(self) -> None:
        self.moved_ms = 0

    def wall(self) -> int:
        return wall_now_ms() + self.moved_ms

    @staticmethod
    def boot() -> BootReading:
        return BootReading("boot-1", int(time.monotonic() * 1000))


def phone(path: Path, field: FieldSetup, user: str, clock: HandSetClock | None = None) -> SyncEngine:
    return enrolled_engine(path, field, user, **({"wall": clock.wall, "boot_clock": clock.boot} if clock else {}))


@pytest.mark.parametrize(("moved_ms", "a_edits_last"), [(365 * DAY_MS, False), (-2 * DAY_MS, True)],
                         ids=["set-a-year-ahead", "set-two-days-back"])
def test_the_later_edit_wins_when_a_phone_clock_was_set_by_hand_offline(
        tmp_path: Path, field: FieldSetup, moved_ms: int, a_edits_last: bool):
    grid = field.grid("所前一网格")
    field.user("li", ["所前一网格"])
    field.user("wang", ["所前一网格"])
    clock = HandSetClock()
    a = phone(tmp_path / "a" / "store.db", field, "li", clock)
    b = phone(tmp_path / "b" / "store.db", field, "wang")
    hid = b.create("household", {"grid_id": grid, "address": "3幢2单元401"})
    b.sync()
    a.sync()  # a learns the server's time (no correction needed) and where its clocks stood

    clock.moved_ms = moved_ms  # offline, its user sets the clock by hand
    first, last = (b, a) if a_edits_last else (a, b)
    first.edit("household", hid, {"notes": "first"})
    time.sleep(0.05)
    last.edit("household", hid, {"notes": "last"})
    stamp = parse_stamp(a.store.pending_mutations(1)[0].hlc).wall_ms
    assert abs(stamp - wall_now_ms()) < 60_000, "a stamps from the corrected time"
    first.sync()
    last.sync()
    a.sync()
    b.sync()

    for engine in (a, b):
        assert engine.store.get("household", hid).fields["notes"] == "last"
    conflicts = [c for e in (a, b) for c in e.store.conflicts() if c.field == "notes"]
    assert [(c.kept, c.lost) for c in conflicts] == [("last", "first")]
    for engine in (a, b):
        engine.store.close()
