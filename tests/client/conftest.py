"""Fixtures for the app's tests: a real server, an enrolled app session, and one offscreen Kivy window.

Kivy reads its environment when first imported, so the environment is set here, before any
test module imports it (see ../shared/KIVY_TESTING.md): SDL's offscreen driver renders for
real with Mesa, no X server needed.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "offscreen" if not os.environ.get("DISPLAY") else "x11")
os.environ.setdefault("KIVY_NO_ARGS", "1")
os.environ.setdefault("KIVY_HOME", tempfile.mkdtemp(prefix="kivy-home-"))
os.environ.setdefault("KIVY_USE_DEFAULTCONFIG", "1")
os.environ.setdefault("KIVY_NO_FILELOG", "1")
os.environ.setdefault("KIVY_NO_CONSOLELOG", "1")
os.environ.setdefault("KIVY_WINDOW", "sdl2")
os.environ.setdefault("KIVY_CLIPBOARD", "sdl2")

import io

import pytest
from PIL import Image

from client.services.setup import DataDir, DeviceSetup
from client.vault import Vault
from tests.support.servers import LiveServer

# A cheap scrypt for tests that make many vaults; the cost itself is tested in test_vault.
FAST_SCRYPT_N = 2**10
PIN = "246810"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real ``fieldloop serve`` on SQLite, shared by a module's tests (each makes its own users)."""
    live = LiveServer(tmp_path_factory.mktemp("server") / "data", None)
    live.start()
    yield live
    live.kill()


class Office:
    """What the sub-district office does at the command line."""

    def __init__(self, server: LiveServer):
        self.server = server
        self.grid_id = ""

    def prepare(self, grid: str = "所前一网格", user: str = "王阿姨", role: str = "red_steward") -> str:
        self.grid_id = self.server.cli("grid", "add", grid, "--community", "所前社区").stdout.strip().splitlines()[-1]
        self.server.cli("user", "add", user, "--role", role, "--grid", grid)
        return self.grid_id

    def code(self, user: str = "王阿姨") -> str:
        return self.server.cli("enrollment", "create", "--user", user).stdout.strip().splitlines()[-1]

    def add_user(self, user: str, grid: str = "所前一网格", role: str = "grid_worker") -> None:
        self.server.cli("user", "add", user, "--role", role, "--grid", grid)

    def revoke(self, device_id: str, wipe: bool) -> None:
        self.server.cli("device", "revoke", device_id, *(["--wipe"] if wipe else []))


@pytest.fixture(scope="module")
def office(server: LiveServer) -> Office:
    office = Office(server)
    office.prepare()
    return office


def fast_vault(path: Path, clock=None) -> Vault:
    return Vault(path, scrypt_n=FAST_SCRYPT_N, **({"clock": clock} if clock else {}))


def make_setup(root: Path, clock=None) -> DeviceSetup:
    return DeviceSetup(DataDir(root), vault_factory=fast_vault, session_clock=clock)


def photo_bytes(width: int = 3000, height: int = 2000, color=(200, 60, 40)) -> bytes:
    """A camera-sized JPEG, different for every colour."""
    image = Image.new("RGB", (width, height), color)
    for x in range(0, width, 100):  # some structure, so the JPEG is not trivially tiny
        for y in range(0, height, 100):
            image.putpixel((x, y), (x % 255, y % 255, 0))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=95)
    return out.getvalue()


@pytest.fixture
def fixed_now():
    """A clock pinned to 2026-11-25 09:30 Beijing time."""
    moment = datetime.datetime(2026, 11, 25, 1, 30, tzinfo=datetime.timezone.utc)
    return lambda: moment
