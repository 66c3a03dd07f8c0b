"""Container.inject: the wrapper's signature, where it resolves, sync functions in worker threads and scripts."""

import contextvars
import inspect
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Annotated, Any, ClassVar, assert_type

import anyio
import anyio.to_thread
import fastapi as _fastapi
import httpx as _httpx
import litestar as _litestar
import pytest
from _servers import serve

from di_tasks import (
    BackgroundTaskError,
    BackgroundTasks,
    Container,
    Depends,
    MissingValueError,
    Scope,
    ScopeError,
    WiringError,
)
from di_tasks._scope import current_scope

pytestmark = pytest.mark.anyio

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


class Request:
    """Stands for a framework's request object."""

    def __init__(self, path: str) -> None:
        self.path = path


class Marker:
    """Metadata a framework reads from ``Annotated`` (like FastAPI's ``Query()``)."""


def path_of(req: Request) -> str:
    return req.path


def tagged(background_tasks: BackgroundTasks, path: Annotated[str, Depends(path_of)], user: str) -> str:
    background_tasks.add_task(print, f"{user} {path}")
    return f"{user}@{path}"


async def endpoint(
    request: Request,
    background_tasks: BackgroundTasks,
    tag: Annotated[str, Depends(tagged)],
    user: Annotated[str, Marker()] = "anon",
) -> str:
    background_tasks.add_task(print, "endpoint")
    return tag


def test_signature_keeps_provided_parameters_and_hides_injected_ones() -> None:
    """The wrapper shows only what the framework provides, with its metadata, defaults and return type."""
    wrapper = Container().inject(endpoint)
    signature = inspect.signature(wrapper)
    assert list(signature.parameters) == ["request", "user"]
    assert signature.parameters["user"].annotation.__metadata__[0].__class__ is Marker
    assert signature.parameters["user"].default == "anon"
    assert signature.return_annotation is str
    assert list(wrapper.__annotations__) == ["request", "user", "return"]
    assert wrapper.__name__ == "endpoint"
    assert wrapper.__wrapped__ is endpoint  # type: ignore[attr-defined]  # set by functools.update_wrapper
    assert inspect.iscoroutinefunction(wrapper)


def test_sync_function_gets_a_sync_wrapper() -> None:
    """A sync function stays sync (frameworks then run it in a worker thread)."""

    def handler(request: Request, background_tasks: BackgroundTasks) -> None:
        pass

    wrapper = Container().inject(handler)
    assert not inspect.iscoroutinefunction(wrapper)
    assert list(inspect.signature(wrapper).parameters) == ["request"]
    assert "return" not in Container().inject(lambda: None).__annotations__


def test_return_type_is_kept_for_type_checkers() -> None:
    """``inject`` keeps the function's return type (its parameters change, so they are ``...``)."""

    async def f(background_tasks: BackgroundTasks) -> int:
        return 1

    def g(background_tasks: BackgroundTasks) -> str:
        return ""

    container = Container()
    # assert_type cannot be used: mypy says Coroutine where pyright says CoroutineType
    wrapped_f: Callable[..., Coroutine[Any, Any, int]] = container.inject(f)
    wrapped_g: Callable[..., str] = container.inject(g)
    assert_type(container.inject(g)(), str)
    assert callable(wrapped_f)
    assert callable(wrapped_g)


async def test_resolves_in_the_active_scope_with_values_by_name_and_type() -> None:
    """In an active scope: one collector; provided arguments are seen by name and by type at every depth."""
    container = Container()
    wrapper = container.inject(endpoint)
    async with container.scope() as scope:
        assert await wrapper(Request("/a"), user="ann") == "ann@/a"
        assert [t.args for t in scope.tasks] == [("ann /a",), ("endpoint",)]
        assert scope.types[Request].path == "/a"


