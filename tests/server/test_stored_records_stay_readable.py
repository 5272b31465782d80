"""Whatever the server stores, every phone and every console page can read back.

Phones push values at the edges of each field's type, read off the shared schema: times in the
years 1 and 9999 at the farthest UTC offsets, integers past 64 bits, text with newlines, astral
characters and NUL, lists one past their cap, ids and hashes that end in a newline. The server may
refuse any of it, but what it applies must pass the check a phone makes on each record it pulls
(else that phone, and every other in the grid, stops at the page that holds it), and the
supervisor's pages that show it must answer without a 500. Each of these broke once: a 37-character
id (a 500 on PostgreSQL), a visit in the year 9999 (every visit list a 500), a track time past 2**64
(a 500), two phones' photos united past the cap of 32 (every phone in the grid stuck).
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.accounts import service as accounts
from shared_schema.entities import DEVICE_WRITABLE, ENTITIES
from shared_schema.messages import Record
from sync.client.server_replies import check_record
from sync.errors import ProtocolError
from tests.conftest import run
from tests.console.conftest import PASSWORD, Browser

GRID_NAME = "所前社区第1网格"


def _moments() -> list[str]:
    zones = [datetime.timezone(datetime.timedelta(hours=h)) for h in (-23.99, -12, 0, 8, 14, 23.99)]
    days = [datetime.datetime(y, 1, 1) for y in (1, 1899, 1900, 2026, 3000)]
    days += [datetime.datetime(y, 12, 31, 23, 59, 59) for y in (1899, 2999, 9999)]
    return [day.replace(tzinfo=zone).isoformat() for day in days for zone in zones]


def edge_values(kind: mi.Type, ids: list[str]) -> list[Any]:  # noqa: PLR0911, C901
    """Values of a field's type at its edges and just past them, a few plain ones among them."""
    if isinstance(kind, mi.Metadata):
        return edge_values(kind.type, ids)
    if isinstance(kind, mi.UnionType):
        return [value for member in kind.types for value in edge_values(member, ids)]
    if isinstance(kind, mi.NoneType):
        return [None]
    if isinstance(kind, mi.StrType):
        pattern = kind.pattern or ""
        if "{12}" in pattern:  # a UUID
            return [ids[0], ids[0] + "\n", ids[0].upper(), str(uuid.uuid4())]
        if "{64}" in pattern:  # a SHA-256
            return [f"{7:064x}", f"{7:064x}\n", "A" * 64]
        if "0-9+" in pattern:  # a phone number
            return ["13800000001", "+86 571-1234", "1\n", "1" * 21]
        longest = kind.max_length or 100
        return ["", "居民\n反映", "\x00", "😀" * 3, "\u202e", "长" * longest, "长" * (longest + 1)]
    if isinstance(kind, mi.IntType):
        low = -(2**63) if kind.ge is None else kind.ge
        high = 2**64 if kind.le is None else kind.le
        return [low - 1, low, high, high + 1, 2**64]
    if isinstance(kind, mi.FloatType):
        return [kind.ge, kind.le, 1e308, -0.0]
    if isinstance(kind, mi.DateTimeType):
        return _moments()
    if isinstance(kind, mi.DateType):
        return ["0001-01-01", "1899-12-31", "1900-01-01", "2999-12-31", "3000-01-01", "9999-12-31"]
    if isinstance(kind, mi.EnumType):
        return [m.value for m in kind.cls] + ["nope"]
    if isinstance(kind, mi.ListType):
        item = edge_values(kind.item_type, ids)
        lists = [[], item, *([value] for value in item)]
        if kind.max_length is not None and kind.max_length <= 64:  # a track's cap is a size limit, not an edge
            lists += [[f"{n:064x}" if len(item[0]) == 64 else f"t{n}" for n in range(kind.max_length + extra)]
                      for extra in (0, 1)]
        return lists
    if isinstance(kind, mi.TupleType):
        columns = [edge_values(item, ids) for item in kind.item_types]
        return [[column[i % len(column)] for column in columns] for i in range(max(map(len, columns)))]
    if isinstance(kind, mi.StructType):
        columns = {f.name: edge_values(f.type, ids) for f in kind.fields}
        return [{name: column[i % len(column)] for name, column in columns.items()}
                for i in range(max(map(len, columns.values())))]
    raise AssertionError(f"no edge values for {kind!r}")


def plain_fields(grid: str, household: str) -> dict[str, dict]:
    """What each entity needs to be created, all of it valid."""
    now = "2026-11-25T08:00:00+08:00"
    return {
        "household": {"grid_id": grid, "address": "台苑新村1幢"},
        "visit": {"grid_id": grid, "household_id": household, "method": "inquiry", "visited_at": now},
        "patrol": {"grid_id": grid, "started_at": now},
        "case": {"grid_id": grid, "category": "noise", "title": "噪音", "status": "reported"},
        "diary": {"grid_id": grid, "text": "居民反映", "written_at": now},
    }


def _other_items(value: Any) -> Any:
    """The same kind of value with other items, so that a union with ``value`` grows."""
    if not isinstance(value, list):
        return value
    return [f"{int(v, 16) + 1000:064x}" if isinstance(v, str) and len(v) == 64 else v + "'" if isinstance(v, str)
            else v for v in value]


