"""FastAPI parity (upstream ``test_dependency_overrides``): replacing a dependency for a while, behind FastAPI.

FastAPI's ``app.dependency_overrides[f] = g`` is di_tasks' ``with container.override(f, g):``. The replacement
applies to an endpoint's parameters, to effect-only dependencies of a route, a router and the app, and to
sub-dependencies; the replacement's own dependencies are resolved; leaving the block restores the original.
Served by a real FastAPI app through ``di_tasks.fastapi.setup``, on asyncio and trio.
"""

from collections.abc import Iterator
from typing import Annotated, Any

import fastapi
import httpx
import pytest

from di_tasks import Container, Depends, MissingValueError
from di_tasks.fastapi import DITasksRoute, setup

pytestmark = pytest.mark.anyio

Params = dict[str, Any]
effects: list[str] = []


def common_parameters(q: str | None, skip: int, limit: int) -> Params:
    """Reads the endpoint's query parameters by name."""
    effects.append("common")
    return {"q": q, "skip": skip, "limit": limit}


def fixed_paging(q: str | None) -> Params:
    """A replacement that keeps ``q`` and ignores the paging the client asked for."""
    effects.append("fixed")
    return {"q": q, "skip": 5, "limit": 10}


def header_key(request: fastapi.Request) -> str:
    """The endpoint's request, bound by type: every endpoint here declares ``request`` for it (as the docs say)."""
    return request.headers.get("x-key", "none")


def from_header(key: Annotated[str, Depends(header_key)]) -> Params:
    """A replacement with a dependency of its own."""
    effects.append("from header")
    return {"key": key}


Commons = Annotated[Params, Depends(common_parameters)]
QUERY = {"q": "foo", "skip": "100", "limit": "200"}


def _app(container: Container) -> fastapi.FastAPI:
    app = fastapi.FastAPI()
    setup(app, container)

    @app.get("/main")
    async def main(
        request: fastapi.Request, commons: Commons, q: str | None = None, skip: int = 0, limit: int = 100
    ) -> Params:
        return {"in": "main", "params": commons}

    @app.get("/decorator")
    @container.inject(dependencies=[Depends(common_parameters)])
    async def decorator(request: fastapi.Request, q: str | None = None, skip: int = 0, limit: int = 100) -> Params:
        return {"in": "decorator"}

    router = fastapi.APIRouter(route_class=DITasksRoute)

    @router.get("/router")
    async def in_router(
        request: fastapi.Request, commons: Commons, q: str | None = None, skip: int = 0, limit: int = 100
    ) -> Params:
        return {"in": "router", "params": commons}

    effect_router = fastapi.APIRouter(route_class=DITasksRoute.with_dependencies(Depends(common_parameters)))

    @effect_router.get("/router-decorator")
    async def router_decorator(
        request: fastapi.Request, q: str | None = None, skip: int = 0, limit: int = 100
    ) -> Params:
        return {"in": "router-decorator"}

    app.include_router(router)
    app.include_router(effect_router)
    return app