async def test_unannotated_argument_is_bound_by_its_class() -> None:
    """A provided argument without an annotation (Starlette's ``request``) is still found by its class."""
    container = Container()

    @container.inject
    async def handler(request, path: Annotated[str, Depends(path_of)]) -> str:  # type: ignore[no-untyped-def]  # unannotated on purpose
        return path

    assert await handler(Request("/b")) == "/b"


async def test_without_a_scope_opens_one_for_the_call() -> None:
    """No active scope: the call gets its own, flushed before it returns; a failing task raises."""
    container = Container()
    ran: list[str] = []

    @container.inject
    async def job(background_tasks: BackgroundTasks, fail: bool = False) -> str:
        background_tasks.add_task(ran.append, "task")
        if fail:
            background_tasks.add_task(_boom)
        return "done"

    assert await job() == "done"
    assert ran == ["task"]
    with pytest.raises(BackgroundTaskError, match="1 background task"):
        await job(fail=True)


def _boom() -> None:
    raise RuntimeError("boom")


async def test_scope_of_another_container_or_closed_scope_is_not_used() -> None:
    """Only an open scope of the same container is borrowed; otherwise the call opens its own."""
    container = Container()
    seen: list[Scope] = []

    @container.inject
    async def which(scope: Scope) -> None:
        seen.append(scope)

    async with Container().scope():
        await which()
    async with container.scope() as mine:
        await which()
    await mine.close()

    token = current_scope.set(mine)  # a closed scope, as seen by a task running during its flush
    try:
        await which()
    finally:
        current_scope.reset(token)
    assert seen[1] is mine
    assert seen[0] is not mine
    assert seen[2] is not mine


async def test_wrong_arguments_raise_type_error() -> None:
    """Arguments that do not fit the visible signature raise TypeError naming the function."""
    wrapper = Container().inject(endpoint)
    with pytest.raises(
        TypeError, match=r"endpoint\(request: .*Request, user.*\) -> str: missing a required argument: 'request'"
    ):
        await wrapper()
    with pytest.raises(TypeError, match="got an unexpected keyword argument 'background_tasks'"):
        await wrapper(Request("/"), background_tasks=BackgroundTasks())


def test_unusable_functions_are_rejected_at_decoration() -> None:
    """*args/**kwargs, generators and classes cannot be injected; wiring errors surface at decoration."""

    def star(*args: int) -> None:
        pass

    def double_star(**kwargs: int) -> None:
        pass

    def gen() -> Iterator[int]:
        yield 1

    container = Container()
    with pytest.raises(WiringError, match=r"parameter \*args of .*star cannot go through Container.inject"):
        container.inject(star)
    with pytest.raises(WiringError, match=r"parameter \*\*kwargs of .*double_star cannot go through"):
        container.inject(double_star)
    with pytest.raises(WiringError, match=r"takes a function or an async function, got the generator .*gen"):
        container.inject(gen)
    with pytest.raises(WiringError, match=r"got the class .*Request"):
        container.inject(Request)


def per_request() -> int:
    return 1


def app_wide(x: Annotated[int, Depends(per_request)]) -> int:
    return x


def test_wiring_errors_are_raised_at_decoration() -> None:
    """The graph is solved when the function is decorated, so a lifetime error fails at import time."""

    async def handler(value: Annotated[int, Depends(app_wide, scope="app")]) -> int:
        return value

    with pytest.raises(ScopeError, match="is request-scoped and would end before it"):
        Container().inject(handler)


async def test_positional_only_parameters_are_passed_positionally() -> None:
    """Positional-only parameters (provided or injected) reach the function positionally."""
    container = Container()

    @container.inject
    async def handler(request: Request, /, background_tasks: BackgroundTasks) -> str:
        return request.path

    @container.inject
    def sync_handler(request: Request, /, background_tasks: BackgroundTasks) -> str:
        return request.path

    assert await handler(Request("/p")) == "/p"
    assert await anyio.to_thread.run_sync(sync_handler, Request("/s")) == "/s"


