"""A demo sub-district, modelled on the case study: communities, grids, households, the people
who walk them, and a season of visits, patrols, diary entries and cases in every state."""

from __future__ import annotations

import datetime
import os
import random
import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from server.accounts import service as accounts
from server.db.models import Device, Grid, SyncLogEntry, User
from server.devices.service import create_enrollment_code
from server.records.writes import Sender, commit_mutations
from shared_schema.messages import Mutation
from shared_schema.workflow import Actor
from sync.hlc import HybridClock, format_stamp

COMMUNITIES = ["所前社区", "水木花都社区", "台苑新村社区", "大西门社区", "皇家湾社区", "回龙山社区"]
COMPOUNDS = ["台苑新村", "水木花都", "皇家湾花园", "大西门小区", "五峰新村", "回龙山庄", "雉州花园", "长兴苑"]
GRIDS_PER_COMMUNITY = 2
DEMO_PASSWORD = "fieldloop-demo"

TOPICS = ["落水管", "下水道", "化粪池", "停车", "养狗", "噪音", "物业", "垃圾分类", "邻里纠纷", "微心愿",
          "困难帮扶", "消防通道"]
HAZARDS = ["楼道堆物", "电动车充电", "井盖破损", "路灯不亮", "消防通道堵塞", "外墙脱落"]
TAGS = ["独居老人", "低保户", "党员户", "出租户", "残疾人", "空巢"]
CASES = [
    ("drainage", "落水管破裂", "楼幢落水管老化破裂, 雨天外墙渗水"),
    ("drainage", "下水道堵塞", "单元下水道堵塞, 污水外溢"),
    ("parking", "小区乱停车", "非小区车辆随意进出, 堵住消防通道"),
    ("noise", "空调外机噪音", "楼下住户空调夜间噪音大, 影响休息"),
    ("dispute", "物业纠纷", "业主与物业就收费问题发生争执"),
    ("pets", "养狗扰民", "犬只夜间吠叫, 未拴绳"),
    ("sanitation", "垃圾清运不及时", "垃圾桶满溢, 气味大"),
    ("facility", "缺少休息座椅", "老人散步无处休息, 建议增设靠椅"),
    ("safety", "楼道电动车充电", "电动车在楼道内充电, 存在火灾隐患"),
]
DEPARTMENTS = ["街道城管中队", "社区物业办", "住建局", "派出所", "综合执法局", "供电公司"]
BATCH = 500
# Made last: a database that has this user holds the whole demo.
LAST_USER = "zhangdaye"


class DemoRefused(ValueError):
    """The database holds grids or users that are not a whole demo: the demo is not loaded into it."""


