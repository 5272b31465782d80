"""The field app through a working day, in a real (offscreen) window: memory, threads and files per step.

A cheap phone has 2 GB shared with other apps; Android kills the app that grows. This drives
the real app against a real server with 5,000 households and 20,000 visits and prints, after
each step, the process's resident memory (RSS), its threads and its open files:

1. a visit form with 32 camera photos (4000x3000 JPEGs) added one by one, saved, left, reopened;
2. the household list: scrolled, searched 50 times, 50 household histories opened and left;
3. 30 background syncs with a small edit before each;
4. 20 language switches, 20 locks and unlocks.

    python bench/client_memory.py [--households 5000] [--visits 20000] [--photos 32]
"""

from __future__ import annotations

import argparse
import gc
import io
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The tests' window set-up and drivers (Kivy's environment is set when this module is imported).
from tests.client.conftest import PIN, AppDriver, Office, fast_vault, reset_window  # noqa: E402

import psutil  # noqa: E402
from PIL import Image  # noqa: E402

from tests.support.servers import LiveServer  # noqa: E402

PROCESS = psutil.Process()


def camera_photo(n: int) -> bytes:
    """A 4000x3000 JPEG of about 2 MB, different for every ``n``, as a phone camera writes it."""
    image = Image.effect_noise((1000, 750), 40 + n).convert("RGB").resize((4000, 3000))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


class CameraOnDemand:
    """A camera that makes each photo as it is taken (32 of them held at once would skew the figures)."""

    available = True

    def __init__(self):
        self.taken = 0

    def take(self, on_photo) -> None:
        self.taken += 1
        on_photo(camera_photo(self.taken))


def figures() -> str:
    gc.collect()
    return (f"RSS {PROCESS.memory_info().rss / 2**20:7.1f} MB, threads {threading.active_count():2d} "
            f"(OS {PROCESS.num_threads():2d}), open files {len(PROCESS.open_files()):2d}, fds {PROCESS.num_fds():3d}")


def report(step: str) -> None:
    print(f"  {step:<52} {figures()}", flush=True)


def live_widgets() -> int:
    from kivy.uix.widget import Widget

    # type(), not isinstance: a weak proxy among the objects raises on the attribute isinstance reads.
    return sum(1 for obj in gc.get_objects() if issubclass(type(obj), Widget))


def enroll(driver: AppDriver, office: Office) -> None:
    first = driver.screen
    first.server_input.text = office.server.url
    first.code_input.text = office.code()
    first.enroll()
    driver.until(lambda: driver.screen.name == "pin", 30, "enrollment")
    pin_screen = driver.screen
    pin_screen.pin_input.text = PIN
    pin_screen.again_input.text = PIN
    pin_screen.submit()
    driver.until(lambda: driver.screen.name == "home", 30, "the PIN")


def photos_step(driver: AppDriver, household_id: str, photos: int) -> None:
    app = driver.app
    app.go("household", household_id=household_id)
    app.go("visit", household_id=household_id, visit_id="")
    driver.frames(2)
    report("visit form open, no photo")
    seconds = []
    for n in range(1, photos + 1):
        started = time.perf_counter()
        driver.screen.photo_button.dispatch("on_release")
        driver.frames(2)
        seconds.append(time.perf_counter() - started)
        if n in (1, 4, 8, 16, 24, 32) or n == photos:
            report(f"{n:2d} photos (this one {seconds[-1]:.2f} s)")
    print(f"  photo added: first {seconds[0]:.2f} s, last {seconds[-1]:.2f} s, "
          f"mean {sum(seconds) / len(seconds):.2f} s")
    started = time.perf_counter()
    driver.screen.save()
    driver.frames(2)
    report(f"saved ({time.perf_counter() - started:.2f} s), back on the household")
    visit_id = driver.screen.saved_visit
    app.go("households")
    driver.frames(2)
    report("left to the household list")
    started = time.perf_counter()
    app.go("visit", visit_id=visit_id)
    driver.frames(2)
    report(f"visit reopened with {len(driver.screen.photo_strip.previews)} previews "
           f"({time.perf_counter() - started:.2f} s)")
    app.go("households")
    driver.frames(2)
    report("left again")