def constant() -> str:
    return "from the marker"


async def test_marker_given_as_default_in_a_worker_thread() -> None:
    """The ``x: T = Depends(f)`` form is resolved for a sync function in a worker thread too."""
    container = Container()

    @container.inject
    def handler(request: Request, value: str = Depends(constant)) -> str:
        return f"{request.path} {value}"

    assert await anyio.to_thread.run_sync(handler, Request("/d")) == "/d from the marker"


def test_sync_function_in_a_script_runs_its_own_loop() -> None:
    """Called with no event loop anywhere: a loop for the call, the container entered, the tasks flushed."""
    container = Container()
    events: list[str] = []

    def resource() -> Iterator[str]:
        events.append("open")
        yield "res"
        events.append("close")

    @container.inject
    def main(name: str, background_tasks: BackgroundTasks, res: Annotated[str, Depends(resource, scope="app")]) -> str:
        background_tasks.add_task(events.append, f"task {name}")
        return f"{name} {res}"

    assert main("x") == "x res"
    assert events == ["open", "task x", "close"]


async def test_sync_function_in_a_plain_thread_while_the_container_is_entered() -> None:
    """A thread that is not an AnyIO worker gets a loop of its own; the entered container is reused."""
    container = Container()
    results: list[str] = []

    @container.inject
    def job(background_tasks: BackgroundTasks) -> str:
        background_tasks.add_task(results.append, "task")
        return "ok"

    def in_plain_thread() -> None:
        thread = threading.Thread(target=lambda: results.append(job()))
        thread.start()
        thread.join(10)

    async with container:
        await anyio.to_thread.run_sync(in_plain_thread)
    assert results == ["task", "ok"]


async def test_sync_function_in_a_worker_thread_uses_the_active_scope() -> None:
    """From a worker thread: dependencies resolve on the loop, the body runs in that thread, in the scope."""
    container = Container()
    seen: list[tuple[str, str]] = []
    loop_thread = threading.get_ident()

    def task() -> None:
        seen.append(("task", VAR.get()))

    @container.inject
    def handler(
        request: Request, tag: Annotated[str, Depends(tagged)], background_tasks: BackgroundTasks, user: str
    ) -> str:
        VAR.set("set in the sync endpoint")
        background_tasks.add_task(task)
        assert threading.get_ident() != loop_thread
        return tag

    async with container.scope() as scope:
        result = await anyio.to_thread.run_sync(lambda: handler(Request("/w"), user="u"))
        assert [t.name.rsplit(".", 1)[-1] for t in scope.tasks] == ["print", "task"]
    assert result == "u@/w"
    assert seen == [("task", "set in the sync endpoint")]


async def test_sync_function_in_a_worker_thread_without_a_scope() -> None:
    """From a worker thread with no active scope: a scope for the call, flushed after the body, errors propagate."""
    container = Container()
    ran: list[str] = []

    @container.inject
    def job(background_tasks: BackgroundTasks, fail: bool = False) -> str:
        background_tasks.add_task(ran.append, "task")
        if fail:
            raise ValueError("body failed")
        return "ok"

    @container.inject
    def needs(value: Annotated[str, Depends(needs_value)]) -> str:
        return value

    assert await anyio.to_thread.run_sync(job) == "ok"
    assert ran == ["task"]
    with pytest.raises(ValueError, match="body failed"):
        await anyio.to_thread.run_sync(lambda: job(fail=True))
    assert ran == ["task"]  # the failed call's task was not run
    with pytest.raises(MissingValueError, match="no value for parameter 'missing_value'"):
        await anyio.to_thread.run_sync(needs)


def needs_value(missing_value: str) -> str:
    return missing_value


