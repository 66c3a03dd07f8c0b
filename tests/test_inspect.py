"""Signature analysis: kinds, names, and what cannot be read."""

import functools
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import pytest

from di_tasks import Kind, WiringError
from di_tasks._inspect import EMPTY, analyse, kind_of, qualname


def sync_fn() -> int:
    return 1


async def async_fn() -> int:
    return 1


def gen_fn() -> Iterator[int]:
    yield 1


async def agen_fn() -> AsyncIterator[int]:
    yield 1


class Plain:
    def method(self) -> int:
        return 1

    async def amethod(self) -> int:
        return 1


class AsyncCallable:
    async def __call__(self) -> int:
        return 1


def test_kinds_look_through_partials_methods_and_callable_instances() -> None:
    """Every form of callable is classified by what calling it produces."""
    assert kind_of(sync_fn) is Kind.SYNC
    assert kind_of(async_fn) is Kind.ASYNC
    assert kind_of(gen_fn) is Kind.GENERATOR
    assert kind_of(agen_fn) is Kind.ASYNC_GENERATOR
    assert kind_of(Plain) is Kind.CLASS
    assert kind_of(Plain().method) is Kind.SYNC
    assert kind_of(Plain().amethod) is Kind.ASYNC
    assert kind_of(AsyncCallable()) is Kind.ASYNC
    assert kind_of(functools.partial(async_fn)) is Kind.ASYNC
    assert kind_of(functools.partial(functools.partial(Plain))) is Kind.CLASS
    assert kind_of(len) is Kind.SYNC


def test_qualnames_are_readable() -> None:
    """Messages use module-qualified names; instances and builtins read naturally."""
    assert qualname(sync_fn) == "test_inspect.sync_fn" or qualname(sync_fn).endswith(".sync_fn")
    assert qualname(functools.partial(sync_fn)).endswith("sync_fn")
    assert qualname(AsyncCallable()).endswith("AsyncCallable instance")
    assert qualname(len) == "len"


def test_analyse_reads_parameters_and_rejects_what_it_cannot_read() -> None:
    """Parameters come out with their annotations; awaitables and signature-less objects are WiringErrors."""
    info = analyse(Plain().method)
    assert info.params == ()

    async def coro_fn() -> None:
        return None

    coro = coro_fn()
    awaitable: Any = coro
    with pytest.raises(WiringError, match="is an awaitable object, not a function"):
        analyse(awaitable)
    coro.close()
    with pytest.raises(WiringError, match="cannot read the signature of"):
        analyse(vars)


def test_return_annotations_that_rule_out_a_coroutine() -> None:
    """Concrete non-awaitable returns skip the run-time coroutine check; anything that admits one keeps it."""
    import collections.abc
    from typing import NewType, Optional, Protocol

    from di_tasks._inspect import surely_not_awaitable

    user_id = NewType("user_id", int)

    class Shape(Protocol):
        def area(self) -> float: ...

    sure = [int, user_id, None, type(None), Optional[int], int | str, list[int], Annotated[str, "meta"]]  # noqa: UP045  # the old spelling is what is tested
    unsure = [Any, object, collections.abc.Hashable, collections.abc.Awaitable[int], Shape, "int", EMPTY, int | Any]
    assert [surely_not_awaitable(a) for a in sure] == [True] * len(sure)
    assert [surely_not_awaitable(a) for a in unsure] == [False] * len(unsure)


def _wrap(func: Any) -> Any:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


def _async_wrap(func: Any) -> Any:
    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


def test_a_plain_wraps_wrapper_takes_the_kind_of_what_it_wraps() -> None:
    """A sync ``functools.wraps`` wrapper is classified by the function, class or instance it wraps."""
    assert kind_of(_wrap(sync_fn)) is Kind.SYNC
    assert kind_of(_wrap(async_fn)) is Kind.ASYNC
    assert kind_of(_wrap(gen_fn)) is Kind.GENERATOR
    assert kind_of(_wrap(agen_fn)) is Kind.ASYNC_GENERATOR
    assert kind_of(_wrap(_wrap(async_fn))) is Kind.ASYNC
    assert kind_of(_wrap(Plain)) is Kind.SYNC  # a function that returns an instance, not the class
    assert kind_of(_wrap(AsyncCallable())) is Kind.ASYNC
    assert kind_of(functools.partial(_wrap(agen_fn))) is Kind.ASYNC_GENERATOR
    assert kind_of(_wrap(functools.partial(gen_fn))) is Kind.GENERATOR


def test_a_wrapper_that_is_async_or_a_generator_keeps_its_own_kind() -> None:
    """An ``async def`` wrapper is awaited whatever it wraps; a callable instance is judged by its ``__call__``."""
    assert kind_of(_async_wrap(sync_fn)) is Kind.ASYNC
    assert kind_of(_async_wrap(Plain)) is Kind.ASYNC

    class SyncFacade:  # like asgiref's async_to_sync: update_wrapper on an instance whose __call__ is sync
        def __init__(self) -> None:
            functools.update_wrapper(self, async_fn)

        def __call__(self) -> int:
            return 1

    assert kind_of(SyncFacade()) is Kind.SYNC


def test_a_wrapped_cycle_does_not_loop() -> None:
    """A ``__wrapped__`` chain that points back at itself stops where it repeats."""

    def looped() -> int:
        return 1

    looped.__wrapped__ = looped  # type: ignore[attr-defined]  # the cycle under test
    assert kind_of(looped) is Kind.SYNC


def test_the_return_annotation_is_trusted_only_when_it_describes_the_call() -> None:
    """``-> int`` read through ``__wrapped__`` from a function called differently is dropped (the check stays on)."""
    assert analyse(_wrap(sync_fn)).returns is int
    assert analyse(_wrap(async_fn)).returns is int  # awaited, so the annotation is about the awaited value

    class Facade:
        def __init__(self) -> None:
            functools.update_wrapper(self, async_fn)

        def __call__(self) -> Any:
            return async_fn()

    info = analyse(Facade())
    assert (info.kind, info.returns) == (Kind.SYNC, EMPTY)
