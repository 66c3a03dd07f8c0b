"""FastAPI parity: ``functools.wraps``-decorated dependencies and endpoints (upstream ``test_dependency_wrapped``).

Every shape a decorator can wrap (function, async function, generator, async generator, class, callable instance,
an instance whose ``__call__`` is itself decorated) is wrapped by a plain ``wraps`` wrapper and by an ``async def``
one, then resolved by ``Container.call`` and served by FastAPI through ``Container.inject``, on asyncio and trio.
"""

import functools
import inspect
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any, ParamSpec, TypeVar

import fastapi
import httpx
import pytest

from di_tasks import BackgroundTasks, Container, Depends, DITasksError
from di_tasks.asgi import ScopeMiddleware

pytestmark = pytest.mark.anyio

P = ParamSpec("P")
R = TypeVar("R")
recorded: list[str] = []


def sync_wrap(func: Callable[P, R]) -> Callable[P, R]:
    """A decorator of the commonest kind: a plain function that passes everything through."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        return func(*args, **kwargs)

    return wrapper


def async_wrap(func: Callable[..., Any]) -> Callable[..., Any]:
    """A decorator that makes anything awaitable: generators become async generators, the rest ``async def``."""
    if inspect.isgeneratorfunction(func):

        @functools.wraps(func)
        async def from_generator(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            for item in func(*args, **kwargs):
                yield item

        return from_generator
    if inspect.isasyncgenfunction(func):

        @functools.wraps(func)
        async def from_async_generator(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            async for item in func(*args, **kwargs):
                yield item

        return from_async_generator

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = func(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    return wrapper


# -- the wrapped targets -----------------------------------------------------------------------------------------


def flag() -> bool:
    return True


async def async_flag() -> bool:
    return True


async def async_flag_unannotated():  # type: ignore[no-untyped-def]  # no annotation, on purpose
    return True


def flag_gen() -> Iterator[bool]:
    try:
        yield True
    finally:
        recorded.append("closed")


async def flag_agen() -> AsyncIterator[bool]:
    try:
        yield True
    finally:
        recorded.append("closed")


class Flag:
    """A class dependency: its instance's ``value`` is the flag."""

    def __init__(self) -> None:
        self.value = True


class SyncCall:
    def __call__(self) -> bool:
        return True


class AsyncCall:
    async def __call__(self) -> bool:
        return True


class GenCall:
    def __call__(self) -> Iterator[bool]:
        try:
            yield True
        finally:
            recorded.append("closed")


class AsyncGenCall:
    async def __call__(self) -> AsyncIterator[bool]:
        try:
            yield True
        finally:
            recorded.append("closed")


class SyncCallSyncWrapped:
    @sync_wrap
    def __call__(self) -> bool:
        return True


class SyncCallAsyncWrapped:
    @async_wrap
    def __call__(self) -> bool:
        return True


class AsyncCallSyncWrapped:
    @sync_wrap
    async def __call__(self) -> bool:
        return True


class AsyncCallAsyncWrapped:
    @async_wrap
    async def __call__(self) -> bool:
        return True


class GenCallSyncWrapped:
    @sync_wrap
    def __call__(self) -> Iterator[bool]:
        try:
            yield True
        finally:
            recorded.append("closed")


class GenCallAsyncWrapped:
    @async_wrap
    def __call__(self) -> Iterator[bool]:
        try:
            yield True
        finally:
            recorded.append("closed")


class AsyncGenCallSyncWrapped:
    @sync_wrap
    async def __call__(self) -> AsyncIterator[bool]:
        try:
            yield True
        finally:
            recorded.append("closed")


class AsyncGenCallAsyncWrapped:
    @async_wrap
    async def __call__(self) -> AsyncIterator[bool]:
        try:
            yield True
        finally:
            recorded.append("closed")


class Methods:
    """Bound methods that are themselves wrapped."""

    @sync_wrap
    async def async_method(self) -> bool:
        return True

    @sync_wrap
    def gen_method(self) -> Iterator[bool]:
        try:
            yield True
        finally:
            recorded.append("closed")


