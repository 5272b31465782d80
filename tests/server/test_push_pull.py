"""Protocol sections 4 to 6 on the wire: merge results, conflicts, rejections, exactly-once,
scope, paging, grid changes and bad bodies, against the real app on both databases."""

from __future__ import annotations

import hashlib
import uuid

import msgspec
import pytest
from sqlalchemy import func, select

from server.db.models import AppliedMutation, ChangeLogEntry, ConflictEntry, RecordRow
from server.records.writes import server_clock
from shared_schema.entities import validate_fields
from sync.hlc import format_stamp, parse_stamp, wall_now_ms
from tests.conftest import run


def _count(field, model, *where) -> int:  # noqa: ANN001
    async def count() -> int:
        async with field.sessionmaker() as session:
            return await session.scalar(select(func.count()).select_from(model).where(*where))

    return run(field.client, count)


def later(mutation: dict, device, ms: int = 1000) -> dict:  # noqa: ANN001
    """The mutation re-stamped ``ms`` past anything stamped yet: which of two edits is later must
    hang neither on timing nor on how far earlier tests moved this process's server clock."""
    latest = max(wall_now_ms(), parse_stamp(server_clock().last()).wall_ms, parse_stamp(device.clock.last()).wall_ms)
    mutation["hlc"] = format_stamp(latest + ms, 0, device.device_id)
    return mutation


def household(grid: str, **extra) -> dict:
    return {"grid_id": grid, "address": "雉城街道台苑新村3幢2单元301室", "head_name": "顾先生", **extra}


def test_a_new_record_is_applied_and_pulled_by_the_other_phone(two_phones):
    grid, wang, li = two_phones
    m = wang.mutation("household", fields=household(grid, tags=["独居老人"]))
    [result] = wang.push([m])["results"]
    assert result["status"] == "applied" and result["version"] == 1
    pulled = {r["id"]: r for r in li.pull_all()}
    assert pulled[m["id"]]["fields"]["head_name"] == "顾先生"
    assert pulled[m["id"]]["version"] == 1


def test_concurrent_edits_of_one_field_keep_the_later_stamp_and_log_the_loser(field, two_phones):
    grid, wang, li = two_phones
    create = wang.mutation("household", fields=household(grid))
    wang.push([create])
    li.pull_all()
    first = li.mutation("household", create["id"], {"phone": "13800000001"})
    second = later(wang.mutation("household", create["id"], {"phone": "13900000002"}), wang)
    assert li.push([first])["results"][0]["status"] == "applied"
    [merged] = wang.push([second])["results"]
    assert merged["status"] == "merged"
    assert merged["record"]["fields"]["phone"] == "13900000002"
    assert merged["conflicts"] == [{"field": "phone", "kept": "13900000002", "lost": "13800000001",
                                    "winner_hlc": second["hlc"]}]
    assert _count(field, ConflictEntry, ConflictEntry.record_id == create["id"]) == 1


def test_an_earlier_stamp_loses_and_its_value_is_kept_in_the_conflict_log(field, two_phones):
    grid, wang, li = two_phones
    create = wang.mutation("household", fields=household(grid))
    wang.push([create])
    li.pull_all()
    early = li.mutation("household", create["id"], {"notes": "li's note"})
    late = later(wang.mutation("household", create["id"], {"notes": "wang's note"}), wang)
    wang.push([late])
    [merged] = li.push([early])["results"]
    assert merged["status"] == "merged"
    assert merged["record"]["fields"]["notes"] == "wang's note"
    assert merged["conflicts"][0]["lost"] == "li's note"


def test_union_fields_merge_without_conflict(field, two_phones):
    grid, wang, li = two_phones
    create = wang.mutation("household", fields=household(grid, tags=["党员户"]))
    wang.push([create])
    li.pull_all()
    wang.push([wang.mutation("household", create["id"], {"tags": ["党员户", "独居老人"]})])
    [merged] = li.push([li.mutation("household", create["id"], {"tags": ["党员户", "低保户"]})])["results"]
    assert merged["status"] == "merged"
    assert merged["record"]["fields"]["tags"] == sorted(["党员户", "独居老人", "低保户"])
    assert "conflicts" not in merged


