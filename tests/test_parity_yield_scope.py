"""FastAPI parity (upstream ``test_dependency_yield_scope``): when a generator dependency is torn down.

FastAPI's ``Depends(f, scope="function")`` is di_tasks' ``Depends(f, scope="call")``: torn down when the endpoint
call returns, so a ``StreamingResponse`` body sees it closed, while a request-scoped one (the default) is still
open while the body streams. Mixed scopes, sub-dependencies, the refusal of a longer-lived dependency on a
shorter-lived one, and effect-only dependencies of a router or app that raise after their ``yield`` are checked
behind real FastAPI apps, on asyncio and trio.
"""

import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Annotated

import fastapi
import httpx
import pytest
from fastapi.responses import StreamingResponse

from di_tasks import BackgroundTasks, Container, Depends, ScopeError, WiringError
from di_tasks.fastapi import DITasksRoute, setup

pytestmark = pytest.mark.anyio


class Session:
    def __init__(self) -> None:
        self.open = True


def session() -> Iterator[Session]:
    db = Session()
    yield db
    db.open = False


def call_session() -> Iterator[Session]:
    """The same generator under another name: in di_tasks one provider has one lifetime per container."""
    yield from session()


class Named:
    def __init__(self, db: Session) -> None:
        self.db = db
        self.open = True


CallSession = Annotated[Session, Depends(call_session, scope="call")]
RequestSession = Annotated[Session, Depends(session, scope="request")]
DefaultSession = Annotated[Session, Depends(session)]


def named_on_request(db: RequestSession, same: DefaultSession) -> Iterator[Named]:
    assert db is same  # the explicit "request" and the default are one dependency, computed once
    named = Named(db)
    yield named
    named.open = False


def named_on_call(db: CallSession) -> Iterator[Named]:
    named = Named(db)
    yield named
    named.open = False


def plain_named_on_call(db: CallSession) -> Named:
    return Named(db)


def live(**objects: Session | Named) -> StreamingResponse:
    """A body produced after the endpoint has returned: it reads whether each object is open as it streams."""

    async def body() -> AsyncIterator[str]:
        yield json.dumps({name: obj.open for name, obj in objects.items()})

    return StreamingResponse(body())


def _app() -> fastapi.FastAPI:
    app = fastapi.FastAPI()
    setup(app, Container())

    @app.get("/call")
    async def call_scope(db: CallSession) -> StreamingResponse:
        return live(db=db)

    @app.get("/request")
    async def request_scope(db: RequestSession) -> StreamingResponse:
        return live(db=db)

    @app.get("/default")
    async def default_scope(db: DefaultSession) -> StreamingResponse:
        return live(db=db)

    @app.get("/sync-request")
    def sync_request_scope(db: RequestSession) -> StreamingResponse:
        return live(db=db)

    @app.get("/both")
    async def both(call_db: CallSession, request_db: RequestSession) -> StreamingResponse:
        return live(call_db=call_db, request_db=request_db)

    @app.get("/sub")
    async def sub(named: Annotated[Named, Depends(named_on_request)]) -> StreamingResponse:
        return live(named=named, db=named.db)

    @app.get("/sub-call")
    async def sub_call(named: Annotated[Named, Depends(named_on_call, scope="call")]) -> StreamingResponse:
        return live(named=named, db=named.db)

    @app.get("/plain-sub-call")
    async def plain_sub_call(named: Annotated[Named, Depends(plain_named_on_call, scope="call")]) -> StreamingResponse:
        return live(named=named, db=named.db)

    return app


async def _get(app: fastapi.FastAPI, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.get(path)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/call", {"db": False}),
        ("/request", {"db": True}),
        ("/default", {"db": True}),
        ("/sync-request", {"db": True}),
        ("/both", {"call_db": False, "request_db": True}),
        ("/sub", {"named": True, "db": True}),
        ("/sub-call", {"named": False, "db": False}),
        ("/plain-sub-call", {"named": True, "db": False}),
    ],
)
async def test_what_a_streaming_body_sees(path: str, expected: dict[str, bool]) -> None:
    """Call-scoped generators are closed by the time the body streams; request-scoped ones (the default) are open."""
    response = await _get(_app(), path)
    assert response.status_code == 200
    assert response.json() == expected


def test_one_provider_has_one_lifetime() -> None:
    """Difference: FastAPI lets one generator be function-scoped in one place and request-scoped in another;
    di_tasks refuses it (two lifetimes would make two instances), naming both places and the fix."""

    def endpoint(call_db: Annotated[Session, Depends(session, scope="call")], request_db: RequestSession) -> None:
        raise AssertionError("never called")

    with pytest.raises(WiringError, match=r"session is used with two lifetimes in one container: 'call' .*'request'"):
        Container().solve(endpoint)


