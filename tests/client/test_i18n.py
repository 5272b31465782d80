"""One catalog per language; no user-facing words in the code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from client.i18n import LANGUAGES, catalog, current_language, placeholders, set_language, tr

CLIENT = Path(__file__).resolve().parents[2] / "client"
CJK = re.compile(r"[\u3400-\u9fff\uff00-\uffef\u3000-\u303f]")


def test_catalogs_have_the_same_keys_and_placeholders():
    zh, en = catalog("zh_CN"), catalog("en")
    assert zh.keys() == en.keys()
    for key in zh:
        assert placeholders(zh[key]) == placeholders(en[key]), key


def test_chinese_is_the_default_and_english_switches():
    assert current_language() == "zh_CN"
    assert tr("home.pending", count=3) == "待同步的修改：3条"
    set_language("en")
    try:
        assert tr("home.pending", count=3) == "Edits waiting to sync: 3"
    finally:
        set_language("zh_CN")


def test_every_key_the_code_uses_is_in_the_catalog():
    used = set()
    for path in CLIENT.rglob("*.py"):
        used |= set(re.findall(
            r"""(?:tr|SetupError|FormInvalid|VisitInvalid|CaseInvalid|DiaryInvalid)\(\s*"([a-z_]+\.[a-z_.]+)\"""",
            path.read_text(encoding="utf-8")))
    missing = sorted(k for k in used if not k.endswith(".") and k not in catalog("zh_CN"))
    assert missing == []


def test_dynamic_keys_cover_every_enum_value():
    from client.services.sync_runner import SyncState
    from shared_schema.entities import CaseCategory, VisitMethod
    from shared_schema.workflow import CaseStatus

    zh = catalog("zh_CN")
    needed = [f"method.{m.value}" for m in VisitMethod] + [f"category.{c.value}" for c in CaseCategory]
    needed += [f"case.status.{s.value}" for s in CaseStatus] + [f"sync.state.{s.value}" for s in SyncState]
    needed += [f"language.{lang}" for lang in LANGUAGES]
    assert [k for k in needed if k not in zh] == []


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def test_no_chinese_text_outside_the_catalogs():
    """Docstrings and comments may name 五诊法 and 民情日记; no string literal in code may hold Chinese."""
    offenders = []
    for path in CLIENT.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                if CJK.search(node.value):
                    offenders.append(f"{path.relative_to(CLIENT)}:{node.lineno}")
    assert offenders == [], offenders