def list_step(driver: AppDriver, household_ids: list[str]) -> None:
    app = driver.app
    app.go("households")
    screen = driver.screen
    driver.frames(2)
    report(f"household list ({len(screen.list_view.data)} rows)")
    started = time.perf_counter()
    for y in range(100, -1, -2):
        screen.list_view.scroll_y = y / 100
        driver.frames(1)
    report(f"scrolled top to bottom in 51 steps ({time.perf_counter() - started:.2f} s)")
    queries = ["王", "长兴路", "3-2", "独居", "张建国", "12 号 301", "雉城大道 7", "低保 1", "zzz", "顾"]
    started = time.perf_counter()
    for query in queries * 5:
        screen.search_input.text = query
        screen.search()
        driver.frames(1)
    screen.search_input.text = ""
    screen.search()
    report(f"50 searches ({time.perf_counter() - started:.2f} s)")
    widgets_before = live_widgets()
    started = time.perf_counter()
    for n, household_id in enumerate(household_ids, 1):
        app.go("household", household_id=household_id)
        driver.frames(1)
        driver.screen.go_back()
        driver.frames(1)
        if n in (1, 10, 25, 50):
            report(f"{n:2d} histories opened and left")
    print(f"  live widgets before the histories {widgets_before}, after {live_widgets()} "
          f"({time.perf_counter() - started:.2f} s)")


def sync_step(driver: AppDriver, household_id: str, syncs: int) -> None:
    from client.services import visits as visit_service

    app = driver.app
    app.go("home")
    report("before syncs")
    started = time.perf_counter()
    for n in range(1, syncs + 1):
        draft = visit_service.new_visit(household_id)
        draft.notes = f"第 {n} 次回访"
        visit_service.save_visit(app.session, draft)
        assert app.sync.start()
        driver.until(lambda: not app.sync.running, 60, "the sync")
        driver.frames(2)
        if n in (1, 10, 20, 30) or n == syncs:
            report(f"{n:2d} syncs ({app.sync.last.state.value})")
    print(f"  {syncs} syncs in {time.perf_counter() - started:.1f} s")


def language_step(driver: AppDriver, switches: int) -> None:
    app = driver.app
    app.go("households")
    driver.frames(2)
    widgets_before = live_widgets()
    report("before language switches")
    for n in range(1, switches + 1):
        app.set_language("en" if n % 2 else "zh_CN")
        driver.frames(2)
        if n in (1, 10, 20) or n == switches:
            report(f"{n:2d} language switches")
    print(f"  live widgets before {widgets_before}, after {live_widgets()}")


def lock_step(driver: AppDriver, locks: int) -> None:
    app = driver.app
    report("before locks")
    widgets_before = live_widgets()
    for n in range(1, locks + 1):
        app.on_pause()
        app._paused_at -= 10_000  # as if left on a bench for hours
        app.on_resume()
        pin_screen = driver.screen
        pin_screen.pin_input.text = PIN
        pin_screen.submit()
        driver.until(lambda: driver.screen.name == "home", 30, "the unlock")
        if app.sync.running:
            app.sync.wait(60)
        driver.frames(2)
        if n in (1, 10, 20) or n == locks:
            report(f"{n:2d} locks and unlocks")
    print(f"  live widgets before {widgets_before}, after {live_widgets()}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--households", type=int, default=5000)
    parser.add_argument("--visits", type=int, default=20000)
    parser.add_argument("--photos", type=int, default=32)
    parser.add_argument("--syncs", type=int, default=30)
    args = parser.parse_args()

    from bench.client_bench import make_records
    from client.phone.location import NoLocation
    from client.ui.app import FieldLoopApp
    from tests.client.conftest import kivy_window

    work = Path(tempfile.mkdtemp(prefix="fieldloop-client-memory-"))
    server = LiveServer(work / "server", None).start()
    try:
        office = Office(server)
        office.prepare()
        kivy_window.__wrapped__()
        reset_window()
        print(f"start: {figures()}")
        app = FieldLoopApp(work / "phone", vault_factory=fast_vault, camera=CameraOnDemand(), location=NoLocation(),
                           auto_sync=False)
        driver = AppDriver(app, work).start()
        enroll(driver, office)
        household_ids, records = make_records(office.grid_id, args.households, args.visits)
        for start in range(0, len(records), 1000):
            app.session.store.apply_pulled(records[start : start + 1000])
        app.session.refresh_households()
        app.go("home")
        driver.frames(2)
        print(f"enrolled, {args.households} households and {args.visits} visits stored: {figures()}")

        print(f"1. a visit form with {args.photos} camera photos (4000x3000)")
        photos_step(driver, household_ids[0], args.photos)
        print("2. the household list")
        list_step(driver, household_ids[1:51])
        print(f"3. {args.syncs} syncs against a real server, a small edit before each")
        sync_step(driver, household_ids[2], args.syncs)
        print("4. 20 language switches, 20 locks and unlocks")
        language_step(driver, 20)
        lock_step(driver, 20)
        driver.stop()
        print(f"end: {figures()}")
    finally:
        server.kill()


if __name__ == "__main__":
    main()