# (id, dependency, whether it is a generator whose teardown must run)
DEPENDENCIES: list[tuple[str, Callable[..., Any], bool]] = [
    # a plain wraps wrapper around ...
    ("sync", sync_wrap(flag), False),
    ("async", sync_wrap(async_flag), False),
    ("async-unannotated", sync_wrap(async_flag_unannotated), False),
    ("generator", sync_wrap(flag_gen), True),
    ("async-generator", sync_wrap(flag_agen), True),
    ("class", sync_wrap(Flag), False),
    ("instance", sync_wrap(SyncCall()), False),
    ("instance-async", sync_wrap(AsyncCall()), False),
    ("instance-generator", sync_wrap(GenCall()), True),
    ("instance-async-generator", sync_wrap(AsyncGenCall()), True),
    ("wrapped-twice-async", sync_wrap(sync_wrap(async_flag)), False),
    ("partial-of-wrapped-async", functools.partial(sync_wrap(async_flag)), False),
    ("wrapped-partial-of-async", sync_wrap(functools.partial(async_flag)), False),
    ("bound-method-async", Methods().async_method, False),
    ("bound-method-generator", Methods().gen_method, True),
    # an instance whose __call__ is decorated
    ("call-sync-wrapped", SyncCallSyncWrapped(), False),
    ("call-sync-async-wrapped", SyncCallAsyncWrapped(), False),
    ("call-async-wrapped", AsyncCallSyncWrapped(), False),
    ("call-async-async-wrapped", AsyncCallAsyncWrapped(), False),
    ("call-generator-wrapped", GenCallSyncWrapped(), True),
    ("call-generator-async-wrapped", GenCallAsyncWrapped(), True),
    ("call-async-generator-wrapped", AsyncGenCallSyncWrapped(), True),
    ("call-async-generator-async-wrapped", AsyncGenCallAsyncWrapped(), True),
    # an async def wrapper around ...
    ("async-wrapper-sync", async_wrap(flag), False),
    ("async-wrapper-generator", async_wrap(flag_gen), True),
    ("async-wrapper-async", async_wrap(async_flag), False),
    ("async-wrapper-async-generator", async_wrap(flag_agen), True),
    ("async-wrapper-instance", async_wrap(SyncCall()), False),
    ("async-wrapper-instance-async", async_wrap(AsyncCall()), False),
    ("async-wrapper-class", async_wrap(Flag), False),
]
DEPENDENCY_IDS = [case[0] for case in DEPENDENCIES]


def truth(value: object) -> bool:
    """The flag a dependency produced (a class dependency produces a ``Flag``)."""
    return value.value if isinstance(value, Flag) else value is True


def consumer(dependency: Callable[..., Any]) -> Callable[..., Any]:
    """An endpoint that asks for ``dependency``."""

    async def endpoint(value: Annotated[object, Depends(dependency)]) -> bool:
        return truth(value)

    return endpoint


def teardowns(generator: bool) -> list[str]:
    """What a resolution must have recorded: a generator's teardown, or nothing."""
    return ["closed"] if generator else []


@pytest.fixture(autouse=True)
def clear_events() -> None:
    """Each test starts with no recorded teardown."""
    recorded.clear()


