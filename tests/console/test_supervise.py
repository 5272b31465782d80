"""The supervisor's work: reviews, conflicts, the case loop, logs, scope and escaping."""

from __future__ import annotations

import datetime
import io
import re

import pytest
from openpyxl import load_workbook
from sqlalchemy import func, select

from server.db.models import ChangeLogEntry, ConflictEntry, RecordRow
from server.records import overdue
from server.records.overdue import mark_overdue_cases
from sync.hlc import format_stamp, wall_now_ms
from tests.console.conftest import record_id_in


def _tomorrow() -> str:
    return (datetime.date.today() + datetime.timedelta(days=2)).isoformat()


def _record(site, record_id: str) -> RecordRow:
    async def get() -> RecordRow:
        async with site.sessionmaker() as db:
            return await db.get(RecordRow, record_id)

    return site.call(get)


# ---- visits ------------------------------------------------------------------------------------


def test_a_synced_visit_waits_for_review_and_the_review_reaches_the_phone(site):
    home = site.household(site.phone_a, site.grid_a)
    visit = site.visit(site.phone_a, site.grid_a, home["id"], notes="张大爷反映楼道灯不亮")
    site.phone_a.pull_all()
    site.browser.login("sup_a")
    listing = site.browser.get("/console/visits")
    assert visit["id"] in record_id_in(listing.text, "visits")
    detail = site.browser.get(f"/console/visits/{visit['id']}")
    assert "张大爷反映楼道灯不亮" in detail.text and "台苑新村" in detail.text and "wang" in detail.text

    reply = site.browser.post(
        f"/console/visits/{visit['id']}/review", {"verdict": "approved", "comment": "记录完整", "version": "1"}
    )
    assert reply.status_code == 303
    changes = {r["id"]: r for r in site.phone_a.pull_all()}
    review = changes[visit["id"]]["fields"]["review"]
    assert review["verdict"] == "approved" and review["comment"] == "记录完整" and review["reviewer"] == "sup_a"
    assert visit["id"] not in record_id_in(site.browser.get("/console/visits").text, "visits")
    assert visit["id"] in record_id_in(site.browser.get("/console/visits?review=approved").text, "visits")
    log = site.browser.get(f"/console/records/{visit['id']}/changes")
    assert log.status_code == 200 and "记录完整" in log.text and "sup_a" in log.text


@pytest.mark.parametrize(
    "form, status",
    [
        ({"verdict": "flagged", "comment": ""}, 400),  # a flag needs a comment
        ({"verdict": "maybe", "comment": "x"}, 400),
        ({"verdict": "approved", "comment": "x" * 2001}, 400),
    ],
)
def test_a_bad_review_is_refused_and_changes_nothing(site, form, status):
    home = site.household(site.phone_a, site.grid_a)
    visit = site.visit(site.phone_a, site.grid_a, home["id"])
    site.browser.login("sup_a")
    reply = site.browser.post(f"/console/visits/{visit['id']}/review", {**form, "version": "1"})
    assert reply.status_code == status
    assert _record(site, visit["id"]).version == 1


def test_flagging_with_a_comment_is_kept(site):
    home = site.household(site.phone_a, site.grid_a)
    visit = site.visit(site.phone_a, site.grid_a, home["id"])
    site.browser.login("sup_a")
    site.browser.post(
        f"/console/visits/{visit['id']}/review", {"verdict": "flagged", "comment": "缺少照片", "version": "1"}
    )
    assert _record(site, visit["id"]).fields["review"]["verdict"] == "flagged"
    assert visit["id"] in record_id_in(site.browser.get("/console/visits?review=flagged").text, "visits")


# ---- scope -------------------------------------------------------------------------------------


def test_visits_are_listed_newest_first_by_the_moment_not_by_the_text(site):
    home = site.household(site.phone_a, site.grid_a)
    beijing = site.visit(site.phone_a, site.grid_a, home["id"], visited_at="2026-11-25T09:00:00+08:00")  # 01:00 UTC
    utc = site.visit(site.phone_a, site.grid_a, home["id"], visited_at="2026-11-25T02:00:00+00:00")  # an hour later
    site.browser.login("sup_a")
    listed = list(dict.fromkeys(record_id_in(site.browser.get("/console/visits").text, "visits")))
    assert listed[:2] == [utc["id"], beijing["id"]]


