"""W6, parameters filled from defaults and by type plus a call-scoped generator dependency.

endpoint (async)
├── conn ──── connection (sync generator, scope "call": set up, yield, torn down after the endpoint)
├── settings  a ``Settings`` instance bound by type for the resolution (not by name)
└── a, b, c   not given: filled from their defaults

W1-W3 use neither defaults nor values bound by type nor call-scoped generators, so the cost of those paths
(the fallback lookup of a value not given by name, the teardown of a call's own generators) shows here.
Every builder returns an async function doing one whole resolution and returning the endpoint's result.

Peers: FastAPI and FastDepends are left out. Neither can bind an arbitrary value by its type for one
resolution (FastAPI injects only its own special classes, such as ``Request``, by type; FastDepends takes
values by name only), so they could not express the workload. In dishka and wireup only marked parameters
are injected, so the three defaults are Python's own, as they are in the floor; di fills them itself (a
default becomes a dependency returning it). di, dishka and wireup have no scope below their request scope,
so their generator is request-scoped in a scope entered for each resolution: torn down once per resolution
after the endpoint, the work of a call-scoped generator here.
"""

from collections.abc import Awaitable, Callable, Iterator
from inspect import Parameter
from typing import Annotated, Any, NewType, cast

from common import C, CheckError

Run = Callable[[], Awaitable[Any]]
Conn = NewType("Conn", int)
CONN = 1000
W6_RESULT = CONN + 10_000 + 1 + 20 + 300  # conn + settings.value + the three defaults


class Settings:
    """A value bound by type (a user class: builtins are never matched by type)."""

    __slots__ = ("value",)

    def __init__(self, value: int = 0) -> None:  # a default, so di can wire the class (the bound value wins)
        self.value = value


SETTINGS = Settings(10_000)


def check(system: str, result: Any, n: int) -> None:
    """Verify a batch of ``n`` W6 resolutions: the value, and one set-up and one teardown each."""
    if result != W6_RESULT:
        raise CheckError(f"{system} W6: result {result!r}, expected {W6_RESULT!r}")
    if C.setup != n or C.teardown != n:
        raise CheckError(f"{system} W6: {C.setup} set-ups and {C.teardown} teardowns for {n} resolutions")


# -- direct calls: the floor ---------------------------------------------------------------------------------


def build_direct() -> Run:
    """Call the generator, ``next()``, call the endpoint (its defaults filled by Python), finish the generator."""

    def connection() -> Iterator[int]:
        C.setup += 1
        yield CONN
        C.teardown += 1

    async def endpoint(conn: int, settings: Settings, a: int = 1, b: int = 20, c: int = 300) -> int:
        return conn + settings.value + a + b + c

    async def run() -> Any:
        gen = connection()
        conn = next(gen)
        try:
            result = await endpoint(conn, SETTINGS)
        finally:
            try:  # noqa: SIM105  # the floor: cheaper than contextlib.suppress
                next(gen)
            except StopIteration:
                pass
        return result

    return run


# -- di_tasks ------------------------------------------------------------------------------------------------


def build_di_tasks() -> Run:
    """A scope per resolution with ``Settings`` bound by type (``Scope.bind``), then ``Scope.call``."""
    from di_tasks import Container, Depends

    def connection() -> Iterator[int]:
        C.setup += 1
        yield CONN
        C.teardown += 1

    async def endpoint(
        conn: Annotated[int, Depends(connection, scope="call")],
        settings: Settings,
        a: int = 1,
        b: int = 20,
        c: int = 300,
    ) -> int:
        return conn + settings.value + a + b + c

    container = Container()
    container.solve(endpoint)  # solved once, like every peer's setup

    async def run() -> Any:
        async with container.scope() as scope:
            scope.bind(Settings, SETTINGS)
            return await scope.call(endpoint)

    return run


# -- di (adriangb/di) ---------------------------------------------------------------------------------------


