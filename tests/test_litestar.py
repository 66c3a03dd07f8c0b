"""di_tasks.litestar: DITasksPlugin injects every handler, checks the app at startup, and a misplaced inject fails."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from litestar import Litestar, Request, Router, get
from litestar.testing import TestClient

from di_tasks import BackgroundTasks, Container, Depends, WiringError
from di_tasks.litestar import DITasksPlugin


def current_user(request: Request[Any, Any, Any]) -> str:
    return request.headers.get("x-user", "anonymous")


@pytest.mark.anyio
async def test_plugin_injects_handlers_so_a_query_string_cannot_set_the_user() -> None:
    """No @container.inject: ?user=admin is not the user, tasks run, handlers in a Router too."""
    log: list[str] = []

    @get("/me")
    async def me(
        request: Request[Any, Any, Any], user: Annotated[str, Depends(current_user)], tasks: BackgroundTasks
    ) -> str:
        tasks.add_task(log.append, f"seen {user}")
        return user

    @get("/me")
    async def routed(request: Request[Any, Any, Any], user: Annotated[str, Depends(current_user)]) -> str:
        return user

    app = Litestar([me, Router("/v1", route_handlers=[routed])], plugins=[DITasksPlugin(Container())])
    asgi_app: Any = app  # Litestar's ASGI types are narrower than httpx's
    transport = httpx.ASGITransport(app=asgi_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        first = await http.get("/me", params={"user": "admin"}, headers={"x-user": "ada"})
        second = await http.get("/v1/me", params={"user": "admin"})
    assert (first.text, second.text) == ("ada", "anonymous")
    assert log == ["seen ada"]


def call_scoped() -> int:
    return 1


def request_scoped(x: Annotated[int, Depends(call_scoped, scope="call")]) -> int:
    return x


def test_startup_lists_every_wiring_error() -> None:
    """Two handlers with broken graphs: the app does not start, and both are listed."""

    @get("/one")
    async def one(v: Annotated[int, Depends(request_scoped, scope="app")]) -> int:
        return v

    @get("/two")
    async def two(v: Annotated[int, Depends(request_scoped, scope="app")]) -> int:
        return v

    app = Litestar([one, two], plugins=[DITasksPlugin(Container())])
    with pytest.raises(ExceptionGroup, match=r"unhandled errors") as info, TestClient(app):  # how Litestar reports it
        pass
    assert info.group_contains(
        WiringError, match=r"2 wiring problem\(s\)(.|\n)*GET /one: (.|\n)*GET /two: ", depth=None
    )


def test_inject_above_get_is_refused_at_decoration() -> None:
    """@container.inject above @get: refused with the fix, before the app exists."""
    container = Container()
    with pytest.raises(WiringError, match=r"put @container.inject below the route decorator"):

        @container.inject
        @get("/me")
        async def me(user: Annotated[str, Depends(current_user)]) -> str:
            return user
