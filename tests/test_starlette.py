"""di_tasks.starlette: setup() injects every listed endpoint and refuses an app it cannot wire."""

from __future__ import annotations

from typing import Annotated

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from di_tasks import BackgroundTasks, Container, Depends, WiringError
from di_tasks.starlette import setup


def user_agent(req: Request) -> str:
    return req.headers.get("user-agent", "")


def client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.mark.anyio
async def test_setup_injects_undecorated_endpoints_through_mounts() -> None:
    """No @container.inject: a route and a mounted route resolve their dependencies, tasks run after."""
    log: list[str] = []

    async def home(
        request: Request, agent: Annotated[str, Depends(user_agent)], tasks: BackgroundTasks
    ) -> JSONResponse:
        tasks.add_task(log.append, f"seen {agent}")
        return JSONResponse({"agent": agent})

    app = Starlette(routes=[Route("/", home), Mount("/api", routes=[Route("/home", home)])])
    setup(app, Container())
    async with client(app) as http:
        first = await http.get("/", headers={"user-agent": "probe/1"})
        second = await http.get("/api/home", headers={"user-agent": "probe/2"})
    assert (first.json(), second.json()) == ({"agent": "probe/1"}, {"agent": "probe/2"})
    assert log == ["seen probe/1", "seen probe/2"]


@pytest.mark.anyio
async def test_a_route_added_after_setup_is_refused_with_the_fix() -> None:
    """app.add_route after setup(): the check names the endpoint and the fix instead of failing per request."""

    async def late(request: Request, tasks: BackgroundTasks) -> JSONResponse:
        return JSONResponse({})

    app = Starlette()
    setup(app, Container())
    app.add_route("/late", late)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]  # the mistake
    async with client(app) as http:
        with pytest.raises(
            WiringError,
            match=r"GET /late: .*late has di_tasks parameters \(tasks\) but is not "
            r"injected.*di_tasks.starlette.setup",
        ):
            await http.get("/late")


def call_scoped() -> int:
    return 1


def request_scoped(x: Annotated[int, Depends(call_scoped, scope="call")]) -> int:
    return x


@pytest.mark.anyio
async def test_startup_lists_every_wiring_error() -> None:
    """Two endpoints with broken graphs: both are listed at startup."""

    async def one(request: Request, v: Annotated[int, Depends(request_scoped, scope="app")]) -> JSONResponse:
        return JSONResponse(v)

    async def two(request: Request, v: Annotated[int, Depends(request_scoped, scope="app")]) -> JSONResponse:
        return JSONResponse(v)

    app = Starlette(routes=[Route("/one", one), Route("/two", two)])
    setup(app, Container())
    with pytest.raises(WiringError, match=r"2 wiring problem\(s\)(.|\n)*GET /one: (.|\n)*GET /two: "):
        async with client(app) as http:
            await http.get("/one")


def test_setup_refuses_an_endpoint_under_route_middleware() -> None:
    """A route with its own middleware cannot have its endpoint swapped: setup says to decorate it."""

    async def wrapped(request: Request, tasks: BackgroundTasks) -> JSONResponse:
        return JSONResponse({})

    app = Starlette(routes=[Route("/w", wrapped, middleware=[Middleware(GZipMiddleware)])])
    with pytest.raises(WiringError, match=r"/w: the endpoint .*wrapped .*own middleware.*@container.inject"):
        setup(app, Container())
