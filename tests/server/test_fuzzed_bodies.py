"""Whatever a phone sends, the server answers with the protocol's 2xx or 4xx, never a 500,
and a push that fails as a whole writes nothing."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared_schema.entities import ENTITIES

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)
field_names = st.sampled_from(sorted({f for e in ENTITIES.values() for f in e.__struct_fields__} | {"x", ""}))
entities = st.sampled_from([*ENTITIES, "nope", ""])
uuids = st.uuids().map(str)
stamps = st.integers(0, 9_999_999_999_999).map(lambda ms: f"{ms:013d}-0000-fuzz")


def mutations(grid: str, known_ids: list[str]):  # noqa: ANN201
    fields = st.dictionaries(field_names, json_values | st.just(grid), max_size=6)
    return st.fixed_dictionaries({
        "mid": uuids,
        "entity": entities,
        "id": st.sampled_from(known_ids) | uuids,
        "op": st.sampled_from(["upsert", "delete"]),
        "base_version": st.integers(0, 5),
        "hlc": stamps,
        "fields": fields,
    })


@pytest.fixture(params=[None], ids=["sqlite"])
def backend(request):  # noqa: ANN001, ANN201 - one database is enough for the fuzzing
    return request.param


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_random_pushes_never_get_a_500(field_once, data):
    field, device, grid, known = field_once
    batch = data.draw(st.lists(mutations(grid, known), max_size=8))
    response = device.call("POST", "/v1/sync/push", {"mutations": batch})
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        results = response.json()["results"]
        assert len(results) == len(batch)
        assert all(r["status"] in ("applied", "merged", "rejected") for r in results)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=json_values, path=st.sampled_from(["/v1/sync/push", "/v1/devices/enroll", "/v1/auth/challenge",
                                                "/v1/auth/token"]))
def test_random_bodies_get_4xx(field_once, body, path):
    _, device, _, _ = field_once
    response = device.call("POST", path, body)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["code"]


@pytest.fixture
def field_once(field):
    grid = field.grid("g1")
    field.user("wang", ["g1"])
    device = field.device("wang")
    existing = [
        device.mutation("household", fields={"grid_id": grid, "address": "台苑新村1幢", "tags": ["党员户"]}),
        device.mutation("case", fields={"grid_id": grid, "category": "noise", "title": "噪音", "status": "reported"}),
    ]
    device.push(existing)
    return field, device, grid, [m["id"] for m in existing]