def test_a_supervisor_cannot_reach_another_grid_by_editing_the_url(site):
    home_b = site.household(site.phone_b, site.grid_b)
    visit_b = site.visit(site.phone_b, site.grid_b, home_b["id"], notes="另一网格的走访")
    case_b = site.case(site.phone_b, site.grid_b)
    site.browser.login("sup_a")
    assert visit_b["id"] not in site.browser.get("/console/visits?review=all").text
    assert "另一网格的走访" not in site.browser.get("/console/visits?review=all&grid=" + site.grid_b).text
    for path in (
        f"/console/visits/{visit_b['id']}",
        f"/console/cases/{case_b['id']}",
        f"/console/records/{home_b['id']}/changes",
        f"/console/records/{visit_b['id']}/changes",
    ):
        assert site.browser.get(path).status_code == 404, path
    assert (
        site.browser.post(
            f"/console/visits/{visit_b['id']}/review", {"verdict": "approved", "comment": "", "version": "1"}
        ).status_code
        == 404
    )
    assert site.browser.post(f"/console/cases/{case_b['id']}/accept", {"version": "1"}).status_code == 404
    assert _record(site, visit_b["id"]).version == 1 and _record(site, case_b["id"]).fields["status"] == "reported"
    assert case_b["id"] not in site.browser.get("/console/cases").text
    assert "落水管破裂" not in site.browser.get("/console/cases?status=reported").text
    assert "落水管破裂" not in site.browser.get("/console/cases?format=csv").text
    # the other supervisor sees it
    site.browser.login("sup_b")
    assert site.browser.get(f"/console/visits/{visit_b['id']}").status_code == 200


def test_the_sync_log_shows_only_the_supervisors_people_and_filters(site):
    site.household(site.phone_a, site.grid_a)
    site.household(site.phone_b, site.grid_b)
    site.phone_a.pull_all()
    site.phone_b.pull_all()
    site.call(site.field.client.app.state.sync_log.flush)  # written in batches, every half second
    people = r"<tr[^>]*><td>[^<]*</td><td>(?:上传|下载)</td><td>([^<]*)</td>"
    site.browser.login("sup_a")
    assert set(re.findall(people, site.browser.get("/console/sync-log").text)) == {"wang"}
    site.browser.login("admin")
    assert set(re.findall(people, site.browser.get("/console/sync-log").text)) == {"li", "wang"}
    assert set(re.findall(people, site.browser.get("/console/sync-log?grid=" + site.grid_b).text)) == {"li"}
    today = datetime.date.today().isoformat()
    for query in (f"?day={today}", f"?grid={site.grid_a}", "?day=not-a-day", "?user=" + "x" * 40, "?page=-3"):
        assert site.browser.get("/console/sync-log" + query).status_code == 200


def test_phone_text_is_escaped_everywhere_it_is_shown(site):
    attack = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    home = site.household(site.phone_a, site.grid_a, head_name=attack[:190], notes=attack)
    visit = site.visit(site.phone_a, site.grid_a, home["id"], notes=attack)
    case = site.case(site.phone_a, site.grid_a, title=attack[:190], description=attack)
    site.browser.login("sup_a")
    for path in (
        f"/console/visits/{visit['id']}",
        "/console/visits",
        f"/console/cases/{case['id']}",
        "/console/cases",
        "/console/households",
        f"/console/households/{home['id']}",
        f"/console/records/{home['id']}/changes",
        "/console/",
    ):
        html = site.browser.get(path).text
        assert "<script>alert" not in html and "<img src=x" not in html, path
    assert "&lt;script&gt;" in site.browser.get(f"/console/visits/{visit['id']}").text


# ---- conflicts ---------------------------------------------------------------------------------


def _make_conflict(site) -> tuple[dict, int]:
    """Two phones in grid A edit one household's phone number; the later one wins."""
    second = site.field.device("wang")
    home = site.household(site.phone_a, site.grid_a)
    second.pull_all()
    early = second.mutation("household", home["id"], {"phone": "13800000001"})
    late = site.phone_a.mutation("household", home["id"], {"phone": "13900000002"})
    late["hlc"] = format_stamp(wall_now_ms() + 1000, 0, site.phone_a.device_id)
    second.push([early])
    assert site.phone_a.push([late])["results"][0]["status"] == "merged"

    async def conflict_id() -> int:
        async with site.sessionmaker() as db:
            return await db.scalar(select(ConflictEntry.id).where(ConflictEntry.record_id == home["id"]))

    return home, site.call(conflict_id)