async def test_failures_in_a_borrowed_scope_are_recorded_for_its_exit() -> None:
    """An injected call failing in a scope it did not open is recorded; a later successful call clears it."""
    container = Container()

    @container.inject
    async def failing(background_tasks: BackgroundTasks) -> None:
        raise KeyError("nope")

    @container.inject
    def sync_failing(background_tasks: BackgroundTasks) -> None:
        raise KeyError("sync nope")

    @container.inject
    def sync_missing(value: Annotated[str, Depends(needs_value)]) -> str:
        return value

    @container.inject
    async def recovering(background_tasks: BackgroundTasks) -> str:
        try:
            await failing()
        except KeyError:
            return "recovered"
        return "unreachable"

    @container.inject
    def sync_ok() -> str:
        return "ok"

    async with container.scope() as scope:
        with pytest.raises(KeyError, match="nope"):
            await failing()
        assert isinstance(body_error(scope), KeyError)
        assert await recovering() == "recovered"
        assert body_error(scope) is None
        with pytest.raises(KeyError, match="sync nope"):
            await anyio.to_thread.run_sync(sync_failing)
        assert str(body_error(scope)) == "'sync nope'"
        assert await anyio.to_thread.run_sync(sync_ok) == "ok"
        assert body_error(scope) is None
        with pytest.raises(MissingValueError, match="missing_value"):
            await anyio.to_thread.run_sync(sync_missing)
        assert isinstance(body_error(scope), MissingValueError)
        scope.body_error = None


async def test_sync_function_on_the_loop_thread_is_an_error() -> None:
    """Calling a sync injected function from async code directly would block the loop: RuntimeError."""
    container = Container()

    @container.inject
    def handler(background_tasks: BackgroundTasks) -> None:
        pass

    with pytest.raises(RuntimeError, match=r"handler is a sync function decorated with Container.inject\(\)"):
        handler()


async def call_scoped() -> AsyncIterator[str]:
    yield "c"


async def test_call_scoped_generator_with_a_sync_function_in_a_worker_thread() -> None:
    """A call-scoped generator cannot be torn down after a sync body run in a worker thread: WiringError when
    the function is decorated, not at its first call."""
    container = Container()

    with pytest.raises(WiringError, match="call-scoped generator dependency of the sync function"):

        @container.inject
        def handler(c: Annotated[str, Depends(call_scoped, scope="call")]) -> str:
            return c

    @container.inject
    async def async_handler(c: Annotated[str, Depends(call_scoped, scope="call")]) -> str:
        return c

    assert await async_handler() == "c"


async def test_an_async_callable_instance_gets_the_async_wrapper() -> None:
    """A callable object whose __call__ is async is awaited like an async function."""
    container = Container()

    class Handler:
        async def __call__(self, tasks: BackgroundTasks) -> str:
            tasks.add_task(list[str]().append, "x")
            return "handled"

    wrapped = container.inject(Handler())
    assert await wrapped() == "handled"


def body_error(scope: Scope) -> BaseException | None:
    """The scope's recorded body error, read through a call so a type checker does not narrow it between reads."""
    return scope.body_error


# -- the integration issue: a forgotten middleware, effect-only dependencies, a misplaced decorator ---------------


@pytest.mark.anyio
async def test_inject_without_middleware_in_an_asgi_request_warns_once_naming_the_fix() -> None:
    """ScopeMiddleware forgotten: the tasks run before the response, and a RuntimeWarning says so, once."""
    container = Container()
    app = _fastapi.FastAPI()
    ran: list[str] = []

    @app.get("/job")
    @container.inject
    async def job(background_tasks: BackgroundTasks) -> str:
        background_tasks.add_task(ran.append, "task")
        return "ok"

    transport = _httpx.ASGITransport(app=app)
    async with _httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        with pytest.warns(
            RuntimeWarning,
            match=r"job was called during the ASGI request GET /job with no di_tasks .*"
            r"ran its background tasks before the response.*ScopeMiddleware",
        ):
            await http.get("/job")
        await http.get("/job")  # no second warning: warnings are errors in this suite
    assert ran == ["task", "task"]