async def load_demo(sessionmaker: async_sessionmaker, *, households: int = 3000, seed: int = 2018) -> list[str]:
    """Load the demo into an empty database and return the lines to print (console login, an
    enrollment code); on a database that holds the demo already, only those lines."""
    from faker import Faker

    fake = Faker("zh_CN")
    Faker.seed(seed)
    rng = random.Random(seed)
    async with sessionmaker() as session:
        users = await session.scalar(select(func.count()).select_from(User))
        grid_count = await session.scalar(select(func.count()).select_from(Grid))
        loaded = await session.scalar(select(User.id).where(User.name == LAST_USER))
    if loaded and grid_count:
        return ["the demo is loaded already", *await _logins(sessionmaker)]
    if users or grid_count:
        # Real data, or a demo stopped halfway: the demo's names would collide with them, after
        # some of it had been written.
        raise DemoRefused(f"the demo loads into an empty database only, and this one has {grid_count} grid(s) and "
                          f"{users} user(s): give another --data folder (or --db)")

    grids: list[Grid] = []
    for community in COMMUNITIES:
        for n in range(1, GRIDS_PER_COMMUNITY + 1):
            grids.append(await accounts.add_grid(sessionmaker, f"{community}第{n}网格", community))
    grid_names = [g.name for g in grids]
    await accounts.create_user(sessionmaker, "admin", "admin", [], DEMO_PASSWORD)
    await accounts.create_user(sessionmaker, "supervisor", "supervisor", grid_names, DEMO_PASSWORD)
    await accounts.create_user(sessionmaker, "supervisor2", "supervisor", grid_names[6:], DEMO_PASSWORD)
    workers: dict[str, list[User]] = {g.id: [] for g in grids}
    for i, g in enumerate(grids):
        worker = await accounts.create_user(sessionmaker, f"grid{i + 1:02d}", "grid_worker", [g.name])
        steward = await accounts.create_user(sessionmaker, fake.name(), "red_steward", [g.name])
        workers[g.id] += [worker, steward]

    clock = HybridClock(node="demo")
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    household_rows: list[tuple[str, str]] = []
    mutations: list[tuple[Sender, Mutation]] = []

    counter = iter(range(10**9))

    def add(sender: Sender, entity: str, record_id: str, fields: dict, base_version: int = 0,
            at: datetime.datetime | None = None) -> None:
        # Stamped when it happened, so the dashboard's weeks and the change log read like a season.
        hlc = clock.now() if at is None else format_stamp(int(at.timestamp() * 1000), next(counter) % 0xFFFF, "demo")
        mutations.append((sender, Mutation(mid=str(uuid.uuid4()), entity=entity, id=record_id, op="upsert",
                                           base_version=base_version, hlc=hlc, fields=fields)))

    def as_user(user: User) -> Sender:
        return Sender(origin=f"demo:{user.id}", actor=Actor.DEVICE, scope=None, user_id=user.id)

    for _ in range(households):
        g = rng.choice(grids)
        hid = str(uuid.uuid4())
        compound = rng.choice(COMPOUNDS)
        building, unit, room = rng.randint(1, 30), rng.randint(1, 4), f"{rng.randint(1, 6)}0{rng.randint(1, 4)}"
        add(as_user(workers[g.id][0]), "household", hid, {
            "grid_id": g.id,
            "address": f"雉城街道{compound}{building}幢{unit}单元{room}室",
            "building": f"{building}幢", "unit": f"{unit}单元", "room": room,
            "head_name": fake.name(), "phone": fake.phone_number(), "members": rng.randint(1, 6),
            "tags": rng.sample(TAGS, rng.randint(0, 2)),
            "notes": rng.choice(["", "老人独居, 子女在外地", "家中有残疾人, 需重点关注", "新搬入住户",
                                 "租户, 房东在外地"]),
        })
        household_rows.append((hid, g.id))

    methods = ["sit", "inquiry", "inquiry", "inquiry", "emergency", "consult", "followup"]
    visits: list[tuple[str, datetime.datetime]] = []
    for hid, gid in rng.sample(household_rows, min(len(household_rows), households)) * 2:
        when = now - datetime.timedelta(days=rng.randint(0, 90), hours=rng.randint(0, 10))
        follow = (now.date() + datetime.timedelta(days=rng.randint(-5, 14))) if rng.random() < 0.2 else None
        vid = str(uuid.uuid4())
        visits.append((vid, when))
        add(as_user(rng.choice(workers[gid])), "visit", vid, {
            "grid_id": gid, "household_id": hid, "method": rng.choice(methods),
            "topics": rng.sample(TOPICS, rng.randint(1, 3)),
            "notes": rng.choice(["了解家庭近况, 无特殊诉求", "反映楼道灯不亮", "提出停车难问题", "身体状况良好",
                                 "需协调物业处理"]),
            "follow_up_on": follow.isoformat() if follow else None,
            "visited_at": when.isoformat(),
        }, at=when)

    for g in grids:
        for day in range(20):
            started = now - datetime.timedelta(days=day, hours=rng.randint(1, 8))
            walker = rng.choice(workers[g.id])
            add(as_user(walker), "patrol", str(uuid.uuid4()), {
                "grid_id": g.id, "started_at": started.isoformat(),
                "ended_at": (started + datetime.timedelta(minutes=rng.randint(30, 120))).isoformat(),
                "notes": "网格巡查", "hazards": rng.sample(HAZARDS, rng.randint(0, 2)),
            })
            add(as_user(walker), "diary", str(uuid.uuid4()), {
                "grid_id": g.id, "written_at": started.isoformat(),
                "text": rng.choice(["居民反映小区停车难, 希望增设车位", "张大爷说楼道灯坏了三天",
                                    "顾先生反映楼下空调噪音, 已协调维修", "居民希望增加健身器材"]),
                "topics": rng.sample(TOPICS, 1),
            })

    cases: list[tuple[str, str, datetime.datetime]] = []
    for _ in range(max(households // 5, 10)):
        hid, gid = rng.choice(household_rows)
        category, title, description = rng.choice(CASES)
        cid = str(uuid.uuid4())
        reported = now - datetime.timedelta(days=rng.uniform(0, 84))
        add(as_user(rng.choice(workers[gid])), "case", cid, {
            "grid_id": gid, "household_id": hid, "category": category, "title": title,
            "description": description, "status": "reported",
        }, at=reported)
        cases.append((cid, gid, reported))
    await _commit(sessionmaker, mutations)

    async with sessionmaker() as session:
        supervisor = await session.scalar(select(User).where(User.name == "supervisor"))
    console = Sender(origin=f"console:{supervisor.id}", actor=Actor.CONSOLE, scope=None, user_id=supervisor.id)

    # Walk the cases round the closed loop (accept, dispatch, resolve, evaluate and close), a few
    # days a step, as far as today allows: old cases are closed, recent ones still open, and a
    # dispatched case past its due date becomes overdue at the server's next sweep.
    step_at = {cid: reported for cid, _, reported in cases}
    for stage in range(1, 5):
        mutations = []
        for cid, gid, _ in cases:
            at = step_at[cid]
            if at is None:
                continue
            at = at + datetime.timedelta(days=rng.uniform(0.2, 3.5))
            if at > now:
                step_at[cid] = None
                continue
            step_at[cid] = at
            if stage == 1:
                add(console, "case", cid, {"status": "accepted"}, 1, at=at)
            elif stage == 2:
                due = at + datetime.timedelta(days=rng.randint(2, 10))
                add(console, "case", cid, {"status": "dispatched", "department": rng.choice(DEPARTMENTS),
                                           "due_at": due.isoformat()}, 2, at=at)
            elif stage == 3:
                add(as_user(rng.choice(workers[gid])), "case", cid,
                    {"status": "resolved", "feedback": "已协调相关部门处理完毕, 居民满意"}, 3, at=at)
            else:
                add(console, "case", cid, {"status": "closed", "rating": rng.choice([4, 5, 5, 5, 3])}, 4, at=at)
        await _commit(sessionmaker, mutations)

    # The supervisor has reviewed most visits older than a week.
    mutations = []
    for vid, when in visits:
        if when < now - datetime.timedelta(days=7) and rng.random() < 0.8:
            flagged = rng.random() < 0.08
            reviewed = when + datetime.timedelta(days=rng.uniform(0.5, 6))
            add(console, "visit", vid, {"review": {
                "verdict": "flagged" if flagged else "approved",
                "comment": "记录过于简单, 请补充居民诉求" if flagged else "记录清楚",
                "reviewer": "supervisor", "reviewed_at": reviewed.isoformat()}}, 1, at=reviewed)
    await _commit(sessionmaker, mutations)

    # Two phones of one grid edited the same households offline: the later edit won, and the
    # other value waits in the conflict log for the supervisor.
    mutations = []
    for hid, gid in rng.sample(household_rows, min(8, len(household_rows))):
        first, second = workers[gid]
        earlier = now - datetime.timedelta(hours=rng.uniform(3, 48))
        add(as_user(first), "household", hid, {"phone": fake.phone_number(), "notes": "电话已更新"}, 1, at=earlier)
        add(as_user(second), "household", hid, {"phone": fake.phone_number()}, 1,
            at=earlier + datetime.timedelta(minutes=rng.randint(5, 90)))
    await _commit(sessionmaker, mutations)

    await _phones(sessionmaker, [w for pair in workers.values() for w in pair], rng, now)
    await accounts.create_user(sessionmaker, LAST_USER, "red_steward", grid_names[:2])
    return await _logins(sessionmaker)


async def _phones(sessionmaker: async_sessionmaker, users: list[User], rng: random.Random,
                  now: datetime.datetime) -> None:
    """Each field user's phone, with a month of syncs in the sync log; a few have been silent for days."""
    async with sessionmaker() as session, session.begin():
        for user in users:
            device = Device(id=str(uuid.uuid4()), user_id=user.id, public_key=os.urandom(32),
                            label=rng.choice(["红米 Note 12", "华为畅享 60", "OPPO A58", "vivo Y36"]),
                            app_version=rng.choice(["0.1.0", "0.1.0", "0.0.9"]),
                            enrolled_at=now - datetime.timedelta(days=40))
            silent_days = rng.choice([0, 0, 0, 0, 0, 1, 4, 9])
            last = now - datetime.timedelta(days=silent_days, hours=rng.uniform(0, 6))
            device.last_sync_at = last
            session.add(device)
            for day in range(silent_days, 30, 2):
                at = now - datetime.timedelta(days=day, hours=rng.uniform(0, 10))
                pushed = rng.randint(0, 40)
                session.add(SyncLogEntry(device_id=device.id, user_id=user.id, kind="push", at=at,
                                         app_version=device.app_version, mutations=pushed, applied=pushed,
                                         duration_ms=rng.randint(20, 400)))
                session.add(SyncLogEntry(device_id=device.id, user_id=user.id, kind="pull", at=at,
                                         app_version=device.app_version, changes=rng.randint(0, 120),
                                         duration_ms=rng.randint(10, 300)))


async def _commit(sessionmaker: async_sessionmaker, mutations: list[tuple[Sender, Mutation]]) -> None:
    by_sender: dict[Sender, list[Mutation]] = {}
    for sender, mutation in mutations:
        by_sender.setdefault(sender, []).append(mutation)
    for sender, batch in by_sender.items():
        for start in range(0, len(batch), BATCH):
            results = await commit_mutations(sessionmaker, batch[start : start + BATCH], sender)
            rejected = [r for r in results if r.status.value == "rejected"]
            if rejected:
                raise RuntimeError(f"demo data rejected: {rejected[0].error.message}")


async def _logins(sessionmaker: async_sessionmaker) -> list[str]:
    code = await create_enrollment_code(sessionmaker, LAST_USER, 24 * 3600)
    return [
        f"console login: admin / {DEMO_PASSWORD}   (supervisor: supervisor / {DEMO_PASSWORD})",
        f"enrollment code for red steward {LAST_USER} (24 h):",
        code,
    ]
