"""Fixtures for the device engine's tests: stores, enrolled devices on a fake server."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from sync.client import AesGcmCipher, DeviceIdentity, LocalStore, SyncEngine
from sync.client.cipher import Cipher
from tests.sync_client.fake_server import FakeServer


@dataclasses.dataclass
class Device:
    """One phone: its store, identity and engine."""

    name: str
    store: LocalStore
    identity: DeviceIdentity
    engine: SyncEngine
    key: bytes
    path: Path


@pytest.fixture
def key() -> bytes:
    return AesGcmCipher.generate_key()


@pytest.fixture
def store(tmp_path: Path, key: bytes) -> LocalStore:
    s = LocalStore(tmp_path / "store.db", AesGcmCipher(key))
    yield s
    s.close()


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def make_device(tmp_path: Path, server: FakeServer) -> Callable[..., Device]:
    """Make an enrolled device on the fake server; ``enroll=False`` leaves it unenrolled."""
    made: list[Device] = []

    def make(name: str = "phone", *, enroll: bool = True, cipher: Cipher | None = None, **engine_args) -> Device:
        key = AesGcmCipher.generate_key()
        path = tmp_path / name / "store.db"
        store = LocalStore(path, cipher or AesGcmCipher(key))
        identity = DeviceIdentity(store)
        engine = SyncEngine(store, server.connect(), identity, sleep=lambda _s: None, **engine_args)
        if enroll:
            engine.enroll(server.new_code(), label=name, app_version="test")
        device = Device(name, store, identity, engine, key, path)
        made.append(device)
        return device

    yield make
    for device in made:
        device.store.close()
