"""Several people at the console at once, and the console around midnight in Shanghai.

Two supervisors act on one case within milliseconds, or one of them from a page opened before
the other acted: the workflow takes one decision, and the other supervisor is told, in their
language, that the record changed meanwhile. The server runs in UTC; its users live in UTC+8.
"""

from __future__ import annotations

import asyncio
import datetime
import re

import pytest
from sqlalchemy import select

from server.accounts import service as accounts
from server.console import actions, web
from server.console.auth import ConsoleUser
from server.console.i18n import LANG_COOKIE, catalog
from server.db.models import ChangeLogEntry, ConflictEntry, RecordRow, User
from sync.hlc import format_stamp, wall_now_ms
from tests.console.conftest import GRID_A, GRID_B, PASSWORD

CHANGED = "error.action.changed_meanwhile"


def _future_day() -> str:
    return (datetime.datetime.now(web.LOCAL_TZ).date() + datetime.timedelta(days=3)).isoformat()


def _record(site, record_id: str) -> RecordRow:
    async def get() -> RecordRow:
        async with site.sessionmaker() as db:
            return await db.get(RecordRow, record_id)

    return site.call(get)


def _status_steps(site, record_id: str) -> list[str]:
    async def steps() -> list[str]:
        async with site.sessionmaker() as db:
            rows = await db.scalars(
                select(ChangeLogEntry).where(ChangeLogEntry.record_id == record_id).order_by(ChangeLogEntry.seq)
            )
            return [e.changes["status"][1] for e in rows if "status" in e.changes]

    return site.call(steps)


def _conflicts_of(site, record_id: str) -> list[ConflictEntry]:
    async def get() -> list[ConflictEntry]:
        async with site.sessionmaker() as db:
            return list((await db.scalars(select(ConflictEntry).where(ConflictEntry.record_id == record_id))).all())

    return site.call(get)


@pytest.fixture
def colleagues(site) -> tuple[ConsoleUser, ConsoleUser]:
    """sup_a and a second supervisor of the same grid, as the console knows them."""
    site.call(accounts.create_user, site.sessionmaker, "sup_a2", "supervisor", [GRID_A], PASSWORD)

    async def users() -> list[ConsoleUser]:
        async with site.sessionmaker() as db:
            found = {u.name: u for u in (await db.scalars(select(User).where(User.name.in_(["sup_a", "sup_a2"]))))}
        return [ConsoleUser(found[n].id, n, "supervisor", frozenset({site.grid_a})) for n in ("sup_a", "sup_a2")]

    return tuple(site.call(users))


def _at_once(site, *steps):
    """Run the steps concurrently on the app's loop; each gives its return value or exception."""

    async def together():
        return await asyncio.gather(*(step() for step in steps), return_exceptions=True)

    return site.call(together)


def _case_at(site, status: str) -> str:
    """A case of grid A taken by sup_a through the console up to ``status`` (accepted or resolved)."""
    cid = site.case(site.phone_a, site.grid_a)["id"]
    site.browser.login("sup_a")
    assert site.browser.post(f"/console/cases/{cid}/accept", {"version": "1"}).status_code == 303
    if status == "resolved":
        site.browser.post(f"/console/cases/{cid}/dispatch", {"version": "2", "department": "城管", "due": _future_day()})
        site.phone_a.pull_all()
        [done] = site.phone_a.push([site.phone_a.mutation("case", cid, {"status": "resolved", "feedback": "已修好"})])[
            "results"
        ]
        assert done["status"] == "applied", done
    assert _record(site, cid).fields["status"] == status
    return cid


def _one_refused_as_changed(outcomes: list) -> int:
    """The index of the step that went through; the other must have been told the case changed."""
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(refused) == 1, outcomes
    assert isinstance(refused[0], actions.ActionRefused) and refused[0].code == "changed_meanwhile"
    return next(i for i, o in enumerate(outcomes) if not isinstance(o, Exception))


# ---- two supervisors, one case ------------------------------------------------------------------


