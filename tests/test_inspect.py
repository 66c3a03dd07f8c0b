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
