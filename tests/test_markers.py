"""The Depends marker: both forms, bad input caught where it is written."""

from typing import Annotated, Any

import fastapi
import httpx
import pytest

from di_tasks import Container, Depends, WiringError
from di_tasks._markers import Dependency
from di_tasks.asgi import ScopeMiddleware

pytestmark = pytest.mark.anyio


def five() -> int:
    return 5


async def both_forms(a: Annotated[int, Depends(five)], b: int = Depends(five)) -> int:
    return a + b


async def test_annotated_and_default_forms_resolve_alike() -> None:
    """`Annotated[T, Depends(f)]` and `x: T = Depends(f)` mean the same."""
    assert await Container().call(both_forms) == 10


def test_marker_keeps_its_options_and_prints_them() -> None:
    """The marker records the callable, cache policy, scope and thread offload."""
    marker = Depends(five, use_cache=False, scope="app", sync_to_thread=True)
    assert isinstance(marker, Dependency)
    assert (marker.dependency, marker.use_cache, marker.scope, marker.sync_to_thread) == (five, False, "app", True)
    assert repr(marker) == "Depends(five, use_cache=False, scope='app')"
    assert "None" in repr(Depends())


def test_bad_markers_fail_where_they_are_written() -> None:
    """A non-callable dependency or an unknown scope is a TypeError at the Depends(...) call."""
    bad: Any = five()
    with pytest.raises(TypeError, match="pass the function itself, not the result of calling it"):
        Depends(bad)
    wrong_scope: Any = "session"
    with pytest.raises(TypeError, match="must be 'app', 'request' or 'call', got 'session'"):
        Depends(five, scope=wrong_scope)


# -- markers di_tasks does not read: named in the error, with what to write instead --------------------------------


def fastapi_annotated(x: Annotated[int, fastapi.Depends(five)]) -> int:
    return x


def fastapi_default(x: int = fastapi.Depends(five)) -> int:
    return x


def fastapi_security(x: Annotated[int, fastapi.Security(five)]) -> int:
    return x


def fastapi_uncalled(x: Annotated[int, fastapi.Depends]) -> int:
    return x


def bare_annotated(x: Annotated[int, Depends]) -> int:
    return x


def bare_default(x: Any = Depends) -> Any:  # the mistake under test (typed `int`, a type checker flags it)
    return x


def parent(of: Any) -> Any:
    """An endpoint whose sub-dependency is ``of``."""

    async def endpoint(value: Annotated[int, Depends(of)]) -> int:
        return int(value)

    return endpoint


@pytest.mark.parametrize(
    ("sub", "message"),
    [
        (
            fastapi_annotated,
            r"parameter 'x' of .*fastapi_annotated has fastapi\.params\.Depends\(five\) but no "
            r"di_tasks Depends marker.*write Depends\(five\) with Depends imported from di_tasks",
        ),
        (fastapi_default, r"has fastapi\.params\.Depends\(five\) but no di_tasks Depends marker"),
        (
            fastapi_security,
            r"has fastapi\.params\.Security\(five\) but no di_tasks Depends marker.*write Depends\(five\)",
        ),
        (
            fastapi_uncalled,
            r"has fastapi\.param_functions\.Depends, not called, but no di_tasks Depends marker.*"
            r"write Depends\(some_function\)",
        ),
    ],
    ids=["annotated", "default", "security", "uncalled"],
)
def test_fastapi_marker_in_a_sub_dependency_is_named(sub: Any, message: str) -> None:
    """FastAPI's ``Depends`` below the endpoint is refused at solve time, naming it and the di_tasks spelling."""
    with pytest.raises(WiringError, match=message) as info:
        Container().solve(parent(sub))
    assert info.value.path[-1].endswith(sub.__name__)


@pytest.mark.parametrize(
    ("sub", "message"),
    [
        (
            bare_annotated,
            r"parameter 'x' of .*bare_annotated has Depends itself in its Annotated\[\.\.\.\], not called",
        ),
        (bare_default, r"parameter 'x' of .*bare_default has Depends itself as its default, not called"),
    ],
    ids=["annotated", "default"],
)
def test_uncalled_depends_is_named(sub: Any, message: str) -> None:
    """``Annotated[int, Depends]`` (no call) says so and shows the fix, at any depth."""
    with pytest.raises(WiringError, match=message + r".*write Depends\(some_function\), or Depends\(\)"):
        Container().solve(parent(sub))
    with pytest.raises(WiringError, match=message):
        Container().solve(sub)


async def test_fastapi_marker_on_the_endpoint_is_left_to_fastapi() -> None:
    """On the injected endpoint itself FastAPI's own ``Depends`` is FastAPI's business: it fills it, as before."""
    container = Container()
    app = fastapi.FastAPI()

    @app.get("/")
    @container.inject
    async def endpoint(x: Annotated[int, fastapi.Depends(five)], y: Annotated[int, Depends(five)]) -> int:
        return x + y

    transport = httpx.ASGITransport(app=ScopeMiddleware(app, container=container))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/")
    assert (response.status_code, response.json()) == (200, 10)


async def test_fastapi_marker_on_the_called_function_takes_a_value() -> None:
    """On the function called, a parameter with FastAPI's marker is a value its caller gives, as before."""

    async def root(x: Annotated[int, fastapi.Depends(five)]) -> int:
        return x

    assert await Container().call(root, x=3) == 3


class Strange:
    """A default value whose attribute lookups all fail loudly."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no {name}")


STRANGE = Strange()


def test_ordinary_defaults_are_not_taken_for_markers() -> None:
    """Functions, classes and odd objects as defaults are values, not markers, and are not probed."""

    def other() -> None:
        pass

    def sub(a: Any = other, b: Any = STRANGE, c: Any = int) -> int:
        return 1

    async def endpoint(value: Annotated[int, Depends(sub)]) -> int:
        return value

    assert Container().run(endpoint) == 1
