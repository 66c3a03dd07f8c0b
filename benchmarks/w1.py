"""W1, the request graph, written once per system in that system's own idiom with identical bodies.

endpoint (async, adds a task)
├── service (async) ── db (async generator, teardown) ── settings (sync, shared)
│                   ├── cache (sync) ──────────────────── settings
│                   └── tenant (async, adds a task)
├── auth (async, adds a task) ── rid (sync, shared, reads the per-call request id)
└── log_ctx (sync) ───────────── rid

Every builder returns an async function doing one whole resolution: open a scope, resolve, call the
endpoint, run the 3 tasks, tear down, return the endpoint's result.
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from inspect import Parameter
from typing import Annotated, Any, NewType, cast

from common import REQUEST_ID, C, HandTasks, noop_task

Run = Callable[[], Awaitable[Any]]


# -- direct calls: the floor ---------------------------------------------------------------------------------


def _hand_written(make_tasks: Callable[[], Any], run_tasks: Callable[[Any], Awaitable[Any]]) -> Run:
    """Hand-written calls in dependency order, a collector made per call, try/finally for the teardown."""

    def settings() -> int:
        C.settings += 1
        return 10

    def rid(request_id: str) -> str:
        C.rid += 1
        return request_id

    async def db(settings: int) -> AsyncIterator[int]:
        C.setup += 1
        yield settings + 1
        C.teardown += 1

    def cache(settings: int) -> int:
        return settings + 2

    async def tenant(tasks: Any) -> int:
        tasks.add_task(noop_task, 1)
        return 3

    async def service(db: int, cache: int, tenant: int) -> int:
        return db + cache + tenant

    async def auth(rid: str, tasks: Any) -> str:
        tasks.add_task(noop_task, 2)
        return "user:" + rid

    def log_ctx(rid: str) -> str:
        return "log:" + rid

    async def endpoint(service: int, auth: str, log_ctx: str, tasks: Any) -> tuple[int, str, str]:
        tasks.add_task(noop_task, 3)
        return (service, auth, log_ctx)

    async def run() -> Any:
        tasks = make_tasks()
        s = settings()
        gen = db(s)
        d = await gen.__anext__()
        try:
            r = rid(REQUEST_ID)
            result = await endpoint(
                await service(d, cache(s), await tenant(tasks)), await auth(r, tasks), log_ctx(r), tasks
            )
            await run_tasks(tasks)
        finally:
            try:  # noqa: SIM105  # the floor: cheaper than contextlib.suppress
                await gen.__anext__()
            except StopAsyncIteration:
                pass
        return result

    return run


def build_direct() -> Run:
    """The floor: a list for the tasks, run in order after the endpoint."""
    return _hand_written(lambda: HandTasks([]), HandTasks.run)


def build_starlette() -> Run:
    """The floor with Starlette's own ``BackgroundTasks`` as the collector: what a hand-written Starlette endpoint
    with its dependencies called by hand pays."""
    from starlette.background import BackgroundTasks

    async def run_tasks(tasks: BackgroundTasks) -> None:
        await tasks()

    return _hand_written(BackgroundTasks, run_tasks)


# -- di_tasks ------------------------------------------------------------------------------------------------


def build_di_tasks() -> Run:
    """``Container.call`` with the request id given by name; the scope's own collector and flush."""
    from di_tasks import BackgroundTasks, Container, Depends

    def settings() -> int:
        C.settings += 1
        return 10

    def rid(request_id: str) -> str:
        C.rid += 1
        return request_id

    async def db(settings: Annotated[int, Depends(settings)]) -> AsyncIterator[int]:
        C.setup += 1
        yield settings + 1
        C.teardown += 1

    def cache(settings: Annotated[int, Depends(settings)]) -> int:
        return settings + 2

    async def tenant(tasks: BackgroundTasks) -> int:
        tasks.add_task(noop_task, 1)
        return 3

    async def service(
        db: Annotated[int, Depends(db)], cache: Annotated[int, Depends(cache)], tenant: Annotated[int, Depends(tenant)]
    ) -> int:
        return db + cache + tenant

    async def auth(rid: Annotated[str, Depends(rid)], tasks: BackgroundTasks) -> str:
        tasks.add_task(noop_task, 2)
        return "user:" + rid

    def log_ctx(rid: Annotated[str, Depends(rid)]) -> str:
        return "log:" + rid

    async def endpoint(
        service: Annotated[int, Depends(service)],
        auth: Annotated[str, Depends(auth)],
        log_ctx: Annotated[str, Depends(log_ctx)],
        tasks: BackgroundTasks,
    ) -> tuple[int, str, str]:
        tasks.add_task(noop_task, 3)
        return (service, auth, log_ctx)

    container = Container()
    container.solve(endpoint)  # solved once, like every peer's setup

    async def run() -> Any:
        return await container.call(endpoint, request_id=REQUEST_ID)

    run.container = container  # type: ignore[attr-defined]  # the override check reaches the container
    run.endpoint = endpoint  # type: ignore[attr-defined]
    return run


