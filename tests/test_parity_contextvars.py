"""FastAPI parity (upstream ``test_dependency_contextvars``): a sync endpoint sees the context variables its
dependencies set, and their ``var.reset(token)`` after the ``yield`` is valid, behind a real FastAPI app."""

import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Annotated

import fastapi
import httpx
import pytest

from di_tasks import Container, Depends
from di_tasks.asgi import ScopeMiddleware

pytestmark = pytest.mark.anyio

request_state: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("request_state", default=None)
teardowns: list[str] = []


async def set_up_request_state() -> AsyncIterator[dict[str, str]]:
    """The upstream dependency: set a variable, yield, reset it with its token."""
    state = {"user": "deadpond"}
    token = request_state.set(state)
    yield state
    request_state.reset(token)  # raises ValueError when run in another context than the set
    teardowns.append("async reset")


def set_up_sync_state() -> Iterator[str]:
    """The same with a sync generator dependency."""
    token = request_state.set({"user": "sync"})
    yield "sync"
    request_state.reset(token)
    teardowns.append("sync reset")


def _app(container: Container) -> fastapi.FastAPI:
    app = fastapi.FastAPI()

    @app.middleware("http")
    async def custom_middleware(
        request: fastapi.Request, call_next: Callable[[fastapi.Request], Awaitable[fastapi.Response]]
    ) -> fastapi.Response:
        response = await call_next(request)
        response.headers["custom"] = "foo"
        return response

    @app.get("/user")
    @container.inject
    def get_user(_: Annotated[dict[str, str], Depends(set_up_request_state)]) -> str:
        state = request_state.get()
        assert state is not None  # the endpoint sees what its dependency set
        return state["user"]

    @app.get("/sync-user")
    @container.inject
    def get_sync_user(_: Annotated[str, Depends(set_up_sync_state)]) -> str:
        state = request_state.get()
        assert state is not None
        return state["user"]

    return app


@pytest.mark.parametrize(
    ("path", "user", "reset"), [("/user", "deadpond", "async reset"), ("/sync-user", "sync", "sync reset")]
)
async def test_a_sync_endpoint_sees_its_dependencys_context_variable(
    path: str, user: str, reset: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The sync endpoint reads the variable; the dependency's reset after the yield succeeds; nothing is logged."""
    teardowns.clear()
    container = Container()
    transport = httpx.ASGITransport(app=ScopeMiddleware(_app(container), container=container))
    with caplog.at_level(logging.ERROR, logger="di_tasks"):
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get(path)
    assert response.status_code == 200
    assert response.json() == user
    assert response.headers["custom"] == "foo"
    assert teardowns == [reset]
    assert caplog.records == []
    assert request_state.get() is None


def get_user_plain(state: Annotated[dict[str, str], Depends(set_up_request_state)]) -> str:
    """A sync function run by Container.run."""
    assert request_state.get() is state
    return state["user"]


def test_container_run_of_a_sync_function_sees_the_variable() -> None:
    """Container.run of a sync function sees the variable and its teardown resets it."""
    teardowns.clear()
    assert Container().run(get_user_plain) == "deadpond"
    assert teardowns == ["async reset"]


def test_an_injected_sync_function_in_a_script_sees_the_variable() -> None:
    """A sync injected function called from a script (its own loop and scope) sees it and resets it."""
    teardowns.clear()
    container = Container()
    injected = container.inject(get_user_plain)
    assert injected() == "deadpond"
    assert teardowns == ["async reset"]
