"""The console at a sub-district's scale: a page reads its page, not the year of records behind it,
and an export streams. The times are bench/console_scale.py's; these check the behaviour."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import re
import sqlite3
import time
from collections.abc import Iterator

import pytest
from openpyxl import load_workbook
from sqlalchemy import event, text

from server.console import queries, stats
from tests.conftest import BACKENDS


@contextlib.contextmanager
def statements(site) -> Iterator[list[tuple[str, object]]]:  # noqa: ANN001
    """Every SQL statement the app runs meanwhile, with its parameters."""
    engine = site.sessionmaker.kw["bind"].sync_engine
    seen: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001, ARG001
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def sqlite_plan(site, statement: str, parameters) -> str:  # noqa: ANN001
    settings = site.field.client.app.state.settings
    with contextlib.closing(sqlite3.connect(settings.data_dir / "fieldloop.db")) as db:
        return " | ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {statement}", parameters or ()))


def only_on(name: str):  # noqa: ANN201
    """Run a test on one of the backends under test only (not run and skipped on the other)."""
    return pytest.mark.parametrize("backend", [b for b in BACKENDS if b == name], indirect=True)


def push_all(phone, mutations: list[dict]) -> None:  # noqa: ANN001
    results = phone.push(mutations)["results"]
    assert all(r["status"] == "applied" for r in results), results


def households(site, n: int) -> list[dict]:  # noqa: ANN001
    made = [
        site.phone_a.mutation("household", fields={"grid_id": site.grid_a, "address": f"台苑新村{i}幢", "head_name": "顾"})
        for i in range(n)
    ]
    push_all(site.phone_a, made)
    return made


def visits(site, household_id: str, n: int) -> None:  # noqa: ANN001
    push_all(site.phone_a, [
        site.phone_a.mutation("visit", fields={
            "grid_id": site.grid_a, "household_id": household_id, "method": "inquiry",
            "visited_at": f"2026-11-{1 + i % 28:02d}T09:30:00+08:00", "follow_up_on": "2026-12-03",
        })
        for i in range(n)
    ])


@only_on("sqlite")  # SQLite's plans: PostgreSQL's planner chooses by its statistics
def test_list_pages_are_read_along_an_index_not_sorted_out_of_the_whole_year(site):
    # At 200,000 visits a sort of every visit in scope was 2 s a page; read in order along an
    # index, a page stops after its 50 rows.
    [home] = households(site, 1)
    visits(site, home["id"], 3)
    site.case(site.phone_a, site.grid_a)
    site.browser.login("sup_a")
    paths = ["/console/visits", "/console/visits?review=all", "/console/visits?review=all&method=inquiry",
             "/console/visits?due=1", "/console/households", "/console/cases?status=reported", "/console/cases",
             "/console/sync-log"]
    with statements(site) as seen:
        for path in paths:
            assert site.browser.get(path).status_code == 200
    pages = [(s, p) for s, p in seen if "LIMIT" in s and "ORDER BY" in s and "count(" not in s]
    assert len(pages) >= len(paths) + 5  # the board reads six columns
    for statement, parameters in pages:
        plan = sqlite_plan(site, statement, parameters)
        assert "TEMP B-TREE FOR ORDER BY" not in plan, (statement, plan)


@only_on("postgres")  # PostgreSQL's planner setting
def test_on_postgresql_a_list_read_along_its_index_is_not_sorted(site):
    # With no statistics on a JSON condition PostgreSQL sorted every visit to count 1,001 of them.
    [home] = households(site, 1)
    visits(site, home["id"], 2)
    site.browser.login("sup_a")
    for path, walks in (("/console/visits", True), ("/console/households", True), ("/console/cases?status=reported", True),
                        (f"/console/visits?grid={site.grid_a}", False), (f"/console/households/{home['id']}", False)):
        with statements(site) as seen:
            assert site.browser.get(path).status_code == 200
        assert any("enable_sort = off" in s for s, _ in seen) is walks, path


@only_on("sqlite")  # SQLite's plans: PostgreSQL's planner chooses by its statistics
def test_a_households_history_finds_its_visits_and_cases_through_its_index(site):
    [home, other] = households(site, 2)
    visits(site, home["id"], 2)
    visits(site, other["id"], 3)
    site.case(site.phone_a, site.grid_a, household_id=home["id"])
    site.browser.login("sup_a")
    with statements(site) as seen:
        page = site.browser.get(f"/console/households/{home['id']}")
    assert page.status_code == 200 and page.text.count("/console/visits/") == 2
    reads = [(s, p) for s, p in seen if "household_id" in s and "FROM records" in s]
    assert len(reads) == 4  # the visits and the cases, each a count and a page
    for statement, parameters in reads:
        assert "USING INDEX ix_records_household" in sqlite_plan(site, statement, parameters), statement


def test_a_long_list_is_counted_only_so_far_past_the_page_shown(site, monkeypatch):
    # 930,000 sync log rows were counted for every page of the sync log.
    monkeypatch.setattr(queries, "COUNT_AHEAD", 60)
    households(site, 120)
    site.browser.login("sup_a")
    first = site.browser.get("/console/households")
    assert "第 1 页,超过 60 条" in first.text and "page=2" in first.text
    assert first.text.count("/console/households/") == 50
    second = site.browser.get("/console/households?page=2")
    assert "第 2 页,超过 110 条" in second.text and "page=3" in second.text  # counted to 60 past its start
    third = site.browser.get("/console/households?page=3")
    assert "第 3 / 3 页,共 120 条" in third.text and third.text.count("/console/households/") == 20


def test_the_case_board_counts_its_columns_once_not_each(site):
    site.case(site.phone_a, site.grid_a)
    site.call(site.field.client.app.state.sync_log.flush)
    site.browser.login("sup_a")
    with statements(site) as seen:
        assert site.browser.get("/console/cases").status_code == 200
    assert len([s for s, _ in seen if "count(" in s and "FROM records" in s]) == 1


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_an_export_streams_its_rows_a_chunk_at_a_time(site, monkeypatch, fmt):
    # 200,000 visits were read whole (and cut at 100,000): 1 GB of server memory for one CSV.
    monkeypatch.setattr(queries, "EXPORT_CHUNK", 4)
    looked_up: list[int] = []
    real = queries.addresses

    async def addresses_of(sm, me, ids):  # noqa: ANN001, ANN202
        ids = list(ids)
        looked_up.append(len(ids))
        return await real(sm, me, ids)

    monkeypatch.setattr(queries, "addresses", addresses_of)
    [home] = households(site, 1)
    visits(site, home["id"], 10)
    site.browser.login("sup_a")
    reply = site.browser.get(f"/console/visits?review=all&format={fmt}")
    assert reply.status_code == 200 and "content-length" not in reply.headers  # streamed, not built whole
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(reply.content.decode("utf-8-sig"))))
    else:
        rows = list(load_workbook(io.BytesIO(reply.content)).worksheets[0].values)
    assert len(rows) == 11 and all("台苑新村0幢" in row for row in rows[1:])
    assert looked_up == [4, 4, 2]  # each chunk's households, as the chunk is written


def kpis(html: str) -> dict[str, int]:
    return {label: int(n) for n, label in re.findall(r'<span class="num">(\d+)</span><span>([^<]+)</span>', html)}


def test_a_dashboard_view_just_after_a_change_does_not_wait_for_the_years_count(site, monkeypatch):
    # In a live sub-district a record changes every few seconds: figures kept "until a record
    # changes" were counted again (3-4 s at a year's scale) for nearly every view.
    clock = [1000.0]
    monkeypatch.setattr(stats, "_monotonic", lambda: clock[0], raising=False)
    site.case(site.phone_a, site.grid_a)
    site.browser.login("sup_a")
    first = site.browser.get("/console/").text  # nothing counted yet: counted for this view
    assert kpis(first)["受理事件"] == 1

    site.case(site.phone_a, site.grid_a)
    assert kpis(site.browser.get("/console/").text)["受理事件"] == 1  # under a minute old: shown as counted

    gate = asyncio.Event()
    real_count = getattr(stats, "_count_year", None)

    async def count_held_back(*args):  # noqa: ANN002, ANN202
        await asyncio.wait_for(gate.wait(), 10)
        return await real_count(*args)

    async def open_gate() -> None:
        gate.set()

    monkeypatch.setattr(stats, "_count_year", count_held_back, raising=False)
    clock[0] += stats.RECOUNT_AFTER_S + 1
    held = site.browser.get("/console/")  # the count runs behind it: this view does not wait for it
    assert held.status_code == 200 and kpis(held.text)["受理事件"] == 1
    assert re.search(r"事件、走访与待复诊数字截至 \d\d:\d\d:\d\d", held.text)  # the page says how old they are
    site.call(open_gate)
    for _ in range(100):  # the next views show the count once it is done
        page = site.browser.get("/console/").text
        if kpis(page)["受理事件"] == 2:
            break
        time.sleep(0.1)
    assert kpis(page)["受理事件"] == 2, page

    # Not looked at for a while: counted again before the page is shown, never older than that.
    site.case(site.phone_a, site.grid_a)
    clock[0] += stats.WAIT_AFTER_S + 1
    assert kpis(site.browser.get("/console/").text)["受理事件"] == 3


def test_the_dashboards_year_is_counted_once_for_every_supervisor(site):
    site.case(site.phone_a, site.grid_a)
    site.case(site.phone_b, site.grid_b)
    site.case(site.phone_b, site.grid_b)
    site.browser.login("sup_a")
    assert kpis(site.browser.get("/console/").text)["受理事件"] == 1
    site.browser.login("sup_b")
    with statements(site) as seen:
        page = site.browser.get("/console/").text
    assert kpis(page)["受理事件"] == 2  # the other supervisor's grid, from the same count
    assert [s for s, _ in seen if "GROUP BY" in s and "FROM records" in s] == []


@only_on("sqlite")  # SQLite's plans: PostgreSQL's planner chooses by its statistics
def test_records_looked_up_by_id_are_found_by_their_key_not_through_the_scopes_grids(site):
    # An export looks up each chunk's 1,000 households by id, a page its rows' households: with
    # the scope's grids in the same condition SQLite read every record of those grids through
    # ix_records_grid_seq instead (0.8 s a chunk at a year's scale: a 200,000-visit export took
    # minutes).
    homes = households(site, 60)  # a page's worth: with a few ids SQLite takes the key anyway
    push_all(site.phone_a, [
        site.phone_a.mutation("visit", fields={"grid_id": site.grid_a, "household_id": home["id"], "method": "inquiry",
                                               "visited_at": "2026-11-20T09:30:00+08:00"})
        for home in homes
    ])
    site.browser.login("sup_a")
    with statements(site) as seen:
        assert site.browser.get("/console/visits?review=all&format=csv").status_code == 200
        assert site.browser.get("/console/visits?review=all").status_code == 200
    lookups = [(s, p) for s, p in seen if "FROM records" in s and "records.id IN" in s]
    assert len(lookups) >= 2, [s for s, _ in seen]
    for statement, parameters in lookups:
        plan = sqlite_plan(site, statement, parameters)
        assert "ix_records_grid_seq" not in plan and "(id=?)" in plan, (statement, plan)


EXPORTS = ["/console/visits?review=all&format=csv", "/console/visits?format=csv", "/console/households?format=csv",
           "/console/cases?status=reported&format=csv", "/console/sync-log?format=csv"]


async def analyze(sm) -> None:  # noqa: ANN001
    async with sm() as db:
        await db.execute(text("ANALYZE"))
        await db.commit()


@only_on("postgres")  # PostgreSQL's planner setting
def test_on_postgresql_an_export_is_read_along_its_index_not_sorted_before_its_first_row(site):
    # An export asks for up to a million rows: PostgreSQL sorted the whole year's visits before
    # the first (some 80 s at a sub-district's scale, the supervisor's browser waiting for a row).
    # Each export statement is explained on its own connection, inside its own transaction.
    [home] = households(site, 1)
    visits(site, home["id"], 3)
    site.case(site.phone_a, site.grid_a)
    site.call(site.field.client.app.state.sync_log.flush)  # the pushes' sync log rows, written in batches
    site.call(analyze, site.sessionmaker)  # the statistics autovacuum would gather: a few rows
    site.browser.login("sup_a")
    engine = site.sessionmaker.kw["bind"].sync_engine
    plans: list[tuple[str, str]] = []

    def explain(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001, ARG001
        if not statement.startswith("EXPLAIN") and queries.EXPORT_LIMIT in (parameters or ()):
            plan = conn.exec_driver_sql("EXPLAIN " + statement, parameters).scalars().all()
            plans.append((statement, "\n".join(plan)))

    event.listen(engine, "before_cursor_execute", explain)
    try:
        for path in EXPORTS:
            reply = site.browser.get(path)
            assert reply.status_code == 200 and reply.content.count(b"\n") > 1, path
    finally:
        event.remove(engine, "before_cursor_execute", explain)
    assert len(plans) == len(EXPORTS), [s for s, _ in plans]
    for statement, plan in plans:
        # A sort of everything found (an incremental sort, of the rows of one time, streams).
        assert not re.search(r"^\s*(->\s+)?Sort  \(", plan, re.MULTILINE), (statement[:120], plan)


@only_on("sqlite")  # SQLite's plans: PostgreSQL's planner chooses by its statistics
def test_an_export_is_read_along_an_index_on_sqlite_too(site):
    [home] = households(site, 1)
    visits(site, home["id"], 3)
    site.case(site.phone_a, site.grid_a)
    site.call(site.field.client.app.state.sync_log.flush)
    site.browser.login("sup_a")
    with statements(site) as seen:
        for path in EXPORTS:
            assert site.browser.get(path).status_code == 200, path
    exports = [(s, p) for s, p in seen if "LIMIT" in s and queries.EXPORT_LIMIT in (p or ())]
    assert len(exports) == len(EXPORTS), [s for s, _ in seen]
    for statement, parameters in exports:
        plan = sqlite_plan(site, statement, parameters)
        assert "TEMP B-TREE FOR ORDER BY" not in plan, (statement, plan)
