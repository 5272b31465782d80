"""The device's side of sync: an encrypted local store, its outbox, the HTTP transport, the engine.

Framework-free (no Kivy, no Litestar) so the app and the tests drive the same code::

    store = LocalStore(path, AesGcmCipher(data_key))
    identity = DeviceIdentity(store)
    engine = SyncEngine(store, HttpTransport(server_url), identity)
    engine.enroll(code, label="phone 3", app_version="1.0")
    household_id = engine.create("household", {"grid_id": grid, "address": "3-2-401"})
    report = engine.sync_with_retry()

Errors are those of ``sync.errors``.
"""

from sync.client.cipher import AesGcmCipher, Cipher, PlainCipher
from sync.client.engine import SyncEngine, SyncProgress, SyncReport
from sync.client.identity import DeviceIdentity
from sync.client.ids import new_id
from sync.client.store import ConflictEntry, LocalRecord, LocalStore, OutboxEntry, RejectedEdit
from sync.client.transport import HttpTransport, Transport

__all__ = [
    "AesGcmCipher",
    "Cipher",
    "ConflictEntry",
    "DeviceIdentity",
    "HttpTransport",
    "LocalRecord",
    "LocalStore",
    "OutboxEntry",
    "PlainCipher",
    "RejectedEdit",
    "SyncEngine",
    "SyncProgress",
    "SyncReport",
    "Transport",
    "new_id",
]