def test_other_fields_edited_concurrently_both_survive(two_phones):
    grid, wang, li = two_phones
    create = wang.mutation("household", fields=household(grid))
    wang.push([create])
    li.pull_all()
    wang.push([wang.mutation("household", create["id"], {"phone": "13800000001"})])
    [result] = li.push([li.mutation("household", create["id"], {"members": 4})])["results"]
    assert result["status"] == "applied"
    assert result["record"]["fields"]["phone"] == "13800000001" and result["record"]["fields"]["members"] == 4


def test_a_phones_own_successive_edits_never_conflict(field, two_phones):
    grid, wang, _ = two_phones
    create = wang.mutation("household", fields=household(grid))
    edit1 = wang.mutation("household", create["id"], {"notes": "one"}, base_version=0)
    edit2 = wang.mutation("household", create["id"], {"notes": "two"}, base_version=0)
    results = wang.push([create, edit1, edit2])["results"]
    assert [r["status"] for r in results] == ["applied", "applied", "applied"]
    assert results[-1]["record"]["fields"]["notes"] == "two"
    assert _count(field, ConflictEntry) == 0


def test_delete_against_a_later_edit_keeps_the_edit_and_logs_it(field, two_phones):
    grid, wang, li = two_phones
    create = wang.mutation("household", fields=household(grid))
    wang.push([create])
    li.pull_all()
    delete = li.mutation("household", create["id"], op="delete")
    edit = later(wang.mutation("household", create["id"], {"notes": "still here"}), wang)
    wang.push([edit])
    [result] = li.push([delete])["results"]
    assert result["status"] == "merged" and result["record"]["deleted"] is False
    assert result["conflicts"][0]["field"] == "deleted"
    assert _count(field, ConflictEntry, ConflictEntry.field == "deleted") == 1


def test_a_later_delete_wins_and_is_pulled_as_a_tombstone(two_phones):
    grid, wang, li = two_phones
    create = wang.mutation("household", fields=household(grid))
    wang.push([create])
    li.pull_all()
    edit = wang.mutation("household", create["id"], {"notes": "x"})
    delete = later(li.mutation("household", create["id"], op="delete"), li)
    wang.push([edit])
    [result] = li.push([delete])["results"]
    assert result["status"] == "merged" and result["record"]["deleted"] is True
    # the edit the delete beat is what lost: its fields are in the conflict entry (G1)
    assert result["conflicts"] == [{"field": "deleted", "kept": True, "lost": {"notes": "x"},
                                    "winner_hlc": delete["hlc"]}]
    pulled = {r["id"]: r for r in wang.pull_all()}
    assert pulled[create["id"]]["deleted"] is True and pulled[create["id"]]["fields"] == {}


@pytest.mark.parametrize(
    ("entity", "fields", "code"),
    [
        ("spaceship", {"x": 1}, "unknown_entity"),
        ("household", {"grid_id": "GRID", "address": "a", "phone": "call me"}, "invalid"),
        ("household", {"grid_id": "GRID", "address": "a", "colour": "red"}, "invalid"),
        ("household", {"address": "no grid"}, "invalid"),
        ("case", {"grid_id": "GRID", "category": "noise", "title": "t", "status": "closed"}, "invalid_transition"),
        ("case", {"grid_id": "GRID", "category": "noise", "title": "t", "status": "reported", "rating": 5},
         "read_only_field"),
        ("household", {"grid_id": "00000000-0000-0000-0000-000000000000", "address": "a"}, "forbidden_scope"),
        ("grid", {"name": "mine", "community": "c"}, "read_only_field"),
        ("household", {"grid_id": "GRID", "address": "a", "notes": "nul \x00 inside"}, "invalid"),
        ("case", {"grid_id": "GRID", "category": "noise", "title": "t\x00", "status": "reported"}, "invalid"),
        ("diary", {"grid_id": "GRID", "text": "x", "topics": ["\x00"]}, "invalid"),
        # "$" in a pattern also matches before a final newline: each pattern must hold to the end.
        ("household", {"grid_id": "GRID", "address": "a", "phone": "12345\n"}, "invalid"),
        ("household", {"grid_id": "GRID\n", "address": "a"}, "invalid"),
        ("patrol", {"grid_id": "GRID", "started_at": "2026-11-25T08:00:00+08:00", "photos": ["a" * 64 + "\n"]},
         "invalid"),
        # times no screen can show in Beijing time: a 500 on every console page that listed them
        ("visit", {"grid_id": "GRID", "household_id": "00000000-0000-4000-8000-000000000000", "method": "sit",
                   "visited_at": "0001-01-01T00:00:00+14:00"}, "invalid"),
        ("visit", {"grid_id": "GRID", "household_id": "00000000-0000-4000-8000-000000000000", "method": "sit",
                   "visited_at": "2026-11-25T08:00:00+08:00", "follow_up_on": "9999-12-31"}, "invalid"),
        ("patrol", {"grid_id": "GRID", "started_at": "2026-11-25T08:00:00+08:00",
                    "ended_at": "9999-12-31T23:59:59-12:00"}, "invalid"),
        # an integer msgpack cannot carry would fail the stored wire form: a 500 before the bound
        ("patrol", {"grid_id": "GRID", "started_at": "2026-11-25T08:00:00+08:00", "track": [[30.0, 120.0, 10**30]]},
         "invalid"),
    ],
)
def test_bad_mutations_are_rejected_alone_and_write_nothing(field, two_phones, entity, fields, code):
    grid, wang, _ = two_phones
    fields = {k: (grid if v == "GRID" else v) for k, v in fields.items()}
    good = wang.mutation("household", fields=household(grid))
    bad = wang.mutation(entity, fields=fields)
    results = wang.push([bad, good])["results"]
    assert results[0]["status"] == "rejected" and results[0]["error"]["code"] == code
    assert results[0]["error"]["message"]
    assert results[1]["status"] == "applied"
    assert _count(field, RecordRow, RecordRow.id == bad["id"]) == 0


