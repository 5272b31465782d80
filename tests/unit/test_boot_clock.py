"""Telling a wall clock set by hand from time passing, with a clock nobody sets."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sync.client.boot_clock import BootReading, clock_anchor, wall_moved_ms

TOLERANCE = 5 * 60_000
HOUR = 3_600_000


def test_a_clock_set_forward_or_back_within_one_boot_is_told_by_how_much():
    kept = clock_anchor(1_700_000_000_000, BootReading("b", 10_000))
    later = BootReading("b", 10_000 + 2 * HOUR)  # two hours passed, sleep included
    assert wall_moved_ms(kept, 1_700_000_000_000 + 2 * HOUR, later, TOLERANCE) == 0
    assert wall_moved_ms(kept, 1_700_000_000_000 + 5 * HOUR, later, TOLERANCE) == 3 * HOUR
    assert wall_moved_ms(kept, 1_700_000_000_000 - HOUR, later, TOLERANCE) == -3 * HOUR


def test_nothing_is_told_across_a_reboot_without_a_boot_clock_or_within_the_tolerance():
    kept = clock_anchor(1_700_000_000_000, BootReading("b", 10_000))
    moved_wall = 1_700_000_000_000 + 5 * HOUR
    assert wall_moved_ms(kept, moved_wall, BootReading("another boot", 10_000 + HOUR), TOLERANCE) == 0
    assert wall_moved_ms(kept, moved_wall, BootReading("b", 5_000), TOLERANCE) == 0  # went back: not this boot
    assert wall_moved_ms(kept, moved_wall, None, TOLERANCE) == 0
    assert wall_moved_ms(None, moved_wall, BootReading("b", 20_000), TOLERANCE) == 0
    assert wall_moved_ms("three words only", moved_wall, BootReading("b", 20_000), TOLERANCE) == 0
    assert wall_moved_ms(kept, 1_700_000_000_000 + 4 * 60_000, BootReading("b", 10_000), TOLERANCE) == 0
    assert clock_anchor(1, None) is None


@given(
    then_wall=st.integers(0, 10**13),
    then_boot=st.integers(0, 10**11),
    passed=st.integers(0, 10**10),
    moved=st.integers(-(10**12), 10**12),
)
def test_whatever_passed_the_move_is_what_was_set_by_hand(then_wall, then_boot, passed, moved):
    kept = clock_anchor(then_wall, BootReading("b", then_boot))
    told = wall_moved_ms(kept, then_wall + passed + moved, BootReading("b", then_boot + passed), TOLERANCE)
    assert told == (moved if abs(moved) > TOLERANCE else 0)
