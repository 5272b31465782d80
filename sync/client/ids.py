"""Time-ordered UUIDs (RFC 9562 version 7) for new record ids and mutation ids.

Python 3.11 has no ``uuid.uuid7``. Time order keeps the server's indexes compact and lets a
device's own ids sort in creation order.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_seq = 0


def new_id() -> str:
    """A new lowercase UUIDv7 string, strictly increasing within this process."""
    global _last_ms, _seq
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            # Same (or an earlier) millisecond: count up in the 12-bit rand_a field instead.
            _seq += 1
            if _seq > 0xFFF:
                _last_ms, _seq = _last_ms + 1, 0
            ms = _last_ms
        else:
            _last_ms, _seq = ms, 0
        rand_a = _seq
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))
