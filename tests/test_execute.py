"""Choosing the executor: a plan runs interpreted first, compiled from its second use."""

from typing import Annotated, Any

import pytest

from di_tasks import Container, Depends

pytestmark = pytest.mark.anyio


def one() -> int:
    return 1


async def root(x: Annotated[int, Depends(one)]) -> int:
    return x + 1


async def test_a_plan_is_compiled_on_its_second_use() -> None:
    """The first call interprets the plan; the second compiles it (for a fresh scope) and keeps the source."""
    container = Container()
    plan = container.plan(root)
    assert await container.call(root) == 2
    assert compiled(plan) is None
    assert await container.call(root) == 2
    assert compiled(plan) is not None
    assert "async def run(scope, args, values, root_thread):" in plan.source
    assert await container.call(root) == 2


async def test_a_scope_shared_by_calls_uses_the_form_with_cache_lookups() -> None:
    """Calls in an entered scope use the compiled form that reads the request cache."""
    container = Container()
    plan = container.plan(root)
    async with container.scope() as scope:
        for _ in range(3):
            assert await scope.call(root) == 2
    assert plan.run is not None
    assert "if c0 in cache:" in plan.source


def compiled(plan: Any) -> object:
    """The plan's compiled fresh form, read through a call so a type checker does not narrow it between reads."""
    return plan.run_fresh
