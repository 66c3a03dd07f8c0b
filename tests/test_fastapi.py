"""di_tasks.fastapi: the route class and setup() leave no endpoint to miswire (real FastAPI apps, httpx, uvicorn)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

import anyio
import fastapi
import httpx
import pytest
from _servers import Journal, serve
from fastapi import APIRouter, FastAPI, Request

from di_tasks import BackgroundTasks, Container, Depends, WiringError
from di_tasks.fastapi import DITasksRoute, setup


def current_user(request: Request) -> str:
    """An authentication dependency: the user comes from a header, never from the query string."""
    return request.headers.get("x-user", "anonymous")


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.mark.anyio
async def test_setup_injects_an_undecorated_endpoint_so_a_query_string_cannot_set_the_user() -> None:
    """The issue's bypass: with setup() and no @container.inject, ?user=admin does not become the user."""
    app = FastAPI()
    setup(app, Container())

    @app.get("/me")
    async def me(request: Request, user: Annotated[str, Depends(current_user)]) -> dict[str, str]:
        return {"user": user}

    async with client(app) as http:
        bypass = await http.get("/me", params={"user": "admin"})
        plain = await http.get("/me", headers={"x-user": "ada"})
    assert bypass.json() == {"user": "anonymous"}
    assert plain.json() == {"user": "ada"}


@pytest.mark.anyio
async def test_background_tasks_parameter_runs_after_the_response_with_setup() -> None:
    """An undecorated endpoint asking for di_tasks' BackgroundTasks works (FastAPI used to fail at import)."""
    app = FastAPI()
    setup(app, Container())
    log: list[str] = []

    @app.post("/signup/{email}")
    async def signup(email: str, background_tasks: BackgroundTasks) -> dict[str, str]:
        background_tasks.add_task(log.append, f"welcome {email}")
        return {"status": "queued"}

    async with client(app) as http:
        response = await http.post("/signup/ada@example.com")
    assert response.json() == {"status": "queued"}
    assert log == ["welcome ada@example.com"]


@pytest.mark.anyio
async def test_a_router_with_the_route_class_is_injected_and_included() -> None:
    """APIRouter(route_class=DITasksRoute) routes keep working once included under a prefix."""
    app = FastAPI()
    setup(app, Container())
    router = APIRouter(route_class=DITasksRoute)

    @router.get("/me")
    def me(request: Request, user: Annotated[str, Depends(current_user)]) -> dict[str, str]:  # sync: a thread
        return {"user": user}

    app.include_router(router, prefix="/v1")
    async with client(app) as http:
        response = await http.get("/v1/me", params={"user": "admin"}, headers={"x-user": "ada"})
    assert response.json() == {"user": "ada"}


@pytest.mark.anyio
async def test_a_plain_router_with_an_unwired_endpoint_refuses_to_serve() -> None:
    """A route made without the route class is named with the fix, and no request reaches it."""
    app = FastAPI()
    setup(app, Container())
    router = APIRouter()

    @router.get("/me")
    async def me(user: Annotated[str, Depends(current_user)]) -> dict[str, str]:
        return {"user": user}

    app.include_router(router)
    async with client(app) as http:
        with pytest.raises(
            WiringError,
            match=r"GET /me: .*me has di_tasks parameters \(user\) but is not injected.*"
            r"route_class=di_tasks.fastapi.DITasksRoute",
        ):
            await http.get("/me", params={"user": "admin"})


@pytest.mark.anyio
async def test_inject_above_the_route_decorator_is_refused_at_startup() -> None:
    """@container.inject put above @app.get registers the raw function: startup names it and the fix."""
    container = Container()
    app = FastAPI()

    @container.inject
    @app.get("/me")
    async def me(user: Annotated[str, Depends(current_user)]) -> dict[str, str]:
        return {"user": user}

    setup(app, container)  # after the route: it cannot rebuild it, the check refuses it
    with pytest.raises(WiringError, match=r"put @container.inject below the route decorator"):
        async with client(app) as http:
            await http.get("/me")


def cycle_a(b: Annotated[int, Depends(lambda: 0)]) -> int:
    return b


def left(x: Annotated[int, Depends(lambda: 1, scope="call")]) -> int:
    return x


def app_scoped(x: Annotated[int, Depends(left)]) -> int:
    return x


@pytest.mark.anyio
async def test_startup_lists_every_wiring_error_of_every_endpoint() -> None:
    """Two broken endpoints: the refusal lists both, not the first one only (item 3)."""
    app = FastAPI()
    setup(app, Container())

    @app.get("/one")
    async def one(v: Annotated[int, Depends(app_scoped, scope="app")]) -> int:
        return v

    @app.get("/two")
    async def two(v: Annotated[int, Depends(app_scoped, scope="app")], tasks: BackgroundTasks) -> int:
        return v

    with pytest.raises(WiringError, match=r"2 wiring problem\(s\)(.|\n)*GET /one: (.|\n)*GET /two: "):
        async with client(app) as http:
            await http.get("/one")


