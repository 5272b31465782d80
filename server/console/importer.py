"""Import of grids and households from CSV or XLSX, with a report of every rejected row and why.

Headers may be English field names or their Chinese labels. Each good row becomes a record
through the one write path (households) or the accounts service (grids); a bad row changes
nothing and is reported with its line number and the reason.
"""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass, field

from openpyxl import load_workbook
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from server.accounts.service import AccountError, add_grid
from server.console.actions import sender_for
from server.console.auth import ConsoleUser
from server.db.models import Grid, RecordRow
from server.records.writes import commit_mutations, server_clock
from shared_schema.entities import ENTITIES, FieldsInvalid, validate_fields
from shared_schema.messages import Mutation, MutationStatus

MAX_BYTES = 10 * 1024 * 1024
MAX_ROWS = 20_000
BATCH = 500

GRID_HEADERS = {"name": "name", "网格": "name", "网格名称": "name", "community": "community", "社区": "community"}
HOUSEHOLD_HEADERS = {
    "grid": "grid",
    "网格": "grid",
    "address": "address",
    "地址": "address",
    "building": "building",
    "楼栋": "building",
    "unit": "unit",
    "单元": "unit",
    "room": "room",
    "房号": "room",
    "head_name": "head_name",
    "户主": "head_name",
    "phone": "phone",
    "电话": "phone",
    "members": "members",
    "人数": "members",
    "tags": "tags",
    "标签": "tags",
    "notes": "notes",
    "备注": "notes",
}


class ImportFileError(ValueError):
    """The file as a whole cannot be read; ``code`` is a catalog key suffix."""

    def __init__(self, code: str, detail: str = ""):
        super().__init__(detail or code)
        self.code = code
        self.detail = detail


@dataclass
class Rejection:
    line: int
    reason: str  # a catalog key, filled with ``params``
    values: dict
    params: dict = field(default_factory=dict)


@dataclass
class ImportReport:
    kind: str
    accepted: int = 0
    rejected: list[Rejection] = field(default_factory=list)


def read_table(filename: str, data: bytes) -> list[tuple[int, dict[str, str]]]:
    """The rows of a CSV or XLSX file as (line number, {header: text})."""
    if len(data) > MAX_BYTES:
        raise ImportFileError("too_large")
    if not data:
        raise ImportFileError("empty")
    name = (filename or "").lower()
    if name.endswith(".xlsx") or data[:2] == b"PK":
        try:
            book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        except Exception as exc:  # noqa: BLE001 - openpyxl raises many kinds on a broken file
            raise ImportFileError("unreadable", str(exc)[:200]) from None
        sheet = book.worksheets[0]
        rows = [["" if c is None else str(c).strip() for c in row] for row in sheet.iter_rows(values_only=True)]
    else:
        for encoding in ("utf-8-sig", "gb18030"):
            try:
                text = data.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
        else:
            raise ImportFileError("unreadable", "not UTF-8 or GB18030 text")
        rows = [[c.strip() for c in row] for row in csv.reader(io.StringIO(text))]
    if not rows:
        raise ImportFileError("empty")
    headers = [h.strip().lower() if h.isascii() else h.strip() for h in rows[0]]
    out = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(row):
            continue
        out.append((number, {headers[i]: row[i] for i in range(min(len(headers), len(row))) if headers[i]}))
    if len(out) > MAX_ROWS:
        raise ImportFileError("too_many_rows")
    return out


def _map(row: dict[str, str], aliases: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    mapped, unknown = {}, []
    for header, value in row.items():
        key = aliases.get(header)
        if key is None:
            unknown.append(header)
        else:
            mapped[key] = value
    return mapped, unknown


async def import_grids(sm: async_sessionmaker, rows: list[tuple[int, dict[str, str]]]) -> ImportReport:
    report = ImportReport(kind="grids")
    for line, raw in rows:
        values, unknown = _map(raw, GRID_HEADERS)
        if unknown:
            report.rejected.append(Rejection(line, "import.reason.unknown_column", raw, {"columns": "、".join(unknown)}))
            continue
        try:
            await add_grid(sm, values.get("name", ""), values.get("community", ""))
        except AccountError as exc:
            report.rejected.append(Rejection(line, f"error.account.{exc.code}", raw, exc.params))
            continue
        report.accepted += 1
    return report


def _household_fields(values: dict[str, str], grid_id: str) -> dict:
    fields: dict = {"grid_id": grid_id}
    for name in ("address", "building", "unit", "room", "head_name", "phone", "notes"):
        if values.get(name):
            fields[name] = values[name]
    if values.get("members"):
        try:
            fields["members"] = int(float(values["members"]))
        except ValueError:
            raise FieldsInvalid(f"members is not a number: {values['members']!r}") from None
    if values.get("tags"):
        fields["tags"] = [
            t.strip() for t in values["tags"].replace("，", ",").replace("、", ",").split(",") if t.strip()
        ]
    missing = sorted(ENTITIES["household"].REQUIRED_ON_CREATE - fields.keys())
    if missing:
        raise FieldsInvalid(f"missing: {', '.join(missing)}")
    return validate_fields("household", fields)


def _key(fields: dict) -> tuple:
    return tuple(str(fields.get(k, "")).strip() for k in ("grid_id", "address", "building", "unit", "room"))


async def import_households(
    sm: async_sessionmaker, me: ConsoleUser, rows: list[tuple[int, dict[str, str]]]
) -> ImportReport:
    report = ImportReport(kind="households")
    async with sm() as db:
        grids = {g.name: g.id for g in (await db.scalars(select(Grid))).all()}
        existing = {
            _key(fields)
            for (fields,) in (
                await db.execute(
                    select(RecordRow.fields).where(RecordRow.entity == "household", RecordRow.deleted.is_(False))
                )
            ).all()
        }
    pending: list[tuple[int, dict, Mutation]] = []
    clock = server_clock()
    for line, raw in rows:
        values, unknown = _map(raw, HOUSEHOLD_HEADERS)
        if unknown:
            report.rejected.append(Rejection(line, "import.reason.unknown_column", raw, {"columns": "、".join(unknown)}))
            continue
        grid_id = grids.get(values.get("grid", ""))
        if grid_id is None:
            report.rejected.append(Rejection(line, "import.reason.no_grid", raw, {"name": values.get("grid", "")}))
            continue
        if not me.may_see_grid(grid_id):
            report.rejected.append(Rejection(line, "import.reason.outside_scope", raw))
            continue
        try:
            fields = _household_fields(values, grid_id)
        except FieldsInvalid as exc:
            report.rejected.append(Rejection(line, "import.reason.invalid", raw, {"detail": str(exc)}))
            continue
        key = _key(fields)
        if key in existing:
            report.rejected.append(Rejection(line, "import.reason.exists", raw))
            continue
        existing.add(key)
        mutation = Mutation(
            mid=str(uuid.uuid4()),
            entity="household",
            id=str(uuid.uuid4()),
            op="upsert",
            base_version=0,
            hlc=clock.now(),
            fields=fields,
        )
        pending.append((line, raw, mutation))
    for start in range(0, len(pending), BATCH):
        chunk = pending[start : start + BATCH]
        results = await commit_mutations(sm, [m for _, _, m in chunk], sender_for(me))
        for (line, raw, _), result in zip(chunk, results, strict=True):
            if result.status is MutationStatus.REJECTED:
                report.rejected.append(Rejection(line, "import.reason.invalid", raw, {"detail": result.error.message}))
            else:
                report.accepted += 1
    report.rejected.sort(key=lambda r: r.line)
    return report