# -- FastAPI's resolver, as its router drives it --------------------------------------------------------------


def build_fastapi() -> Run:
    """``get_dependant`` once; per call a Request, the two exit stacks, ``solve_dependencies``, the endpoint,
    then the background tasks before the request stack closes (the order of FastAPI's router)."""
    from fastapi import BackgroundTasks, Depends
    from fastapi.dependencies.utils import get_dependant, solve_dependencies
    from fastapi.routing import run_endpoint_function
    from starlette.requests import Request

    def settings() -> int:
        C.settings += 1
        return 10

    def rid(request_id: str) -> str:
        C.rid += 1
        return request_id

    async def db(settings: Annotated[int, Depends(settings)]) -> AsyncIterator[int]:
        C.setup += 1
        yield settings + 1
        C.teardown += 1

    def cache(settings: Annotated[int, Depends(settings)]) -> int:
        return settings + 2

    async def tenant(tasks: BackgroundTasks) -> int:
        tasks.add_task(noop_task, 1)
        return 3

    async def service(
        db: Annotated[int, Depends(db)], cache: Annotated[int, Depends(cache)], tenant: Annotated[int, Depends(tenant)]
    ) -> int:
        return db + cache + tenant

    async def auth(rid: Annotated[str, Depends(rid)], tasks: BackgroundTasks) -> str:
        tasks.add_task(noop_task, 2)
        return "user:" + rid

    def log_ctx(rid: Annotated[str, Depends(rid)]) -> str:
        return "log:" + rid

    async def endpoint(
        service: Annotated[int, Depends(service)],
        auth: Annotated[str, Depends(auth)],
        log_ctx: Annotated[str, Depends(log_ctx)],
        tasks: BackgroundTasks,
    ) -> tuple[int, str, str]:
        tasks.add_task(noop_task, 3)
        return (service, auth, log_ctx)

    dependant = get_dependant(path="/", call=endpoint)
    query = f"request_id={REQUEST_ID}".encode()

    async def run() -> Any:
        scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/", "query_string": query, "headers": []}
        request = Request(scope)
        async with AsyncExitStack() as request_stack:
            scope["fastapi_inner_astack"] = request_stack
            async with AsyncExitStack() as function_stack:
                scope["fastapi_function_astack"] = function_stack
                solved = await solve_dependencies(
                    request=request, dependant=dependant, async_exit_stack=request_stack, embed_body_fields=False
                )
                if solved.errors:
                    raise RuntimeError(solved.errors)
                result = await run_endpoint_function(dependant=dependant, values=solved.values, is_coroutine=True)
            if solved.background_tasks is not None:
                await solved.background_tasks()
        return result

    return run


# -- di (adriangb/di) ---------------------------------------------------------------------------------------


def build_di() -> Run:
    """Solve once with a "request" scope; per call enter the scope and ``execute_async`` with the request id
    and a Starlette collector bound as values."""
    from di import Container
    from di.dependent import Dependent, Marker
    from di.executors import AsyncExecutor
    from starlette.background import BackgroundTasks

    def request_id_value() -> str:
        raise RuntimeError("bound per call")

    def settings() -> int:
        C.settings += 1
        return 10

    def rid(request_id: Annotated[str, Marker(request_id_value, scope="request")]) -> str:
        C.rid += 1
        return request_id

    async def db(settings: Annotated[int, Marker(settings, scope="request")]) -> AsyncIterator[int]:
        C.setup += 1
        yield settings + 1
        C.teardown += 1

    def cache(settings: Annotated[int, Marker(settings, scope="request")]) -> int:
        return settings + 2

    async def tenant(tasks: Annotated[BackgroundTasks, Marker(scope="request")]) -> int:
        tasks.add_task(noop_task, 1)
        return 3

    async def service(
        db: Annotated[int, Marker(db, scope="request")],
        cache: Annotated[int, Marker(cache, scope="request")],
        tenant: Annotated[int, Marker(tenant, scope="request")],
    ) -> int:
        return db + cache + tenant

    async def auth(
        rid: Annotated[str, Marker(rid, scope="request")], tasks: Annotated[BackgroundTasks, Marker(scope="request")]
    ) -> str:
        tasks.add_task(noop_task, 2)
        return "user:" + rid

    def log_ctx(rid: Annotated[str, Marker(rid, scope="request")]) -> str:
        return "log:" + rid

    async def endpoint(
        service: Annotated[int, Marker(service, scope="request")],
        auth: Annotated[str, Marker(auth, scope="request")],
        log_ctx: Annotated[str, Marker(log_ctx, scope="request")],
        tasks: Annotated[BackgroundTasks, Marker(scope="request")],
    ) -> tuple[int, str, str]:
        tasks.add_task(noop_task, 3)
        return (service, auth, log_ctx)

    container = Container()
    solved = container.solve(Dependent(endpoint, scope="request"), scopes=["request"])
    executor = AsyncExecutor()

    async def run() -> Any:
        tasks = BackgroundTasks()
        async with container.enter_scope("request") as state:
            result = await solved.execute_async(
                executor=executor, state=state, values={request_id_value: REQUEST_ID, BackgroundTasks: tasks}
            )
            await tasks()
        return result

    return run


