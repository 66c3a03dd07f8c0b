"""Opt-in concurrent resolution: overlap proven with events, the diamond once, failures cancel and tear down."""

from collections.abc import AsyncIterator, Iterator
from typing import Annotated

import anyio
import anyio.lowlevel
import pytest

from di_tasks import Container, Depends, MissingValueError
from di_tasks._concurrent import first_error, worth_it

pytestmark = pytest.mark.anyio

EVENTS: list[str] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    EVENTS.clear()


class Handshake:
    """Two events each side sets and then waits for the other's: only concurrent code gets through."""

    def __init__(self) -> None:
        self.left = anyio.Event()
        self.right = anyio.Event()


def concurrent() -> Container:
    return Container(concurrent_resolution=True)


async def test_off_by_default() -> None:
    """A default container resolves one dependency after the other, in plan order."""

    async def first() -> int:
        EVENTS.append("first:start")
        await anyio.lowlevel.checkpoint()
        EVENTS.append("first:end")
        return 1

    async def second() -> int:
        EVENTS.append("second:start")
        await anyio.lowlevel.checkpoint()
        EVENTS.append("second:end")
        return 2

    async def root(a: Annotated[int, Depends(first)], b: Annotated[int, Depends(second)]) -> int:
        return a + b

    container = Container()
    assert container.concurrent_resolution is False
    assert await container.call(root) == 3
    assert EVENTS == ["first:start", "first:end", "second:start", "second:end"]


async def test_independent_async_dependencies_run_at_the_same_time() -> None:
    """Two dependencies that each wait for the other complete, which only concurrent resolution allows."""
    shake = Handshake()

    async def left() -> str:
        shake.left.set()
        await shake.right.wait()
        return "L"

    async def right() -> str:
        shake.right.set()
        await shake.left.wait()
        return "R"

    async def root(a: Annotated[str, Depends(left)], b: Annotated[str, Depends(right)]) -> str:
        return a + b

    with anyio.fail_after(5):  # a bound on a hang, not a latency check
        assert await concurrent().call(root) == "LR"


async def test_the_diamond_is_computed_once() -> None:
    """A dependency shared by two concurrent dependents runs once, and both see its value."""
    shake = Handshake()

    def settings() -> int:
        EVENTS.append("settings")
        return 10

    async def pool(s: Annotated[int, Depends(settings)]) -> int:
        EVENTS.append("pool")
        return s + 1

    async def left(p: Annotated[int, Depends(pool)], s: Annotated[int, Depends(settings)]) -> int:
        shake.left.set()
        await shake.right.wait()
        return p + s

    async def right(p: Annotated[int, Depends(pool)]) -> int:
        shake.right.set()
        await shake.left.wait()
        return p

    async def root(a: Annotated[int, Depends(left)], b: Annotated[int, Depends(right)]) -> tuple[int, int]:
        return a, b

    with anyio.fail_after(5):
        assert await concurrent().call(root) == (21, 11)
    assert EVENTS == ["settings", "pool"]


async def test_a_failure_cancels_the_siblings_and_tears_down_what_was_set_up() -> None:
    """The first failure cancels the dependencies still running and propagates as itself; generators set up
    before it are torn down (with the error), request-scoped at the scope's exit, call-scoped at once."""
    ready = anyio.Event()

    async def resource() -> AsyncIterator[str]:
        EVENTS.append("resource:setup")
        try:
            yield "r"
        except ValueError:
            EVENTS.append("resource:saw error")
            raise
        finally:
            EVENTS.append("resource:teardown")

    async def per_call() -> AsyncIterator[str]:
        EVENTS.append("per_call:setup")
        try:
            yield "c"
        finally:
            EVENTS.append("per_call:teardown")

    async def waits_forever() -> str:
        ready.set()
        try:
            await anyio.sleep_forever()
        finally:
            EVENTS.append("sibling:cancelled")
        return "never"

    async def fails(r: Annotated[str, Depends(resource)], c: Annotated[str, Depends(per_call, scope="call")]) -> str:
        await ready.wait()
        raise ValueError("boom")

    async def root(a: Annotated[str, Depends(waits_forever)], b: Annotated[str, Depends(fails, scope="call")]) -> str:
        EVENTS.append("root")
        return a + b

    with anyio.fail_after(5), pytest.raises(ValueError, match="boom"):
        await concurrent().call(root)
    assert "root" not in EVENTS
    assert EVENTS.index("sibling:cancelled") < EVENTS.index("per_call:teardown") < EVENTS.index("resource:teardown")
    assert "resource:saw error" in EVENTS


async def test_call_scoped_generators_are_torn_down_before_the_call_returns() -> None:
    """Call-scoped generators set up concurrently are torn down when the call returns, LIFO."""

    async def one() -> AsyncIterator[int]:
        yield 1
        EVENTS.append("one:teardown")

    async def two() -> AsyncIterator[int]:
        yield 2
        EVENTS.append("two:teardown")

    async def root(a: Annotated[int, Depends(one, scope="call")], b: Annotated[int, Depends(two, scope="call")]) -> int:
        EVENTS.append("root")
        return a + b

    container = concurrent()
    async with container.scope() as scope:
        assert await scope.call(root) == 3
        assert EVENTS[0] == "root"
        assert sorted(EVENTS[1:]) == ["one:teardown", "two:teardown"]