def test_two_supervisors_dispatching_one_case_at_once_store_one_dispatch(site, colleagues):
    cid = _case_at(site, "accepted")
    row = _record(site, cid)
    due = actions.parse_due(_future_day())
    departments = ["城管", "物业"]
    outcomes = _at_once(
        site,
        *(
            lambda me=me, dept=dept: actions.dispatch_case(
                site.sessionmaker, me, row, department=dept, due=due, base_version=row.version
            )
            for me, dept in zip(colleagues, departments)
        ),
    )
    winner = _one_refused_as_changed(outcomes)
    stored = _record(site, cid)
    assert stored.fields["department"] == departments[winner] and stored.version == row.version + 1
    assert _status_steps(site, cid) == ["reported", "accepted", "dispatched"]
    assert _conflicts_of(site, cid) == []  # the loser's department is not stored, not even as lost
    pulled = {r["id"]: r for r in site.phone_a.pull_all()}[cid]
    assert pulled["fields"]["department"] == departments[winner] and pulled["version"] == stored.version


@pytest.mark.parametrize("second_outcome", ["close", "reopen"])
def test_two_evaluations_of_one_case_at_once_keep_the_first(site, colleagues, second_outcome):
    cid = _case_at(site, "resolved")
    row = _record(site, cid)
    due = actions.parse_due(_future_day())
    outcomes = _at_once(
        site,
        lambda: actions.evaluate_case(
            site.sessionmaker, colleagues[0], row, rating=5, outcome="close", base_version=row.version
        ),
        lambda: actions.evaluate_case(
            site.sessionmaker, colleagues[1], row, rating=1, outcome=second_outcome, due=due,
            base_version=row.version,
        ),
    )
    winner = _one_refused_as_changed(outcomes)
    stored = _record(site, cid)
    assert stored.version == row.version + 1
    assert stored.fields["rating"] == (5, 1)[winner]
    assert stored.fields["status"] == ("closed", "closed" if second_outcome == "close" else "dispatched")[winner]


def test_two_supervisors_accepting_one_case_at_once_are_told_who_was_second(site, colleagues):
    cid = site.case(site.phone_a, site.grid_a)["id"]
    row = _record(site, cid)
    outcomes = _at_once(
        site, *(lambda me=me: actions.accept_case(site.sessionmaker, me, row, base_version=1) for me in colleagues)
    )
    _one_refused_as_changed(outcomes)
    assert _status_steps(site, cid) == ["reported", "accepted"] and _record(site, cid).version == 2


def test_two_reviews_of_one_visit_at_once_keep_the_first(site, colleagues):
    home = site.household(site.phone_a, site.grid_a)
    vid = site.visit(site.phone_a, site.grid_a, home["id"])["id"]
    row = _record(site, vid)
    outcomes = _at_once(
        site,
        lambda: actions.review_visit(
            site.sessionmaker, colleagues[0], row, verdict="approved", comment="", base_version=1
        ),
        lambda: actions.review_visit(
            site.sessionmaker, colleagues[1], row, verdict="flagged", comment="缺少照片", base_version=1
        ),
    )
    winner = _one_refused_as_changed(outcomes)
    stored = _record(site, vid)
    assert stored.version == 2 and stored.fields["review"]["verdict"] == ("approved", "flagged")[winner]
    assert _conflicts_of(site, vid) == []


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_a_step_from_a_page_opened_before_another_supervisors_step_is_refused_in_words(site, colleagues, lang):
    cid = _case_at(site, "accepted")  # sup_a accepted: both pages now show version 2, "accepted"
    site.browser.post(f"/console/cases/{cid}/dispatch", {"version": "2", "department": "城管", "due": _future_day()})
    site.browser.login("sup_a2")
    site.browser.client.cookies.set(LANG_COOKIE, lang)
    stale = site.browser.post(
        f"/console/cases/{cid}/dispatch", {"version": "2", "department": "物业", "due": _future_day()}
    )
    assert stale.status_code == 400
    assert catalog(lang)[CHANGED] in stale.text
    # the answer shows the case as it is now, so the next submit acts on what was seen
    assert 'name="version" value="2"' not in stale.text and "城管" in stale.text
    assert _record(site, cid).fields["department"] == "城管"
    assert _status_steps(site, cid) == ["reported", "accepted", "dispatched"]


