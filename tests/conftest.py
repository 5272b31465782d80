"""Fixtures every test area shares.

``backend`` runs a test on SQLite and on PostgreSQL (a fresh database each time); ``settings``
is a data folder plus that database; ``api`` is Litestar's TestClient on the real app;
``live_server`` starts ``fieldloop serve`` in a subprocess; ``enrolled`` makes a field user with
a grid and an enrolled WireDevice.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from server.accounts import service as accounts
from server.app import create_app
from server.devices import service as devices
from server.settings import Settings
from tests.support.databases import PostgresDatabases
from tests.support.device import WireDevice
from tests.support.servers import LiveServer

BACKENDS = [b for b in os.environ.get("FIELDLOOP_TEST_BACKENDS", "sqlite,postgres").split(",") if b]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    databases = PostgresDatabases()
    databases.start()
    yield databases
    databases.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """A database URL (None: SQLite in the data folder), once per backend."""
    if request.param == "sqlite":
        yield None
        return
    databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
    url = databases.new()
    yield url
    databases.drop(url)


@pytest.fixture
def postgres_url(postgres_databases: PostgresDatabases) -> Iterator[str]:
    url = postgres_databases.new()
    yield url
    postgres_databases.drop(url)


@pytest.fixture
def settings(tmp_path: Path, backend: str | None) -> Settings:
    return Settings(data_dir=tmp_path / "data", db=backend)


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    """The real app in-process, with its lifespan run (migrations, secret, background tasks)."""
    with TestClient(create_app(settings), timeout=30) as client:
        yield client


def run(client: TestClient, fn, *args, **kwargs):  # noqa: ANN001, ANN201
    """Call an async service function on the app's own event loop."""
    return client.blocking_portal.call(lambda: fn(*args, **kwargs))


class FieldSetup:
    """Grids, users and devices made through the services, for a test to act on."""

    def __init__(self, client: TestClient):
        self.client = client
        self.sessionmaker = client.app.state.sessionmaker

    def grid(self, name: str, community: str = "所前社区") -> str:
        return run(self.client, accounts.add_grid, self.sessionmaker, name, community).id

    def user(self, name: str, grids: list[str], role: str = "grid_worker") -> str:
        return run(self.client, accounts.create_user, self.sessionmaker, name, role, grids).id

    def code(self, user: str) -> str:
        return run(self.client, devices.create_enrollment_code, self.sessionmaker, user, 3600)

    def device(self, user: str, *, msgpack: bool = False) -> WireDevice:
        device = WireDevice(self.client, msgpack=msgpack)
        device.enroll(self.code(user))
        device.sign_in()
        return device

    def set_grids(self, user: str, grids: list[str]) -> None:
        run(self.client, accounts.set_grids, self.sessionmaker, user, grids)


@pytest.fixture
def field(api: TestClient) -> FieldSetup:
    return FieldSetup(api)


@pytest.fixture
def live_server(tmp_path: Path, backend: str | None) -> Iterator[LiveServer]:
    """A started ``fieldloop serve`` subprocess; stop(), kill() and start() it at will."""
    server = LiveServer(tmp_path / "live-data", backend)
    server.start()
    yield server
    server.kill()