@pytest.mark.anyio
async def test_route_dependencies_run_for_their_effect() -> None:
    """setup(dependencies=[...]) and DITasksRoute.with_dependencies(...) run before the endpoint, values unused."""
    seen: list[str] = []

    def verify_token(request: Request) -> None:
        if request.headers.get("x-token") != "secret":
            raise fastapi.HTTPException(status_code=401, detail="bad token")
        seen.append("app")

    def audit() -> None:
        seen.append("router")

    app = FastAPI()
    setup(app, Container(), dependencies=[Depends(verify_token)])
    router = APIRouter(route_class=DITasksRoute.with_dependencies(verify_token, Depends(audit)))

    @app.get("/ping")
    async def ping(request: Request) -> str:
        seen.append("ping")
        return "pong"

    @router.get("/pong")
    async def pong(request: Request) -> str:
        seen.append("pong")
        return "ping"

    app.include_router(router)
    async with client(app) as http:
        denied = await http.get("/ping")
        ok = await http.get("/ping", headers={"x-token": "secret"})
        routed = await http.get("/pong", headers={"x-token": "secret"})
    assert (denied.status_code, ok.json(), routed.json()) == (401, "pong", "ping")
    assert seen == ["app", "ping", "app", "router", "pong"]


JOURNAL = Journal()


def test_uvicorn_serves_setup_routes_and_runs_tasks_after_the_response() -> None:
    """A real server: no decorator, the user is not taken from the query, the client does not wait for the task."""
    app = FastAPI()
    setup(app, Container())

    async def slow_write(line: str) -> None:
        await anyio.sleep(1.0)
        JOURNAL.write(line)

    @app.get("/me")
    async def me(
        request: Request, user: Annotated[str, Depends(current_user)], tasks: BackgroundTasks
    ) -> dict[str, str]:
        tasks.add_task(slow_write, f"seen {user}")
        return {"user": user}

    with serve(app) as server:
        started = time.monotonic()
        response = httpx.get(f"{server.url}/me", params={"user": "admin"}, headers={"x-user": "ada"})
        elapsed = time.monotonic() - started
        JOURNAL.wait_for("seen ada")
    assert response.json() == {"user": "ada"}
    assert elapsed < 0.9  # the task sleeps 1 s: the client did not wait for it


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # uvicorn's thread exits(3)
def test_uvicorn_refuses_to_start_an_app_with_an_unwired_endpoint(caplog: pytest.LogCaptureFixture) -> None:
    """Lifespan startup fails under a real server when an endpoint is not injected, and the log says why."""
    app = FastAPI()
    router = APIRouter()

    @router.get("/me")
    async def me(user: Annotated[str, Depends(current_user)]) -> dict[str, str]:
        return {"user": user}

    app.include_router(router)
    setup(app, Container())
    with pytest.raises(RuntimeError, match="did not start"), serve(app):
        pass
    assert "GET /me: " in caplog.text
    assert "route_class=di_tasks.fastapi.DITasksRoute" in caplog.text


def blocking_session() -> Iterator[str]:
    """A sync generator dependency that blocks, as a driver without async support does."""
    time.sleep(0.2)
    yield "session"


def latencies(url: str, n: int) -> list[float]:
    """Send ``n`` requests at once from ``n`` threads; each one's latency in seconds, sorted."""

    def one(_: int) -> float:
        started = time.monotonic()
        httpx.get(url, timeout=5.0).raise_for_status()
        return time.monotonic() - started

    with ThreadPoolExecutor(n) as pool:
        return sorted(pool.map(one, range(n)))


@pytest.mark.parametrize("policy", [True, False])
def test_uvicorn_blocking_sync_dependencies_overlap_with_the_thread_policy(policy: bool) -> None:
    """Five concurrent requests whose sync dependency blocks 0.2 s overlap with sync_to_thread=True, not without."""
    app = FastAPI()
    setup(app, Container(sync_to_thread=policy))

    @app.get("/db")
    async def db(session: Annotated[str, Depends(blocking_session)]) -> str:
        return session

    with serve(app) as server:
        seen = latencies(f"{server.url}/db", 5)
    if policy:
        assert seen[-1] < 0.6, seen  # each about 0.2 s, side by side
    else:
        assert seen[-1] > 0.9, seen  # inline on the loop: one after another, 0.2, 0.4 ... 1.0 s