def test_a_conflict_shows_both_values_and_taking_the_lost_one_syncs_out(site):
    home, cid = _make_conflict(site)
    site.browser.login("sup_a")
    assert f"/console/conflicts/{cid}" in site.browser.get("/console/conflicts").text
    page = site.browser.get(f"/console/conflicts/{cid}")
    assert "13900000002" in page.text and "13800000001" in page.text
    site.phone_a.pull_all()
    version = _record(site, home["id"]).version
    reply = site.browser.post(f"/console/conflicts/{cid}/resolve", {"choice": "take", "version": str(version)})
    assert reply.status_code == 303
    assert _record(site, home["id"]).fields["phone"] == "13800000001"
    pulled = {r["id"]: r for r in site.phone_a.pull_all()}
    assert pulled[home["id"]]["fields"]["phone"] == "13800000001"
    assert f"/console/conflicts/{cid}" not in site.browser.get("/console/conflicts").text
    history = site.browser.get("/console/conflicts?state=resolved").text
    assert f"/console/conflicts/{cid}" in history and "已改用落选值" in history
    # resolving again is refused, and changes nothing more
    again = site.browser.post(f"/console/conflicts/{cid}/resolve", {"choice": "keep", "version": str(version + 1)})
    assert again.status_code == 303 and "already_resolved" in again.headers["location"]


@pytest.mark.parametrize("version", ["-1", "0", "99999"])
def test_a_version_no_page_could_show_counts_as_the_current_one(site, version):
    home, cid = _make_conflict(site)
    site.browser.login("sup_a")
    reply = site.browser.post(f"/console/conflicts/{cid}/resolve", {"choice": "take", "version": version})
    assert reply.status_code == 303 and "error" not in reply.headers["location"]
    assert _record(site, home["id"]).fields["phone"] == "13800000001"

    async def open_conflicts() -> int:
        async with site.sessionmaker() as db:
            return await db.scalar(select(func.count()).select_from(ConflictEntry)
                                   .where(ConflictEntry.record_id == home["id"], ConflictEntry.status == "open"))

    assert site.call(open_conflicts) == 0  # the supervisor's choice is not logged as a new conflict


def test_keeping_the_current_value_only_closes_the_conflict(site):
    home, cid = _make_conflict(site)
    site.browser.login("sup_a")
    before = _record(site, home["id"]).version
    assert site.browser.post(f"/console/conflicts/{cid}/resolve", {"choice": "keep"}).status_code == 303
    assert _record(site, home["id"]).version == before
    assert "已保留" in site.browser.get("/console/conflicts?state=resolved").text
    assert site.browser.post(f"/console/conflicts/{cid}/resolve", {"choice": "bogus"}).status_code == 303


def test_another_grids_conflict_is_not_found(site):
    _home, cid = _make_conflict(site)
    site.browser.login("sup_b")
    assert site.browser.get(f"/console/conflicts/{cid}").status_code == 404
    assert site.browser.post(f"/console/conflicts/{cid}/resolve", {"choice": "take"}).status_code == 404


# ---- the closed loop --------------------------------------------------------------------------


