"""Merge rules, declared beside each entity field.

A field is declared as ``Annotated[T | UnsetType, rule(UNION)]``; ``field_rules`` reads the
rules back from a Struct so that the merge code never keeps a second list of them.
"""

from __future__ import annotations

import enum
import functools
import typing

import msgspec


class MergeRule(str, enum.Enum):
    """How a concurrent edit of one field is resolved (protocol section 4)."""

    LWW = "lww"
    UNION = "union"
    TRANSITION = "transition"
    SERVER = "server"


LWW = MergeRule.LWW
UNION = MergeRule.UNION
TRANSITION = MergeRule.TRANSITION
SERVER = MergeRule.SERVER


def rule(merge_rule: MergeRule) -> msgspec.Meta:
    """The annotation that attaches a merge rule to a field."""
    return msgspec.Meta(extra={"merge": merge_rule.value})


@functools.cache
def field_rules(struct_type: type[msgspec.Struct]) -> dict[str, MergeRule]:
    """Every field of an entity Struct mapped to its merge rule (``lww`` when none is named)."""
    hints = typing.get_type_hints(struct_type, include_extras=True)
    rules: dict[str, MergeRule] = {}
    for name in struct_type.__struct_fields__:
        found = MergeRule.LWW
        for meta in getattr(hints[name], "__metadata__", ()):
            if isinstance(meta, msgspec.Meta) and meta.extra and "merge" in meta.extra:
                found = MergeRule(meta.extra["merge"])
        rules[name] = found
    return rules