async def test_a_failing_call_scoped_teardown_replaces_the_result() -> None:
    """A call-scoped teardown that raises is raised by the call, in concurrent mode as in the plain one."""

    async def broken() -> AsyncIterator[int]:
        yield 1
        raise RuntimeError("teardown failed")

    async def other() -> int:
        return 2

    async def root(a: Annotated[int, Depends(broken, scope="call")], b: Annotated[int, Depends(other)]) -> int:
        return a + b

    with pytest.raises(RuntimeError, match="teardown failed"):
        await concurrent().call(root)


async def test_a_teardown_error_during_a_failure_is_raised_instead() -> None:
    """When a step fails and a call-scoped teardown then raises, the teardown's error is the one raised."""

    async def broken() -> AsyncIterator[int]:
        try:
            yield 1
        finally:
            raise RuntimeError("teardown failed")

    async def fails(x: Annotated[int, Depends(broken, scope="call")]) -> int:
        raise ValueError("step failed")

    async def other() -> int:
        return 2

    async def root(a: Annotated[int, Depends(fails, scope="call")], b: Annotated[int, Depends(other)]) -> int:
        return a + b

    with pytest.raises(RuntimeError, match="teardown failed"):
        await concurrent().call(root)


async def test_errors_of_inline_steps_propagate_unwrapped() -> None:
    """A missing value in a sync dependency is raised as MissingValueError, not inside an ExceptionGroup."""

    def needs(user: str) -> str:
        return user

    async def a() -> int:
        return 1

    async def b() -> int:
        return 2

    async def root(
        x: Annotated[int, Depends(a)], y: Annotated[int, Depends(b)], u: Annotated[str, Depends(needs)]
    ) -> str:
        return u

    with pytest.raises(MissingValueError, match="'user'"):
        await concurrent().call(root)
    assert await concurrent().call(root, user="ann") == "ann"


async def test_an_exception_group_raised_by_a_dependency_stays_a_group() -> None:
    """Only the task group's own wrapping is removed: a dependency's ExceptionGroup reaches the caller whole."""

    async def a() -> int:
        raise ExceptionGroup("mine", [ValueError("x")])

    async def b() -> int:
        await anyio.sleep_forever()
        return 2

    async def root(x: Annotated[int, Depends(a)], y: Annotated[int, Depends(b)]) -> int:
        return x + y

    with pytest.raises(ExceptionGroup, match="mine") as info:
        await concurrent().call(root)
    assert isinstance(info.value.exceptions[0], ValueError)


async def test_threads_app_values_caches_and_positional_arguments() -> None:
    """Thread-offloaded, app-scoped, cached and sync-generator steps all resolve, and the root gets its arguments."""

    def in_thread() -> int:
        return 1

    async def app_value() -> int:
        EVENTS.append("app")
        return 10

    def sync_gen() -> Iterator[int]:
        yield 100
        EVENTS.append("sync_gen:teardown")

    async def cached() -> int:
        EVENTS.append("cached")
        return 1000

    async def root(
        prefix: str,
        a: Annotated[int, Depends(in_thread, sync_to_thread=True)],
        b: Annotated[int, Depends(app_value, scope="app")],
        c: Annotated[int, Depends(sync_gen)],
        d: Annotated[int, Depends(cached)],
    ) -> str:
        return f"{prefix}{a + b + c + d}"

    container = concurrent()
    async with container, container.scope() as scope:
        assert await scope.call(root, "n=") == "n=1111"
        assert await scope.call(root, "again ") == "again 1111"
    assert sorted(EVENTS[:2]) == ["app", "cached"]  # once each, in either order
    assert EVENTS[2:] == ["sync_gen:teardown"]


async def test_plans_with_fewer_than_two_waiting_steps_run_as_usual() -> None:
    """A plan with at most one dependency that may wait gains nothing and is interpreted in order."""

    def sync_only() -> int:
        return 1

    async def one_async() -> int:
        return 2

    async def root(a: Annotated[int, Depends(sync_only)], b: Annotated[int, Depends(one_async)]) -> int:
        return a + b

    container = concurrent()
    assert not worth_it(container.plan(root, 0))
    assert await container.call(root) == 3


def test_first_error_prefers_a_real_failure_over_cancellations() -> None:
    """The error picked from a task group's group is its first non-cancellation, else the first entry."""

    async def pick() -> None:
        cancelled = anyio.get_cancelled_exc_class()()
        error = ValueError("real")
        assert first_error(BaseExceptionGroup("g", [cancelled, error])) is error
        assert first_error(BaseExceptionGroup("g", [cancelled])) is cancelled

    anyio.run(pick)
