"""The hybrid logical clock (protocol section 2).

A stamp is ``<wall ms, 13 digits>-<counter, 4 hex digits>-<node id>``; stamps compare as
strings in causal order, and two stamps of the same wall time and counter are ordered by the
node id, which is the protocol's tie-break for ``lww``.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Callable, NamedTuple

from shared_schema.messages import MAX_CLOCK_SKEW_MS
from shared_schema.types import HLC_PATTERN

MAX_COUNTER = 0xFFFF
_STAMP = re.compile(HLC_PATTERN)
_NODE = re.compile(r"\A[0-9A-Za-z_.:-]{1,64}\Z")  # the node part of HLC_PATTERN


class Stamp(NamedTuple):
    wall_ms: int
    counter: int
    node: str


def format_stamp(wall_ms: int, counter: int, node: str) -> str:
    return f"{wall_ms:013d}-{counter:04x}-{node}"


def parse_stamp(stamp: str) -> Stamp:
    """Split a stamp into its parts. Raises ValueError on a malformed stamp.

    Only the exact wire form is accepted (``int`` alone would take ``+``, ``_``, spaces,
    ``0x`` and non-ASCII digits), so a stamp that parses always formats back to itself and
    its string order is its causal order.
    """
    if not isinstance(stamp, str) or not _STAMP.match(stamp):
        raise ValueError(f"not an hlc stamp: {stamp!r}")
    wall, counter, node = stamp.split("-", 2)
    return Stamp(int(wall), int(counter, 16), node)


def wall_now_ms() -> int:
    return time.time_ns() // 1_000_000


class HybridClock:
    """A node's hybrid logical clock: every stamp it issues is later than every stamp it has seen.

    Args:
        node: this node's id (a device id, or a server process name); it ends every stamp.
            1 to 64 of ``[0-9A-Za-z_.:-]``, as the wire format allows; anything else raises
            ValueError.
        wall: the physical clock in ms; injected so tests can run it backwards and forwards.
        offset_ms: a correction added to ``wall`` (set from the server's time, see
            ``observe_server_time``).
    """

    def __init__(self, node: str, wall: Callable[[], int] = wall_now_ms, offset_ms: int = 0, last: str | None = None):
        if not isinstance(node, str) or not _NODE.match(node):
            # Stamps ending in such a node would not parse (observe, last) and fail wire validation.
            raise ValueError(f"not a valid hlc node id: {node!r}")
        self.node = node
        self._wall = wall
        self.offset_ms = offset_ms
        self._lock = threading.Lock()
        self._l, self._c = 0, 0
        if last:
            self.observe(last)

    def physical_ms(self) -> int:
        """The corrected wall time: what this node believes the time is."""
        return self._wall() + self.offset_ms

    def now(self) -> str:
        """A new stamp for a local event (an edit, a send)."""
        with self._lock:
            pt = self.physical_ms()
            if pt > self._l:
                self._l, self._c = pt, 0
            else:
                self._advance_counter()
            return format_stamp(self._l, self._c, self.node)

    def observe(self, stamp: str) -> None:
        """Advance past a stamp received from elsewhere (a pulled record, a merge result)."""
        remote = parse_stamp(stamp)
        with self._lock:
            pt = self.physical_ms()
            top = max(self._l, remote.wall_ms, pt)
            if top == self._l and top == remote.wall_ms:
                self._c = max(self._c, remote.counter)
                self._advance_counter()
            elif top == self._l:
                self._advance_counter()
            elif top == remote.wall_ms:
                self._l, self._c = top, remote.counter
                self._advance_counter()
            else:
                self._l, self._c = top, 0

    def observe_server_time(self, server_ms: int) -> bool:
        """Take in a reply's ``server_time``: advance past it, and correct this node's wall clock
        when it is off the server's by more than the allowed skew.

        The protocol (section 2) has a device advance its clock from every ``server_time``, so
        the server's time is observed whether or not a correction is needed.

        Returns True when the correction changed.
        """
        with self._lock:
            skew = server_ms - self._wall()
            wanted = skew if abs(skew) > MAX_CLOCK_SKEW_MS else 0
            changed = wanted != self.offset_ms
            self.offset_ms = wanted
        self.observe(format_stamp(server_ms, 0, self.node))
        return changed

    def last(self) -> str:
        """The latest stamp issued or seen (persist it so a restart never goes backwards)."""
        with self._lock:
            return format_stamp(self._l, self._c, self.node)

    def _advance_counter(self) -> None:
        # The counter has 4 hex digits: past its top, borrow a millisecond instead.
        if self._c >= MAX_COUNTER:
            self._l, self._c = self._l + 1, 0
        else:
            self._c += 1


def is_too_far_ahead(stamp: str, reference_ms: int) -> bool:
    """Whether a stamp runs more than the allowed skew ahead of ``reference_ms``."""
    return parse_stamp(stamp).wall_ms > reference_ms + MAX_CLOCK_SKEW_MS
