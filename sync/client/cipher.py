"""Authenticated encryption of everything the local store writes to disk.

The store never holds a key; it takes a ``Cipher``. The app derives or unwraps the data key
(client/, from the user's PIN) and hands over an ``AesGcmCipher``; tests and benches may use
``PlainCipher``.
"""

from __future__ import annotations

import os
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sync.errors import StorageError

NONCE_BYTES = 12


@runtime_checkable
class Cipher(Protocol):
    """Seals and opens byte strings, binding each to an associated label (``aad``).

    The ``aad`` ties a ciphertext to where it is stored (a record's key, a meta key), so a
    ciphertext copied into another row does not open there.
    """

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        """Return the sealed form of ``plaintext``."""
        ...

    def decrypt(self, ciphertext: bytes, aad: bytes) -> bytes:
        """Return the plaintext. Raises StorageError when the data or the key is wrong."""
        ...


class AesGcmCipher:
    """AES-GCM with a random 12-byte nonce prepended to each ciphertext.

    Args:
        key: 16, 24 or 32 bytes.
    """

    def __init__(self, key: bytes):
        if len(key) not in (16, 24, 32):
            raise ValueError("an AES key is 16, 24 or 32 bytes")
        self._aead = AESGCM(key)

    @staticmethod
    def generate_key() -> bytes:
        """A new random 256-bit data key."""
        return AESGCM.generate_key(bit_length=256)

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        """Seal ``plaintext``; the result is ``nonce || ciphertext || tag``."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, ciphertext: bytes, aad: bytes) -> bytes:
        """Open a sealed value. Raises StorageError on a wrong key or tampered data."""
        try:
            return self._aead.decrypt(ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:], aad)
        except (InvalidTag, ValueError) as exc:
            raise StorageError("cannot decrypt local data: wrong key or damaged store") from exc


class PlainCipher:
    """No encryption at all: for tests and benchmarks only, never on a device."""

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        """Return ``plaintext`` unchanged."""
        return bytes(plaintext)

    def decrypt(self, ciphertext: bytes, aad: bytes) -> bytes:
        """Return ``ciphertext`` unchanged."""
        return bytes(ciphertext)