# -- FastDepends ----------------------------------------------------------------------------------------------


def build_fast_depends() -> Run:
    """``@inject(cast=False)`` (its fastest mode: no validation); the request id and the collector passed as
    keyword arguments, which FastDepends hands to every dependency that names them."""
    from fast_depends import Depends, inject
    from starlette.background import BackgroundTasks

    def settings() -> int:
        C.settings += 1
        return 10

    def rid(request_id: str) -> str:
        C.rid += 1
        return request_id

    async def db(settings: Annotated[int, Depends(settings)]) -> AsyncIterator[int]:
        C.setup += 1
        yield settings + 1
        C.teardown += 1

    def cache(settings: Annotated[int, Depends(settings)]) -> int:
        return settings + 2

    async def tenant(tasks: BackgroundTasks) -> int:
        tasks.add_task(noop_task, 1)
        return 3

    async def service(
        db: Annotated[int, Depends(db)], cache: Annotated[int, Depends(cache)], tenant: Annotated[int, Depends(tenant)]
    ) -> int:
        return db + cache + tenant

    async def auth(rid: Annotated[str, Depends(rid)], tasks: BackgroundTasks) -> str:
        tasks.add_task(noop_task, 2)
        return "user:" + rid

    def log_ctx(rid: Annotated[str, Depends(rid)]) -> str:
        return "log:" + rid

    async def endpoint(
        service: Annotated[int, Depends(service)],
        auth: Annotated[str, Depends(auth)],
        log_ctx: Annotated[str, Depends(log_ctx)],
        tasks: BackgroundTasks,
        request_id: str,
    ) -> tuple[int, str, str]:
        tasks.add_task(noop_task, 3)
        return (service, auth, log_ctx)

    injected = inject(cast=False)(endpoint)

    async def run() -> Any:
        tasks = BackgroundTasks()
        result = await injected(tasks=tasks, request_id=REQUEST_ID)
        await tasks()
        return result

    return run


# -- dishka -----------------------------------------------------------------------------------------------------

Settings = NewType("Settings", int)
RequestIdIn = NewType("RequestIdIn", str)
Rid = NewType("Rid", str)
Db = NewType("Db", int)
Cache = NewType("Cache", int)
Tenant = NewType("Tenant", int)
Service = NewType("Service", int)
Auth = NewType("Auth", str)
LogCtx = NewType("LogCtx", str)