def test_a_case_goes_round_the_whole_loop_and_every_step_syncs(site):
    case = site.case(site.phone_a, site.grid_a)
    cid = case["id"]
    site.browser.login("sup_a")
    board = site.browser.get("/console/cases")
    assert cid in board.text
    assert site.browser.post(f"/console/cases/{cid}/accept", {"version": "1"}).status_code == 303
    assert _record(site, cid).fields["status"] == "accepted"
    reply = site.browser.post(
        f"/console/cases/{cid}/dispatch", {"version": "2", "department": "住建局", "due": _tomorrow()}
    )
    assert reply.status_code == 303
    row = _record(site, cid)
    assert row.fields["status"] == "dispatched" and row.fields["department"] == "住建局" and row.fields["due_at"]
    # the phone sees the dispatch, then reports back
    pulled = {r["id"]: r for r in site.phone_a.pull_all()}
    assert pulled[cid]["fields"]["status"] == "dispatched"
    done = site.phone_a.mutation("case", cid, {"status": "resolved", "feedback": "已更换落水管"})
    assert site.phone_a.push([done])["results"][0]["status"] == "applied"
    page = site.browser.get(f"/console/cases/{cid}")
    assert "已更换落水管" in page.text
    # not satisfied: sent back with a new due date, then resolved again and closed
    back = site.browser.post(
        f"/console/cases/{cid}/evaluate",
        {"version": str(_record(site, cid).version), "rating": "2", "outcome": "reopen", "due": _tomorrow()},
    )
    assert back.status_code == 303 and _record(site, cid).fields["status"] == "dispatched"
    site.phone_a.pull_all()
    site.phone_a.push([site.phone_a.mutation("case", cid, {"status": "resolved", "feedback": "已复查,不再渗水"})])
    close = site.browser.post(
        f"/console/cases/{cid}/evaluate",
        {"version": str(_record(site, cid).version), "rating": "5", "outcome": "close"},
    )
    assert close.status_code == 303
    row = _record(site, cid)
    assert row.fields["status"] == "closed" and row.fields["rating"] == 5
    final = {r["id"]: r for r in site.phone_a.pull_all()}[cid]
    assert final["fields"]["status"] == "closed" and final["fields"]["rating"] == 5

    async def steps() -> list[str]:
        async with site.sessionmaker() as db:
            rows = (
                await db.scalars(
                    select(ChangeLogEntry).where(ChangeLogEntry.record_id == cid).order_by(ChangeLogEntry.seq)
                )
            ).all()
            return [r.changes.get("status", [None, None])[1] for r in rows]

    assert site.call(steps) == ["reported", "accepted", "dispatched", "resolved", "dispatched", "resolved", "closed"]
    assert "已办结" in site.browser.get(f"/console/records/{cid}/changes").text


@pytest.mark.parametrize(
    "step, form",
    [
        ("dispatch", {"department": "住建局", "due": "2020-01-01"}),  # in the past
        ("dispatch", {"department": "住建局", "due": "not a date"}),
        ("dispatch", {"department": "", "due": "2099-01-01"}),
        ("dispatch", {"department": "x" * 201, "due": "2099-01-01"}),
    ],
)
def test_a_bad_dispatch_is_refused_and_says_why(site, step, form):
    case = site.case(site.phone_a, site.grid_a)
    site.browser.login("sup_a")
    site.browser.post(f"/console/cases/{case['id']}/accept", {"version": "1"})
    reply = site.browser.post(f"/console/cases/{case['id']}/{step}", {"version": "2", **form})
    assert reply.status_code == 400 and 'class="error"' in reply.text
    assert _record(site, case["id"]).fields["status"] == "accepted"


def test_steps_out_of_order_and_unknown_steps_are_refused(site):
    case = site.case(site.phone_a, site.grid_a)
    site.browser.login("sup_a")
    cid = case["id"]
    assert site.browser.post(f"/console/cases/{cid}/evaluate", {"rating": "5", "outcome": "close"}).status_code == 400
    assert (
        site.browser.post(f"/console/cases/{cid}/dispatch", {"department": "x", "due": "2099-01-01"}).status_code == 400
    )
    assert site.browser.post(f"/console/cases/{cid}/explode", {}).status_code == 404
    site.browser.post(f"/console/cases/{cid}/accept", {"version": "1"})
    assert site.browser.post(f"/console/cases/{cid}/accept", {"version": "2"}).status_code == 400
    assert _record(site, cid).fields["status"] == "accepted"


def test_a_bad_rating_is_refused(site):
    case = site.case(site.phone_a, site.grid_a)
    cid = case["id"]
    site.browser.login("sup_a")
    site.browser.post(f"/console/cases/{cid}/accept", {"version": "1"})
    site.browser.post(f"/console/cases/{cid}/dispatch", {"version": "2", "department": "物业", "due": _tomorrow()})
    site.phone_a.pull_all()
    site.phone_a.push([site.phone_a.mutation("case", cid, {"status": "resolved", "feedback": "ok"})])
    for rating in ("0", "6", "x", ""):
        assert (
            site.browser.post(f"/console/cases/{cid}/evaluate", {"rating": rating, "outcome": "close"}).status_code
            == 400
        )
    assert site.browser.post(f"/console/cases/{cid}/evaluate", {"rating": "3", "outcome": "shrug"}).status_code == 400
    assert _record(site, cid).fields["status"] == "resolved"