def test_an_id_or_stamp_ending_in_a_newline_refuses_the_push(field, two_phones):
    grid, wang, _ = two_phones
    before = _count(field, RecordRow)
    for key in ("id", "mid", "hlc"):
        bad = wang.mutation("household", fields=household(grid))
        bad[key] += "\n"
        response = field.client.post("/v1/sync/push", json={"mutations": [bad]},
                                     headers={"Sync-Protocol": "1", "Authorization": f"Bearer {wang.token}",
                                              "Accept": "application/json"})
        assert response.status_code == 422 and response.json()["error"]["code"] == "invalid", key
    assert _count(field, RecordRow) == before


def test_photos_two_phones_add_at_once_never_overfill_the_stored_record(two_phones):
    grid, wang, li = two_phones
    patrol = wang.mutation("patrol", fields={"grid_id": grid, "started_at": "2026-11-25T08:00:00+08:00"})
    wang.push([patrol])
    li.pull_all()
    photos = [hashlib.sha256(b"%d" % i).hexdigest() for i in range(40)]
    wang.push([wang.mutation("patrol", patrol["id"], {"photos": photos[:20]})])
    [refused] = li.push([li.mutation("patrol", patrol["id"], {"photos": photos[20:]})])["results"]
    assert refused["status"] == "rejected" and refused["error"]["code"] == "invalid"
    [stored] = [r for r in li.pull_all() if r["id"] == patrol["id"]]
    assert stored["fields"]["photos"] == sorted(photos[:20])
    validate_fields("patrol", stored["fields"])  # what every phone checks a pulled record against


def test_validation_errors_name_the_path(two_phones):
    grid, wang, _ = two_phones
    bad = wang.mutation("visit", fields={"grid_id": grid, "household_id": str(uuid.uuid4()), "method": "phone",
                                         "visited_at": "2026-11-25T10:00:00+08:00"})
    [result] = wang.push([bad])["results"]
    assert result["error"]["code"] == "invalid" and "$.fields.method" in result["error"]["message"]


def test_a_case_moves_only_along_the_workflow(two_phones):
    grid, wang, _ = two_phones
    case = wang.mutation("case", fields={"grid_id": grid, "category": "drainage", "title": "落水管破裂",
                                         "status": "reported"})
    wang.push([case])
    [jump] = wang.push([wang.mutation("case", case["id"], {"status": "resolved", "feedback": "done"})])["results"]
    assert jump["status"] == "rejected" and jump["error"]["code"] == "invalid_transition"