async def _get(app: fastapi.FastAPI, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.get(path, **kwargs)


PATHS = pytest.mark.parametrize("path", ["/main", "/decorator", "/router", "/router-decorator"])


def _name(path: str) -> str:
    return path.lstrip("/")


@PATHS
async def test_without_overrides_the_dependency_reads_the_query(path: str) -> None:
    """The original dependency runs, as a parameter or for its effect, and sees the query parameters."""
    effects.clear()
    response = await _get(_app(Container()), path, params=QUERY)
    assert response.status_code == 200
    body = response.json()
    assert body["in"] == _name(path)
    if "params" in body:
        assert body["params"] == {"q": "foo", "skip": 100, "limit": 200}
    assert effects == ["common"]


@PATHS
async def test_a_simple_override_replaces_it_everywhere(path: str) -> None:
    """Inside the block every form of the dependency calls the replacement, which sees only what it asks for."""
    effects.clear()
    container = Container()
    app = _app(container)
    with container.override(common_parameters, fixed_paging):
        response = await _get(app, path, params=QUERY)
    assert response.status_code == 200
    if "params" in response.json():
        assert response.json()["params"] == {"q": "foo", "skip": 5, "limit": 10}
    assert effects == ["fixed"]


@PATHS
async def test_the_replacements_own_dependencies_are_resolved(path: str) -> None:
    """A replacement with a sub-dependency: the sub-dependency is resolved from the request."""
    effects.clear()
    container = Container()
    app = _app(container)
    with container.override(common_parameters, from_header):
        response = await _get(app, path, headers={"x-key": "bar"})
    assert response.status_code == 200
    if "params" in response.json():
        assert response.json()["params"] == {"key": "bar"}
    assert effects == ["from header"]


@PATHS
async def test_leaving_the_block_restores_the_original(path: str) -> None:
    """After the block (and after an error inside it) the same app calls the original dependency again."""
    effects.clear()
    container = Container()
    app = _app(container)
    with pytest.raises(RuntimeError, match="test failed"), container.override(common_parameters, fixed_paging):
        await _get(app, path)
        raise RuntimeError("test failed")
    assert container.overrides == {}
    response = await _get(app, path, params=QUERY)
    assert response.status_code == 200
    assert effects == ["fixed", "common"]


async def test_a_sub_dependency_can_be_overridden() -> None:
    """Overriding a dependency of a dependency changes what the outer one gets, and the outer one still runs."""
    effects.clear()
    container = Container()
    app = fastapi.FastAPI()
    setup(app, container)

    @app.get("/")
    async def endpoint(request: fastapi.Request, params: Annotated[Params, Depends(from_header)]) -> Params:
        return params

    with container.override(header_key, lambda: "overridden"):
        overridden = await _get(app, "/", headers={"x-key": "real"})
    original = await _get(app, "/", headers={"x-key": "real"})
    assert overridden.json() == {"key": "overridden"}
    assert original.json() == {"key": "real"}
    assert effects == ["from header", "from header"]


async def test_nested_overrides_undo_one_level_at_a_time() -> None:
    """The innermost override of a target wins; leaving it brings back the outer one, then the original."""
    container = Container()
    app = fastapi.FastAPI()
    setup(app, container)

    @app.get("/")
    async def endpoint(request: fastapi.Request, key: Annotated[str, Depends(header_key)]) -> str:
        return key

    seen: list[str] = []
    with container.override(header_key, lambda: "outer"):
        with container.override(header_key, lambda: "inner"):
            seen.append((await _get(app, "/")).json())
        seen.append((await _get(app, "/")).json())
    seen.append((await _get(app, "/")).json())
    assert seen == ["inner", "outer", "none"]


closed: list[str] = []


def fake_session() -> Iterator[str]:
    yield "fake"
    closed.append("fake")


async def test_a_generator_replacement_is_torn_down_with_the_request() -> None:
    """A replacement that is a generator is set up and torn down like the dependency it replaces."""
    closed.clear()
    container = Container()
    app = fastapi.FastAPI()
    setup(app, container)

    @app.get("/")
    async def endpoint(request: fastapi.Request, key: Annotated[str, Depends(header_key)]) -> str:
        return key

    with container.override(header_key, fake_session):
        response = await _get(app, "/")
    assert response.json() == "fake"
    assert closed == ["fake"]


def needs_k(k: str) -> Params:
    return {"k": k}


async def test_a_replacement_needing_an_unknown_value_is_an_error_not_a_query_parameter() -> None:
    """Difference: in FastAPI a replacement's unknown parameter becomes a required query parameter (a 422 without
    it); in di_tasks the HTTP interface is the endpoint's own, so the unknown ``k`` is a ``MissingValueError``
    naming it and its path (docs/how-to/migrate-from-fastapi.md, "unknown parameters")."""
    container = Container()
    app = fastapi.FastAPI()
    setup(app, container)

    @app.get("/")
    async def endpoint(
        request: fastapi.Request, commons: Commons, q: str | None = None, skip: int = 0, limit: int = 100
    ) -> Params:
        return commons

    with container.override(common_parameters, needs_k), pytest.raises(MissingValueError, match=r"'k'.*needs_k"):
        await _get(app, "/", params={"k": "bar"})


def test_container_run_honours_the_same_overrides() -> None:
    """Without a framework the override applies the same way to ``Container.run``."""
    effects.clear()
    container = Container()

    def job(commons: Commons) -> Params:
        return commons

    with container.override(common_parameters, fixed_paging):
        assert container.run(job, q="x") == {"q": "x", "skip": 5, "limit": 10}
    assert container.run(job, q="x", skip=1, limit=2) == {"q": "x", "skip": 1, "limit": 2}
    assert effects == ["fixed", "common"]