def test_a_dispatched_case_past_its_due_time_shows_overdue(site):
    case = site.case(site.phone_a, site.grid_a)
    cid = case["id"]
    site.browser.login("sup_a")
    site.browser.post(f"/console/cases/{cid}/accept", {"version": "1"})
    site.browser.post(f"/console/cases/{cid}/dispatch", {"version": "2", "department": "物业", "due": _tomorrow()})
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=5)
    assert site.call(mark_overdue_cases, site.sessionmaker, later) == 1
    assert cid in site.browser.get("/console/cases?status=overdue").text
    assert "已超期" in site.browser.get(f"/console/cases/{cid}").text


def test_a_case_sent_back_while_the_sweep_runs_is_not_marked_overdue_by_its_old_due_time(site, monkeypatch):
    """The sweep reads the dispatched cases, then writes: a case resolved and sent back with a later due
    time in between must stay dispatched (the workflow alone allows dispatched -> overdue)."""
    cid = site.case(site.phone_a, site.grid_a)["id"]
    site.browser.login("sup_a")
    site.browser.post(f"/console/cases/{cid}/accept", {"version": "1"})
    site.browser.post(f"/console/cases/{cid}/dispatch", {"version": "2", "department": "物业", "due": _tomorrow()})
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=5)
    stale = site.call(overdue.dispatched_past_due, site.sessionmaker, later)
    assert [case_id for case_id, _ in stale] == [cid]
    site.phone_a.pull_all()
    site.phone_a.push([site.phone_a.mutation("case", cid, {"status": "resolved", "feedback": "已修"})])
    new_due = (datetime.date.today() + datetime.timedelta(days=9)).isoformat()
    assert site.browser.post(f"/console/cases/{cid}/evaluate", {"version": str(_record(site, cid).version),
                             "rating": "2", "outcome": "reopen", "due": new_due}).status_code == 303
    reads = iter([stale])
    real_read = overdue.dispatched_past_due

    async def read_stale_first(sm, now):  # noqa: ANN001, ANN202
        return next(reads, None) or await real_read(sm, now)

    monkeypatch.setattr(overdue, "dispatched_past_due", read_stale_first)
    assert site.call(overdue.mark_overdue_cases, site.sessionmaker, later) == 0
    assert _record(site, cid).fields["status"] == "dispatched"


# ---- dashboard, lists and exports --------------------------------------------------------------


def test_the_dashboard_counts_the_supervisors_grids(site):
    home = site.household(site.phone_a, site.grid_a)
    site.visit(site.phone_a, site.grid_a, home["id"], method="followup", follow_up_on=datetime.date.today().isoformat())
    site.case(site.phone_a, site.grid_a)
    site.case(site.phone_b, site.grid_b)
    site.browser.login("sup_a")
    page = site.browser.get("/console/")
    assert page.status_code == 200
    kpis = re.findall(r'<span class="num">(\d+)</span><span>([^<]+)</span>', page.text)
    figures = {label: int(n) for n, label in kpis}
    assert figures["受理事件"] == 1 and figures["已办结"] == 0 and figures["走访"] == 1 and figures["待复诊"] == 1
    assert page.text.count("<svg") >= 6
    site.browser.login("admin")
    figures = {
        label: int(n)
        for n, label in re.findall(
            r'<span class="num">(\d+)</span><span>([^<]+)</span>', site.browser.get("/console/").text
        )
    }
    assert figures["受理事件"] == 2


LISTS = [
    "/console/sync-log",
    "/console/households",
    "/console/visits?review=all",
    "/console/conflicts",
    "/console/cases",
    "/console/cases?status=reported",
]