def test_a_repeated_push_returns_the_first_results_and_applies_nothing_again(field, two_phones):
    grid, wang, _ = two_phones
    batch = [wang.mutation("household", fields=household(grid)) for _ in range(3)]
    batch.append(wang.mutation("case", fields={"grid_id": grid, "category": "noise", "title": "t",
                                               "status": "closed"}))
    first = wang.push(batch)
    again = wang.push(batch)
    assert again["results"] == first["results"]
    assert _count(field, ChangeLogEntry, ChangeLogEntry.mid.in_([m["mid"] for m in batch])) == 3
    assert _count(field, AppliedMutation, AppliedMutation.mid.in_([m["mid"] for m in batch])) == 4


def test_a_mutation_id_is_its_devices_own(field):
    mine, other = field.grid("g-mine"), field.grid("g-other")
    field.user("wang", ["g-mine"])
    field.user("zhao", ["g-other"])
    wang, zhao = field.device("wang"), field.device("zhao")
    first = zhao.mutation("household", fields=household(other, notes="赵的"))
    zhao.push([first])
    # another device that learns the id gets neither the first result nor the record in it
    reused = dict(wang.mutation("household", fields=household(mine)), mid=first["mid"])
    for _ in range(2):
        [result] = wang.push([reused])["results"]
        assert result["status"] == "rejected" and result["error"]["code"] == "invalid"
        assert result["version"] == 0 and "record" not in result
    assert _count(field, RecordRow, RecordRow.id == reused["id"]) == 0
    [again] = zhao.push([first])["results"]  # still the first sender's, exactly once (G2)
    assert again["status"] == "applied" and again["record"]["fields"]["notes"] == "赵的"


def test_a_mutation_id_repeated_inside_one_push_is_applied_once(field, two_phones):
    grid, wang, _ = two_phones
    m = wang.mutation("household", fields=household(grid))
    results = wang.push([m, m])["results"]
    assert results[0] == results[1]
    assert _count(field, ChangeLogEntry, ChangeLogEntry.record_id == m["id"]) == 1


def test_a_long_push_that_edits_its_own_new_records_stores_each_at_its_last_version(field, two_phones):
    # Longer than the chunks a write transaction's rows are inserted in, with records created in
    # one chunk and edited in a later one, and a mutation id repeated across chunks.
    grid, wang, li = two_phones
    creates = [wang.mutation("household", fields=household(grid, notes=f"第{i}户")) for i in range(300)]
    edits = [wang.mutation("household", c["id"], {"notes": f"复访{i}"}, base_version=0)
             for i, c in enumerate(creates[::3])]
    batch = creates + edits + [creates[5]]
    results = wang.push(batch)["results"]
    assert [r["status"] for r in results] == ["applied"] * len(batch)
    assert results[-1] == results[5]
    pulled = {r["id"]: r for r in li.pull_all()}
    for i, c in enumerate(creates):
        edited = i % 3 == 0
        assert pulled[c["id"]]["version"] == (2 if edited else 1)
        assert pulled[c["id"]]["fields"]["notes"] == (f"复访{i // 3}" if edited else f"第{i}户")
    ids = [c["id"] for c in creates]
    assert _count(field, RecordRow, RecordRow.id.in_(ids)) == 300
    assert _count(field, ChangeLogEntry, ChangeLogEntry.record_id.in_(ids)) == 400
    assert _count(field, AppliedMutation, AppliedMutation.record_id.in_(ids)) == 400


def test_nothing_outside_the_scope_is_pulled(field):
    mine = field.grid("g-mine")
    other = field.grid("g-other")
    field.user("wang", ["g-mine"])
    field.user("zhao", ["g-other"])
    wang, zhao = field.device("wang"), field.device("zhao")
    zhao.push([zhao.mutation("household", fields=household(other))])
    wang.push([wang.mutation("household", fields=household(mine))])
    pulled = wang.pull_all()
    assert {r["fields"].get("grid_id", r["id"]) for r in pulled} == {mine}
    # and a write to the other grid's record is refused
    foreign = next(iter(zhao.records))
    zhao.push([zhao.mutation("household", foreign, {"notes": "v2"}, base_version=1)])
    [result, as_visit, unknown] = wang.push([
        wang.mutation("household", foreign, {"notes": "x"}, base_version=1),
        wang.mutation("visit", foreign, {"notes": "x"}, base_version=1),
        wang.mutation("household", str(uuid.uuid4()), {"notes": "x"}, base_version=1),
    ])["results"]
    assert result["error"]["code"] == "forbidden_scope" and "record" not in result
    # nothing of the foreign record comes back: not its version (2), not its entity
    assert result["version"] == 0 == unknown["version"]
    assert as_visit["error"]["code"] == "forbidden_scope" and as_visit["version"] == 0
    assert "household" not in as_visit["error"]["message"]


