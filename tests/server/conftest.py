"""Fixtures the server's test files share."""

from __future__ import annotations

import pytest


@pytest.fixture
def two_phones(field):  # noqa: ANN001, ANN201
    """A grid with two phones: wang, a grid worker, speaks JSON; li, a red steward, msgpack."""
    grid = field.grid("所前社区第1网格")
    field.user("wang", ["所前社区第1网格"])
    field.user("li", ["所前社区第1网格"], role="red_steward")
    return grid, field.device("wang"), field.device("li", msgpack=True)
