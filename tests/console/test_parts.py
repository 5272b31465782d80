"""The console's parts that need no server: catalogs, charts, exports, the import reader, due dates."""

from __future__ import annotations

import datetime
import io
import re
from pathlib import Path

import pytest
from openpyxl import Workbook, load_workbook

from server.console import charts, exports, importer
from server.console.actions import ActionRefused, parse_due
from server.console.i18n import catalog, translator
from server.console.queries import CASE_STATUSES
from server.console.web import TEMPLATES
from shared_schema.entities import CaseCategory, VisitMethod

CONSOLE = Path(__file__).resolve().parents[2] / "server" / "console"


def test_both_catalogs_carry_the_same_keys_and_placeholders():
    zh, en = catalog("zh"), catalog("en")
    assert set(zh) == set(en)
    for key in zh:
        assert set(re.findall(r"{(\w+)}", zh[key])) == set(re.findall(r"{(\w+)}", en[key])), key


def test_every_literal_key_the_console_uses_is_in_the_catalog():
    used = set()
    for path in list(TEMPLATES.glob("*.html")) + list(CONSOLE.glob("*.py")):
        used |= set(re.findall(r"""_\(['"]([a-z_]+\.[a-z0-9_.]*[a-z0-9_])['"]""", path.read_text(encoding="utf-8")))
    assert used, "no keys found"
    missing = sorted(used - set(catalog("zh")))
    assert not missing


def test_every_enumerated_value_has_a_label():
    zh = catalog("zh")
    keys = [f"case.status.{s}" for s in CASE_STATUSES] + [f"case.category.{c.value}" for c in CaseCategory]
    keys += [f"visit.method.{m.value}" for m in VisitMethod] + [
        f"role.{r}" for r in ("admin", "supervisor", "grid_worker", "red_steward")
    ]
    assert [k for k in keys if k not in zh] == []


def test_a_missing_key_falls_back_to_chinese_then_to_the_key():
    _ = translator("en")
    assert _("dash.closure_rate") == "Closure rate"
    assert _("no.such.key") == "no.such.key"
    assert _("page.rows", rows=3) == "3 rows"


def test_chart_labels_are_escaped():
    svg = charts.hbars([("<script>x</script>", 3), ("网格", 1)])
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    svg = charts.columns(["<b>"], [("<i>", [1.0])])
    assert "<b>" not in svg and "<i>" not in svg
    assert charts.hbars([]) and charts.donut(0.993).count("99.3%") == 1


def test_exports_keep_chinese_and_defuse_formulas():
    rows = [["=1+1", "顾先生", 3, datetime.datetime(2026, 11, 25, 8, 0, tzinfo=datetime.UTC), None, ["a", "b"]]]
    text = exports.to_csv(["公式", "户主", "人数", "时间", "空", "标签"], rows).decode("utf-8")
    assert text.startswith("\ufeff公式") and "'=1+1" in text and "顾先生" in text and "a, b" in text
    book = load_workbook(io.BytesIO(exports.to_xlsx(["a", "b"], [["@SUM(A1)", "控制\x01字符"]])))
    values = [c.value for c in book.worksheets[0][2]]
    assert values == ["'@SUM(A1)", "控制字符"]


def test_the_import_reader_takes_csv_in_utf8_or_gb18030_and_xlsx():
    text = "网格,地址\n一网格,台苑新村\n\n二网格,水木花都\n"
    for encoding in ("utf-8-sig", "gb18030"):
        rows = importer.read_table("homes.csv", text.encode(encoding))
        assert rows == [(2, {"网格": "一网格", "地址": "台苑新村"}), (4, {"网格": "二网格", "地址": "水木花都"})]
    book = Workbook()
    book.active.append(["Name", "Community"])
    book.active.append(["一网格", 12])
    buffer = io.BytesIO()
    book.save(buffer)
    assert importer.read_table("g.xlsx", buffer.getvalue()) == [(2, {"name": "一网格", "community": "12"})]


@pytest.mark.parametrize(
    "data, code", [(b"", "empty"), (b"PK\x03\x04junk", "unreadable"), (b"x" * (importer.MAX_BYTES + 1), "too_large")]
)
def test_the_import_reader_refuses_what_it_cannot_read(data, code):
    with pytest.raises(importer.ImportFileError) as refused:
        importer.read_table("f.xlsx" if data.startswith(b"PK") else "f.csv", data)
    assert refused.value.code == code


def test_a_due_date_is_local_end_of_day_and_must_be_in_the_future():
    now = datetime.datetime(2026, 11, 25, 2, 0, tzinfo=datetime.UTC)
    due = parse_due("2026-11-26", now)
    assert due.isoformat() == "2026-11-26T23:59:00+08:00"
    assert parse_due("2026-11-25T18:30", now).hour == 18
    for raw, code in (
        ("2026-11-24", "date_past"),
        ("tomorrow", "bad_date"),
        ("", "bad_date"),
        ("2999-01-01", "bad_date"),
    ):
        with pytest.raises(ActionRefused) as refused:
            parse_due(raw, now)
        assert refused.value.code == code