@pytest.mark.parametrize("path", LISTS)
def test_every_list_exports_to_csv_and_xlsx(site, path):
    home = site.household(site.phone_a, site.grid_a, notes='=HYPERLINK("http://x")')
    site.visit(site.phone_a, site.grid_a, home["id"])
    site.case(site.phone_a, site.grid_a)
    site.browser.login("sup_a")
    sep = "&" if "?" in path else "?"
    csv_reply = site.browser.get(f"{path}{sep}format=csv")
    assert csv_reply.status_code == 200 and csv_reply.headers["content-type"].startswith("text/csv")
    assert csv_reply.content.startswith("\ufeff".encode())
    assert "attachment" in csv_reply.headers["content-disposition"]
    xlsx_reply = site.browser.get(f"{path}{sep}format=xlsx")
    assert xlsx_reply.status_code == 200
    book = load_workbook(io.BytesIO(xlsx_reply.content))
    assert book.worksheets[0].max_row >= 1


def test_exported_text_cannot_become_a_spreadsheet_formula(site):
    site.household(site.phone_a, site.grid_a, notes='=HYPERLINK("http://x")')
    site.browser.login("sup_a")
    text = site.browser.get("/console/households?format=csv").content.decode("utf-8-sig")
    assert "'=HYPERLINK" in text


def test_the_change_log_exports_each_field_before_and_after(site):
    home = site.household(site.phone_a, site.grid_a)
    site.phone_a.push([site.phone_a.mutation("household", home["id"], {"phone": "13800000009"})])
    site.browser.login("sup_a")
    text = site.browser.get(f"/console/records/{home['id']}/changes?format=csv").content.decode("utf-8-sig")
    assert "13800000009" in text and "wang" in text


def test_lists_paginate(site):
    for _ in range(55):
        site.household(site.phone_a, site.grid_a)
    site.browser.login("sup_a")
    first = site.browser.get("/console/households")
    assert "第 1 / 2 页,共 55 条" in first.text and first.text.count("/console/households/") == 50
    second = site.browser.get("/console/households?page=2")
    assert second.status_code == 200 and "page=1" in second.text
    assert site.browser.get("/console/households?page=abc").status_code == 200


def test_a_photo_thumbnail_is_served_only_through_a_record_in_scope(site, tmp_path):
    import hashlib

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (800, 600), (200, 30, 30)).save(buffer, "JPEG")
    data = buffer.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    up = site.phone_a.call(
        "PATCH",
        f"/v1/blobs/{sha}",
        headers={
            "Upload-Offset": "0",
            "Upload-Length": str(len(data)),
            "Content-Type": "application/offset+octet-stream",
        },
        content=data,
    )
    assert up.status_code in (200, 201), up.text
    home = site.household(site.phone_a, site.grid_a)
    visit = site.visit(site.phone_a, site.grid_a, home["id"], photos=[sha])
    site.browser.login("sup_a")
    thumb = site.browser.get(f"/console/photos/{visit['id']}/{sha}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 240
    assert f"/console/photos/{visit['id']}/{sha}" in site.browser.get(f"/console/visits/{visit['id']}").text
    assert site.browser.get(f"/console/photos/{visit['id']}/{'0' * 64}").status_code == 404
    site.browser.login("sup_b")
    assert site.browser.get(f"/console/photos/{visit['id']}/{sha}").status_code == 404


def test_a_visit_is_approved_in_place_from_the_list_through_htmx(site):
    home = site.household(site.phone_a, site.grid_a)
    visit = site.visit(site.phone_a, site.grid_a, home["id"])
    site.browser.login("sup_a")
    listing = site.browser.get("/console/visits").text
    assert f'hx-post="/console/visits/{visit["id"]}/review"' in listing
    headers = {"HX-Request": "true", "X-CSRF-Token": site.browser.csrf()}
    reply = site.browser.client.post(
        f"/console/visits/{visit['id']}/review", data={"verdict": "approved", "version": "1"}, headers=headers
    )
    assert reply.status_code == 200 and "已通过" in reply.text and "<html" not in reply.text
    assert _record(site, visit["id"]).fields["review"]["verdict"] == "approved"
    flagged = site.browser.client.post(
        f"/console/visits/{visit['id']}/review", data={"verdict": "flagged", "version": "2"}, headers=headers
    )
    assert flagged.status_code == 400 and "必须填写意见" in flagged.text
    no_token = site.browser.client.post(
        f"/console/visits/{visit['id']}/review", data={"verdict": "approved"}, headers={"HX-Request": "true"}
    )
    assert no_token.status_code == 403


def test_the_change_log_names_fields_and_states_in_the_users_language(site):
    case = site.case(site.phone_a, site.grid_a)
    site.browser.login("sup_a")
    site.browser.post(f"/console/cases/{case['id']}/accept", {"version": "1"})
    html = site.browser.get(f"/console/records/{case['id']}/changes").text
    assert "<td>状态</td>" in html and "已上报" in html and "已受理" in html
    site.browser.get("/console/lang/en")
    html = site.browser.get(f"/console/records/{case['id']}/changes").text
    assert "<td>Status</td>" in html and "Accepted" in html


def test_the_big_screen_mode_refreshes_itself(site):
    site.browser.login("sup_a")
    assert 'http-equiv="refresh"' not in site.browser.get("/console/").text
    assert 'http-equiv="refresh" content="60"' in site.browser.get("/console/?screen=1").text


def test_the_dashboard_lists_phones_of_the_supervisors_grids_silent_for_three_days(site):
    from sqlalchemy import update

    from server.db.models import Device

    async def age(device_id: str, days: int) -> None:
        async with site.field.client.app.state.sessionmaker() as db, db.begin():
            moment = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days)
            await db.execute(
                update(Device).where(Device.id == device_id).values(last_sync_at=moment, enrolled_at=moment)
            )

    site.call(age, site.phone_a.device_id, 4)
    site.call(age, site.phone_b.device_id, 5)
    site.browser.login("sup_a")
    html = site.browser.get("/console/").text
    figures = {label: int(n) for n, label in re.findall(r'<span class="num">(\d+)</span><span>([^<]+)</span>', html)}
    assert figures["三天未同步设备"] == 1
    assert "test phone" in html
    site.call(age, site.phone_a.device_id, 1)
    html = site.browser.get("/console/").text
    figures = {label: int(n) for n, label in re.findall(r'<span class="num">(\d+)</span><span>([^<]+)</span>', html)}
    assert figures["三天未同步设备"] == 0