def test_a_review_from_a_page_opened_before_another_review_is_refused(site, colleagues):
    home = site.household(site.phone_a, site.grid_a)
    vid = site.visit(site.phone_a, site.grid_a, home["id"])["id"]
    site.browser.login("sup_a")
    site.browser.post(f"/console/visits/{vid}/review", {"verdict": "flagged", "comment": "缺少照片", "version": "1"})
    site.browser.login("sup_a2")
    stale = site.browser.post(f"/console/visits/{vid}/review", {"verdict": "approved", "comment": "", "version": "1"})
    assert stale.status_code == 400 and catalog("zh")[CHANGED] in stale.text and "缺少照片" in stale.text
    assert _record(site, vid).fields["review"]["verdict"] == "flagged"


def test_a_double_click_or_back_and_submit_takes_the_step_once(site):
    cid = _case_at(site, "accepted")
    form = {"version": "2", "department": "城管", "due": _future_day()}
    assert site.browser.post(f"/console/cases/{cid}/dispatch", form).status_code == 303
    again = site.browser.post(f"/console/cases/{cid}/dispatch", form)
    assert again.status_code == 303
    assert _status_steps(site, cid) == ["reported", "accepted", "dispatched"] and _record(site, cid).version == 3
    # Back, another department, submit: no longer the same step, and not a step the case allows now
    other = site.browser.post(f"/console/cases/{cid}/dispatch", {**form, "department": "物业"})
    assert other.status_code == 400 and catalog("zh")[CHANGED] in other.text
    assert _record(site, cid).fields["department"] == "城管" and _record(site, cid).version == 3


def test_a_phone_edit_since_the_page_does_not_stop_a_step(site):
    """Only the field the supervisor decided on counts: a phone adding a photo is no reason to refuse."""
    cid = _case_at(site, "accepted")
    site.phone_a.pull_all()
    [edit] = site.phone_a.push([site.phone_a.mutation("case", cid, {"description": "3幢外墙渗水,已拍照"})])["results"]
    assert edit["status"] == "applied"
    reply = site.browser.post(
        f"/console/cases/{cid}/dispatch", {"version": "2", "department": "城管", "due": _future_day()}
    )
    assert reply.status_code == 303 and _record(site, cid).fields["status"] == "dispatched"


# ---- around midnight in Shanghai ----------------------------------------------------------------

# 01:00 on 15 March 2031 in Shanghai is still 14 March in UTC, the server's own time zone.
SHANGHAI_1AM = datetime.datetime(2031, 3, 15, 1, 0, tzinfo=web.LOCAL_TZ)


@pytest.fixture
def shanghai_1am(monkeypatch) -> datetime.datetime:
    """The console's clock set to 01:00 in Shanghai (17:00 the day before, UTC)."""
    from server.console import exports, stats

    for module in (web, actions, exports, stats):
        monkeypatch.setattr(module, "local_now", lambda: SHANGHAI_1AM, raising=False)
    return SHANGHAI_1AM


def test_the_due_date_picker_starts_at_the_supervisors_today_not_the_servers(site, shanghai_1am):
    cid = _case_at(site, "accepted")
    page = site.browser.get(f"/console/cases/{cid}")
    assert 'min="2031-03-15"' in page.text


def test_at_1am_a_due_date_of_yesterday_is_refused_and_today_is_the_end_of_today(site, shanghai_1am):
    cid = _case_at(site, "accepted")
    yesterday = site.browser.post(
        f"/console/cases/{cid}/dispatch", {"version": "2", "department": "城管", "due": "2031-03-14"}
    )
    assert yesterday.status_code == 400 and catalog("zh")["error.action.date_past"] in yesterday.text
    today = site.browser.post(
        f"/console/cases/{cid}/dispatch", {"version": "2", "department": "城管", "due": "2031-03-15"}
    )
    assert today.status_code == 303
    assert _record(site, cid).fields["due_at"] == "2031-03-15T15:59:00Z"  # 23:59 in Shanghai


def test_an_export_is_named_for_the_supervisors_clock(site, shanghai_1am):
    site.browser.login("sup_a")
    reply = site.browser.get("/console/cases?format=csv")
    assert "fieldloop-cases-20310315-0100.csv" in reply.headers["content-disposition"]


# ---- two administrators -------------------------------------------------------------------------


def _admin_ids(site) -> dict[str, str]:
    async def get() -> dict[str, str]:
        async with site.sessionmaker() as db:
            rows = await db.execute(select(User.name, User.id).where(User.role == "admin", User.active.is_(True)))
            return dict(rows.all())

    return site.call(get)


