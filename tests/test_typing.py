"""The public overloads infer what users expect: mypy and pyright check these ``assert_type`` lines (the test run
only proves they execute)."""

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, assert_type

import pytest

from di_tasks import BackgroundTasks, Container, Depends, Scope, Task, testing
from di_tasks.testing import CallResult

pytestmark = pytest.mark.anyio


def number() -> int:
    return 1


async def async_text(n: Annotated[int, Depends(number)]) -> str:
    return str(n)


def sync_pair(n: Annotated[int, Depends(number)]) -> tuple[int, int]:
    return (n, n)


def generator_value() -> Iterator[float]:
    yield 1.5


async def async_generator_value() -> AsyncIterator[bytes]:
    yield b"x"


def send(to: str, retries: int = 0) -> None: ...


async def notify(user: str) -> bool:
    return True


def test_container_run_keeps_the_return_type() -> None:
    """run() of a sync or async function returns what it returns (awaited)."""
    container = Container()
    assert_type(container.run(async_text), str)
    assert_type(container.run(sync_pair), tuple[int, int])


async def test_container_and_scope_call_keep_the_return_type() -> None:
    """call() and Scope.call() return the awaited result type."""
    container = Container()
    assert_type(await container.call(async_text), str)
    assert_type(await container.call(sync_pair), tuple[int, int])
    async with container.scope() as scope:
        assert_type(scope, Scope)
        assert_type(await scope.call(async_text), str)


async def test_add_task_is_checked_against_the_function() -> None:
    """add_task is typed with ParamSpec and returns a Task handle."""
    async with Container().scope() as scope:
        tasks: BackgroundTasks = scope.tasks
        assert_type(tasks.add_task(send, "a@example.com"), Task)
        assert_type(tasks.add_task(send, "a@example.com", retries=2), Task)
        assert_type(tasks.add_task(notify, "ada"), Task)
        tasks.take()  # nothing to run: the types are what this test checks


async def test_inject_keeps_the_return_type() -> None:
    """inject (bare or with options) keeps the decorated function's return type."""
    container = Container()
    injected = container.inject(async_text)
    assert_type(await injected(), str)
    with_options = container.inject(dependencies=[number])(sync_pair)
    assert_type(with_options, Callable[..., tuple[int, int]])


async def test_testing_call_and_run_keep_the_result_type() -> None:
    """testing.call/run give a CallResult of the function's result, or of what a generator dependency yields."""
    assert_type(await testing.call(async_text), CallResult[str])
    assert_type(await testing.call(sync_pair), CallResult[tuple[int, int]])
    assert_type(await testing.call(generator_value), CallResult[float])
    assert_type(await testing.call(async_generator_value), CallResult[bytes])


def test_testing_run_keeps_the_result_type() -> None:
    """testing.run, from sync code, like testing.call."""
    assert_type(testing.run(async_text), CallResult[str])
    assert_type(testing.run(generator_value), CallResult[float])