def test_a_request_scoped_generator_cannot_use_a_call_scoped_one() -> None:
    """As FastAPI refuses a request-scoped dependency on a function-scoped one, di_tasks refuses it at solve."""

    def endpoint(named: Annotated[Named, Depends(named_on_call)]) -> None:
        raise AssertionError("never called")

    with pytest.raises(ScopeError, match=r"named_on_call \(request-scoped\) depends on .*call_session.*call-scoped"):
        Container().solve(endpoint)


def test_a_request_scoped_plain_function_cannot_use_a_call_scoped_one_either() -> None:
    """Difference: FastAPI lets a plain (non-generator) request-scoped dependency use a function-scoped one; di_tasks
    caches that value for the request, so it refuses it too (docs/explanation/scopes.md: no dependency on a
    shorter-lived one) and names the fix, ``scope="call"`` on the parameter (the ``/plain-sub-call`` route)."""

    def endpoint(named: Annotated[Named, Depends(plain_named_on_call)]) -> None:
        raise AssertionError("never called")

    with pytest.raises(ScopeError, match=r"plain_named_on_call \(request-scoped\) depends on .*would end before it"):
        Container().solve(endpoint)


async def test_the_app_refuses_to_start_with_the_wrong_scopes() -> None:
    """Behind FastAPI the same mistake stops the app before its first request, naming the route and the path."""
    app = fastapi.FastAPI()
    setup(app, Container())

    @app.get("/broken")
    async def broken(named: Annotated[Named, Depends(named_on_call)]) -> None:
        raise AssertionError("never called")

    with pytest.raises(WiringError, match=r"(?s)/broken.*named_on_call"):
        await _get(app, "/broken")


def test_a_sync_endpoint_cannot_have_a_call_scoped_generator() -> None:
    """Difference: FastAPI runs a sync endpoint's function-scoped teardown after it; di_tasks resolves a sync
    endpoint's dependencies before its worker thread starts, so it refuses call-scoped generators there
    (docs/explanation/exit-order.md, "In an ASGI app")."""
    container = Container()

    def endpoint(db: CallSession) -> None:
        raise AssertionError("never called")

    with pytest.raises(WiringError, match=r"call-scoped generator dependency of the sync function .*'async def'"):
        container.inject(endpoint)


def fails_after_yield() -> Iterator[None]:
    yield
    raise fastapi.HTTPException(status_code=503, detail="failed after yield")


async def ok() -> dict[str, str]:
    return {"status": "ok"}


async def test_a_call_scoped_router_dependency_that_fails_after_yield_is_the_response() -> None:
    """A router's effect-only call-scoped dependency that raises in teardown turns the response into its error."""
    app = fastapi.FastAPI()
    setup(app, Container())
    router = fastapi.APIRouter(route_class=DITasksRoute.with_dependencies(Depends(fails_after_yield, scope="call")))
    router.get("/")(ok)
    app.include_router(router, prefix="/router")
    response = await _get(app, "/router/")
    assert response.status_code == 503
    assert response.json() == {"detail": "failed after yield"}


async def test_a_request_scoped_router_dependency_that_fails_after_yield_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Request-scoped, its teardown runs after the response was sent: the client gets 200, the failure is logged."""
    app = fastapi.FastAPI()
    setup(app, Container())
    router = fastapi.APIRouter(route_class=DITasksRoute.with_dependencies(Depends(fails_after_yield)))
    router.get("/")(ok)
    app.include_router(router, prefix="/router")
    with caplog.at_level(logging.ERROR, logger="di_tasks"):
        response = await _get(app, "/router/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert any("failed after yield" in str(record.exc_info) for record in caplog.records)


@pytest.mark.parametrize(("scope", "status"), [("call", 503), ("request", 200)])
async def test_app_level_dependencies_follow_the_same_rule(scope: str, status: int) -> None:
    """``setup(..., dependencies=[...])``, FastAPI's ``FastAPI(dependencies=[...])``, behaves as the router's."""
    app = fastapi.FastAPI()
    marker = Depends(fails_after_yield, scope="call") if scope == "call" else Depends(fails_after_yield)
    setup(app, Container(), dependencies=[marker])
    app.get("/app")(ok)
    response = await _get(app, "/app")
    assert response.status_code == status


def test_call_scoped_teardown_comes_before_the_tasks_and_request_scoped_after() -> None:
    """Without a framework: the call-scoped session is closed when the task runs, the request-scoped one is open."""
    seen: list[tuple[bool, bool]] = []

    def endpoint(tasks: BackgroundTasks, call_db: CallSession, request_db: RequestSession) -> None:
        tasks.add_task(lambda: seen.append((call_db.open, request_db.open)))

    Container().run(endpoint)
    assert seen == [(False, True)]
