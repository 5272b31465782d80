"""A lost phone, probed from outside: what a finder with its files (not its PIN) can read.

The app promises that data on the device is encrypted at rest and a lost phone leaks nothing.
Here the real app and the real sync engine go through a working day against a real server,
then every place the app and its libraries write (the data folder, Kivy's home, the temp
folder, the logs) is searched for what must not be there; then the phone is wiped from the
office, killed while it writes or halfway through erasing, or loses a photo to Android
killing it while the camera app was open.

What the store keeps in the clear by design (``sync.client.schema``) is not searched for here:
record ids, versions, hlc stamps (with the device id as their node), photo hashes and sizes.
"""

from __future__ import annotations

import logging
import os
import signal
import struct
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pytest

from client.phone.camera import PlyerCamera
from client.services import diary
from client.vault import Vault
from sync.client.cipher import AesGcmCipher
from sync.client.identity import META_PRIVATE_KEY
from sync.client.store import LocalStore
from tests.client.conftest import PIN, Office, PhotoCamera, make_setup, photo_bytes
from tests.client.test_app_window import enroll_in_window, sync_in_window
from tests.client.test_forgot_pin import files_left
from tests.client.test_services_flow import enrolled
from tests.support.servers import LiveServer

pytestmark = pytest.mark.ui

HOUSEHOLDS = {
    "0190a000-0000-7000-8000-00000000b001": {"address": "所前社区长兴路 88 号", "head_name": "顾建国",
                                              "phone": "13912345678", "notes": "独居，儿子在杭州"},
    "0190a000-0000-7000-8000-00000000b002": {"address": "所前社区杜家弄 7 号", "head_name": "沈美娟",
                                              "phone": "13588887777", "notes": "低保户，腿脚不便"},
}
TRACK = [(30.123457, 120.654321), (30.123987, 120.655012), (30.124511, 120.655733)]


class Walk:
    """A GPS that hands out a walk's fixes as soon as it is started."""

    available = True

    def __init__(self, points):
        self.points = points

    def start(self, on_fix) -> None:
        for i, (lat, lon) in enumerate(self.points):
            on_fix((lat, lon, 1_795_000_000_000 + i * 5000))

    def stop(self) -> None:
        return None


class Killed(BaseException):
    """The process dies here (Android killed it, the battery went flat): nothing after it runs."""


@pytest.fixture
def grid_office(tmp_path) -> Office:
    live = LiveServer(tmp_path / "server-data", None)
    live.start()
    office = Office(live)
    office.prepare()
    for record_id, fields in HOUSEHOLDS.items():
        office.write("household", record_id, {"grid_id": office.grid_id, **fields})
    yield office
    live.kill()