def test_inject_without_middleware_in_a_sync_endpoint_taking_the_request_warns() -> None:
    """A sync endpoint in a worker thread is noticed through the request it was given."""

    class FakeRequest:
        scope: ClassVar[dict[str, str]] = {"type": "http", "method": "GET", "path": "/sync"}

    container = Container()

    @container.inject
    def endpoint(request: FakeRequest, background_tasks: BackgroundTasks) -> str:
        return "ok"

    with pytest.warns(RuntimeWarning, match=r"endpoint was called during the ASGI request GET /sync"):
        assert endpoint(FakeRequest()) == "ok"


def test_inject_without_middleware_warns_once_per_endpoint_under_uvicorn() -> None:
    """Under a real uvicorn with no middleware, an async and a sync endpoint each warn once, in the server thread."""
    container = Container()
    app = _fastapi.FastAPI()
    ran: list[str] = []

    @app.get("/job")
    @container.inject
    async def job(background_tasks: BackgroundTasks) -> str:
        background_tasks.add_task(ran.append, "async")
        return "ok"

    @app.get("/sync-job")
    @container.inject
    def sync_job(request: _fastapi.Request, background_tasks: BackgroundTasks) -> str:
        background_tasks.add_task(ran.append, "sync")
        return "ok"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # record every warning the server thread raises, so "once" is ours
        with serve(app) as server:
            statuses = [
                _httpx.get(f"{server.url}{path}", timeout=5.0).status_code for path in ["/job", "/sync-job"] * 2
            ]
    assert statuses == [200] * 4
    assert ran == ["async", "sync", "async", "sync"]
    ours = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning) and "di_tasks" in str(w.message)]
    assert len(ours) == 2, ours
    assert ours[0].startswith(
        "test_inject.test_inject_without_middleware_warns_once_per_endpoint_under_uvicorn.<locals>.job was "
    )
    assert "during the ASGI request GET /job with no di_tasks request scope active" in ours[0]
    assert "during the ASGI request GET /sync-job with no di_tasks request scope active" in ours[1]
    assert "add di_tasks.asgi.ScopeMiddleware" in ours[1]


def test_inject_dependencies_run_first_for_their_effect() -> None:
    """inject(dependencies=[...]) resolves each dependency before the function's own parameters; values unused."""
    calls: list[str] = []

    def verify_token(token: str) -> str:
        calls.append(f"verify {token}")
        return "unused"

    def load() -> int:
        calls.append("load")
        return 1

    container = Container()

    @container.inject(dependencies=[Depends(verify_token), load])
    async def endpoint(token: str, value: Annotated[int, Depends(load)]) -> int:
        calls.append("body")
        return value

    assert container.run(endpoint, token="t") == 1
    assert calls == ["verify t", "load", "body"]  # load cached: run once for the dependency and the parameter
    assert container.solve(endpoint).nodes[0].name.endswith(".verify_token")  # the graph shows it


def test_inject_dependencies_must_be_markers_or_callables() -> None:
    """A wrong item is named with its index and the fix."""
    container = Container()

    async def endpoint() -> None: ...

    with pytest.raises(WiringError, match=r"dependencies\[0\] of .*endpoint is 'x', not a callable"):
        container.inject(dependencies=["x"])(endpoint)
    with pytest.raises(WiringError, match=r"dependencies\[0\] of .*endpoint is Depends\(\) with no callable"):
        container.inject(dependencies=[Depends()])(endpoint)


def test_inject_refuses_a_litestar_route_handler() -> None:
    """@container.inject above Litestar's @get is refused at decoration, with the fix."""
    container = Container()

    async def handler(background_tasks: BackgroundTasks) -> None: ...

    with pytest.raises(WiringError, match=r"route handler .* put @container.inject below the route decorator"):
        container.inject(_litestar.get("/x")(handler))
