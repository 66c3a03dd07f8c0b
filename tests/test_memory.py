"""Bounded memory: per-request callables (lambdas, partials, bound methods) work and leave nothing behind;
compiled plans leave linecache with their containers; app values under overrides never mix."""

import functools
import gc
import linecache
import weakref
from collections.abc import Callable
from typing import Annotated, Any

import pytest

from di_tasks import BackgroundTasks, Container, Depends

pytestmark = pytest.mark.anyio

REQUESTS = 2_000


class Request:
    """A per-request object whose bound method is the function called."""

    def __init__(self, n: int) -> None:
        self.n = n

    async def handle(self, tasks: BackgroundTasks) -> int:
        tasks.add_task(noop, self.n)
        return self.n


async def noop(n: int) -> None:
    """A task."""


def constant(n: int) -> Callable[[], int]:
    """A new lambda per request."""
    return lambda: n


def add(n: int, x: int) -> int:
    return n + x


def add_one(n: int, tasks: BackgroundTasks) -> object:
    """Add a per-request partial as a task."""
    return tasks.add_task(functools.partial(noop, n))


def settings() -> int:
    return 1


def plan_count(container: Container) -> int:
    """How many plans and task specs the container keeps (what a leak would grow)."""
    return len(container._plans) + len(container._task_specs)


async def test_per_request_callables_do_not_grow_the_caches() -> None:
    """Lambdas, partials and bound methods made per request: the caches stay bounded and no request lives on."""
    container = Container()
    alive: list[weakref.ref[Request]] = []
    for n in range(REQUESTS):
        request = Request(n)
        alive.append(weakref.ref(request))
        assert await container.call(request.handle) == n
        assert await container.call(constant(n)) == n
        assert await container.call(functools.partial(add, n), x=1) == n + 1
        assert await container.call(functools.partial(add_one, n)) is not None
        del request
    gc.collect()
    assert plan_count(container) <= 2 * 256 + 8  # the bounded parts, and the few fixed functions
    assert sum(ref() is not None for ref in alive) <= 256  # only the last few stay, in the bounded part


async def test_fixed_functions_stay_cached() -> None:
    """A module-level function is solved once and its plan reused, whatever else goes through the container."""
    container = Container()

    first = container.plan(root_with_a_dependency)
    for n in range(600):
        await container.call(constant(n))
    assert container.plan(root_with_a_dependency) is first


async def test_compiled_plans_leave_linecache_with_their_container() -> None:
    """Short-lived containers: their compiled plans' sources are dropped from linecache once they are gone."""
    before = sum(1 for name in linecache.cache if name.startswith("<di_tasks plan"))
    for _ in range(200):
        container = Container()
        for _ in range(3):  # compiled at the second call
            await container.call(root_with_a_dependency)
        del container
    gc.collect()
    after = sum(1 for name in linecache.cache if name.startswith("<di_tasks plan"))
    assert after - before < 10


async def root_with_a_dependency(s: Annotated[int, Depends(settings)]) -> int:
    return s


async def test_app_values_under_overrides_never_take_another_replacements_value() -> None:
    """An app-scoped value made under one replacement is never served under a later one, even if the later one
    reuses the earlier one's id (a lambda made and dropped in a loop)."""
    container = Container()

    def config() -> str:
        return "real"

    async def use(c: Annotated[Any, Depends(config, scope="app", use_cache=True)]) -> Any:
        return c

    wrong = 0
    async with container:
        for n in range(200):
            with container.override(config, constant(n)):
                wrong += await container.call(use) != n
    assert wrong == 0