class Secrets:
    """What the day put on the phone that a finder must not read: words, numbers and photos."""

    def __init__(self):
        self.texts: set[str] = set()
        self.raw: dict[str, bytes] = {}

    def add(self, *texts: str) -> None:
        self.texts.update(t for t in texts if t)

    def add_photo(self, what: str, data: bytes) -> None:
        # The JPEG's first 20 bytes (its start and the header of its first segment), and slices from
        # inside its scan, varied enough never to occur by chance. Not the 3-byte start marker
        # alone: sealed bytes hold it by chance (a 40 KB photo's sealed file, once in 400).
        self.raw[f"{what}: the start of its JPEG"] = data[:20]
        for at in (len(data) // 3, len(data) // 2, 2 * len(data) // 3):
            piece = data[at : at + 48]
            if len(set(piece)) > 24:
                self.raw[f"{what} at {at}"] = piece

    def add_place(self, lat: float, lon: float) -> None:
        self.add(repr(lat), repr(lon))
        self.raw[f"latitude {lat} as msgpack"] = b"\xcb" + struct.pack(">d", lat)
        self.raw[f"longitude {lon} as msgpack"] = b"\xcb" + struct.pack(">d", lon)

    def found_in(self, files: dict[Path, bytes]) -> list[tuple[str, str]]:
        found = []
        for path, data in files.items():
            for text in self.texts:
                if any(text.encode(encoding) in data for encoding in ("utf-8", "utf-16-le")):
                    found.append((str(path), text))
            found += [(str(path), what) for what, piece in self.raw.items() if piece in data]
            if data.startswith(b"\xff\xd8\xff"):
                found.append((str(path), "a JPEG file"))
        return found


def test_the_finder_sees_a_photo_kept_in_plain_whole_or_inside_another_file(tmp_path):
    photo = photo_bytes(1600, 1200, color=(3, 1, 4))  # one colour: no slice of its scan is varied enough
    (tmp_path / "photo").write_bytes(photo)
    (tmp_path / "pages").write_bytes(os.urandom(5000) + photo[:4000] + os.urandom(5000))
    (tmp_path / "sealed").write_bytes(AesGcmCipher(bytes(32)).encrypt(photo, b"blob"))
    secrets = Secrets()
    secrets.add_photo("the photo", photo)
    found = secrets.found_in(written_files(tmp_path))
    assert {(Path(path).name, what) for path, what in found} == {
        ("photo", "the photo: the start of its JPEG"),
        ("photo", "a JPEG file"),
        ("pages", "the photo: the start of its JPEG"),
    }


def written_files(*roots: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for root in roots if root.exists() for path in root.rglob("*") if path.is_file()}


class LogLines(logging.Handler):
    """Every log record of every library, at every level: what Kivy's file and console logs could hold."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def all_logs():
    root = logging.getLogger()
    lines, level = LogLines(), root.level
    root.addHandler(lines)
    root.setLevel(logging.DEBUG)
    yield lines
    root.removeHandler(lines)
    root.setLevel(level)


def test_a_working_day_leaves_nothing_readable_on_the_phone_and_a_remote_wipe_leaves_nothing_at_all(
        app_driver, grid_office, tmp_path, monkeypatch, capfd, all_logs):
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    data_dir = tmp_path / "phone"
    secrets = Secrets()
    for fields in HOUSEHOLDS.values():
        secrets.add(*fields.values())
    photos = [photo_bytes(1200, 900, color=colour) for colour in ((11, 22, 33), (44, 55, 66), (77, 88, 99))]
    driver = app_driver(data_dir=data_dir, camera=PhotoCamera(list(photos)))
    driver.app.location = Walk(TRACK)  # the patrol recorder is made with the session, after this
    enroll_in_window(driver, grid_office)
    sync_in_window(driver)  # the grid's households come down
    app = driver.app
    first, second = HOUSEHOLDS

    # A visit with notes and a photo.
    app.go("visit", household_id=first, visit_id="")
    form = driver.screen
    driver.scroll_to(form.notes_input)
    driver.type_into(form.notes_input, "老人说夜里睡不着，想申请助餐")
    driver.scroll_and_tap(form.photo_button)
    driver.scroll_to(form.save_button)
    driver.tap(form.save_button)
    assert driver.screen.name == "household", form.error_label.text
    # A patrol along a GPS track, with a photo and notes.
    app.go("patrol")
    driver.tap(driver.screen.toggle_button)
    app.patrols.add_photo(photo_bytes(1200, 900, color=(5, 6, 7)))
    driver.type_into(driver.screen.notes_input, "杜家弄 7 号楼道堆满纸箱")
    driver.scroll_to(driver.screen.toggle_button)
    driver.tap(driver.screen.toggle_button)
    # The diary, and a case with a photo.
    diary.write_diary(app.session, "沈美娟反映楼上漏水三天了")
    app.go("case_form", household_id=first)
    form = driver.screen
    driver.type_into(form.title_input, "长兴路 88 号落水管破裂")
    driver.type_into(form.description_input, "雨天漏水到一楼，住户电话 13700002222")
    driver.tap(next(b for b in form.body.children if getattr(b, "text", "") == "拍照 / 添加照片"))
    driver.scroll_to(form.save_button)
    driver.tap(form.save_button)
    assert driver.screen.name == "cases", form.error_label.text
    sync_in_window(driver)
    assert app.sync.last.state.value == "done" and app.session.pending_count() == 0
    # A visit left halfway, with a photo: a draft, never sent.
    app.go("visit", household_id=second, visit_id="")
    form = driver.screen
    driver.scroll_to(form.notes_input)
    driver.type_into(form.notes_input, "沈阿姨的女儿手机 13655554444")
    driver.scroll_and_tap(form.photo_button)
    app.go("home")
    # Another language and back, a lock after ten minutes away, the PIN again.
    app.set_language("en")
    app.set_language("zh_CN")
    app.on_pause()
    app._paused_at -= 600
    app.on_resume()
    assert driver.screen.name == "pin"
    driver.type_into(driver.screen.pin_input, PIN)
    driver.tap(driver.screen.ok_button)
    driver.until(lambda: driver.screen.name == "home", 30, "the home screen")

    session = app.session
    secrets.add("老人说夜里睡不着，想申请助餐", "杜家弄 7 号楼道堆满纸箱", "沈美娟反映楼上漏水三天了",
                "长兴路 88 号落水管破裂", "雨天漏水到一楼，住户电话 13700002222", "沈阿姨的女儿手机 13655554444")
    for lat, lon in TRACK:
        secrets.add_place(lat, lon)
    [patrol] = session.records("patrol")
    assert [point[:2] for point in patrol.fields["track"]] == [list(p) for p in TRACK]
    shas = {sha for name in ("visit", "case", "patrol") for r in session.records(name) for sha in r.fields["photos"]}
    assert len(shas) == 3
    held = {p.name for p in session.store.blob_dir.iterdir()} - shas  # the draft's photo
    assert len(held) == 1
    for sha in shas | held:
        secrets.add_photo(f"photo {sha[:8]}", session.cached_photo(sha))
    for i, photo in enumerate(photos):  # as the camera gave them, before they were downscaled
        secrets.add_photo(f"camera photo {i}", photo)
    secrets.add(session.store.get_meta(META_PRIVATE_KEY), session.engine.ensure_token())
    kivy_home = Path(os.environ["KIVY_HOME"])
    places = (data_dir, kivy_home, temp)
    files = written_files(*places)
    assert any(p.name == "store.sqlite-wal" for p in files)  # a copy taken while the app runs, WAL and all
    assert secrets.found_in(files) == []
    # The PIN in no file but the store and the vault (where six digits may turn up by chance,
    # in a time stamp or in base64).
    assert [p for p, data in files.items()
            if PIN.encode() in data and not p.name.startswith(("store.sqlite", "vault.json"))] == []
    out, err = capfd.readouterr()
    logs = "\n".join(all_logs.lines) + out + err
    assert all_logs.lines  # the libraries did log (urllib3 every request), only nothing of the day
    assert sorted(t for t in secrets.texts | {PIN} if t in logs) == []

    # The office revokes the lost phone with a wipe: the next sync erases everything.
    grid_office.revoke(session.account.device_id, wipe=True)
    sync_in_window(driver)
    driver.until(lambda: driver.screen.name == "notice", 5, "the notice")
    assert files_left(data_dir) == ["settings.json"]
    assert secrets.found_in(written_files(*places)) == []
    assert sorted(p.name for p in temp.rglob("*")) == []


def test_a_phone_killed_halfway_through_a_remote_wipe_keeps_no_key_to_what_is_left(
        app_driver, grid_office, tmp_path, monkeypatch):
    data_dir = tmp_path / "phone"
    driver = app_driver(data_dir=data_dir, camera=PhotoCamera([photo_bytes(color=(9, 9, 9))]))
    enroll_in_window(driver, grid_office)
    sync_in_window(driver)
    app = driver.app
    app.go("visit", household_id=next(iter(HOUSEHOLDS)), visit_id="")
    driver.type_into(driver.screen.notes_input, "老人说夜里睡不着")
    driver.scroll_and_tap(driver.screen.photo_button)
    app.go("home")  # left unsaved: a draft with its photo
    grid_office.revoke(app.session.account.device_id, wipe=True)

    def dies_while_wiping(store):
        raise Killed  # the store's wipe (DELETE, VACUUM) takes seconds on a cheap phone

    monkeypatch.setattr(LocalStore, "wipe", dies_while_wiping)
    with pytest.raises(Killed):
        app.sync.run_now()  # as the sync thread runs it: 410 with wipe, then the erase

    # What the finder has now: the store and the photo folder, but no key, so no PIN opens them.
    left = files_left(data_dir)
    assert "store.sqlite" in left and "store.sqlite.blobs" in left
    assert "vault.json" not in left and "vault.tmp" not in left
    assert not make_setup(data_dir).is_set_up()


def test_a_key_file_left_by_a_crash_mid_write_goes_with_a_sign_out(tmp_path, office, monkeypatch):
    setup, session = enrolled(tmp_path, office, "丢手机甲")
    diary.write_diary(session, "顾建国反映楼道灯坏了")
    session.close()

    def dies_before_the_rename(*_args):
        raise Killed

    with monkeypatch.context() as patch:  # a wrong PIN counted, and the phone dies mid-write
        patch.setattr("client.vault.os.replace", dies_before_the_rename)
        with pytest.raises(Killed):
            setup.unlock("999999")
    kept = setup.data_dir.root / "vault.tmp"
    assert kept.exists() and Vault(kept).unlock(PIN)  # a whole copy of the wrapped key

    session = setup.unlock(PIN)
    setup.sign_out(session, force=True)
    assert files_left(setup.data_dir.root) == ["settings.json"]


class FakePlyerCamera:
    """plyer's Android camera: the camera app writes the photo to the file it is given."""

    def __init__(self, photo: bytes, app_killed: bool):
        self.photo, self.app_killed = photo, app_killed

    def take_picture(self, filename, on_complete):
        Path(filename).write_bytes(self.photo)
        if not self.app_killed:  # else Android killed the app behind the camera: no one hears back
            on_complete(filename)


def test_a_photo_the_camera_app_wrote_after_android_killed_the_app_goes_at_the_next_start(tmp_path, monkeypatch):
    folder = tmp_path / "camera"
    folder.mkdir()
    unrelated = folder / "someone-elses.jpg"
    unrelated.write_bytes(b"not ours")
    photo = photo_bytes(color=(1, 1, 1))
    plyer = types.ModuleType("plyer")
    monkeypatch.setitem(sys.modules, "plyer", plyer)

    plyer.camera = FakePlyerCamera(photo, app_killed=False)
    taken = []
    PlyerCamera(folder).take(taken.append)
    assert taken == [photo] and sorted(p.name for p in folder.iterdir()) == ["someone-elses.jpg"]

    plyer.camera = FakePlyerCamera(photo, app_killed=True)
    PlyerCamera(folder).take(taken.append)
    [left] = [p for p in folder.iterdir() if p != unrelated]
    assert left.read_bytes() == photo  # in plain JPEG, where the photo was taken in its EXIF

    PlyerCamera(folder)  # the app starts again
    assert sorted(p.name for p in folder.iterdir()) == ["someone-elses.jpg"]


KEEPS_WRITING = """
import sys
from pathlib import Path
from sync.client.cipher import AesGcmCipher
from sync.client.store import BLOB_HELD, LocalStore
from tests.client.conftest import photo_bytes

store = LocalStore(Path(sys.argv[1]) / "store.sqlite", AesGcmCipher(bytes(32)))
photo = photo_bytes(1600, 1200, color=(3, 1, 4))
for i in range(1, 10_000):
    store.edit("diary", f"0190a000-0000-7000-8000-{i:012d}",
               {"grid_id": "0190a000-0000-7000-8000-000000000001", "text": f"沈美娟 13588887777 第{i}条",
                "written_at": "2026-11-25T09:30:00+08:00"}, hlc=f"{1795000000000 + i:013d}-0000-phone")
    store.put_blob(photo + i.to_bytes(4, "big"), state=BLOB_HELD)
    store.set_meta("app.drafts", "顾建国 13912345678 " * 40 + str(i))
    print(i, flush=True)
"""


def test_a_phone_killed_while_it_writes_leaves_only_sealed_bytes(tmp_path):
    folder = tmp_path / "phone"
    folder.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", KEEPS_WRITING, str(folder)], stdout=subprocess.PIPE,
                              cwd=Path(__file__).parents[2], text=True)
    try:
        while int(writer.stdout.readline() or 0) < 5:  # five rounds done; killed inside the sixth
            assert writer.poll() is None, "the writer stopped"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    secrets = Secrets()
    secrets.add("沈美娟", "13588887777", "顾建国", "13912345678")
    secrets.add_photo("the photo", photo_bytes(1600, 1200, color=(3, 1, 4)))
    files = written_files(folder)
    assert any(p.name.endswith("-wal") for p in files)
    assert secrets.found_in(files) == []
