"""Every error the device's sync engine raises; the UI catches these and nothing lower.

The tree::

    SyncError                  base of everything below
    ├── TransportError         retryable: network down, timeout, 5xx, 429, an unreadable reply
    ├── ProtocolError          the server refused the request and a retry will not help
    │   │                      (4xx other than the ones below); carries code, message, detail
    │   └── BlobRejected       an uploaded blob did not match its hash (422), or it is refused
    ├── AuthError              401 anywhere, 403 on enroll / challenge / token: the device must
    │                          enroll again (a spent or wrong code, an unknown device, a bad key)
    ├── DeviceRevoked          410: an administrator revoked this device; ``wipe`` says whether
    │                          the local store must be erased (lost or stolen) or only retired
    ├── UpgradeRequired        426: the server no longer speaks this protocol; ``min_protocol``
    ├── InvalidEdit            a local edit that the store refuses before it reaches the outbox
    │                          (unknown entity, a read-only field, a field that fails validation)
    ├── NotEnrolled            an operation needs an enrolled device and this one is not
    └── StorageError           the local store failed (disk full, a corrupt file, a wrong key)

Lower-layer errors (urllib3, sqlite3, cryptography, msgspec) are translated where they happen,
at the transport and the store, and chained as ``__cause__`` for the logs.
"""

from __future__ import annotations

from typing import Any


class SyncError(Exception):
    """Base of every error of the device's sync engine.

    Attributes:
        retryable: whether the same call may succeed if simply tried again later.
    """

    retryable: bool = False


class TransportError(SyncError):
    """The server could not be reached or answered "try later" (network, timeout, 5xx, 429).

    Args:
        message: what went wrong, for the logs.
        status: the HTTP status when there was a reply, else None.
        retry_after: seconds the server asked us to wait (``Retry-After``), if it said.
    """

    retryable = True

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class ProtocolError(SyncError):
    """The server refused a request with a 4xx that a retry cannot fix.

    Args:
        code: the protocol's error code (``malformed``, ``invalid``, ``too_large``, ...).
        message: the server's message.
        detail: the server's structured detail, if any.
        status: the HTTP status.
    """

    def __init__(
        self, code: str, message: str = "", *, detail: dict[str, Any] | None = None, status: int | None = None
    ):
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.detail = detail or {}
        self.status = status


class BlobRejected(ProtocolError):
    """A blob upload or download was refused: its bytes do not match its hash, or it is not ours."""


class AuthError(SyncError):
    """The server does not accept this device's credentials (401, or 403 on enroll and tokens).

    Args:
        code: the protocol's error code (``unauthenticated`` or ``forbidden``).
        message: the server's message.
        status: the HTTP status (401 or 403).
    """

    def __init__(self, code: str, message: str = "", *, status: int | None = None):
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.status = status


class DeviceRevoked(SyncError):
    """An administrator revoked this device (410).

    Args:
        wipe: True when the device was reported lost or stolen and its store must be erased;
            False when it was only retired (keep the data until the user has seen the notice).
        message: the server's message.
    """

    def __init__(self, wipe: bool, message: str = ""):
        super().__init__(message or ("device revoked; local data erased" if wipe else "device retired"))
        self.wipe = wipe


class UpgradeRequired(SyncError):
    """The server needs a newer protocol than this app speaks (426).

    Args:
        min_protocol: the lowest protocol version the server still accepts.
    """

    def __init__(self, min_protocol: int, message: str = ""):
        super().__init__(message or f"the server needs protocol {min_protocol} or later; update the app")
        self.min_protocol = min_protocol


class InvalidEdit(SyncError, ValueError):
    """A local edit refused before it reached the outbox; the message names the field."""


class NotEnrolled(SyncError):
    """The device has no identity on a server yet: enroll first."""


class StorageError(SyncError):
    """The local store failed: the disk is full, a file is corrupt, or the key is wrong."""