def test_a_base_version_ahead_of_the_record_is_rejected_and_overwrites_nothing(field, two_phones):
    grid, wang, li = two_phones
    create = wang.mutation("household", fields=household(grid))
    wang.push([create])
    wang.push([later(wang.mutation("household", create["id"], {"notes": "王的"}, base_version=1), wang)])
    [result] = li.push([li.mutation("household", create["id"], {"notes": "李的"}, base_version=999)])["results"]
    assert result["status"] == "rejected" and result["error"]["code"] == "invalid"
    assert "ahead" in result["error"]["message"]
    pulled = {r["id"]: r for r in li.pull_all()}
    assert pulled[create["id"]]["fields"]["notes"] == "王的" and pulled[create["id"]]["version"] == 2


def test_pull_pages_deliver_every_change_once_in_commit_order(two_phones):
    grid, wang, li = two_phones
    ids = []
    for _ in range(3):
        batch = [wang.mutation("household", fields=household(grid)) for _ in range(25)]
        ids += [m["id"] for m in batch]
        wang.push(batch)
    pulled = li.pull_all(limit=10)
    households = [r["id"] for r in pulled if r["entity"] == "household"]
    assert households == ids


def test_pull_returns_each_record_once_at_its_latest_version(two_phones):
    grid, wang, li = two_phones
    m = wang.mutation("household", fields=household(grid))
    wang.push([m])
    for n in range(3):
        wang.push([wang.mutation("household", m["id"], {"members": n + 1})])
    pulled = [r for r in li.pull_all() if r["id"] == m["id"]]
    assert len(pulled) == 1 and pulled[0]["version"] == 4 and pulled[0]["fields"]["members"] == 3


def test_an_incremental_pull_returns_only_what_changed(two_phones):
    grid, wang, li = two_phones
    wang.push([wang.mutation("household", fields=household(grid)) for _ in range(5)])
    li.pull_all()
    m = wang.mutation("household", fields=household(grid))
    wang.push([m])
    assert [r["id"] for r in li.pull_all()] == [m["id"]]
    assert li.pull_all() == []


def test_when_grids_change_the_next_pull_brings_the_new_grid_and_tombstones_the_old(field):
    old = field.grid("g-old")
    new = field.grid("g-new")
    field.user("wang", ["g-old"])
    field.user("zhao", ["g-new"])
    wang, zhao = field.device("wang"), field.device("zhao")
    wang.push([wang.mutation("household", fields=household(old)) for _ in range(3)])
    zhao.push([zhao.mutation("household", fields=household(new)) for _ in range(4)])
    wang.pull_all()
    field.set_grids("wang", ["g-new"])
    changes = wang.pull_all(limit=2)
    tombstones = {r["id"] for r in changes if r["deleted"]}
    fresh = {r["id"] for r in changes if not r["deleted"] and r["entity"] == "household"}
    assert fresh == {r["id"] for r in zhao.records.values() if r["entity"] == "household"}
    assert old in tombstones  # the old grid's own record too
    assert len([t for t in tombstones if t != old]) == 3
    assert all(r["deleted"] for i, r in wang.records.items() if r["entity"] != "grid" and i not in fresh)
    # and afterwards the ordinary feed goes on in the new scope
    m = zhao.mutation("household", fields=household(new))
    zhao.push([m])
    assert [r["id"] for r in wang.pull_all()] == [m["id"]]


