"""The field app on a full device: 5,000 households and 20,000 visits, encrypted as on a phone.

Prints: app start to the home screen (a fresh process: interpreter, Kivy, PIN unlock with
scrypt, the household index, the home summary, the first frame drawn), a household search, a
household's history, applying a 10,000-record pull to the store, and the store's size on disk.

    python bench/client_bench.py [--households 5000] [--visits 20000] [--pull 10000]

Floors on this machine: start <= 3 s, search <= 100 ms, history <= 100 ms, apply >= 5,000 records/s.
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PIN = "135790"
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
    "姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
GIVEN = "建国秀英桂兰志强海燕玉梅春华国庆凤英德明丽娟永红淑珍文华金凤家乐"
STREETS = ["长兴路", "雉城大道", "画溪街", "金陵路", "龙山路", "明珠路", "水木花都", "所前街"]
TAGS = ["独居老人", "低保", "残疾", "空巢", "党员", "退役军人", "困难家庭", "出租户"]
TOPICS = ["elderly_care", "health", "housing", "drainage", "parking", "noise", "dispute", "pets", "safety", "policy"]
METHODS = ["sit", "inquiry", "emergency", "consult", "followup"]


def _uuid(rng: random.Random) -> str:
    import uuid

    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def make_records(grid_id: str, households: int, visits: int, seed: int = 2018):
    """Server-shaped records, as a pull would bring them."""
    from shared_schema.messages import Record

    rng = random.Random(seed)
    base_ms = 1_790_000_000_000
    today = datetime.date.today()
    household_ids = []
    records = []
    for n in range(households):
        hid = _uuid(rng)
        household_ids.append(hid)
        fields = {
            "grid_id": grid_id,
            "address": f"{rng.choice(STREETS)} {rng.randint(1, 300)} 号",
            "building": str(rng.randint(1, 40)),
            "unit": str(rng.randint(1, 6)),
            "room": f"{rng.randint(1, 18)}0{rng.randint(1, 4)}",
            "head_name": rng.choice(SURNAMES) + "".join(rng.sample(GIVEN, 2)),
            "phone": f"139{rng.randint(10_000_000, 99_999_999)}",
            "members": rng.randint(1, 6),
            "tags": sorted(set(rng.sample(TAGS, rng.randint(0, 2)))),
            "notes": "",
        }
        records.append(Record(entity="household", id=hid, version=1, hlc=f"{base_ms + n:013d}-0000-server",
                              fields=fields))
    for n in range(visits):
        day = today - datetime.timedelta(days=rng.randint(0, 365))
        follow = (day + datetime.timedelta(days=rng.choice([7, 14, 30]))).isoformat() if rng.random() < 0.3 else None
        fields = {
            "grid_id": grid_id,
            "household_id": rng.choice(household_ids),
            "method": rng.choice(METHODS),
            "topics": sorted(set(rng.sample(TOPICS, rng.randint(1, 3)))),
            "notes": "老人反映楼道灯坏了，已报物业。" * rng.randint(1, 3),
            "photos": [],
            "follow_up_on": follow,
            "visited_at": datetime.datetime.combine(day, datetime.time(9, 30), datetime.timezone.utc).isoformat(),
        }
        records.append(Record(entity="visit", id=_uuid(rng), version=1,
                              hlc=f"{base_ms + households + n:013d}-0000-server",
                              fields=fields))
    return household_ids, records


def build_device(data_dir: Path, households: int, visits: int, vault_factory=None):
    """An installation as a phone holds it after its first sync: vault, encrypted store, account.

    ``vault_factory`` makes the vault from its path (tests pass one with a cheap scrypt).
    """
    from client.services.session import Account, save_account
    from client.services.setup import DataDir, write_settings
    from client.vault import Vault
    from sync.client import AesGcmCipher, DeviceIdentity, LocalStore

    paths = DataDir(data_dir)
    key = (vault_factory or Vault)(paths.vault).create(PIN)
    store = LocalStore(paths.store, AesGcmCipher(key))
    DeviceIdentity(store).set_device_id("0190a000-0000-7000-8000-0000000000d1")
    grid_id = "0190a000-0000-7000-8000-0000000000a1"
    save_account(store, Account(device_id="0190a000-0000-7000-8000-0000000000d1", user_id="u1", user_name="王阿姨",
                                role="red_steward", server_url="http://127.0.0.1:9",
                                grids=[{"id": grid_id, "name": "所前一网格", "community": "所前社区"}]))
    write_settings(paths, server_url="http://127.0.0.1:9")
    household_ids, records = make_records(grid_id, households, visits)
    for start in range(0, len(records), 1000):
        store.apply_pulled(records[start : start + 1000])
    store.close()
    return grid_id, household_ids


def store_size(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file())


def probe_start(data_dir: Path) -> None:
    """Run in a fresh process: the app from nothing to its home screen drawn; prints seconds."""
    os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    os.environ.setdefault("KIVY_HOME", tempfile.mkdtemp(prefix="kivy-bench-"))
    os.environ.setdefault("KIVY_NO_FILELOG", "1")
    os.environ.setdefault("KIVY_NO_CONSOLELOG", "1")
    from kivy.base import EventLoop, runTouchApp

    from client.ui.app import FieldLoopApp

    app = FieldLoopApp(data_dir, auto_sync=False)
    app._run_prepare()
    runTouchApp(embedded=True)
    pin = app.manager.current_screen
    pin.pin_input.text = PIN
    pin.submit()  # the PIN is checked on a worker thread; the result comes back through Kivy's clock
    deadline = time.monotonic() + 30
    while app.manager.current != "home" and time.monotonic() < deadline:
        EventLoop.idle()
    assert app.manager.current == "home", (app.manager.current, pin.error_label.text)
    home = app.manager.current_screen
    assert "王阿姨" in home.greeting.text
    print(f"STARTED {home.due_box.children[0].text}")


def measure_start(data_dir: Path, runs: int = 3) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--probe-start", str(data_dir)], capture_output=True, text=True,
                             timeout=120)
        elapsed = time.perf_counter() - started
        if out.returncode != 0 or "STARTED" not in out.stdout:
            raise SystemExit(f"start probe failed: {out.stderr[-2000:]}")
        times.append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--households", type=int, default=5000)
    parser.add_argument("--visits", type=int, default=20000)
    parser.add_argument("--pull", type=int, default=10000)
    parser.add_argument("--probe-start", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe_start:
        probe_start(args.probe_start)
        return

    from client.services.home import follow_ups, home_summary, household_history
    from client.services.setup import DataDir, DeviceSetup
    from shared_schema.messages import Record

    work = Path(tempfile.mkdtemp(prefix="fieldloop-client-bench-"))
    data_dir = work / "phone"
    t0 = time.perf_counter()
    grid_id, household_ids = build_device(data_dir, args.households, args.visits)
    print(f"device: {args.households} households, {args.visits} visits, "
          f"encrypted (built in {time.perf_counter() - t0:.1f} s)")

    starts = measure_start(data_dir, runs=4)
    print(
        f"start to home screen (fresh process: Kivy, window, PIN unlock, index, home, first frame)   [floor <= 3 s]:\n"
        f"  first start after a sync (follow-ups read from all 20,000 visits): {starts[0]:.2f} s\n"
        f"  later starts (follow-ups kept until the records change): median {statistics.median(starts[1:]):.2f} s, "
        f"max {max(starts[1:]):.2f} s"
    )

    setup = DeviceSetup(DataDir(data_dir))
    t = time.perf_counter()
    session = setup.unlock(PIN)
    unlock_s = time.perf_counter() - t
    t = time.perf_counter()
    index = session.households
    index_s = time.perf_counter() - t
    t = time.perf_counter()
    follow_ups(session)
    follow_s = time.perf_counter() - t
    t = time.perf_counter()
    summary = home_summary(session)
    home_s = time.perf_counter() - t
    print(
        f"  parts: unlock (scrypt, open store) {unlock_s * 1000:.0f} ms, household index {index_s * 1000:.0f} ms, "
        f"follow-ups from all visits {follow_s * 1000:.0f} ms, home summary from the kept copy {home_s * 1000:.0f} ms "
        f"({len(summary.due_today)} due today, {len(summary.overdue)} overdue)"
    )

    queries = ["王", "长兴路", "3-2", "独居", "张建国", "12 号 301", "雉城大道 7", "低保 1", "zzz", "顾"]
    search_ms = []
    for query in queries * 5:
        t = time.perf_counter()
        index.search(query)
        search_ms.append((time.perf_counter() - t) * 1000)
    print(f"household search ({len(queries)} queries x5 over {len(index)}): "
          f"median {statistics.median(search_ms):.1f} ms, "
          f"max {max(search_ms):.1f} ms   [floor <= 100 ms]")

    rng = random.Random(7)
    history_ms, visit_counts = [], []
    for hid in rng.sample(household_ids, 50):
        t = time.perf_counter()
        history = household_history(session, hid)
        history_ms.append((time.perf_counter() - t) * 1000)
        visit_counts.append(len(history.visits))
    print(f"household history (50 households, {statistics.mean(visit_counts):.1f} visits each on average): "
          f"median {statistics.median(history_ms):.1f} ms, max {max(history_ms):.1f} ms   [floor <= 100 ms]")

    _, pulled = make_records(grid_id, args.pull // 2, args.pull - args.pull // 2, seed=99)
    pulled = [Record(entity=r.entity, id=r.id, version=2, hlc=r.hlc.replace("-0000-", "-0001-"), fields=r.fields)
              for r in pulled]
    t = time.perf_counter()
    for start in range(0, len(pulled), 500):  # the engine applies one pulled page per transaction
        session.store.apply_pulled(pulled[start : start + 500], cursor=str(start))
    apply_s = time.perf_counter() - t
    print(f"apply a {len(pulled)}-record pull (pages of 500): {apply_s:.2f} s = {len(pulled) / apply_s:,.0f} records/s"
          f"   [floor >= 5,000/s]")
    session.close()
    size = store_size(data_dir)
    print(f"store on disk after the pull ({args.households + args.pull // 2} households, "
          f"{args.visits + args.pull - args.pull // 2} visits): {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
