"""Console pages at the real sub-district's scale: a year of one sub-district's records.

    python bench/console_scale.py [--scale subdistrict|small] [--db URL] [--data DIR]
                                  [--repeat 5] [--server-root PATH] [--load-only]

``--scale subdistrict`` is the model sub-district: 133 grids in 10 communities, 196 compounds,
45,000 households, 400 red stewards and 25 grid workers with a phone each, and a year of
200,000 visits (most reviewed), 20,000 diary entries, 10,000 patrols and 33,021 cases (32,793
closed), two phones' edits of the same households (conflicts, most resolved) and a year of
syncing by the 425 phones (some 930,000 sync log rows). ``small`` is a tenth of it.

The records go in through the server's own write path (``commit_mutations``, in groups, as
phones syncing at once would), so the records, change log, conflicts and mutation ids are what
a real server holds; the sync log rows in bulk through ``server.db.inserts``. Loading the
sub-district takes several minutes: ``--data DIR`` (and, on PostgreSQL, the database in
``--db``) keeps it for the next run, which skips the loading when the folder says it is loaded.

Then ``fieldloop serve`` runs in a process of its own (from ``--server-root``, to compare
another checkout's server on the same data) and every page a supervisor and an administrator
use is fetched over HTTP ``--repeat`` times: median and worst ms (the dashboard's first view
counts the year; later ones reuse those figures until a record changes, so its worst is the
count). An export is read as a stream and measured once: its whole time, the time to its first
rows (a browser that waits long for them may give up), and the server process's peak RSS
during it (``/proc/PID/clear_refs`` resets the peak before each; the figure in brackets is the
rise over the RSS before it). The target is 200 ms a page.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

TARGET_MS = 200
PASSWORD = "fieldloop-scale"
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)

SCALES = {
    # communities, grids, compounds, households, stewards, workers, visits, diary, patrols,
    # cases, closed cases, conflicting households, syncs a phone a day
    "subdistrict": dict(communities=10, grids=133, compounds=196, households=45_000, stewards=400, workers=25,
                        visits=200_000, diary=20_000, patrols=10_000, cases=33_021, closed=32_793, conflicts=1_500,
                        syncs_a_day=3),
    "small": dict(communities=10, grids=133, compounds=196, households=4_500, stewards=400, workers=25,
                  visits=20_000, diary=2_000, patrols=1_000, cases=3_302, closed=3_279, conflicts=150,
                  syncs_a_day=1),
}
TOPICS = ["落水管", "下水道", "化粪池", "停车", "养狗", "噪音", "物业", "垃圾分类", "邻里纠纷", "微心愿", "困难帮扶",
          "消防通道"]
HAZARDS = ["楼道堆物", "电动车充电", "井盖破损", "路灯不亮", "消防通道堵塞", "外墙脱落"]
TAGS = ["独居老人", "低保户", "党员户", "出租户", "残疾人", "空巢"]
METHODS = ["sit", "inquiry", "inquiry", "inquiry", "emergency", "consult", "followup"]
DEPARTMENTS = ["街道城管中队", "社区物业办", "住建局", "派出所", "综合执法局", "供电公司"]
FLUSH = 20_000  # mutations built before they are committed (memory of the loader)
CHUNK = 1_000  # mutations a commit_mutations call, as a phone's large push


# ---- loading ----------------------------------------------------------------------------------


async def load(sm, scale: dict, seed: int = 2018) -> None:  # noqa: ANN001, C901, PLR0915
    from faker import Faker
    from sqlalchemy import select, text, update

    from server.accounts import service as accounts
    from server.db.inserts import insert_rows
    from server.db.models import ConflictEntry, Device, SyncLogEntry, User
    from server.demo import CASES
    from server.records.writes import Sender, commit_mutations
    from shared_schema.messages import Mutation
    from shared_schema.workflow import Actor
    from sync.hlc import format_stamp

    rng = random.Random(seed)
    fake = Faker("zh_CN")
    Faker.seed(seed)
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    year_ago = now - datetime.timedelta(days=365)
    t0 = time.perf_counter()

    def say(what: str) -> None:
        print(f"  {time.perf_counter() - t0:7.1f} s  {what}", flush=True)

    communities = [f"{fake.city_name()}{i + 1}社区" for i in range(scale["communities"])]
    grid_names: list[tuple[str, str]] = []
    for i in range(scale["grids"]):
        community = communities[i % len(communities)]
        grid_names.append((f"{community}第{i // len(communities) + 1}网格", community))
    grids = [await accounts.add_grid(sm, name, community) for name, community in grid_names]
    compounds = [f"{fake.last_name()}{rng.choice(['家', '新', '华', '锦'])}{rng.choice(['苑', '新村', '花园', '小区'])}{i}"
                 for i in range(scale["compounds"])]
    grid_compounds = {g.id: [compounds[(i * 3 + k) % len(compounds)] for k in range(2)] for i, g in enumerate(grids)}
    all_names = [g.name for g in grids]
    await accounts.create_user(sm, "admin", "admin", [], PASSWORD)
    await accounts.create_user(sm, "supervisor", "supervisor", all_names, PASSWORD)
    await accounts.create_user(sm, "supervisor2", "supervisor",
                               [g.name for g in grids if g.community == communities[0]], PASSWORD)
    field: dict[str, list[User]] = {g.id: [] for g in grids}
    field_users: list[User] = []
    for w in range(scale["workers"]):
        mine = grids[w :: scale["workers"]]
        user = await accounts.create_user(sm, f"grid{w + 1:02d}", "grid_worker", [g.name for g in mine])
        field_users.append(user)
        for g in mine:
            field[g.id].append(user)
    for s in range(scale["stewards"]):
        g = grids[s % len(grids)]
        user = await accounts.create_user(sm, f"红管家{s + 1:03d}", "red_steward", [g.name])
        field_users.append(user)
        field[g.id].append(user)
    async with sm() as session:
        supervisor = await session.scalar(select(User).where(User.name == "supervisor"))
    say(f"{len(grids)} grids, {len(field_users) + 3} users")

    devices: dict[str, str] = {}
    async with sm() as session, session.begin():
        for user in field_users:
            device = Device(id=str(uuid.uuid4()), user_id=user.id, public_key=os.urandom(32),
                            label=rng.choice(["红米 Note 12", "华为畅享 60", "OPPO A58", "vivo Y36"]),
                            app_version=rng.choice(["0.1.0", "0.1.0", "0.0.9"]), enrolled_at=year_ago,
                            last_sync_at=now - datetime.timedelta(days=rng.choice([0, 0, 0, 0, 1, 4, 9]),
                                                                  hours=rng.uniform(0, 6)))
            session.add(device)
            devices[user.id] = device.id

    senders = {u.id: Sender(origin=devices[u.id], actor=Actor.DEVICE, scope=None, device_id=devices[u.id],
                            user_id=u.id) for u in field_users}
    console = Sender(origin=f"console:{supervisor.id}", actor=Actor.CONSOLE, scope=None, user_id=supervisor.id)
    pending: list[tuple[Sender, Mutation]] = []
    counter = iter(range(10**12))
    total = [0]

    def add(sender: Sender, entity: str, record_id: str, fields: dict, at: datetime.datetime,
            base_version: int = 0) -> None:
        hlc = format_stamp(int(at.timestamp() * 1000), next(counter) % 0xFFFF, "d" + sender.origin[-8:].replace("-", "x"))
        pending.append((sender, Mutation(mid=str(uuid.uuid4()), entity=entity, id=record_id, op="upsert",
                                         base_version=base_version, hlc=hlc, fields=fields)))

    async def analyze() -> None:
        # What autovacuum does on a production PostgreSQL (it is off on this machine's): without
        # statistics past the first rows, the write path's lookups by id became sequential scans.
        async with sm() as session:
            if session.bind.dialect.name == "postgresql":
                await session.execute(text("ANALYZE"))
                await session.commit()

    async def flush(force: bool = False) -> None:
        if len(pending) < FLUSH and not force:
            return
        await analyze()
        by_sender: dict[Sender, list[Mutation]] = {}
        for sender, mutation in pending:
            by_sender.setdefault(sender, []).append(mutation)
        calls = [commit_mutations(sm, batch[i : i + CHUNK], sender)
                 for sender, batch in by_sender.items() for i in range(0, len(batch), CHUNK)]
        for results in await asyncio.gather(*calls):
            rejected = [r for r in results if r.status.value == "rejected"]
            if rejected:
                raise RuntimeError(f"rejected: {rejected[0].error.message}")
        total[0] += len(pending)
        pending.clear()

    def someone(grid_id: str) -> Sender:
        return senders[rng.choice(field[grid_id]).id]

    def moment() -> datetime.datetime:
        return year_ago + datetime.timedelta(seconds=rng.uniform(0, 365 * 86400))

    households: list[tuple[str, str]] = []
    for _ in range(scale["households"]):
        g = rng.choice(grids)
        hid = str(uuid.uuid4())
        building, unit, room = rng.randint(1, 30), rng.randint(1, 4), f"{rng.randint(1, 18)}0{rng.randint(1, 4)}"
        add(someone(g.id), "household", hid, {
            "grid_id": g.id, "address": f"雉城街道{rng.choice(grid_compounds[g.id])}{building}幢{unit}单元{room}室",
            "building": f"{building}幢", "unit": f"{unit}单元", "room": room, "head_name": fake.name(),
            "phone": fake.phone_number(), "members": rng.randint(1, 6), "tags": rng.sample(TAGS, rng.randint(0, 2)),
            "notes": rng.choice(["", "老人独居, 子女在外地", "家中有残疾人, 需重点关注", "新搬入住户", "租户, 房东在外地"]),
        }, at=year_ago - datetime.timedelta(days=rng.uniform(1, 30)))
        households.append((hid, g.id))
        await flush()
    await flush(True)
    say(f"{len(households)} households")

    reviews: list[tuple[str, datetime.datetime]] = []
    for _ in range(scale["visits"]):
        hid, gid = rng.choice(households)
        when = moment()
        follow = (when.date() + datetime.timedelta(days=rng.randint(3, 30))) if rng.random() < 0.2 else None
        vid = str(uuid.uuid4())
        add(someone(gid), "visit", vid, {
            "grid_id": gid, "household_id": hid, "method": rng.choice(METHODS),
            "topics": rng.sample(TOPICS, rng.randint(1, 3)),
            "notes": rng.choice(["了解家庭近况, 无特殊诉求", "反映楼道灯不亮", "提出停车难问题", "身体状况良好", "需协调物业处理"]),
            "follow_up_on": follow.isoformat() if follow else None, "visited_at": when.isoformat(),
        }, at=when)
        if when < now - datetime.timedelta(days=7) and rng.random() < 0.9:
            reviews.append((vid, when))
        await flush()
    await flush(True)
    say(f"{scale['visits']} visits")

    for _ in range(scale["patrols"]):
        g = rng.choice(grids)
        started = moment()
        add(someone(g.id), "patrol", str(uuid.uuid4()), {
            "grid_id": g.id, "started_at": started.isoformat(),
            "ended_at": (started + datetime.timedelta(minutes=rng.randint(30, 120))).isoformat(),
            "notes": "网格巡查", "hazards": rng.sample(HAZARDS, rng.randint(0, 2)),
        }, at=started)
        await flush()
    for _ in range(scale["diary"]):
        g = rng.choice(grids)
        written = moment()
        add(someone(g.id), "diary", str(uuid.uuid4()), {
            "grid_id": g.id, "written_at": written.isoformat(), "topics": rng.sample(TOPICS, 1),
            "text": rng.choice(["居民反映小区停车难, 希望增设车位", "张大爷说楼道灯坏了三天", "居民希望增加健身器材"]),
        }, at=written)
        await flush()
    await flush(True)
    say(f"{scale['patrols']} patrols, {scale['diary']} diary entries")

    # Cases: the newest ones still open at every step, all the others walked round the loop.
    reported = sorted(moment() - datetime.timedelta(days=5) for _ in range(scale["cases"]))
    open_from = scale["closed"]
    cases = []
    for n, at in enumerate(reported):
        hid, gid = rng.choice(households)
        category, title, description = rng.choice(CASES)
        cid = str(uuid.uuid4())
        add(someone(gid), "case", cid, {"grid_id": gid, "household_id": hid, "category": category, "title": title,
                                        "description": description, "status": "reported"}, at=at)
        cases.append((cid, gid, at, 4 if n < open_from else rng.randint(0, 3)))
        await flush()
    await flush(True)
    for stage in range(1, 5):
        for cid, gid, at, last in cases:
            if stage > last:
                continue
            at = at + datetime.timedelta(hours=stage * 20 + rng.uniform(0, 10))
            if stage == 1:
                add(console, "case", cid, {"status": "accepted"}, at, 1)
            elif stage == 2:
                due = at + datetime.timedelta(days=rng.randint(3, 10))
                add(console, "case", cid, {"status": "dispatched", "department": rng.choice(DEPARTMENTS),
                                           "due_at": due.isoformat()}, at, 2)
            elif stage == 3:
                add(someone(gid), "case", cid, {"status": "resolved", "feedback": "已协调相关部门处理完毕, 居民满意"}, at, 3)
            else:
                add(console, "case", cid, {"status": "closed", "rating": rng.choice([3, 4, 5, 5, 5])}, at, 4)
            await flush()
        await flush(True)
    say(f"{len(cases)} cases walked round the loop")

    for vid, when in reviews:
        flagged = rng.random() < 0.05
        reviewed = min(when + datetime.timedelta(days=rng.uniform(0.5, 6)), now)
        add(console, "visit", vid, {"review": {
            "verdict": "flagged" if flagged else "approved",
            "comment": "记录过于简单, 请补充居民诉求" if flagged else "记录清楚",
            "reviewer": "supervisor", "reviewed_at": reviewed.isoformat()}}, reviewed, 1)
        await flush()
    await flush(True)
    say(f"{len(reviews)} visits reviewed")

    # Two phones of a grid edited the same household offline: the later edit won, the other waits.
    for hid, gid in rng.sample(households, scale["conflicts"]):
        first, second = rng.sample(field[gid], 2)
        earlier = moment()
        add(senders[first.id], "household", hid, {"phone": fake.phone_number(), "notes": "电话已更新"}, earlier, 1)
        add(senders[second.id], "household", hid, {"phone": fake.phone_number()},
            earlier + datetime.timedelta(minutes=rng.randint(5, 90)), 1)
    await flush(True)
    async with sm() as session, session.begin():
        ids = list(await session.scalars(select(ConflictEntry.id).order_by(ConflictEntry.id)))
        kept = ids[: len(ids) * 9 // 10]
        for start in range(0, len(kept), 5000):
            await session.execute(update(ConflictEntry).where(ConflictEntry.id.in_(kept[start : start + 5000]))
                                  .values(status="kept", resolved_by=supervisor.id, resolved_at=now))
    say(f"{len(ids)} conflicts, {len(kept)} resolved; {total[0]} mutations in all")

    # A year of syncing: each phone pushes and pulls a few times a day.
    table = SyncLogEntry.__table__
    columns = ("device_id", "user_id", "kind", "at", "app_version", "mutations", "applied", "merged", "rejected",
               "changes", "error", "duration_ms")
    rows_in = 0

    def insert(session, rows: list[tuple]) -> None:  # noqa: ANN001
        connection = session.connection()
        at = table.c.at.type.dialect_impl(connection.dialect).bind_processor(connection.dialect)
        insert_rows(connection, table, columns, [r[:3] + ((at(r[3]) if at else r[3]),) + r[4:] for r in rows])

    rows: list[tuple] = []
    for user in field_users:
        device = devices[user.id]
        for day in range(365):
            for _ in range(scale["syncs_a_day"]):
                at = now - datetime.timedelta(days=day, hours=rng.uniform(0, 12))
                pushed = rng.randint(0, 20)
                error = "network" if rng.random() < 0.01 else None
                rows.append((device, user.id, "push", at, "0.1.0", pushed, pushed, 0, 0, 0, error, rng.randint(20, 400)))
                rows.append((device, user.id, "pull", at, "0.1.0", 0, 0, 0, 0, rng.randint(0, 120), None,
                             rng.randint(10, 300)))
        if len(rows) >= 50_000:
            async with sm() as session, session.begin():
                await session.run_sync(insert, rows)
            rows_in += len(rows)
            rows = []
    async with sm() as session, session.begin():
        await session.run_sync(insert, rows)
    rows_in += len(rows)
    await analyze()
    say(f"{rows_in} sync log rows")


def load_into(data_dir: Path, db: str | None, scale: dict) -> None:
    from litestar.testing import TestClient

    from server.app import create_app
    from server.settings import Settings

    settings = Settings(data_dir=data_dir, db=db)
    start = time.perf_counter()
    with TestClient(create_app(settings), timeout=3600) as client:
        client.blocking_portal.call(lambda: load(client.app.state.sessionmaker, scale))
    print(f"loaded in {time.perf_counter() - start:.0f} s")


# ---- measuring --------------------------------------------------------------------------------


class Server:
    """``fieldloop serve`` in a process of its own, on the loaded data."""

    def __init__(self, data_dir: Path, db: str | None, root: Path, port: int):
        args = [sys.executable, "-m", "server.cli", "--data", str(data_dir)]
        if db:
            args += ["--db", db]
        env = dict(os.environ, PYTHONPATH=str(root))
        self.process = subprocess.Popen([*args, "serve", "--host", "127.0.0.1", "--port", str(port)], cwd=root,
                                        env=env)
        self.base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{self.base}/console/login", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError("the server did not start")
            time.sleep(0.5)
        raise RuntimeError("the server did not answer")

    def reset_peak(self) -> int:
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
        return self._status_kib("VmRSS")

    def peak_kib(self) -> int:
        return self._status_kib("VmHWM")

    def _status_kib(self, key: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def login(client: httpx.Client, name: str) -> None:
    page = client.get("/console/login")
    token = re.search(r'name="_csrf" value="([^"]+)"', page.text).group(1)
    reply = client.post("/console/login", data={"name": name, "password": PASSWORD, "_csrf": token,
                                                "next": "/console/"})
    assert reply.status_code == 303, reply.text


def first(client: httpx.Client, path: str, pattern: str) -> str | None:
    match = re.search(pattern, client.get(path).text)
    return match.group(1) if match else None


def pages_for(client: httpx.Client, admin: bool) -> list[str]:
    visit = first(client, "/console/visits?review=all", r'"(/console/visits/[0-9a-f-]{36})"')
    case = first(client, "/console/cases?status=closed", r'"(/console/cases/[0-9a-f-]{36})"')
    conflict = first(client, "/console/conflicts", r'"(/console/conflicts/\d+)"')
    household = first(client, "/console/households?q=1%E5%B9%A2", r'"(/console/households/[0-9a-f-]{36})"')
    grid = first(client, "/console/visits", r'<option value="([0-9a-f-]{36})"')
    user = first(client, "/console/sync-log", r'<option value="([0-9a-f-]{36})"[^>]*>红管家')
    yesterday = (datetime.date.today() - datetime.timedelta(days=1)).isoformat()
    pages = [
        "/console/",
        "/console/?screen=1",
        "/console/cases",
        f"/console/cases?grid={grid}",
        "/console/cases?category=drainage",
        "/console/cases?status=dispatched",
        "/console/cases?status=closed",
        "/console/cases?status=closed&page=300",
        case,
        case and case.replace("/cases/", "/records/") + "/changes",
        "/console/visits",
        "/console/visits?review=all",
        "/console/visits?review=all&page=2000",
        f"/console/visits?review=all&grid={grid}&method=inquiry",
        "/console/visits?due=1",
        visit,
        "/console/households",
        "/console/households?page=400",
        "/console/households?q=%E5%BC%A0",
        household,
        household and household.replace("/households/", "/records/") + "/changes",
        "/console/sync-log",
        "/console/sync-log?page=5000",
        f"/console/sync-log?user={user}",
        f"/console/sync-log?grid={grid}",
        f"/console/sync-log?day={yesterday}",
        "/console/conflicts",
        "/console/conflicts?state=resolved",
        conflict,
    ]
    if admin:
        pages += ["/console/admin/devices", "/console/admin/devices?page=5", "/console/admin/users",
                  "/console/admin/users?page=5", "/console/admin/grids", "/console/admin/grids?page=2",
                  "/console/admin/enrollment"]
    pages += [
        "/console/visits?review=all&format=csv",
        "/console/visits?review=all&format=xlsx",
        "/console/cases?format=csv",
        "/console/cases?format=xlsx",
        "/console/households?format=csv",
        f"/console/sync-log?day={yesterday}&format=csv",
        "/console/sync-log?format=csv",
        "/console/conflicts?state=resolved&format=csv",
    ]
    if admin:
        pages += ["/console/admin/devices?format=xlsx"]
    return [p for p in pages if p]


def live_dashboard(client: httpx.Client, repeat: int) -> int:
    """The dashboard in a live sub-district, where records change every few seconds: a visit is
    reviewed (a change through the console's write path) before each view."""
    visit = first(client, "/console/visits?review=all", r'"(/console/visits/[0-9a-f-]{36})"')
    times = []
    for i in range(repeat):
        page = client.get(visit).text
        token = re.search(r'name="_csrf" value="([^"]+)"', page).group(1)
        version = re.search(r'name="version" value="(\d+)"', page).group(1)
        reply = client.post(f"{visit}/review", data={"_csrf": token, "version": version, "comment": f"bench {i}",
                                                      "verdict": ("approved", "flagged")[i % 2]})
        assert reply.status_code == 303, reply.text
        start = time.perf_counter()
        assert client.get("/console/").status_code == 200
        times.append((time.perf_counter() - start) * 1000)
    median, worst = statistics.median(times), max(times)
    flag = "" if median <= TARGET_MS else "  <-- over target"
    print(f"  {'/console/ just after a change (a visit reviewed before each)':62} {median:9.1f} {worst:9.1f}{flag}",
          flush=True)
    return bool(flag)


def measure(server: Server, repeat: int, only: str | None, pages: str | None = None) -> int:
    failures = 0
    for name in ("supervisor", "admin"):
        if only and name != only:
            continue
        with httpx.Client(base_url=server.base, timeout=600) as client:
            login(client, name)
            print(f"\n{name}:")
            print(f"  {'page':62} {'median ms':>9} {'worst ms':>9} {'status':>6} {'bytes':>10} {'peak RSS MiB':>12}"
                  f" {'first rows ms':>13}")
            for path in pages_for(client, admin=name == "admin"):
                if pages and not re.search(pages, path):
                    continue
                export = "format=" in path
                times, status, size, peak, first_rows = [], 0, 0, "", 0.0
                for _ in range(1 if export else repeat):
                    before = server.reset_peak()
                    start = time.perf_counter()
                    with client.stream("GET", path) as reply:
                        size, lines = 0, 0
                        for chunk in reply.iter_bytes():
                            # An export's first rows: a CSV's header line goes out before the query
                            # runs, so the time to the bytes after it; an XLSX (a zip written when
                            # its last row is in) sends nothing before the end.
                            lines += chunk.count(b"\n")
                            if not first_rows and (lines > 1 or "xlsx" in path):
                                first_rows = (time.perf_counter() - start) * 1000
                            size += len(chunk)
                        status = reply.status_code
                    times.append((time.perf_counter() - start) * 1000)
                    peak = f"{server.peak_kib() / 1024:6.0f} (+{(server.peak_kib() - before) / 1024:.0f})"
                median, worst = statistics.median(times), max(times)
                if status != 200:
                    flag = "  <-- failed"
                elif export:
                    flag = ""
                else:
                    flag = "" if median <= TARGET_MS else "  <-- over target"
                failures += flag.startswith("  <--")
                shown = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "<id>", path)
                print(f"  {shown[:62]:62} {median:9.1f} {worst:9.1f} {status:6d} {size:10d} "
                      f"{peak if export else '':>12} {f'{first_rows:13.1f}' if export else '':>13}{flag}", flush=True)
            if name == "supervisor" and (not pages or re.search(pages, "/console/")):
                failures += live_dashboard(client, repeat)
    print(f"\npages over {TARGET_MS} ms or failing: {failures}")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="subdistrict")
    parser.add_argument("--db", default=None, help="a PostgreSQL URL; SQLite in the data folder when absent")
    parser.add_argument("--data", type=Path, default=None, help="keep the loaded data here (reused when loaded)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--server-root", type=Path, default=ROOT, help="the checkout whose server to measure")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--only", choices=["supervisor", "admin"], default=None)
    parser.add_argument("--pages", default=None, help="only the pages whose path matches this regex")
    parser.add_argument("--load-only", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data or Path(tmp) / "data"
        marker = data_dir / f"loaded-{args.scale}"
        if not marker.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            print(f"loading the {args.scale} data set into {args.db or data_dir}")
            load_into(data_dir, args.db, SCALES[args.scale])
            marker.write_text("loaded\n")
        if args.load_only:
            return 0
        server = Server(data_dir, args.db, args.server_root.resolve(), args.port)
        try:
            return 1 if measure(server, args.repeat, args.only, args.pages) else 0
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
