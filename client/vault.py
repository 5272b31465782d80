"""The device's data key, kept wrapped under a key derived from the user's PIN.

The data key (32 random bytes) encrypts every record and photo the app stores. On disk it
exists only wrapped with AES-GCM under ``scrypt(PIN, salt)``, in one small JSON file. The
count of wrong PINs and the lock-out time live in the same file: deleting the file to reset
the counter also destroys the only copy of the wrapped key, so it gains an attacker nothing.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from pathlib import Path
from typing import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

DATA_KEY_BYTES = 32
SALT_BYTES = 16
NONCE_BYTES = 12
# scrypt cost: about 65 ms on this machine and well under a second on a cheap phone.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
FREE_ATTEMPTS = 5
FIRST_LOCK_SECONDS = 30.0
MAX_LOCK_SECONDS = 3600.0
MIN_PIN_DIGITS, MAX_PIN_DIGITS = 4, 12
# Binds the wrapped key to its purpose, so the ciphertext cannot be replayed as anything else.
_WRAP_AAD = b"fieldloop-vault-v1"


class VaultError(Exception):
    """Base of the vault's errors."""


class WrongPin(VaultError):
    """The PIN did not unwrap the key. ``attempts_left`` before the app locks (0: it is now locked)."""

    def __init__(self, attempts_left: int, locked_for: float = 0.0):
        super().__init__(f"wrong PIN; {attempts_left} attempts left")
        self.attempts_left = attempts_left
        self.locked_for = locked_for


class VaultLocked(VaultError):
    """Too many wrong PINs: no attempt is accepted for ``seconds`` more."""

    def __init__(self, seconds: float):
        super().__init__(f"locked for {seconds:.0f} s")
        self.seconds = seconds


class VaultDamaged(VaultError):
    """The vault file is not one this app wrote (truncated, edited): the data key cannot be had."""


class PinRejected(VaultError):
    """A new PIN that does not fit the rules (digits only, 4 to 12 of them)."""


def check_new_pin(pin: str) -> None:
    """Raise PinRejected unless ``pin`` is 4 to 12 digits."""
    if not (pin.isascii() and pin.isdigit() and MIN_PIN_DIGITS <= len(pin) <= MAX_PIN_DIGITS):
        raise PinRejected(pin)


def lock_seconds(failures: int) -> float:
    """How long the app stays locked after ``failures`` consecutive wrong PINs.

    The first ``FREE_ATTEMPTS - 1`` cost nothing; the fifth locks for 30 s and every further
    wrong PIN doubles the wait, up to an hour.
    """
    if failures < FREE_ATTEMPTS:
        return 0.0
    return min(FIRST_LOCK_SECONDS * 2 ** (failures - FREE_ATTEMPTS), MAX_LOCK_SECONDS)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