def field_kinds(entity: str) -> dict[str, mi.Type]:
    return {f.name: f.type for f in mi.type_info(ENTITIES[entity]).fields}


@pytest.fixture
def street(field):  # noqa: ANN001, ANN201
    """Two phones in one grid with one plain record of each entity, and a supervisor signed in."""
    grid = field.grid(GRID_NAME)
    field.user("wang", [GRID_NAME])
    field.user("li", [GRID_NAME])
    run(field.client, accounts.create_user, field.sessionmaker, "sup", "supervisor", [GRID_NAME], PASSWORD)
    wang, li = field.device("wang"), field.device("li")
    home = wang.mutation("household", fields=plain_fields(grid, "")["household"])
    plain = plain_fields(grid, home["id"])
    seeds = [home] + [wang.mutation(entity, fields=plain[entity]) for entity in sorted(DEVICE_WRITABLE - {"household"})]
    assert all(r["status"] == "applied" for r in wang.push(seeds)["results"])
    li.pull_all()
    browser = Browser(field.client)
    assert browser.login("sup").status_code in (302, 303)
    return grid, plain, {m["entity"]: m["id"] for m in seeds}, (wang, li), browser


def _push(phone, batch: list[dict]) -> list[dict]:  # noqa: ANN001
    """Push and check every record the server says it stored."""
    response = phone.call("POST", "/v1/sync/push", {"mutations": batch})
    assert response.status_code in (200, 422), response.text
    results = response.json().get("results", [])
    for result in results:
        if result["status"] != "rejected":
            _readable_by_a_phone(result["record"])
    return results


def _readable_by_a_phone(record: dict) -> None:
    # A phone sets aside a record it cannot hold (and refuses the page of one no server sends):
    # either way the server stored what its phones will not show.
    try:
        unfit = check_record(msgspec.convert(record, Record))
    except ProtocolError as exc:
        raise AssertionError(f"the server stored what no phone will take: {exc}") from None
    assert unfit is None, f"the server stored what no phone will show: {unfit}"


def _everything_reads_back(phone, browser, record_ids: list[str]) -> None:  # noqa: ANN001
    for record in phone.pull_all():
        _readable_by_a_phone(record)
    pages = ["/console/", "/console/visits", "/console/cases", "/console/households", "/console/conflicts",
             "/console/sync-log", "/console/visits?due=1", "/console/visits.csv", "/console/cases.xlsx"]
    for record_id in record_ids:
        pages += [f"/console/visits/{record_id}", f"/console/cases/{record_id}", f"/console/households/{record_id}",
                  f"/console/records/{record_id}/changes"]
    for page in pages:
        assert browser.get(page).status_code < 500, page


def test_every_edge_value_of_every_field_is_refused_or_reads_back(street):
    """Each field of each entity at each of its edges: in a new record, and as an edit of an existing one
    that another phone edits at the same time (so that union fields merge)."""
    grid, plain, seeded, (wang, li), browser = street
    created: list[str] = []
    for entity in sorted(DEVICE_WRITABLE):
        for name, kind in field_kinds(entity).items():
            values = edge_values(kind, [seeded["household"], grid])
            fresh = [wang.mutation(entity, fields={**plain[entity], name: value}) for value in values]
            created += [m["id"] for m, r in zip(fresh, _push(wang, fresh), strict=True) if r["status"] != "rejected"]
            for value in values:
                mine = wang.mutation(entity, seeded[entity], {name: value})
                theirs = li.mutation(entity, seeded[entity], {name: _other_items(value)})
                mine["base_version"] = theirs["base_version"] = 1
                _push(wang, [mine])
                _push(li, [theirs])
    _everything_reads_back(li, browser, [*seeded.values(), *created[::7]])


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_random_edits_at_the_edges_leave_every_record_readable(street, data):
    """The same values, several fields at once, from both phones in any order, on the same few records."""
    grid, plain, seeded, phones, browser = street
    ids = [seeded["household"], grid]

    def mutation(phone, entity: str, edges: dict, base: int) -> dict:  # noqa: ANN001
        m = phone.mutation(entity, seeded[entity], {**plain[entity], **edges})
        m["base_version"] = base
        return m

    def edits(phone) -> st.SearchStrategy[dict]:  # noqa: ANN001
        def of(entity: str) -> st.SearchStrategy[dict]:
            kinds = field_kinds(entity)
            edges = st.sets(st.sampled_from(sorted(kinds)), max_size=3).flatmap(
                lambda names: st.fixed_dictionaries({n: st.sampled_from(edge_values(kinds[n], ids)) for n in names}))
            return st.builds(mutation, st.just(phone), st.just(entity), edges, st.integers(0, 3))

        return st.sampled_from(sorted(DEVICE_WRITABLE)).flatmap(of)

    for phone in data.draw(st.permutations(phones)):
        _push(phone, data.draw(st.lists(edits(phone), min_size=1, max_size=4)))
    _everything_reads_back(phones[1], browser, list(seeded.values()))
