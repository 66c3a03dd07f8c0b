"""FastAPI parity (upstream ``test_dependency_contextmanager``): generator dependencies behind a real FastAPI app.

A sync or async generator dependency gives the endpoint the value it yielded; its teardown runs after the response
has been built (a middleware still sees the value open) and before the call returns; an error of the endpoint is
thrown in at its ``yield`` (seen by ``except``, and not swallowed); nested generators close last-in first-out; and
a task runs while the request's generators are still open. Async and sync endpoints, on asyncio and trio.
"""

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Annotated, Any

import fastapi
import httpx
import pytest

from di_tasks import BackgroundTasks, Container, Depends
from di_tasks.fastapi import setup

pytestmark = pytest.mark.anyio

State = dict[str, str]


class OwnError(Exception):
    """The error a dependency's ``except`` clause is written for."""


class OtherError(Exception):
    """Any other error: the dependency's ``finally`` runs, its ``except`` does not."""


def fresh_state() -> State:
    return {"gen": "idle", "agen": "idle", "outer": "idle", "inner": "idle", "task": "idle"}


# -- the dependencies: each reads the per-test ``state`` dict, given to the container by name ------------------------


def plain_gen(state: State) -> Iterator[str]:
    state["gen"] = "open"
    yield state["gen"]
    state["gen"] = "closed"


async def plain_agen(state: State) -> AsyncIterator[str]:
    state["agen"] = "open"
    yield state["agen"]
    state["agen"] = "closed"


def guarded_gen(state: State, caught: list[str]) -> Iterator[str]:
    state["gen"] = "open"
    try:
        yield state["gen"]
    except OwnError:
        caught.append("gen")
        raise
    finally:
        state["gen"] = "finalized"


async def guarded_agen(state: State, caught: list[str]) -> AsyncIterator[str]:
    state["agen"] = "open"
    try:
        yield state["agen"]
    except OwnError:
        caught.append("agen")
        raise
    finally:
        state["agen"] = "finalized"


async def outer(state: State) -> AsyncIterator[State]:
    state["outer"] = "open"
    try:
        yield state
    finally:
        state["outer"] = "closed"


async def inner(state: Annotated[State, Depends(outer)]) -> AsyncIterator[State]:
    state["inner"] = "open"
    try:
        yield state
    finally:
        state["inner"] = f"closed while outer was {state['outer']}"  # the outer one must still be open


Dep = Callable[..., Any]
PLAIN: dict[str, Dep] = {"gen": plain_gen, "agen": plain_agen}
GUARDED: dict[str, Dep] = {"gen": guarded_gen, "agen": guarded_agen}


def _app(state: State, caught: list[str]) -> fastapi.FastAPI:
    """One app: every route is there twice, once with an ``async def`` endpoint, once with a ``def`` one."""
    app = fastapi.FastAPI()
    setup(app, Container(values={"state": state, "caught": caught}))

    for key in ("gen", "agen"):
        plain, guarded = PLAIN[key], GUARDED[key]

        @app.get(f"/async/{key}")
        async def async_value(value: Annotated[str, Depends(plain)]) -> str:
            return value

        @app.get(f"/sync/{key}")
        def sync_value(value: Annotated[str, Depends(plain)]) -> str:
            return value

        @app.get(f"/async/{key}/raise/{{which}}")
        async def async_raise(which: str, value: Annotated[str, Depends(guarded)]) -> str:
            assert value == "open"
            raise OwnError(which) if which == "own" else OtherError(which)

        @app.get(f"/sync/{key}/raise/{{which}}")
        def sync_raise(which: str, value: Annotated[str, Depends(guarded)]) -> str:
            assert value == "open"
            raise OwnError(which) if which == "own" else OtherError(which)

    @app.get("/async/nested")
    async def async_nested(value: Annotated[State, Depends(inner)]) -> State:
        return dict(value)

    @app.get("/sync/nested")
    def sync_nested(value: Annotated[State, Depends(inner)]) -> State:
        return dict(value)

    @app.get("/async/nested/raise")
    async def async_nested_raise(value: Annotated[State, Depends(inner)]) -> State:
        assert (value["outer"], value["inner"]) == ("open", "open")
        raise OtherError("nested")

    @app.get("/sync/nested/raise")
    def sync_nested_raise(value: Annotated[State, Depends(inner)]) -> State:
        assert (value["outer"], value["inner"]) == ("open", "open")
        raise OtherError("nested")

    async def record(seen: State) -> None:
        seen["task"] = f"ran with outer {seen['outer']} and inner {seen['inner']}"

    @app.get("/async/nested/task")
    async def async_nested_task(tasks: BackgroundTasks, value: Annotated[State, Depends(inner)]) -> State:
        tasks.add_task(record, value)
        return dict(value)

    @app.get("/sync/nested/task")
    def sync_nested_task(tasks: BackgroundTasks, value: Annotated[State, Depends(inner)]) -> State:
        tasks.add_task(record, value)
        return dict(value)

    @app.middleware("http")
    async def snapshot(
        request: fastapi.Request, call_next: Callable[[fastapi.Request], Awaitable[fastapi.Response]]
    ) -> fastapi.Response:
        response = await call_next(request)
        response.headers["x-state"] = json.dumps(state)  # what a middleware sees once the response is built
        return response

    return app


