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

    def write(self, entity: str, record_id: str, fields: dict) -> None:
        """Write as the web console does, through the server's one write path, on the server's database."""
        import asyncio

        from server.db.engine import create_engine, database_url, session_factory
        from server.records.writes import Sender, commit_mutations, server_clock
        from shared_schema.messages import Mutation
        from shared_schema.workflow import Actor
        from sync.client.ids import new_id

        async def write() -> None:
            engine = create_engine(database_url(None, self.server.data_dir))
            try:
                mutation = Mutation(mid=new_id(), entity=entity, id=record_id, op="upsert", base_version=0,
                                    hlc=server_clock().now(), fields=fields)
                sender = Sender(origin="console:office", actor=Actor.CONSOLE, scope=None)
                [result] = await commit_mutations(session_factory(engine), [mutation], sender)
                assert result.status.value in ("applied", "merged"), result
            finally:
                await engine.dispose()

        asyncio.run(write())

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


# ---- the real app in the one offscreen window ------------------------------------------------

WINDOW_SIZE = (540, 960)  # a small phone, portrait


class AppDriver:
    """Drives a FieldLoopApp by hand in the shared window: frames, taps, typing, screenshots."""

    def __init__(self, app, artifacts: Path):
        self.app = app
        self.artifacts = artifacts

    def start(self) -> "AppDriver":
        from kivy.base import runTouchApp

        self.app._run_prepare()
        runTouchApp(embedded=True)
        self.frames(3)
        return self

    def frames(self, count: int = 1) -> None:
        from kivy.base import EventLoop

        for _ in range(count):
            EventLoop.idle()

    def until(self, condition, timeout: float = 30.0, what: str = "condition") -> None:
        """Run frames until ``condition()`` holds (background work hands results back through Clock)."""
        import time

        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            self.frames(1)
            time.sleep(0.02)

    @property
    def screen(self):
        return self.app.manager.current_screen

    def tap(self, widget) -> None:
        """A real touch at the widget's centre (down, then up), as a finger would."""
        from kivy.tests.common import UnitTestTouch

        self.frames(1)
        touch = UnitTestTouch(*widget.to_window(*widget.center))
        touch.touch_down()
        touch.touch_up()
        self.frames(2)

    def type_into(self, text_input, text: str) -> None:
        """Focus the field and type, character by character, through the window's text input events."""
        from kivy.core.window import Window

        text_input.focus = True
        self.frames(1)
        for ch in text:
            Window.dispatch("on_textinput", ch)
        text_input.focus = False
        self.frames(1)

    def scroll_to(self, widget) -> None:
        scroll = getattr(self.screen, "scroll", None)
        # A column shorter than the screen needs no scrolling (and Kivy would push it down).
        if scroll is not None and scroll.parent is not None and self.screen.body.height > scroll.height:
            scroll.scroll_to(widget, padding=20, animate=False)
            self.frames(2)

    def scroll_and_tap(self, widget) -> None:
        """Scroll a widget into view, then tap it: a finger cannot reach what is scrolled away."""
        self.scroll_to(widget)
        self.tap(widget)

    def screenshot(self, name: str) -> Path:
        """Save the window as test-artifacts/<name>.png (Kivy adds a counter; the file is renamed)."""
        from kivy.core.window import Window

        self.frames(2)
        written = Window.screenshot(name=str(self.artifacts / f"{name}.png"))
        target = self.artifacts / f"{name}.png"
        Path(written).replace(target)
        return target

    def stop(self) -> None:
        self.app.stop()
        reset_window()


def reset_window() -> None:
    from kivy.app import App
    from kivy.base import EventLoop, stopTouchApp
    from kivy.core.window import Window

    for child in list(Window.children):
        Window.remove_widget(child)
    App._running_app = None
    if EventLoop.status == "started":
        stopTouchApp()
    Window.size = WINDOW_SIZE


@pytest.fixture(scope="session")
def kivy_window():
    from kivy.config import Config

    Config.set("graphics", "width", str(WINDOW_SIZE[0]))
    Config.set("graphics", "height", str(WINDOW_SIZE[1]))
    Config.set("graphics", "maxfps", "0")
    Config.set("kivy", "exit_on_escape", "0")
    from kivy.core.window import Window

    Window.close = lambda *args, **kwargs: None  # one window per process: never really closed
    Window.size = WINDOW_SIZE
    return Window


class PhotoCamera:
    """A camera that hands out prepared photos, one per tap."""

    available = True

    def __init__(self, photos: list[bytes]):
        self.photos = list(photos)
        self.taken: list[bytes] = []

    def take(self, on_photo) -> None:
        data = self.photos.pop(0)
        self.taken.append(data)
        on_photo(data)


@pytest.fixture
def app_driver(kivy_window, tmp_path, artifacts_dir):
    """Make and start a FieldLoopApp on a fresh data folder; stopped and detached afterwards."""
    from client.phone.location import NoLocation
    from client.ui.app import FieldLoopApp

    reset_window()
    drivers: list[AppDriver] = []

    def make(data_dir: Path | None = None, camera=None, **kwargs) -> AppDriver:
        app = FieldLoopApp(data_dir or tmp_path / "app-data", vault_factory=fast_vault,
                           camera=camera or PhotoCamera([]),
                           location=NoLocation(), auto_sync=False, **kwargs)
        driver = AppDriver(app, artifacts_dir).start()
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        driver.stop()
    reset_window()
