"""Accounts: names as people type them, and two administrators at once."""

from __future__ import annotations

import asyncio
import pytest
from sqlalchemy import update

from server.accounts import service as accounts
from server.db.models import Grid, User
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


def test_names_typed_in_fullwidth_are_stored_and_found_as_their_plain_forms(field):
    grid = run(field.client, accounts.add_grid, field.sessionmaker, "　１号网格（Ａ）", "所前社区")
    assert grid.name == "1号网格(A)"
    with pytest.raises(accounts.AccountError, match="exists already"):
        run(field.client, accounts.add_grid, field.sessionmaker, "1号网格(a)", "所前社区")
    user = run(field.client, accounts.create_user, field.sessionmaker, "ｗａｎｇ", "grid_worker",
               ["１号网格（Ａ）", "1号网格(A)"])
    assert user.name == "wang"
    with pytest.raises(accounts.AccountError, match="exists already"):
        run(field.client, accounts.create_user, field.sessionmaker, "Wang", "grid_worker")

    async def grids_of(name: str) -> list[str]:
        async with field.sessionmaker() as session:
            found = await accounts.user_by_name(session, name)
            return sorted(await accounts.user_grid_ids(session, found.id))

    assert run(field.client, grids_of, "ｗａｎｇ") == run(field.client, grids_of, "wang") == [grid.id]
    with pytest.raises(accounts.AccountError, match="no grid named '２号网格'"):
        run(field.client, accounts.set_grids, field.sessionmaker, "wang", ["２号网格"])


def test_a_name_stored_before_names_were_folded_is_still_found_as_written(field):
    grid = run(field.client, accounts.add_grid, field.sessionmaker, "g7", "所前社区")
    user = run(field.client, accounts.create_user, field.sessionmaker, "li", "grid_worker")

    async def stored_unfolded() -> None:  # as an older FieldLoop stored what it was given
        async with field.sessionmaker() as session, session.begin():
            await session.execute(update(Grid).where(Grid.id == grid.id).values(name="ｇ７"))
            await session.execute(update(User).where(User.id == user.id).values(name="ｌｉ"))

    run(field.client, stored_unfolded)
    run(field.client, accounts.set_grids, field.sessionmaker, "ｌｉ", ["ｇ７"])

    async def grid_names_of(name: str) -> list[str]:
        async with field.sessionmaker() as session:
            found = await accounts.user_by_name(session, name)
            return [g.name for g in await accounts.grids_by_name(session, ["ｇ７"])
                    if g.id in await accounts.user_grid_ids(session, found.id)]

    assert run(field.client, grid_names_of, "ｌｉ") == ["ｇ７"]