def test_follow_ups_due_have_their_own_paginated_list(site):
    home = site.household(site.phone_a, site.grid_a)
    today = datetime.date.today()
    soon = site.visit(
        site.phone_a, site.grid_a, home["id"], follow_up_on=(today + datetime.timedelta(days=2)).isoformat()
    )
    late = site.visit(
        site.phone_a, site.grid_a, home["id"], follow_up_on=(today + datetime.timedelta(days=60)).isoformat()
    )
    none = site.visit(site.phone_a, site.grid_a, home["id"])
    site.browser.login("sup_a")
    html = site.browser.get("/console/visits?review=all&due=1").text
    ids = record_id_in(html, "visits")
    assert soon["id"] in ids and late["id"] not in ids and none["id"] not in ids
    assert "/console/visits?review=all&amp;due=1" in site.browser.get("/console/").text
    csv_text = site.browser.get("/console/visits?review=all&due=1&format=csv").content.decode("utf-8-sig")
    assert csv_text.count("\n") == 2  # the header and the one due


def test_a_household_page_shows_its_visits_and_cases_and_only_in_scope(site):
    home = site.household(site.phone_a, site.grid_a, head_name="顾先生")
    visit = site.visit(site.phone_a, site.grid_a, home["id"])
    case = site.case(site.phone_a, site.grid_a, household_id=home["id"])
    site.browser.login("sup_a")
    assert f'href="/console/households/{home["id"]}"' in site.browser.get("/console/households").text
    page = site.browser.get(f"/console/households/{home['id']}")
    assert page.status_code == 200 and visit["id"] in page.text and case["id"] in page.text and "顾先生" in page.text
    assert f'href="/console/households/{home["id"]}"' in site.browser.get(f"/console/visits/{visit['id']}").text
    site.browser.login("sup_b")
    assert site.browser.get(f"/console/households/{home['id']}").status_code == 404
    assert site.browser.get(f"/console/households/{visit['id']}").status_code == 404  # not a household


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_conflict_id_past_any_key_is_not_found(site, method):
    site.browser.login("sup_a")
    path = "/console/conflicts/99999999999999999999999"
    reply = site.browser.get(path) if method == "GET" else site.browser.post(f"{path}/resolve", {"choice": "keep"})
    assert reply.status_code == 404
