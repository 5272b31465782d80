"""Properties of the hybrid logical clock (protocol section 2).

The wall clock is injected, so every test runs it forwards, backwards or not at all, and
checks the guarantees the merge relies on: a node's stamps only grow, they pass everything the
node has observed, they sort as strings in causal order, and a clock far off the server's is
corrected without ever issuing a stamp that goes backwards.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared_schema.messages import MAX_CLOCK_SKEW_MS
from shared_schema.types import HLC_PATTERN
from sync.hlc import MAX_COUNTER, HybridClock, Stamp, format_stamp, is_too_far_ahead, parse_stamp

NOW_MS = 1_764_000_000_000  # late 2025
YEAR_MS = 365 * 24 * 3600 * 1000

walls = st.integers(min_value=1_000_000_000_000, max_value=3_000_000_000_000)
counters = st.integers(min_value=0, max_value=MAX_COUNTER)
nodes = st.from_regex(r"\A[0-9A-Za-z_.:-]{1,64}\Z")
stamp_parts = st.tuples(walls, counters, nodes)


class FakeWall:
    """A wall clock a test moves by hand."""

    def __init__(self, ms: int = NOW_MS) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def key(stamp: str) -> tuple[int, int, str]:
    parts = parse_stamp(stamp)
    return parts.wall_ms, parts.counter, parts.node


# ---- format, parse and order ------------------------------------------------------------


@given(stamp_parts)
def test_format_then_parse_gives_back_the_parts(parts):
    stamp = format_stamp(*parts)
    assert re.match(HLC_PATTERN, stamp)
    assert parse_stamp(stamp) == Stamp(*parts)
    assert format_stamp(*parse_stamp(stamp)) == stamp


@given(st.text(alphabet="0123456789abcdefABCDEFx+_ -n\u0661", max_size=24))
@example("+000000000001-0000-n")
@example("0000000000001-0x12-n")
@example("1_00000000000-0000-n")
@example("0000000000001- fff-n")
@example("\u0661" * 13 + "-0000-n")
def test_a_string_that_parses_is_a_well_formed_stamp(text):
    """parse_stamp accepts exactly the wire form: whatever it accepts formats back to itself,
    so a lenient parse can never make string order and parsed order disagree."""
    try:
        parts = parse_stamp(text)
    except ValueError:
        return
    assert re.match(HLC_PATTERN, text)
    assert format_stamp(*parts) == text


@pytest.mark.parametrize(
    "text", ["", "0000000000001", "0000000000001-0000", "0000000000001-0000-", "1-0000-n", "0000000000001-00000-n"]
)
def test_malformed_stamps_raise_value_error(text):
    with pytest.raises(ValueError):
        parse_stamp(text)


@given(stamp_parts, stamp_parts)
def test_stamps_sort_as_strings_in_causal_order(a, b):
    """String order is (wall, counter, node) order; the node id breaks ties (the lww rule)."""
    sa, sb = format_stamp(*a), format_stamp(*b)
    assert (sa < sb) == (a < b)
    assert (sa == sb) == (a == b)


# ---- monotonic and causal -----------------------------------------------------------------

steps = st.one_of(
    st.tuples(st.just("now")),
    st.tuples(st.just("tick"), st.integers(min_value=-YEAR_MS, max_value=YEAR_MS)),
    st.tuples(st.just("tick"), st.integers(min_value=-3, max_value=3)),
    st.tuples(st.just("observe"), st.integers(min_value=-10_000, max_value=10_000), counters, nodes),
    st.tuples(st.just("observe_top"), nodes),  # a remote stamp at our wall with the counter at its top
    st.tuples(st.just("burst"), st.integers(min_value=1, max_value=300)),  # wall standing still
)


@settings(max_examples=300)
@given(st.lists(steps, max_size=40), nodes)
def test_every_stamp_is_later_than_everything_issued_or_observed_before(script, node):
    wall = FakeWall()
    clock = HybridClock(node, wall=wall)
    latest = ""  # the greatest stamp issued or observed so far
    for step in script:
        if step[0] == "now":
            stamp = clock.now()
            assert re.match(HLC_PATTERN, stamp)
            assert stamp > latest
            latest = stamp
        elif step[0] == "tick":
            wall.ms = max(1_000_000_000_000, wall.ms + step[1])
        elif step[0] == "observe":
            remote = format_stamp(max(1_000_000_000_000, wall.ms + step[1]), step[2], step[3])
            clock.observe(remote)
            assert clock.now() > remote  # causal: after observe(s), now() > s
            latest = max(latest, remote, clock.last())
        elif step[0] == "observe_top":
            remote = format_stamp(max(wall.ms, key(clock.last())[0]), MAX_COUNTER, step[1])
            clock.observe(remote)
            stamp = clock.now()
            assert stamp > remote
            latest = max(latest, remote, stamp)
        elif step[0] == "burst":
            for _ in range(step[1]):
                stamp = clock.now()
                assert stamp > latest
                latest = stamp
        assert re.match(HLC_PATTERN, clock.last())
        assert clock.last() >= latest


def test_the_counter_overflows_into_the_next_millisecond():
    wall = FakeWall()
    clock = HybridClock("n", wall=wall)
    stamps = [clock.now() for _ in range(MAX_COUNTER + 3)]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert key(stamps[MAX_COUNTER]) == (NOW_MS, MAX_COUNTER, "n")
    assert key(stamps[MAX_COUNTER + 1]) == (NOW_MS + 1, 0, "n")
    assert key(stamps[MAX_COUNTER + 2]) == (NOW_MS + 1, 1, "n")
    wall.ms = NOW_MS + 1  # the wall catches up with the borrowed millisecond: still no repeat
    assert clock.now() > stamps[-1]


@given(st.integers(min_value=-5, max_value=5), nodes, nodes)
def test_observing_a_stamp_with_the_counter_at_its_top_moves_to_the_next_millisecond(delta, local, remote_node):
    wall = FakeWall()
    clock = HybridClock(local, wall=wall)
    remote = format_stamp(NOW_MS + delta, MAX_COUNTER, remote_node)
    clock.observe(remote)
    assert re.match(HLC_PATTERN, clock.last())
    assert clock.last() > remote
    stamp = clock.now()
    assert stamp > remote
    assert re.match(HLC_PATTERN, stamp)


@given(st.integers(min_value=1, max_value=YEAR_MS), nodes)
def test_a_stamp_from_the_future_is_passed_and_the_clock_stays_there(ahead, node):
    wall = FakeWall()
    clock = HybridClock("local", wall=wall)
    remote = format_stamp(NOW_MS + ahead, 7, node)
    clock.observe(remote)
    first = clock.now()
    assert first > remote
    wall.ms += 1  # the wall moves but is still behind what was observed
    assert clock.now() > first


@given(st.integers(min_value=0, max_value=YEAR_MS))
def test_a_wall_clock_jumping_backwards_never_makes_a_stamp_go_backwards(back):
    wall = FakeWall()
    clock = HybridClock("n", wall=wall)
    before = clock.now()
    wall.ms -= back
    after = clock.now()
    assert after > before
    assert key(after)[0] == NOW_MS  # it keeps the logical time, counting on


def test_the_wall_moving_forward_resets_the_counter():
    wall = FakeWall()
    clock = HybridClock("n", wall=wall)
    clock.now(), clock.now()
    wall.ms += 10
    assert key(clock.now()) == (NOW_MS + 10, 0, "n")


# ---- restart ---------------------------------------------------------------------------------


@given(st.lists(steps, max_size=20), st.integers(min_value=-YEAR_MS, max_value=YEAR_MS), nodes)
def test_a_restart_from_the_persisted_last_stamp_never_goes_backwards(script, jump, node):
    wall = FakeWall()
    clock = HybridClock(node, wall=wall)
    issued = [clock.now()]
    for step in script:
        if step[0] == "now":
            issued.append(clock.now())
        elif step[0] == "tick":
            wall.ms = max(1_000_000_000_000, wall.ms + step[1])
        elif step[0] == "observe":
            remote = format_stamp(max(1_000_000_000_000, wall.ms + step[1]), step[2], step[3])
            clock.observe(remote)
            issued.append(remote)
    persisted = clock.last()
    wall.ms = max(1_000_000_000_000, wall.ms + jump)  # the device was off for a while, or its clock reset
    restarted = HybridClock(node, wall=wall, last=persisted)
    assert restarted.now() > max(issued)
    assert restarted.last() >= persisted


# ---- skew: the server's time corrects a wall clock far off ---------------------------------

skews = st.one_of(
    st.integers(min_value=-2 * YEAR_MS, max_value=2 * YEAR_MS),
    st.integers(min_value=-MAX_CLOCK_SKEW_MS - 2, max_value=-MAX_CLOCK_SKEW_MS + 2),
    st.integers(min_value=MAX_CLOCK_SKEW_MS - 2, max_value=MAX_CLOCK_SKEW_MS + 2),
)


@given(skews)
@example(MAX_CLOCK_SKEW_MS)
@example(MAX_CLOCK_SKEW_MS + 1)
@example(-YEAR_MS)
def test_a_wall_clock_off_by_more_than_five_minutes_stamps_from_server_time(skew):
    """``skew`` is how far the device's wall runs ahead of the server (negative: behind)."""
    server_ms = NOW_MS
    wall = FakeWall(server_ms + skew)
    clock = HybridClock("device", wall=wall)
    changed = clock.observe_server_time(server_ms)
    stamp_wall = key(clock.now())[0]
    if abs(skew) > MAX_CLOCK_SKEW_MS:
        assert changed
        assert clock.physical_ms() == server_ms
        assert stamp_wall == server_ms
        wall.ms += 1000  # later edits follow the wall, corrected
        assert key(clock.now())[0] == server_ms + 1000
    else:
        assert not changed
        assert clock.offset_ms == 0
        assert clock.physical_ms() == wall.ms
        # No correction, but the clock still advances past the server's time (section 2).
        assert stamp_wall == max(wall.ms, server_ms)


