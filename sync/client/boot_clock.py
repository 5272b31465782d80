"""Whether the phone's clock was set by hand since the server's time was last heard.

The engine corrects a wrong phone clock by the offset it learned from the server at the last
sync. A user who then sets the clock right while offline (the home screen asks them to) would
have every later record shifted by that stale offset until the next sync. Telling "the clock was
moved" from "time passed" needs a clock nobody sets that also runs while the phone sleeps:
Linux, and so Android, counts time since boot (CLOCK_BOOTTIME, Android's elapsedRealtime) and
names each boot (``boot_id``). Within one boot, the wall clock moved by how much more (or less)
it advanced than that clock; across a reboot nothing can be said, and the stored offset stands.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class BootReading(NamedTuple):
    boot_id: str
    since_boot_ms: int


BootClock = Callable[[], "BootReading | None"]


def read_boot_clock() -> BootReading | None:
    """This boot's id and the ms since it, sleep included; None where the system does not say."""
    try:
        boot_id = _BOOT_ID.read_text().strip()
        since_boot = time.clock_gettime(time.CLOCK_BOOTTIME)
    except (OSError, AttributeError, ValueError):
        return None
    return BootReading(boot_id, int(since_boot * 1000)) if boot_id else None


def clock_anchor(wall_ms: int, reading: BootReading | None) -> str | None:
    """What to keep beside an offset learned now, to tell later how far the wall clock was moved."""
    if reading is None:
        return None
    return f"{reading.boot_id} {wall_ms} {reading.since_boot_ms}"


def wall_moved_ms(kept: str | None, wall_ms: int, reading: BootReading | None, tolerance_ms: int) -> int:
    """How far the wall clock was set forward (negative: back) since ``kept`` was taken.

    0 when it cannot be told (no anchor, another boot, no boot clock) or when the difference is
    within ``tolerance_ms`` (drift and network time keep the two clocks a little apart).
    """
    if kept is None or reading is None:
        return 0
    try:
        boot_id, then_wall, then_boot = kept.split(" ")
        moved = (wall_ms - int(then_wall)) - (reading.since_boot_ms - int(then_boot))
    except ValueError:
        return 0
    if boot_id != reading.boot_id or reading.since_boot_ms < int(then_boot) or abs(moved) <= tolerance_ms:
        return 0
    return moved
