"""The guarantees under chaos: phones on the real engine edit offline and sync through a proxy
that cuts requests and replies, drops replies the server committed, SIGKILLs the server mid-request
and kills a phone's own process after the server answered (its store reopened); on PostgreSQL
two server processes share the phones' requests and backends are terminated mid-request. Once
everyone has synced, G1-G5 hold (``tests.support.chaos.check``).

A bounded slice of ``python -m tests.support.chaos`` (the probe that runs many seeds): a few
seeds, phones syncing one at a time, so each seed plays the same schedule.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.chaos import run_round

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("seed", [13, 21])
def test_offline_phones_converge_through_kills_cuts_and_lost_replies(backend: str | None, seed: int, tmp_path: Path):
    stats: dict = {}
    problems = run_round(seed, backend, steps=36, phones=4, folder=tmp_path / "round", stats=stats)
    assert problems == [], "\n".join(problems)
    faults = stats["faults"]
    assert sum(n for kind, n in faults.items() if kind != "pass") >= 5, stats