def test_two_administrators_removing_each_others_access_at_once_leave_one(site):
    from server.console import accounts_admin

    site.call(accounts.create_user, site.sessionmaker, "admin2", "admin", [], PASSWORD)
    ids = _admin_ids(site)
    first, second = ids["admin"], ids["admin2"]
    outcomes = _at_once(
        site,
        lambda: accounts_admin.set_role_and_active(site.sessionmaker, second, "supervisor", True, first),
        lambda: accounts_admin.set_role_and_active(site.sessionmaker, first, "supervisor", True, second),
    )
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(refused) == 1 and isinstance(refused[0], actions.ActionRefused), outcomes
    assert refused[0].code == "last_admin"
    assert len(_admin_ids(site)) == 1


def test_an_administrator_removing_their_own_access_is_told_so_in_their_language(site):
    uid = _admin_ids(site)["admin"]
    site.browser.login("admin")
    reply = site.browser.post(f"/console/admin/users/{uid}", {"action": "save", "role": "supervisor", "active": "1"})
    assert reply.status_code == 400 and catalog("zh")["error.action.own_admin_access"] in reply.text


def test_a_user_saved_from_a_page_opened_before_another_administrators_change_is_not_overwritten(site):
    uid = _user_id(site, "sup_a")
    site.browser.login("admin")
    page = site.browser.get(f"/console/admin/users/{uid}")
    seen = re.search(r'name="seen" value="([^"]+)"', page.text).group(1)
    site.field.set_grids("sup_a", [GRID_A, GRID_B])  # another administrator, meanwhile
    stale = site.browser.post(
        f"/console/admin/users/{uid}",
        {"action": "save", "seen": seen, "role": "supervisor", "grids": [site.grid_a]},  # and deactivates
    )
    assert stale.status_code == 400 and catalog("zh")[CHANGED] in stale.text
    assert _grids_of(site, uid) == {site.grid_a, site.grid_b} and _is_active(site, uid)
    fresh = re.search(r'name="seen" value="([^"]+)"', stale.text).group(1)
    again = site.browser.post(
        f"/console/admin/users/{uid}", {"action": "save", "seen": fresh, "role": "supervisor", "grids": [site.grid_a]}
    )
    assert again.status_code == 303 and _grids_of(site, uid) == {site.grid_a} and not _is_active(site, uid)


def _user_id(site, name: str) -> str:
    async def get() -> str:
        async with site.sessionmaker() as db:
            return await db.scalar(select(User.id).where(User.name == name))

    return site.call(get)


def _grids_of(site, user_id: str) -> set[str]:
    async def get() -> set[str]:
        async with site.sessionmaker() as db:
            return set(await accounts.user_grid_ids(db, user_id))

    return site.call(get)


def _is_active(site, user_id: str) -> bool:
    async def get() -> bool:
        async with site.sessionmaker() as db:
            return (await db.get(User, user_id)).active

    return site.call(get)


# ---- conflicts ----------------------------------------------------------------------------------


def test_taking_a_lost_value_over_a_newer_edit_than_the_page_showed_is_refused(site):
    second = site.field.device("wang")
    home = site.household(site.phone_a, site.grid_a)
    second.pull_all()
    second.push([second.mutation("household", home["id"], {"phone": "13800000001"})])
    late = site.phone_a.mutation("household", home["id"], {"phone": "13900000002"})
    late["hlc"] = format_stamp(wall_now_ms() + 1000, 0, site.phone_a.device_id)
    assert site.phone_a.push([late])["results"][0]["status"] == "merged"
    [conflict] = _conflicts_of(site, home["id"])
    site.browser.login("sup_a")
    shown = _record(site, home["id"]).version  # the conflict page, opened now
    site.phone_a.pull_all()
    [edit] = site.phone_a.push([site.phone_a.mutation("household", home["id"], {"phone": "13700000003"})])["results"]
    assert edit["status"] == "applied"
    reply = site.browser.post(f"/console/conflicts/{conflict.id}/resolve", {"choice": "take", "version": str(shown)})
    assert reply.status_code == 303 and "error=changed_meanwhile" in reply.headers["location"]
    assert catalog("zh")[CHANGED] in site.browser.get(reply.headers["location"]).text
    assert _record(site, home["id"]).fields["phone"] == "13700000003"
    assert [c.status for c in _conflicts_of(site, home["id"])] == ["open"]
