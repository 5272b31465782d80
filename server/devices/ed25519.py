"""Whether a device's raw Ed25519 public key is one a signature can bind to.

OpenSSL (through ``cryptography``) accepts any 32 bytes as a public key and does not refuse keys
of small order. For such a key (the identity point ``01 00 .. 00`` among them) a signature can be
made without any private key: with the identity as public key, ``R`` = identity and ``S`` = 0
verifies for every message. A device enrolled with one could be signed in as by anyone who knows
its id (G6). The eight points of order dividing 8, and encodings that are not canonical, are
therefore refused, as libsodium does.
"""

from __future__ import annotations

_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
_IDENTITY = (0, 1)


def _decode(raw: bytes) -> tuple[int, int] | None:
    """The point (x, y) a canonical 32-byte encoding names (RFC 8032, 5.1.3), else None."""
    encoded = int.from_bytes(raw, "little")
    sign, y = encoded >> 255, encoded & ((1 << 255) - 1)
    if y >= _P:
        return None
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x2 = u * pow(v, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = _P - x
    return x, y


def _add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = a, b
    t = _D * x1 * x2 * y1 * y2 % _P
    return ((x1 * y2 + y1 * x2) * pow(1 + t, _P - 2, _P) % _P,
            (y1 * y2 + x1 * x2) * pow(1 - t, _P - 2, _P) % _P)


def usable_public_key(raw: bytes) -> bool:
    """True for a canonical encoding of a curve point whose order is not a divisor of 8."""
    if len(raw) != 32:
        return False
    point = _decode(raw)
    if point is None:
        return False
    for _ in range(3):
        point = _add(point, point)
    return point != _IDENTITY
