"""Fixtures for the console: two grids with a supervisor and a phone each, an administrator, and
a browser-like client that signs in and sends the CSRF token with every form."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import httpx
import pytest
from litestar.testing import TestClient

from server.accounts import service as accounts
from server.console.auth import CSRF_COOKIE
from tests.conftest import FieldSetup, run
from tests.support.device import WireDevice

PASSWORD = "correct-horse-9"
GRID_A = "所前社区第1网格"
GRID_B = "水木花都社区第1网格"


class Browser:
    """The console as a browser sees it: cookies, the CSRF field, redirects not followed."""

    def __init__(self, client: TestClient):
        self.client = client

    def login(self, name: str, password: str = PASSWORD) -> httpx.Response:
        self.client.cookies.clear()
        self.client.get("/console/login")
        return self.post("/console/login", {"name": name, "password": password, "next": "/console/"})

    def csrf(self) -> str:
        token = self.client.cookies.get(CSRF_COOKIE)
        if not token:
            self.client.get("/console/login")
            token = self.client.cookies.get(CSRF_COOKIE)
        return token

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.client.get(path, follow_redirects=False, **kwargs)

    def post(self, path: str, data: dict | None = None, *, csrf: bool = True, **kwargs) -> httpx.Response:
        data = dict(data or {})
        if csrf:
            data.setdefault("_csrf", self.csrf())
        return self.client.post(path, data=data, follow_redirects=False, **kwargs)


@dataclass
class Site:
    """Two grids, one supervisor and one phone in each, and an administrator."""

    field: FieldSetup
    browser: Browser
    grid_a: str
    grid_b: str
    phone_a: WireDevice
    phone_b: WireDevice

    @property
    def sessionmaker(self):
        return self.field.sessionmaker

    def call(self, fn, *args, **kwargs):
        return run(self.field.client, fn, *args, **kwargs)

    def household(self, phone: WireDevice, grid: str, **extra) -> dict:
        m = phone.mutation(
            "household", fields={"grid_id": grid, "address": "台苑新村3幢2单元301室", "head_name": "顾先生", **extra}
        )
        [r] = phone.push([m])["results"]
        assert r["status"] == "applied", r
        return m

    def visit(self, phone: WireDevice, grid: str, household_id: str, **extra) -> dict:
        fields = {
            "grid_id": grid,
            "household_id": household_id,
            "method": "inquiry",
            "visited_at": "2026-11-20T09:30:00+08:00",
            "notes": "了解落水管破裂情况",
            **extra,
        }
        m = phone.mutation("visit", fields=fields)
        [r] = phone.push([m])["results"]
        assert r["status"] == "applied", r
        return m

    def case(self, phone: WireDevice, grid: str, **extra) -> dict:
        fields = {
            "grid_id": grid,
            "category": "drainage",
            "title": "落水管破裂",
            "description": "3幢外墙渗水",
            "status": "reported",
            **extra,
        }
        m = phone.mutation("case", fields=fields)
        [r] = phone.push([m])["results"]
        assert r["status"] == "applied", r
        return m


@pytest.fixture
def site(field: FieldSetup) -> Site:
    grid_a, grid_b = field.grid(GRID_A), field.grid(GRID_B, "水木花都社区")
    sm = field.sessionmaker
    run(field.client, accounts.create_user, sm, "admin", "admin", [], PASSWORD)
    run(field.client, accounts.create_user, sm, "sup_a", "supervisor", [GRID_A], PASSWORD)
    run(field.client, accounts.create_user, sm, "sup_b", "supervisor", [GRID_B], PASSWORD)
    field.user("wang", [GRID_A])
    field.user("li", [GRID_B], role="red_steward")
    return Site(field, Browser(field.client), grid_a, grid_b, field.device("wang"), field.device("li"))


def record_id_in(html: str, kind: str) -> list[str]:
    return re.findall(rf"/console/{kind}/([0-9a-f-]{{36}})", html)


def new_id() -> str:
    return str(uuid.uuid4())