class Vault:
    """The wrapped data key and the wrong-PIN counter, in one file.

    Args:
        path: the vault file (created by ``create``).
        clock: wall time in seconds; injected so tests can move time forward.
        scrypt_n: scrypt's cost for a newly created vault (an existing file keeps its own).
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time, scrypt_n: int = SCRYPT_N):
        self.path = Path(path)
        self._clock = clock
        self._scrypt_n = scrypt_n

    def exists(self) -> bool:
        return self.path.exists()

    def create(self, pin: str, data_key: bytes | None = None) -> bytes:
        """Wrap a data key (a new random one unless given) under ``pin``; returns the data key."""
        check_new_pin(pin)
        key = data_key if data_key is not None else secrets.token_bytes(DATA_KEY_BYTES)
        if len(key) != DATA_KEY_BYTES:
            raise ValueError("a data key is 32 bytes")
        self._write(self._wrap(pin, key, self._scrypt_n) | {"failures": 0, "locked_until": 0.0})
        return key

    def unlock(self, pin: str) -> bytes:
        """The data key, if ``pin`` is right.

        Raises:
            VaultLocked: too many wrong PINs lately; the PIN was not even tried.
            WrongPin: the PIN is wrong (the failure is recorded on disk before this returns).
        """
        state = self._read()
        remaining = self._remaining(state)
        if remaining > 0:
            raise VaultLocked(remaining)
        try:
            key = self._unwrap(pin, state)
        except (KeyError, TypeError, ValueError, MemoryError) as exc:  # bad base64, scrypt parameters
            raise VaultDamaged(str(exc)) from None
        except InvalidTag:
            failures = state["failures"] + 1
            locked_for = lock_seconds(failures)
            state.update(failures=failures, locked_until=self._clock() + locked_for if locked_for else 0.0)
            self._write(state)
            raise WrongPin(max(FREE_ATTEMPTS - failures, 0), locked_for) from None
        if state["failures"] or state["locked_until"]:
            state.update(failures=0, locked_until=0.0)
            self._write(state)
        return key

    def open_cipher(self, pin: str):
        """The store's cipher (``sync.client.AesGcmCipher``) under the unwrapped data key; raises as ``unlock``."""
        from sync.client.cipher import AesGcmCipher

        return AesGcmCipher(self.unlock(pin))

    def change_pin(self, old_pin: str, new_pin: str) -> None:
        """Re-wrap the same data key under a new PIN (the records need no re-encryption)."""
        check_new_pin(new_pin)
        key = self.unlock(old_pin)
        self.create(new_pin, key)

    def locked_for(self) -> float:
        """Seconds until a PIN may be tried again (0 when it may be tried now)."""
        if not self.exists():
            return 0.0
        return max(self._remaining(self._read()), 0.0)

    def _remaining(self, state: dict) -> float:
        """Seconds the lock has left, never more than the lock itself.

        A phone whose clock ran years ahead when it locked would otherwise stay locked for years
        once the clock is put right: such a lock starts again from now, and that is written down.
        """
        now, longest = self._clock(), lock_seconds(state["failures"])
        if state["locked_until"] - now > longest:
            state["locked_until"] = now + longest
            self._write(state)
        return state["locked_until"] - now

    def failures(self) -> int:
        return self._read()["failures"]

    def destroy(self) -> None:
        """Forget the wrapped key: without it the encrypted data can never be read again.

        A write cut short by a crash leaves its temporary file, a copy of the key: it goes too.
        """
        self.path.unlink(missing_ok=True)
        self._tmp_path().unlink(missing_ok=True)

    # ---- file format ---------------------------------------------------------------

    @staticmethod
    def _derive(pin: str, salt: bytes, n: int, r: int, p: int) -> bytes:
        return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(pin.encode("utf-8"))

    def _wrap(self, pin: str, key: bytes, n: int) -> dict:
        salt, nonce = secrets.token_bytes(SALT_BYTES), secrets.token_bytes(NONCE_BYTES)
        kek = self._derive(pin, salt, n, SCRYPT_R, SCRYPT_P)
        wrapped = AESGCM(kek).encrypt(nonce, key, _WRAP_AAD)
        return {
            "version": 1,
            "kdf": {"name": "scrypt", "salt": _b64(salt), "n": n, "r": SCRYPT_R, "p": SCRYPT_P},
            "nonce": _b64(nonce),
            "wrapped_key": _b64(wrapped),
        }

    def _unwrap(self, pin: str, state: dict) -> bytes:
        kdf = state["kdf"]
        kek = self._derive(pin, _unb64(kdf["salt"]), kdf["n"], kdf["r"], kdf["p"])
        return AESGCM(kek).decrypt(_unb64(state["nonce"]), _unb64(state["wrapped_key"]), _WRAP_AAD)

    def _tmp_path(self) -> Path:
        return self.path.with_suffix(".tmp")

    def _read(self) -> dict:
        try:
            state = json.loads(self.path.read_text(encoding="utf-8"))
            if not (isinstance(state, dict) and isinstance(state.get("failures"), int)
                    and isinstance(state.get("locked_until"), (int, float))):
                raise ValueError("not a vault")
        except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise VaultDamaged(str(exc)) from None
        return state

    def _write(self, state: dict) -> None:
        # Write then rename, and fsync: a crash never leaves half a key file (that would lose every record).
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp_path()
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump(state, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
