"""Whether a device's raw Ed25519 public key is one a signature can bind to.

OpenSSL (through ``cryptography``) accepts any 32 bytes as a public key and does not refuse keys
of small order. For such a key (the identity point ``01 00 .. 00`` among them) a signature can be
made without any private key: with the identity as public key, ``R`` = identity and ``S`` = 0
verifies for every message. A device enrolled with one could be signed in as by anyone who knows
its id (G6). libsodium's check refuses those, encodings that are not canonical, and points outside
the curve's prime-order subgroup, where every key a real key pair makes lies.
"""

from __future__ import annotations

from nacl.bindings import crypto_core_ed25519_is_valid_point


def usable_public_key(raw: bytes) -> bool:
    """True for the canonical encoding of a point of the prime-order subgroup, not of small order."""
    return len(raw) == 32 and bool(crypto_core_ed25519_is_valid_point(raw))
