"""Accounts under two administrators at once."""

from __future__ import annotations

import asyncio

from server.accounts import service as accounts
from tests.conftest import run


def test_the_same_name_submitted_twice_at_once_makes_one_and_refuses_the_other(field):
    async def twice(make, *args) -> list:  # noqa: ANN001
        return await asyncio.gather(make(field.sessionmaker, *args), make(field.sessionmaker, *args),
                                    return_exceptions=True)

    for attempt in range(4):
        for outcome in (run(field.client, twice, accounts.add_grid, f"所前社区第{attempt}网格", "所前社区"),
                        run(field.client, twice, accounts.create_user, f"wang{attempt}", "grid_worker")):
            refused = [o for o in outcome if isinstance(o, BaseException)]
            assert len(refused) == 1 and isinstance(refused[0], accounts.AccountError), outcome
            assert "exists already" in str(refused[0])