@given(
    st.integers(min_value=MAX_CLOCK_SKEW_MS + 1, max_value=2 * YEAR_MS),
    st.integers(min_value=0, max_value=MAX_CLOCK_SKEW_MS),
)
def test_a_correction_is_dropped_once_the_wall_clock_is_fixed(skew, residual):
    wall = FakeWall(NOW_MS - skew)
    clock = HybridClock("device", wall=wall)
    assert clock.observe_server_time(NOW_MS)
    wall.ms = NOW_MS - residual  # the user set the device's clock right
    assert clock.observe_server_time(NOW_MS)
    assert clock.offset_ms == 0
    assert clock.physical_ms() == wall.ms


@given(st.integers(min_value=MAX_CLOCK_SKEW_MS + 1, max_value=2 * YEAR_MS))
def test_a_correction_never_makes_a_stamp_go_backwards(ahead):
    """A device a year ahead has already stamped edits; once corrected its new stamps cannot
    go below those (the server re-stamps them instead), but they never go backwards."""
    wall = FakeWall(NOW_MS + ahead)
    clock = HybridClock("device", wall=wall)
    before = clock.now()
    clock.observe_server_time(NOW_MS)
    assert clock.now() > before


def test_the_server_time_is_observed_within_the_allowed_skew():
    """A device 4 minutes behind the server stamps its next edit after the server's time."""
    wall = FakeWall(NOW_MS - 4 * 60 * 1000)
    clock = HybridClock("device", wall=wall)
    assert clock.observe_server_time(NOW_MS) is False
    assert clock.now() > format_stamp(NOW_MS, 0, "server")