async def _get(app: fastapi.FastAPI, path: str, *, raise_app_exceptions: bool = True) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path)


ENDPOINTS = pytest.mark.parametrize("endpoint", ["async", "sync"])
GENERATORS = pytest.mark.parametrize("gen", ["gen", "agen"])


@ENDPOINTS
@GENERATORS
async def test_the_endpoint_gets_the_yielded_value_and_teardown_follows_the_response(endpoint: str, gen: str) -> None:
    """The endpoint returns what was yielded; the middleware sees it open; once the call returns it is closed."""
    state = fresh_state()
    response = await _get(_app(state, []), f"/{endpoint}/{gen}")
    assert response.status_code == 200
    assert response.json() == "open"
    assert json.loads(response.headers["x-state"])[gen] == "open"
    assert state[gen] == "closed"


@ENDPOINTS
@GENERATORS
async def test_the_endpoints_own_error_is_seen_at_the_yield(endpoint: str, gen: str) -> None:
    """An error the dependency catches reaches its ``except`` (which re-raises), then the client; ``finally`` ran."""
    state, caught = fresh_state(), list[str]()
    with pytest.raises(OwnError, match="own"):
        await _get(_app(state, caught), f"/{endpoint}/{gen}/raise/own")
    assert caught == [gen]
    assert state[gen] == "finalized"


@ENDPOINTS
@GENERATORS
async def test_another_error_skips_the_except_but_runs_finally(endpoint: str, gen: str) -> None:
    """An error the dependency does not catch passes its ``except`` by and still runs its ``finally``."""
    state, caught = fresh_state(), list[str]()
    with pytest.raises(OtherError, match="other"):
        await _get(_app(state, caught), f"/{endpoint}/{gen}/raise/other")
    assert caught == []
    assert state[gen] == "finalized"


@ENDPOINTS
@GENERATORS
async def test_the_error_becomes_a_500_and_the_dependency_still_sees_it(endpoint: str, gen: str) -> None:
    """Served without re-raising app errors, the client gets FastAPI's 500 and the dependency still saw the error."""
    state, caught = fresh_state(), list[str]()
    response = await _get(_app(state, caught), f"/{endpoint}/{gen}/raise/own", raise_app_exceptions=False)
    assert response.status_code == 500
    assert caught == [gen]
    assert state[gen] == "finalized"


@ENDPOINTS
async def test_nested_generators_close_last_in_first_out(endpoint: str) -> None:
    """The inner generator closes first, while the outer one it depends on is still open."""
    state = fresh_state()
    response = await _get(_app(state, []), f"/{endpoint}/nested")
    assert (response.json()["outer"], response.json()["inner"]) == ("open", "open")
    assert state["inner"] == "closed while outer was open"
    assert state["outer"] == "closed"


@ENDPOINTS
async def test_nested_generators_close_in_order_when_the_endpoint_raises(endpoint: str) -> None:
    """The same order holds when the endpoint raises."""
    state = fresh_state()
    with pytest.raises(OtherError, match="nested"):
        await _get(_app(state, []), f"/{endpoint}/nested/raise")
    assert state["inner"] == "closed while outer was open"
    assert state["outer"] == "closed"


@ENDPOINTS
async def test_a_task_runs_after_the_response_while_the_generators_are_open(endpoint: str) -> None:
    """The task has not run when the response is built; it runs before the request's generators close."""
    state = fresh_state()
    response = await _get(_app(state, []), f"/{endpoint}/nested/task")
    assert response.json()["task"] == "idle"
    assert json.loads(response.headers["x-state"])["task"] == "idle"
    assert state["task"] == "ran with outer open and inner open"
    assert state["inner"] == "closed while outer was open"
    assert state["outer"] == "closed"


async def catches_own(caught: list[str]) -> AsyncIterator[str]:
    try:
        yield "open"
    except OwnError:
        caught.append("seen")
        return  # an attempt to swallow the error


async def test_a_generator_cannot_swallow_the_endpoints_error() -> None:
    """Difference: a ``yield`` dependency that returns in ``except`` makes FastAPI raise its own ``FastAPIError``
    ("Response not awaited") in place of the endpoint's error; di_tasks passes the endpoint's error on unchanged
    (docs/explanation/scopes.md: the body's exception is thrown in at the yield, and it cannot swallow it)."""
    caught: list[str] = []
    app = fastapi.FastAPI()
    setup(app, Container(values={"caught": caught}))

    @app.get("/")
    async def endpoint(value: Annotated[str, Depends(catches_own)]) -> str:
        raise OwnError("kept")

    with pytest.raises(OwnError, match="kept"):
        await _get(app, "/")
    assert caught == ["seen"]


def test_container_run_tears_down_the_same_way() -> None:
    """Without a framework, ``Container.run`` gives the same value, order and error visibility."""
    state, caught = fresh_state(), list[str]()
    container = Container(values={"state": state, "caught": caught})

    def fails(value: Annotated[str, Depends(guarded_gen)], nested: Annotated[State, Depends(inner)]) -> None:
        raise OwnError("run")

    with pytest.raises(OwnError, match="run"):
        container.run(fails)
    assert caught == ["gen"]
    assert state["gen"] == "finalized"
    assert state["inner"] == "closed while outer was open"
