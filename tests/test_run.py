"""How one step runs: value lookup order, the coroutine check, generator set-up and teardown order."""

from collections.abc import AsyncIterator, Iterator
from typing import Annotated

import pytest

from di_tasks import Container, Depends, DITasksError, MissingValueError, Scope
from di_tasks._plan import Teardown
from di_tasks._run import unwind

pytestmark = pytest.mark.anyio


class Settings:
    """A class values can be bound by."""


async def test_a_value_is_found_by_name_then_type_then_default() -> None:
    """A parameter takes the value given by name, else the one bound by its class, else its default."""
    bound = Settings()

    def by_name(settings: Settings) -> Settings:
        return settings

    def fallback(region: str = "eu") -> str:
        return region

    container = Container()
    async with container.scope() as scope:
        scope.bind(Settings, bound)
        assert await scope.call(by_name) is bound
        given = Settings()
        assert await scope.call(by_name, settings=given) is given
        assert await scope.call(fallback) == "eu"
        assert await scope.call(fallback, region="us") == "us"


async def test_a_missing_value_names_the_parameter_the_function_and_the_fix() -> None:
    """No name, no bound type, no default: MissingValueError before anything runs."""
    called: list[str] = []

    def first() -> None:
        called.append("first")

    def needs(user_id: int, _: Annotated[None, Depends(first)]) -> int:
        return user_id

    with pytest.raises(MissingValueError, match=r"no value for parameter 'user_id' of .*needs.*Pass user_id=\.\.\."):
        await Container().call(needs)
    assert called == []


async def test_a_plain_function_returning_a_coroutine_is_refused() -> None:
    """A sync dependency that returns a coroutine (it would be injected unawaited) fails with the fix."""

    async def real() -> int:
        return 1

    def wrapper():  # type: ignore[no-untyped-def]  # unannotated on purpose: nothing rules the coroutine out
        return real()

    def use(value: Annotated[int, Depends(wrapper)]) -> int:
        return value

    with pytest.raises(DITasksError, match="is a plain function but returned a coroutine; declare it with 'async def'"):
        await Container().call(use)


async def test_generators_are_torn_down_last_in_first_out_with_the_error_thrown_in() -> None:
    """Request-scoped generators finish in reverse order; each sees the body's error."""
    seen: list[str] = []

    def outer() -> Iterator[str]:
        try:
            yield "outer"
        except KeyError:
            seen.append("outer saw KeyError")
            raise

    async def inner(o: Annotated[str, Depends(outer)]) -> AsyncIterator[str]:
        try:
            yield "inner"
        except KeyError:
            seen.append("inner saw KeyError")
            raise

    async def body(i: Annotated[str, Depends(inner)]) -> None:
        raise KeyError(i)

    with pytest.raises(KeyError, match="inner"):
        await Container().call(body)
    assert seen == ["inner saw KeyError", "outer saw KeyError"]


async def test_a_teardown_error_replaces_the_current_one_and_the_rest_still_run() -> None:
    """unwind: a failing teardown's error is returned and thrown into the earlier generators, which still finish."""
    finished: list[str] = []

    def first() -> Iterator[None]:
        try:
            yield
        finally:
            finished.append("first")

    def failing() -> Iterator[None]:
        yield
        raise RuntimeError("commit failed")

    stack: list[Teardown] = []
    for name, factory in (("first", first), ("failing", failing)):
        gen = factory()
        next(gen)
        stack.append(Teardown(gen, False, False, name))
    error = await unwind(stack, None)
    assert isinstance(error, RuntimeError)
    assert str(error) == "commit failed"
    assert finished == ["first"]
    assert stack == []


async def test_a_generator_that_yields_twice_is_an_error_after_teardown() -> None:
    """unwind: a generator that yields again is closed and reported by name."""

    def twice() -> Iterator[int]:
        yield 1
        yield 2

    gen = twice()
    next(gen)
    error = await unwind([Teardown(gen, False, False, "twice")], None)
    assert isinstance(error, DITasksError)
    assert str(error) == "generator dependency twice yielded more than once; a dependency must yield exactly one value"


async def test_a_generator_that_does_not_yield_is_refused() -> None:
    """A generator dependency that returns without yielding fails with its name."""

    def empty() -> Iterator[int]:
        return
        yield  # pragma: no cover  # makes it a generator

    def use(value: Annotated[int, Depends(empty)]) -> int:
        return value

    with pytest.raises(DITasksError, match=r"generator dependency .*empty returned without yielding"):
        await Container().call(use)


async def test_the_scope_is_handed_to_a_dependency_that_asks() -> None:
    """A parameter annotated Scope gets the scope the dependency is resolved in."""
    container = Container()

    def which(scope: Scope) -> Scope:
        return scope

    async with container.scope() as scope:
        assert await scope.call(which) is scope


async def test_an_async_generator_that_yields_again_on_an_error_is_closed_and_reported() -> None:
    """unwind: an async generator that yields again when the body's error is thrown in is closed, and reported by
    name with the body's error as context."""
    closed: list[bool] = []

    async def twice() -> AsyncIterator[int]:
        try:
            yield 1
        except ValueError:
            try:
                yield 2
            finally:
                closed.append(True)

    gen = twice()
    await gen.__anext__()
    body = ValueError("body")
    error = await unwind([Teardown(gen, True, False, "twice")], body)
    assert isinstance(error, DITasksError)
    assert "twice yielded more than once" in str(error)
    assert error.__context__ is body
    assert closed == [True]


async def test_a_generator_in_a_thread_that_yields_twice_is_an_error_after_teardown() -> None:
    """unwind: a sync generator torn down in a worker thread that yields again is closed and reported by name."""
    closed: list[bool] = []

    def twice() -> Iterator[int]:
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    gen = twice()
    next(gen)
    error = await unwind([Teardown(gen, False, True, "twice")], None)
    assert isinstance(error, DITasksError)
    assert "twice yielded more than once" in str(error)
    assert closed == [True]