# ---- is_too_far_ahead -------------------------------------------------------------------


@given(st.integers(min_value=-2 * YEAR_MS, max_value=2 * YEAR_MS), counters, nodes)
@example(MAX_CLOCK_SKEW_MS, 0, "n")
@example(MAX_CLOCK_SKEW_MS + 1, 0, "n")
def test_is_too_far_ahead_means_more_than_five_minutes_ahead(ahead, counter, node):
    stamp = format_stamp(NOW_MS + ahead, counter, node)
    assert is_too_far_ahead(stamp, NOW_MS) == (ahead > MAX_CLOCK_SKEW_MS)


def test_a_year_ahead_is_too_far_and_now_is_not():
    assert is_too_far_ahead(format_stamp(NOW_MS + YEAR_MS, 0, "d"), NOW_MS)
    assert not is_too_far_ahead(format_stamp(NOW_MS, 0, "d"), NOW_MS)
    assert not is_too_far_ahead(format_stamp(NOW_MS - YEAR_MS, 0, "d"), NOW_MS)


def test_stamps_from_several_threads_are_all_distinct():
    """The engine stamps edits from the UI thread while the sync thread observes pulled stamps."""
    import threading

    wall = FakeWall()
    clock = HybridClock("n", wall=wall)
    issued: list[list[str]] = [[] for _ in range(6)]

    def work(i: int) -> None:
        for k in range(3000):
            if i % 2 and k % 7 == 0:
                clock.observe(format_stamp(wall.ms, k % MAX_COUNTER, "remote"))
                clock.observe_server_time(wall.ms)
            issued[i].append(clock.now())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [s for per_thread in issued for s in per_thread]
    assert len(set(everything)) == len(everything)
    assert all(per_thread == sorted(per_thread) for per_thread in issued)


@pytest.mark.parametrize("node", ["", "has space", "x" * 65, "ünïcode", "a\n"])
def test_a_node_id_that_would_make_unparseable_stamps_is_refused(node):
    with pytest.raises(ValueError):
        HybridClock(node)