def build_dishka() -> Run:
    """A provider of REQUEST-scoped factories keyed by type, the request id and the collector given as
    context; the endpoint wrapped by dishka's own ``wrap_injection`` with ``FromDishka`` parameters."""
    from dishka import FromDishka, Provider, Scope, make_async_container
    from dishka.integrations.base import wrap_injection
    from starlette.background import BackgroundTasks

    def settings() -> Settings:
        C.settings += 1
        return Settings(10)

    def rid(request_id: RequestIdIn) -> Rid:
        C.rid += 1
        return Rid(request_id)

    async def db(settings: Settings) -> AsyncIterator[Db]:
        C.setup += 1
        yield Db(settings + 1)
        C.teardown += 1

    def cache(settings: Settings) -> Cache:
        return Cache(settings + 2)

    async def tenant(tasks: BackgroundTasks) -> Tenant:
        tasks.add_task(noop_task, 1)
        return Tenant(3)

    async def service(db: Db, cache: Cache, tenant: Tenant) -> Service:
        return Service(db + cache + tenant)

    async def auth(rid: Rid, tasks: BackgroundTasks) -> Auth:
        tasks.add_task(noop_task, 2)
        return Auth("user:" + rid)

    def log_ctx(rid: Rid) -> LogCtx:
        return LogCtx("log:" + rid)

    async def endpoint(
        service: FromDishka[Service],
        auth: FromDishka[Auth],
        log_ctx: FromDishka[LogCtx],
        tasks: FromDishka[BackgroundTasks],
    ) -> tuple[int, str, str]:
        tasks.add_task(noop_task, 3)
        return (service, auth, log_ctx)

    provider = Provider(scope=Scope.REQUEST)
    provider.from_context(provides=RequestIdIn, scope=Scope.REQUEST)
    provider.from_context(provides=BackgroundTasks, scope=Scope.REQUEST)
    for factory in (settings, rid, db, cache, tenant, service, auth, log_ctx):
        provider.provide(factory)
    container = make_async_container(provider)
    injected = wrap_injection(
        func=endpoint,
        container_getter=lambda _args, kwargs: kwargs["dishka_container"],
        is_async=True,
        additional_params=[Parameter("dishka_container", Parameter.KEYWORD_ONLY)],
    )

    async def run() -> Any:
        tasks = BackgroundTasks()
        async with container(context={RequestIdIn: REQUEST_ID, BackgroundTasks: tasks}) as request_container:
            # the keyword is the additional parameter wrap_injection adds, unknown to the static signature
            result = await injected(dishka_container=request_container)  # type: ignore[call-arg]
            await tasks()
        return cast("Any", result)

    return run


# -- wireup -----------------------------------------------------------------------------------------------------


def build_wireup() -> Run:
    """Scoped injectables keyed by type, the request id and the collector provided when the scope is entered
    (as its Starlette middleware provides the Request), the endpoint wrapped by ``inject_from_container``."""
    import wireup
    from starlette.background import BackgroundTasks
    from wireup import Injected, injectable
    from wireup.ioc.container.async_container import ScopedAsyncContainer

    current: list[ScopedAsyncContainer] = []

    @injectable(lifetime="scoped")
    def request_id_value() -> RequestIdIn:
        raise RuntimeError("provided when the scope is entered")

    @injectable(lifetime="scoped")
    def tasks_value() -> BackgroundTasks:
        raise RuntimeError("provided when the scope is entered")

    @injectable(lifetime="scoped")
    def settings() -> Settings:
        C.settings += 1
        return Settings(10)

    @injectable(lifetime="scoped")
    def rid(request_id: RequestIdIn) -> Rid:
        C.rid += 1
        return Rid(request_id)

    @injectable(lifetime="scoped")
    async def db(settings: Settings) -> AsyncIterator[Db]:
        C.setup += 1
        yield Db(settings + 1)
        C.teardown += 1

    @injectable(lifetime="scoped")
    def cache(settings: Settings) -> Cache:
        return Cache(settings + 2)

    @injectable(lifetime="scoped")
    async def tenant(tasks: BackgroundTasks) -> Tenant:
        tasks.add_task(noop_task, 1)
        return Tenant(3)

    @injectable(lifetime="scoped")
    async def service(db: Db, cache: Cache, tenant: Tenant) -> Service:
        return Service(db + cache + tenant)

    @injectable(lifetime="scoped")
    async def auth(rid: Rid, tasks: BackgroundTasks) -> Auth:
        tasks.add_task(noop_task, 2)
        return Auth("user:" + rid)

    @injectable(lifetime="scoped")
    def log_ctx(rid: Rid) -> LogCtx:
        return LogCtx("log:" + rid)

    async def endpoint(
        service: Injected[Service], auth: Injected[Auth], log_ctx: Injected[LogCtx], tasks: Injected[BackgroundTasks]
    ) -> tuple[int, str, str]:
        tasks.add_task(noop_task, 3)
        return (service, auth, log_ctx)

    container = wireup.create_async_container(
        injectables=[request_id_value, tasks_value, settings, rid, db, cache, tenant, service, auth, log_ctx]
    )
    injected = wireup.inject_from_container(container, lambda: current[-1])(endpoint)

    async def run() -> Any:
        tasks = BackgroundTasks()
        provided: dict[Any, Any] = {RequestIdIn: REQUEST_ID, BackgroundTasks: tasks}
        async with container.enter_scope(provided) as scoped:
            current.append(scoped)
            try:
                result = await injected()
            finally:
                current.pop()
            await tasks()
        return result

    return run


BUILDERS: dict[str, Callable[[], Run]] = {
    "direct": build_direct,
    "starlette": build_starlette,
    "di_tasks": build_di_tasks,
    "fastapi": build_fastapi,
    "di": build_di,
    "fast-depends": build_fast_depends,
    "dishka": build_dishka,
    "wireup": build_wireup,
}