@pytest.mark.parametrize(("dependency", "generator"), [c[1:] for c in DEPENDENCIES], ids=DEPENDENCY_IDS)
async def test_wrapped_dependency_is_resolved_by_what_it_wraps(dependency: Callable[..., Any], generator: bool) -> None:
    """Each wrapped shape gives its value (awaited, set up) and a wrapped generator is torn down."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an un-awaited coroutine would warn: it must be awaited instead
        assert await Container().call(consumer(dependency)) is True
    assert recorded == teardowns(generator)


def fastapi_app(container: Container, endpoint: Callable[..., Any]) -> Any:
    app = fastapi.FastAPI()
    app.get("/")(container.inject(endpoint))
    return ScopeMiddleware(app, container=container)


async def get(app: Any) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.get("/")


@pytest.mark.parametrize(("dependency", "generator"), [c[1:] for c in DEPENDENCIES], ids=DEPENDENCY_IDS)
async def test_wrapped_dependency_over_http(dependency: Callable[..., Any], generator: bool) -> None:
    """Under FastAPI with ``inject`` each wrapped dependency answers ``true``, and a generator is torn down."""
    container = Container()
    response = await get(fastapi_app(container, consumer(dependency)))
    assert (response.status_code, response.json()) == (200, True)
    assert recorded == teardowns(generator)


# -- wrapped endpoints: the called function itself is decorated ------------------------------------------------


def ready() -> bool:
    return True


@sync_wrap
def sync_endpoint(ok: Annotated[bool, Depends(ready)]) -> bool:
    return ok


@sync_wrap
async def async_endpoint(ok: Annotated[bool, Depends(ready)]) -> bool:
    return ok


@sync_wrap
async def async_endpoint_unannotated(ok: Annotated[bool, Depends(ready)]):  # type: ignore[no-untyped-def]  # on purpose
    return ok


@async_wrap
def sync_endpoint_async_wrapper(ok: Annotated[bool, Depends(ready)]) -> bool:
    return ok


@async_wrap
async def async_endpoint_async_wrapper(ok: Annotated[bool, Depends(ready)]) -> bool:
    return ok


ENDPOINTS = [
    pytest.param(sync_endpoint, id="sync"),
    pytest.param(async_endpoint, id="async"),
    pytest.param(async_endpoint_unannotated, id="async-unannotated"),
    pytest.param(sync_endpoint_async_wrapper, id="async-wrapper-sync"),
    pytest.param(async_endpoint_async_wrapper, id="async-wrapper-async"),
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_wrapped_endpoint_is_called_by_what_it_wraps(endpoint: Callable[..., Any]) -> None:
    """``Container.call`` on a wrapped endpoint resolves its dependencies and returns its value, awaited."""
    assert await Container().call(endpoint) is True


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_wrapped_endpoint_injected_under_fastapi(endpoint: Callable[..., Any]) -> None:
    """``inject`` over a wrapped endpoint (``async def`` inside a plain wrapper included) answers 200."""
    response = await get(fastapi_app(Container(), endpoint))
    assert (response.status_code, response.json()) == (200, True)


def test_wrapped_async_endpoint_from_a_script() -> None:
    """``Container.run`` awaits a wrapped ``async def`` endpoint on either backend."""
    assert Container().run(async_endpoint) is True
    assert Container().run(async_endpoint, backend="trio") is True


def test_wrapped_generator_is_refused_as_the_called_function() -> None:
    """A wrapped generator is a generator: it can be a dependency, not the function called."""
    with pytest.raises(DITasksError, match="is a generator function; it can be a dependency"):
        Container().solve(sync_wrap(flag_gen))


async def test_wrapped_async_task_is_awaited() -> None:
    """A wrapped ``async def`` background task runs (awaited), instead of leaving a coroutine behind."""

    @sync_wrap
    async def record(line: str) -> None:
        recorded.append(line)

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(record, "task ran")

    await Container().call(endpoint)
    assert recorded == ["task ran"]


# -- what cannot be unwrapped fails loudly -----------------------------------------------------------------------


class InstanceWrapper:
    """A class-based decorator: ``update_wrapper`` on an instance whose ``__call__`` is sync.

    Its ``__wrapped__`` is not followed (``asgiref.sync.async_to_sync`` is built this way and really is sync), so
    around an ``async def`` it returns a coroutine: the return annotation read from the wrapped function must not
    switch off the check that catches it.
    """

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        functools.update_wrapper(self, func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)


async def test_instance_wrapper_returning_a_coroutine_fails_loudly() -> None:
    """A sync instance wrapper's coroutine is refused by name, though the wrapped function says ``-> bool``."""
    with pytest.raises(DITasksError, match="is a plain function but returned a coroutine; declare it with 'async def'"):
        await Container().call(consumer(InstanceWrapper(async_flag)))


async def test_instance_wrapper_around_a_sync_function_still_works() -> None:
    """An instance wrapper around a sync function is called as before."""
    assert await Container().call(consumer(InstanceWrapper(flag))) is True