def build_di() -> Run:
    """Solved once with a "request" scope; per resolution enter it and ``execute_async`` with ``Settings`` bound
    as a value keyed by its class. di fills the defaults itself."""
    from di import Container
    from di.dependent import Dependent, Marker
    from di.executors import AsyncExecutor

    def connection() -> Iterator[int]:
        C.setup += 1
        yield CONN
        C.teardown += 1

    async def endpoint(
        conn: Annotated[int, Marker(connection, scope="request")],
        settings: Settings,
        a: int = 1,
        b: int = 20,
        c: int = 300,
    ) -> int:
        return conn + settings.value + a + b + c

    container = Container()
    solved = container.solve(Dependent(endpoint, scope="request"), scopes=["request"])
    executor = AsyncExecutor()

    async def run() -> Any:
        async with container.enter_scope("request") as state:
            return await solved.execute_async(executor=executor, state=state, values={Settings: SETTINGS})

    return run


# -- dishka -----------------------------------------------------------------------------------------------------


def build_dishka() -> Run:
    """A REQUEST-scoped generator factory keyed by type, ``Settings`` given as context when the request container
    is entered; the endpoint wrapped by ``wrap_injection`` (the defaults are not injected: Python fills them)."""
    from dishka import FromDishka, Provider, Scope, make_async_container
    from dishka.integrations.base import wrap_injection

    def connection() -> Iterator[Conn]:
        C.setup += 1
        yield Conn(CONN)
        C.teardown += 1

    async def endpoint(
        conn: FromDishka[Conn], settings: FromDishka[Settings], a: int = 1, b: int = 20, c: int = 300
    ) -> int:
        return conn + settings.value + a + b + c

    provider = Provider(scope=Scope.REQUEST)
    provider.from_context(provides=Settings, scope=Scope.REQUEST)
    provider.provide(connection)
    container = make_async_container(provider)
    injected = wrap_injection(
        func=endpoint,
        container_getter=lambda _args, kwargs: kwargs["dishka_container"],
        is_async=True,
        additional_params=[Parameter("dishka_container", Parameter.KEYWORD_ONLY)],
    )

    async def run() -> Any:
        async with container(context={Settings: SETTINGS}) as request_container:
            # the keyword is the additional parameter wrap_injection adds, unknown to the static signature
            return cast("Any", await injected(dishka_container=request_container))  # type: ignore[call-arg]

    return run


# -- wireup -----------------------------------------------------------------------------------------------------


def build_wireup() -> Run:
    """A scoped generator injectable keyed by type, ``Settings`` provided when the scope is entered; the endpoint
    wrapped by ``inject_from_container`` (the defaults are not injected: Python fills them)."""
    import wireup
    from wireup import Injected, injectable
    from wireup.ioc.container.async_container import ScopedAsyncContainer

    current: list[ScopedAsyncContainer] = []

    @injectable(lifetime="scoped")
    def settings_value() -> Settings:
        raise RuntimeError("provided when the scope is entered")

    @injectable(lifetime="scoped")
    def connection() -> Iterator[Conn]:
        C.setup += 1
        yield Conn(CONN)
        C.teardown += 1

    async def endpoint(
        conn: Injected[Conn], settings: Injected[Settings], a: int = 1, b: int = 20, c: int = 300
    ) -> int:
        return conn + settings.value + a + b + c

    container = wireup.create_async_container(injectables=[settings_value, connection])
    injected = wireup.inject_from_container(container, lambda: current[-1])(endpoint)
    provided: dict[Any, Any] = {Settings: SETTINGS}

    async def run() -> Any:
        async with container.enter_scope(provided) as scoped:
            current.append(scoped)
            try:
                return await injected()
            finally:
                current.pop()

    return run


BUILDERS: dict[str, Callable[[], Run]] = {
    "direct": build_direct,
    "di_tasks": build_di_tasks,
    "di": build_di,
    "dishka": build_dishka,
    "wireup": build_wireup,
}
