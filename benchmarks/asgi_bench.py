"""W4, end to end over ASGI: W1 served through ``httpx.ASGITransport``, one GET per resolution.

- ``starlette`` (the floor): a hand-written Starlette endpoint making the W1 calls itself, with Starlette's
  ``BackgroundTasks`` on the response;
- ``di_tasks``: the same Starlette app with the endpoint decorated by ``Container.inject``, wrapped in
  ``di_tasks.asgi.ScopeMiddleware``;
- ``fastapi``: a FastAPI route with ``Depends`` and ``BackgroundTasks`` (the request id is a query parameter).

The request id travels as the query string ``?request_id=req-42`` in every system.
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import httpx
from common import W1_RESULT, C, CheckError, check_w1, noop_task

Run = Callable[[], Awaitable[Any]]
URL = "http://bench/?request_id=req-42"


def check(system: str, result: Any, n: int) -> None:
    """The response's JSON is W1's result, and the counters prove the whole work ran for each request."""
    if result != list(W1_RESULT):
        raise CheckError(f"{system} W4: response {result!r}")
    check_w1(system, tuple(result), n)


def _client(app: Any) -> Run:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))

    async def run() -> Any:
        response = await client.get(URL)
        if response.status_code != 200:
            raise CheckError(f"HTTP {response.status_code}: {response.text}")
        return response.json()

    return run


def build_starlette() -> Run:
    """Hand-written: the endpoint calls everything itself; the teardown runs before the response is sent."""
    from starlette.applications import Starlette
    from starlette.background import BackgroundTasks
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

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

    async def tenant(tasks: BackgroundTasks) -> int:
        tasks.add_task(noop_task, 1)
        return 3

    async def service(db: int, cache: int, tenant: int) -> int:
        return db + cache + tenant

    async def auth(rid: str, tasks: BackgroundTasks) -> str:
        tasks.add_task(noop_task, 2)
        return "user:" + rid

    def log_ctx(rid: str) -> str:
        return "log:" + rid

    async def endpoint(service: int, auth: str, log_ctx: str, tasks: BackgroundTasks) -> tuple[int, str, str]:
        tasks.add_task(noop_task, 3)
        return (service, auth, log_ctx)

    async def route(request: Request) -> JSONResponse:
        tasks = BackgroundTasks()
        s = settings()
        gen = db(s)
        d = await gen.__anext__()
        try:
            r = rid(request.query_params["request_id"])
            result = await endpoint(
                await service(d, cache(s), await tenant(tasks)), await auth(r, tasks), log_ctx(r), tasks
            )
        finally:
            try:  # noqa: SIM105  # the floor: cheaper than contextlib.suppress
                await gen.__anext__()
            except StopAsyncIteration:
                pass
        return JSONResponse(list(result), background=tasks)

    return _client(Starlette(routes=[Route("/", route)]))


def build_di_tasks() -> Run:
    """The Starlette app, its endpoint ``Container.inject``-ed, wrapped in ``ScopeMiddleware``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from di_tasks import BackgroundTasks, Container, Depends
    from di_tasks.asgi import ScopeMiddleware

    container = Container()

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

    @container.inject
    async def endpoint(
        request_id: str,
        service: Annotated[int, Depends(service)],
        auth: Annotated[str, Depends(auth)],
        log_ctx: Annotated[str, Depends(log_ctx)],
        tasks: BackgroundTasks,
    ) -> tuple[int, str, str]:
        tasks.add_task(noop_task, 3)
        return (service, auth, log_ctx)

    async def route(request: Request) -> JSONResponse:
        return JSONResponse(list(await endpoint(request_id=request.query_params["request_id"])))

    app = Starlette(routes=[Route("/", route)])
    run = _client(ScopeMiddleware(app, container=container))
    run.container = container  # type: ignore[attr-defined]  # otel_cost.py installs an observer on it
    return run


def build_fastapi() -> Run:
    """A FastAPI route: ``Depends`` for the graph, ``BackgroundTasks`` for the tasks, a query parameter."""
    from fastapi import BackgroundTasks, Depends, FastAPI

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

    app = FastAPI()

    @app.get("/")
    async def endpoint(
        service: Annotated[int, Depends(service)],
        auth: Annotated[str, Depends(auth)],
        log_ctx: Annotated[str, Depends(log_ctx)],
        tasks: BackgroundTasks,
    ) -> tuple[int, str, str]:
        tasks.add_task(noop_task, 3)
        return (service, auth, log_ctx)

    return _client(app)


BUILDERS: dict[str, Callable[[], Run]] = {
    "starlette": build_starlette,
    "di_tasks": build_di_tasks,
    "fastapi": build_fastapi,
}