def test_a_stamp_far_in_the_future_is_restamped_and_the_original_kept(field, two_phones):
    grid, wang, li = two_phones
    create = wang.mutation("household", fields=household(grid))
    wang.push([create])
    li.pull_all()
    year_ahead = format_stamp(wall_now_ms() + 365 * 24 * 3600 * 1000, 0, wang.device_id)
    cheat = wang.mutation("household", create["id"], {"notes": "from the future"})
    cheat["hlc"] = year_ahead
    [result] = wang.push([cheat])["results"]
    assert result["record"]["hlc"] < year_ahead
    honest = later(li.mutation("household", create["id"], {"notes": "now"}), li, 10)
    [kept] = li.push([honest])["results"]
    assert kept["record"]["fields"]["notes"] == "now"

    async def original() -> str | None:
        async with field.sessionmaker() as session:
            return await session.scalar(select(ChangeLogEntry.original_hlc).where(ChangeLogEntry.mid == cheat["mid"]))

    assert run(field.client, original) == year_ahead


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "malformed"),
        (b"\xc1\xc1", "application/msgpack", 400, "malformed"),
        (b'{"mutations": "lots"}', "application/json", 422, "invalid"),
        (b'{"mutations": [{"mid": 7}]}', "application/json", 422, "invalid"),
        (b'{"mutations": [], "extra": 1}', "application/json", 422, "invalid"),
        (b"<xml/>", "text/xml", 400, "malformed"),
        (b'{"mutations": [{"fields": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}]}", "application/json", 400,
         "malformed"),
        (b"\x81\xa9mutations\x91\x81\xa6fields" + b"\x81\xa1a" * 5000 + b"\x01", "application/msgpack", 400,
         "malformed"),
    ],
)
def test_malformed_and_wrongly_typed_bodies_get_4xx_and_change_nothing(field, two_phones, content, content_type,
                                                                       status, code):
    _, wang, _ = two_phones
    before = _count(field, RecordRow)
    response = field.client.post("/v1/sync/push", content=content,
                                 headers={"Sync-Protocol": "1", "Authorization": f"Bearer {wang.token}",
                                          "Content-Type": content_type, "Accept": "application/json"})
    assert response.status_code == status and response.json()["error"]["code"] == code
    assert _count(field, RecordRow) == before


def test_error_replies_carry_the_server_time(two_phones):
    _, wang, li = two_phones
    for device, response in [
        (wang, wang.call("POST", "/v1/sync/push", headers={"Content-Type": "application/json"}, content=b"{nope")),
        (li, li.call("GET", "/v1/sync/pull?limit=0")),
        (wang, wang.call("GET", "/v1/sync/pull", headers={"Authorization": "Bearer forged"})),
    ]:
        assert response.status_code in (400, 401, 422)
        body = device.decode(response)
        assert body["error"]["code"] and abs(body["server_time"] - wall_now_ms()) < 60_000
        assert int(response.headers["Server-Time"]) == pytest.approx(body["server_time"], abs=1_000)


def test_oversize_pushes_are_refused_whole(field, two_phones):
    grid, wang, _ = two_phones
    before = _count(field, RecordRow)
    too_many = [wang.mutation("household", fields=household(grid)) for _ in range(501)]
    response = wang.call("POST", "/v1/sync/push", {"mutations": too_many})
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"
    huge = wang.mutation("household", fields=household(grid, notes="x" * 8000))
    response = wang.call("POST", "/v1/sync/push", {"mutations": [huge] * 520})
    assert response.status_code == 413
    five_mib = b'{"mutations": [], "pad": "' + b"x" * (5 << 20) + b'"}'
    response = wang.call("POST", "/v1/sync/push", headers={"Content-Type": "application/json"}, content=five_mib)
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"
    assert _count(field, RecordRow) == before


def test_pull_rejects_bad_limits_and_cursors(two_phones):
    _, wang, _ = two_phones
    assert wang.call("GET", "/v1/sync/pull", params={"limit": "1001"}).status_code == 422
    assert wang.call("GET", "/v1/sync/pull", params={"limit": "-1"}).status_code == 422
    bad = wang.call("GET", "/v1/sync/pull", params={"cursor": "not-a-cursor!!"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "malformed"


def test_replies_follow_accept_and_msgpack_round_trips(two_phones):
    grid, _, li = two_phones
    reply = li.push([li.mutation("household", fields=household(grid))])
    assert reply["results"][0]["status"] == "applied"
    response = li.call("GET", "/v1/sync/pull", headers={"Accept": "application/json"})
    assert response.headers["content-type"].startswith("application/json")
    response = li.call("GET", "/v1/sync/pull", headers={"Accept": "application/msgpack"})
    assert msgspec.msgpack.decode(response.content)["more"] is False
