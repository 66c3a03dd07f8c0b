"""di_tasks.asgi: ScopeMiddleware with real servers (uvicorn + httpx) and with ASGI-level harnesses."""

import contextvars
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import parse_qs

import anyio
import fastapi
import httpx
import litestar
import pytest
from _servers import Journal, LiveServer, serve
from litestar.params import FromPath, FromQuery
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.sync.client import connect

from di_tasks import BackgroundTasks, Container, Depends, Task
from di_tasks.asgi import ScopeMiddleware

Message = MutableMapping[str, Any]
JOURNAL = Journal()
REQUEST_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("REQUEST_VAR", default="unset")
ENDPOINT_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("ENDPOINT_VAR", default="unset")


# -- the seed (DESIGN.md's "send notification"), with a sub-dependency -------------------------------------------


def write_log(message: str) -> None:
    JOURNAL.write(message)


def audit(background_tasks: BackgroundTasks, email: str) -> str:
    """A sub-dependency: sees the endpoint's ``email`` by name."""
    background_tasks.add_task(write_log, f"audit {email}")
    return email


def get_query(
    background_tasks: BackgroundTasks, audited: Annotated[str, Depends(audit)], q: str | None = None
) -> str | None:
    if q:
        background_tasks.add_task(write_log, f"found query: {q}")
    return q


async def send_notification(
    email: str,
    background_tasks: BackgroundTasks,
    query: Annotated[str | None, Depends(get_query)],
    q: str | None = None,
) -> dict[str, str]:
    background_tasks.add_task(write_log, f"message to {email}")
    return {"message": "Message sent", "query": str(query)}


SEED_LINES = ["audit a@example.com", "found query: x", "message to a@example.com"]


# -- the other endpoints every app serves ------------------------------------------------------------------------


async def sleep_then_write(seconds: float, line: str) -> None:
    await anyio.sleep(seconds)
    JOURNAL.write(line)


async def slow(background_tasks: BackgroundTasks) -> dict[str, str]:
    background_tasks.add_task(sleep_then_write, 1.0, "slow done")
    return {"status": "accepted"}


def boom() -> None:
    raise RuntimeError("the task failed")


async def fail(background_tasks: BackgroundTasks) -> dict[str, str]:
    background_tasks.add_task(boom)
    background_tasks.add_task(write_log, "after boom")
    return {"status": "ok"}


def add_first(background_tasks: BackgroundTasks) -> str:
    background_tasks.add_task(write_log, "must not run")
    return "first"


def needs_token(api_token: str) -> str:
    return api_token


async def missing(
    background_tasks: BackgroundTasks,
    first: Annotated[str, Depends(add_first)],
    token: Annotated[str, Depends(needs_token)],
) -> dict[str, str]:
    return {"token": token}


# -- one app per framework ---------------------------------------------------------------------------------------


def make_starlette(container: Container) -> Any:
    notify = container.inject(send_notification)

    async def notify_route(request: Request) -> JSONResponse:
        return JSONResponse(await notify(email=request.path_params["email"], q=request.query_params.get("q")))

    def json_route(func: Callable[..., Any]) -> Callable[[Request], Any]:
        injected = container.inject(func)

        async def route(request: Request) -> JSONResponse:
            return JSONResponse(await injected())

        return route

    @container.inject
    async def stream(request: Request, background_tasks: BackgroundTasks) -> StreamingResponse:
        background_tasks.add_task(write_log, "stream task")

        async def chunks() -> AsyncIterator[str]:
            for i in range(3):
                yield f"chunk {i}\n"
                await anyio.sleep(0.05)
            JOURNAL.write("stream end")

        return StreamingResponse(chunks())

    @container.inject
    async def websocket(websocket: WebSocket, background_tasks: BackgroundTasks) -> None:
        await websocket.accept()
        background_tasks.add_task(write_log, "ws task")
        text = await websocket.receive_text()
        await websocket.send_text(f"echo {text}")
        await websocket.close()

    @container.inject
    async def alongside(request: Request, background_tasks: BackgroundTasks) -> PlainTextResponse:
        background_tasks.add_task(write_log, "di_tasks task")
        return PlainTextResponse("ok", background=BackgroundTask(write_log, "framework task"))

    @container.inject
    def sync_endpoint(
        request: Request, agent: Annotated[str, Depends(user_agent)], background_tasks: BackgroundTasks
    ) -> PlainTextResponse:
        background_tasks.add_task(write_log, f"sync task for {agent}")
        return PlainTextResponse(agent)

    routes = [
        Route("/send-notification/{email}", notify_route, methods=["POST"]),
        Route("/slow", json_route(slow)),
        Route("/fail", json_route(fail)),
        Route("/missing", json_route(missing)),
        Route("/stream", stream),
        Route("/alongside", alongside),
        Route("/sync", sync_endpoint),
        WebSocketRoute("/ws", websocket),
    ]
    return Starlette(routes=routes, middleware=[Middleware(ScopeMiddleware, container=container)])


def user_agent(req: Request) -> str:
    """Reads the framework's Request by type (the endpoint calls it ``request``)."""
    return req.headers.get("user-agent", "")


def make_fastapi(container: Container) -> Any:
    app = fastapi.FastAPI()
    app.post("/send-notification/{email}")(container.inject(send_notification))
    app.get("/notify")(container.inject(send_notification))
    app.get("/slow")(container.inject(slow))
    app.get("/fail")(container.inject(fail))
    app.get("/missing")(container.inject(missing))

    @app.get("/alongside")
    @container.inject
    async def alongside(framework_tasks: fastapi.BackgroundTasks, background_tasks: BackgroundTasks) -> str:
        framework_tasks.add_task(write_log, "framework task")
        background_tasks.add_task(write_log, "di_tasks task")
        return "ok"

    app.add_middleware(ScopeMiddleware, container=container)
    return app


async def litestar_notification(
    email: FromPath[str],
    background_tasks: BackgroundTasks,
    query: Annotated[str | None, Depends(get_query)],
    q: FromQuery[str | None] = None,
) -> dict[str, str]:
    """The seed with Litestar's query marker: the wrapper keeps framework metadata in ``Annotated``."""
    return await send_notification(email, background_tasks, query, q)


async def litestar_notify(
    email: FromQuery[str],
    background_tasks: BackgroundTasks,
    query: Annotated[str | None, Depends(get_query)],
    q: FromQuery[str | None] = None,
) -> dict[str, str]:
    return await send_notification(email, background_tasks, query, q)


def make_litestar(container: Container) -> Any:
    handlers = [
        litestar.post("/send-notification/{email:str}", status_code=200)(container.inject(litestar_notification)),
        litestar.get("/notify")(container.inject(litestar_notify)),
        litestar.get("/slow")(container.inject(slow)),
        litestar.get("/fail")(container.inject(fail)),
        litestar.get("/missing")(container.inject(missing)),
    ]
    app = litestar.Litestar(route_handlers=handlers, logging_config=None)
    return ScopeMiddleware(app, container=container)  # outside Litestar, so it sees the lifespan too


def make_raw(container: Container) -> Any:
    notify = container.inject(send_notification)
    endpoints = {
        "/slow": container.inject(slow),
        "/fail": container.inject(fail),
        "/missing": container.inject(missing),
    }

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path: str = scope["path"]
        if path.startswith("/send-notification/"):
            query = parse_qs(scope["query_string"].decode())
            body = await notify(email=path.rsplit("/", 1)[1], q=query.get("q", [None])[0])
        else:
            body = await endpoints[path]()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": repr(body).encode()})

    return ScopeMiddleware(app, container=container)


FRAMEWORKS = {"starlette": make_starlette, "fastapi": make_fastapi, "litestar": make_litestar, "raw": make_raw}


class Served:
    """A running server and what its container reports."""

    def __init__(self, server: LiveServer, failures: list[tuple[Task, BaseException]]) -> None:
        self.server = server
        self.url = server.url
        self.failures = failures


@pytest.fixture(scope="module", params=list(FRAMEWORKS))
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    """Each framework's app under uvicorn, shared by the tests of this module."""
    failures: list[tuple[Task, BaseException]] = []
    container = Container(on_task_error=lambda task, exc: failures.append((task, exc)))
    with serve(FRAMEWORKS[request.param](container)) as server:
        yield Served(server, failures)


@pytest.fixture(autouse=True)
def clean_journal() -> None:
    """Each test starts with an empty journal."""
    JOURNAL.lines.clear()


def no_asgi_exception(caplog: pytest.LogCaptureFixture) -> bool:
    return not any("Exception in ASGI application" in r.getMessage() for r in caplog.records)


# -- real servers, every framework ---------------------------------------------------------------------------------


def test_seed_tasks_from_every_depth_in_one_flush(served: Served) -> None:
    """The seed endpoint: tasks from the sub-dependency, the dependency and the endpoint run in order."""
    response = httpx.post(f"{served.url}/send-notification/a@example.com", params={"q": "x"})
    assert response.status_code == 200
    assert "Message sent" in response.text
    assert JOURNAL.wait_for("message to a@example.com") == SEED_LINES


def test_client_never_waits_for_a_task(served: Served) -> None:
    """A request whose task sleeps 1 s gets its response long before the task ends."""
    with httpx.Client() as client:
        client.get(f"{served.url}/fail")  # open the connection first, so the timing is the request alone
        started = time.monotonic()
        response = client.get(f"{served.url}/slow")
        latency = time.monotonic() - started
    assert response.status_code == 200
    assert latency < 0.5  # generous: a few milliseconds on an idle machine
    assert "slow done" not in JOURNAL.lines
    JOURNAL.wait_for("slow done")
    assert time.monotonic() - started >= 0.9


def test_failing_task_is_isolated_and_logged(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    """A failing task is logged with the request and traceback, reported to the hook; the next task runs."""
    served.failures.clear()
    caplog.set_level(logging.ERROR)
    response = httpx.get(f"{served.url}/fail")
    assert response.status_code == 200
    JOURNAL.wait_for("after boom")
    (record,) = [r for r in caplog.records if r.name == "di_tasks" and "boom" in r.getMessage()]
    assert "GET /fail" in record.getMessage()
    assert record.exc_info is not None
    assert [(task.name, str(exc)) for task, exc in served.failures] == [(f"{__name__}.boom", "the task failed")]
    assert no_asgi_exception(caplog)


def test_missing_value_gives_the_frameworks_error_and_runs_no_task(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """A dependency's missing value fails before any dependency runs: the framework's 500, no task added."""
    caplog.set_level(logging.WARNING)
    response = httpx.get(f"{served.url}/missing")
    assert response.status_code == 500
    assert "must not run" not in JOURNAL.lines
    assert not [r for r in caplog.records if r.name == "di_tasks" and "not run" in r.getMessage()]


@pytest.mark.parametrize(("framework", "status"), [("fastapi", 422), ("litestar", 400)])
def test_missing_framework_value_is_the_frameworks_validation_error(framework: str, status: int) -> None:
    """A request without the endpoint's required ``email``: the framework's own validation error, no task."""
    with serve(FRAMEWORKS[framework](Container())) as server:
        response = httpx.get(f"{server.url}/notify", params={"q": "x"})
        ok = httpx.get(f"{server.url}/notify", params={"q": "x", "email": "a@example.com"})
    assert response.status_code == status
    assert ok.status_code == 200
    assert JOURNAL.lines == SEED_LINES  # only the valid request's tasks (the server drained them at stop)


# -- real servers: Starlette-specific behaviour -----------------------------------------------------------------


@pytest.fixture(scope="module")
def starlette_server() -> Iterator[LiveServer]:
    """The Starlette app under uvicorn."""
    with serve(make_starlette(Container())) as server:
        yield server


def test_streaming_response_tasks_run_after_the_last_chunk(starlette_server: LiveServer) -> None:
    """A streaming response is received whole; its tasks run after the stream ended."""
    response = httpx.get(f"{starlette_server.url}/stream")
    assert response.text == "chunk 0\nchunk 1\nchunk 2\n"
    assert JOURNAL.wait_for("stream task") == ["stream end", "stream task"]


def test_websocket_connection_has_a_scope(starlette_server: LiveServer) -> None:
    """A WebSocket endpoint gets a scope per connection; its tasks run after the connection closed."""
    with connect(f"ws://127.0.0.1:{starlette_server.port}/ws", open_timeout=5, close_timeout=5) as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "echo hi"
    assert JOURNAL.wait_for("ws task") == ["ws task"]


def test_framework_background_tasks_run_too(starlette_server: LiveServer) -> None:
    """Starlette's ``Response(background=...)`` and di_tasks' tasks both run."""
    assert httpx.get(f"{starlette_server.url}/alongside").text == "ok"
    assert JOURNAL.wait_for("di_tasks task") == ["framework task", "di_tasks task"]


def test_fastapi_background_tasks_run_too() -> None:
    """FastAPI's injected ``BackgroundTasks`` and di_tasks' tasks both run."""
    with serve(make_fastapi(Container())) as server:
        assert httpx.get(f"{server.url}/alongside").json() == "ok"
        assert JOURNAL.wait_for("di_tasks task") == ["framework task", "di_tasks task"]


def test_sync_endpoint_sees_request_by_type(starlette_server: LiveServer) -> None:
    """A sync endpoint runs in a worker thread; a sub-dependency gets its Request by type."""
    response = httpx.get(f"{starlette_server.url}/sync", headers={"user-agent": "probe/1"})
    assert response.text == "probe/1"
    assert JOURNAL.wait_for("sync task for probe/1") == ["sync task for probe/1"]


# -- real servers: shutdown ---------------------------------------------------------------------------------------


async def app_resource() -> AsyncIterator[str]:
    JOURNAL.write("app resource open")
    yield "resource"
    JOURNAL.write("app resource closed")


async def session() -> AsyncIterator[str]:
    try:
        yield "session"
    finally:
        JOURNAL.write("session closed")


async def long_task(seconds: float) -> None:
    JOURNAL.write("long task started")
    await anyio.sleep(seconds)
    JOURNAL.write("long task done")


def make_shutdown_app(container: Container, seconds: float) -> Any:
    @container.inject
    async def work(
        request: Request,
        background_tasks: BackgroundTasks,
        resource: Annotated[str, Depends(app_resource, scope="app")],
        db: Annotated[str, Depends(session)],
    ) -> PlainTextResponse:
        background_tasks.add_task(write_log, "first task")
        background_tasks.add_task(long_task, seconds)
        background_tasks.add_task(write_log, "second task")
        return PlainTextResponse(resource)

    return Starlette(routes=[Route("/work", work)])


def test_shutdown_drains_running_tasks_then_closes_the_container() -> None:
    """Shutdown waits for a running task (within the timeout), then tears down and closes the container."""
    container = Container()
    server = LiveServer(ScopeMiddleware(make_shutdown_app(container, 0.3), container=container, shutdown_timeout=5))
    server.start()
    try:
        assert httpx.get(f"{server.url}/work").text == "resource"
        JOURNAL.wait_for("long task started")
    finally:
        took = server.stop()
    assert took < 5
    assert JOURNAL.lines == [
        "app resource open",
        "first task",
        "long task started",
        "long task done",
        "second task",
        "session closed",
        "app resource closed",
    ]


def test_shutdown_cancels_and_logs_tasks_past_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    """Past the timeout, shutdown cancels the running task and logs every task it cancelled by name."""
    caplog.set_level(logging.WARNING)
    container = Container()
    server = LiveServer(ScopeMiddleware(make_shutdown_app(container, 30), container=container, shutdown_timeout=0.2))
    server.start()
    try:
        assert httpx.get(f"{server.url}/work").status_code == 200
        JOURNAL.wait_for("long task started")
    finally:
        took = server.stop()
    assert took < 5
    assert JOURNAL.lines == [
        "app resource open",
        "first task",
        "long task started",
        "session closed",
        "app resource closed",
    ]
    messages = [r.getMessage() for r in caplog.records if r.name == "di_tasks"]
    cancelled = [m for m in messages if m.startswith("shutdown: background task")]
    assert len(cancelled) == 2
    assert "long_task (GET /work)" in cancelled[0]
    assert "write_log (GET /work)" in cancelled[1]
    assert no_asgi_exception(caplog)


FINISHED: list[float] = []


def sleepy_sync_task(seconds: float) -> None:
    """A sync task that blocks its worker thread (a thread cannot be interrupted)."""
    time.sleep(seconds)
    FINISHED.append(time.time())


def sleepy_sync_task_with_a_dependency(seconds: float, who: Annotated[str, Depends(lambda: "someone")]) -> None:
    """The same through a task with its own dependencies (its body runs in a worker thread of the container)."""
    sleepy_sync_task(seconds)


@pytest.mark.parametrize("task", [sleepy_sync_task, sleepy_sync_task_with_a_dependency])
def test_shutdown_logs_a_sync_task_it_cannot_interrupt_at_the_timeout(
    caplog: pytest.LogCaptureFixture, task: Callable[..., None]
) -> None:
    """At the shutdown timeout, a sync task still in its thread is logged at WARNING by name and request, then
    waited for (its resources are torn down after it)."""
    caplog.set_level(logging.WARNING)
    FINISHED.clear()
    container = Container()

    @container.inject
    async def work(request: Request, background_tasks: BackgroundTasks) -> PlainTextResponse:
        background_tasks.add_task(task, 1.0)
        return PlainTextResponse("ok")

    app = ScopeMiddleware(Starlette(routes=[Route("/work", work)]), container=container, shutdown_timeout=0.2)
    server = LiveServer(app)
    server.start()
    try:
        assert httpx.get(f"{server.url}/work").text == "ok"
        time.sleep(0.1)  # the task is in its thread
    finally:
        took = server.stop()
    assert FINISHED, "shutdown waited for the thread"
    assert 0.8 < took < 5
    warned = [r for r in caplog.records if r.name == "di_tasks" and "cannot be interrupted" in r.getMessage()]
    assert len(warned) == 1
    assert warned[0].levelno == logging.WARNING
    assert f"{task.__qualname__} (GET /work) still runs in a worker thread after 0.2s" in warned[0].getMessage()
    assert warned[0].created < FINISHED[0]  # said at the timeout, not after the wait
    assert no_asgi_exception(caplog)


def test_without_server_lifespan_tasks_run_inline() -> None:
    """With lifespan off, the scope exits inside the request's ASGI call: the tasks still run."""
    container = Container()
    with serve(make_raw(container), lifespan="off") as server:
        response = httpx.post(f"{server.url}/send-notification/a@example.com", params={"q": "x"})
        assert response.status_code == 200
        assert JOURNAL.wait_for("message to a@example.com") == SEED_LINES


# -- ASGI-level harnesses, on asyncio and trio ---------------------------------------------------------------------


@asynccontextmanager
async def lifespan(app: Any) -> AsyncGenerator[list[Message]]:
    """Run ``app``'s lifespan: startup before the block, shutdown after it; yields the messages it sent."""
    to_app, app_inbox = anyio.create_memory_object_stream[dict[str, Any]](10)
    sent: list[Message] = []
    got = anyio.Event()

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == "lifespan.startup.complete":
            got.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(app, {"type": "lifespan", "asgi": {"version": "3.0"}}, app_inbox.receive, send)
        await to_app.send({"type": "lifespan.startup"})
        with anyio.fail_after(5):
            await got.wait()
        yield sent
        await to_app.send({"type": "lifespan.shutdown"})
    to_app.close()
    app_inbox.close()


def lifespan_app(inner: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a plain HTTP app so it answers lifespan messages."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await inner(scope, receive, send)

    return app


def http_scope(path: str = "/", method: str = "GET") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": [], "query_string": b""}


async def no_receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


pytestmark_anyio = pytest.mark.anyio


@pytestmark_anyio
async def test_tasks_start_after_the_last_body_chunk_and_the_call_returns_first() -> None:
    """The ASGI call returns before the task runs; the task starts after the final body message was sent."""
    container = Container()
    events: list[str] = []
    release = anyio.Event()
    finished = anyio.Event()

    async def task() -> None:
        events.append("task start")
        await release.wait()
        events.append("task end")
        finished.set()

    @container.inject
    async def endpoint(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(task)

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await endpoint()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.body", "body": b"b"})

    async def send(message: Message) -> None:
        await anyio.sleep(0.01)  # a slow client: the middleware must not start tasks early
        events.append(f"sent {message['type']} {message.get('more_body', False)}")

    middleware = ScopeMiddleware(lifespan_app(inner), container=container)
    async with lifespan(middleware) as messages:
        await middleware(http_scope(), no_receive, send)
        events.append("call returned")
        release.set()
        with anyio.fail_after(5):
            await finished.wait()
    assert events[:4] == [
        "sent http.response.start False",
        "sent http.response.body True",
        "sent http.response.body False",
        "call returned",
    ]
    assert events[4:] == ["task start", "task end"]
    assert [m["type"] for m in messages] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


@pytestmark_anyio
async def test_past_max_pending_exits_the_request_waits_for_its_own_tasks() -> None:
    """Backpressure: with one exit already pending, the next request's ASGI call runs its tasks before returning."""
    container = Container()
    events: list[str] = []
    release = anyio.Event()

    async def slow(label: str) -> None:
        await release.wait()
        events.append(label)

    @container.inject
    async def endpoint(background_tasks: BackgroundTasks, which: str) -> None:
        if which == "first":
            background_tasks.add_task(slow, "slow task done")
        else:
            background_tasks.add_task(events.append, f"{which} task done")

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await endpoint(which=scope["path"].strip("/"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = ScopeMiddleware(lifespan_app(inner), container=container, max_pending_exits=1)
    async with lifespan(middleware):
        await middleware(http_scope("/first"), no_receive, _discard)  # its exit waits in the task group
        await middleware(http_scope("/second"), no_receive, _discard)  # over the cap: exits inline
        events.append("second call returned")
        release.set()
    assert events == ["second task done", "second call returned", "slow task done"]
    with pytest.raises(ValueError, match=r"max_pending_exits=...\) must be at least 1, got 0"):
        ScopeMiddleware(inner, container=container, max_pending_exits=0)


@pytestmark_anyio
async def test_app_error_skips_tasks_tears_down_and_propagates(caplog: pytest.LogCaptureFixture) -> None:
    """If the app raises, pending tasks are not run (logged), teardown sees the error, the error propagates."""
    container = Container()
    ran: list[str] = []

    async def resource() -> AsyncIterator[str]:
        try:
            yield "r"
        except ValueError:
            ran.append("teardown saw the error")
            raise

    @container.inject
    async def endpoint(background_tasks: BackgroundTasks, r: Annotated[str, Depends(resource)]) -> None:
        background_tasks.add_task(ran.append, "task")
        raise ValueError("endpoint failed")

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await endpoint()

    middleware = ScopeMiddleware(inner, container=container)
    with pytest.raises(ValueError, match="endpoint failed"):
        await middleware(http_scope("/boom", "POST"), no_receive, _discard)
    assert ran == ["teardown saw the error"]
    assert any("not run because the scope's body raised ValueError" in r.getMessage() for r in caplog.records)


async def _discard(message: Message) -> None:
    pass


@pytestmark_anyio
async def test_tasks_see_context_from_middleware_and_async_endpoint() -> None:
    """Tasks run in a copy of the request's context: variables set by middleware and endpoint are visible."""
    container = Container()
    seen: list[tuple[str, str]] = []

    def task() -> None:
        seen.append((REQUEST_VAR.get(), ENDPOINT_VAR.get()))

    @container.inject
    async def endpoint(background_tasks: BackgroundTasks) -> None:
        ENDPOINT_VAR.set("from endpoint")
        background_tasks.add_task(task)

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await endpoint()

    middleware = ScopeMiddleware(lifespan_app(inner), container=container)

    async def outer(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            REQUEST_VAR.set("from middleware")
        await middleware(scope, receive, send)

    async with lifespan(outer):
        await outer(http_scope(), no_receive, _discard)
    assert seen == [("from middleware", "from endpoint")]


@pytestmark_anyio
async def test_other_scope_types_pass_through() -> None:
    """A scope type other than http, websocket and lifespan reaches the app untouched, with no scope opened."""
    calls: list[Any] = []

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        from di_tasks._scope import current_scope

        calls.append((scope, receive, send, current_scope.get()))

    scope = {"type": "custom"}
    await ScopeMiddleware(inner, container=Container())(scope, no_receive, _discard)
    assert calls == [(scope, no_receive, _discard, None)]


@pytestmark_anyio
async def test_httpx_transport_without_lifespan_runs_tasks_inline() -> None:
    """httpx.ASGITransport sends no lifespan: the scope exits inline, before the request returns."""
    container = Container()
    app = make_raw(container)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.post("/send-notification/a@example.com", params={"q": "x"})
    assert response.status_code == 200
    assert JOURNAL.lines == SEED_LINES


@pytestmark_anyio
async def test_teardown_error_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """A request-scoped teardown failing after the response is logged with the request, not raised."""
    container = Container()

    async def broken() -> AsyncIterator[str]:
        yield "x"
        raise OSError("cannot close")

    @container.inject
    async def endpoint(x: Annotated[str, Depends(broken)]) -> None:
        pass

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await endpoint()

    await ScopeMiddleware(inner, container=container)(http_scope("/t"), no_receive, _discard)
    (record,) = [r for r in caplog.records if r.name == "di_tasks"]
    assert record.getMessage() == "tearing down the request scope of GET /t failed"
    assert record.exc_info is not None


@pytestmark_anyio
async def test_container_close_failure_fails_shutdown(caplog: pytest.LogCaptureFixture) -> None:
    """An app-scoped teardown failing at shutdown is logged and reported as lifespan.shutdown.failed."""
    container = Container()

    async def app_dep() -> AsyncIterator[str]:
        yield "x"
        raise OSError("pool would not close")

    @container.inject
    async def endpoint(x: Annotated[str, Depends(app_dep, scope="app")]) -> None:
        pass

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await endpoint()

    middleware = ScopeMiddleware(lifespan_app(inner), container=container)
    async with lifespan(middleware) as messages:
        await middleware(http_scope(), no_receive, _discard)
    assert messages[-1]["type"] == "lifespan.shutdown.failed"
    assert "pool would not close" in messages[-1]["message"]
    assert any("closing the di_tasks container failed" in r.getMessage() for r in caplog.records)


@pytestmark_anyio
async def test_app_without_lifespan_support() -> None:
    """An app that rejects lifespan: the error goes to the server, the container is closed, requests flush inline."""
    container = Container()
    ran: list[str] = []

    @container.inject
    async def endpoint(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(ran.append, "task")

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await receive()
            raise RuntimeError("only http")
        await endpoint()

    middleware = ScopeMiddleware(inner, container=container)

    async def startup() -> Message:
        return {"type": "lifespan.startup"}

    with pytest.raises(RuntimeError, match="only http"):
        await middleware({"type": "lifespan"}, startup, _discard)
    assert not container.app.is_open
    await middleware(http_scope(), no_receive, _discard)
    assert ran == ["task"]


def test_shutdown_timeout_must_not_be_negative() -> None:
    """A negative shutdown timeout is rejected."""
    with pytest.raises(ValueError, match=r"shutdown_timeout=...\) must be 0 or more seconds, got -1"):
        ScopeMiddleware(make_raw(Container()), container=Container(), shutdown_timeout=-1)


@pytestmark_anyio
async def test_startup_failure_closes_the_container() -> None:
    """If the app's own startup fails, the container entered for it is closed again."""
    container = Container()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    sent: list[Message] = []

    async def startup() -> Message:
        return {"type": "lifespan.startup"}

    async def record(message: Message) -> None:
        sent.append(message)
        assert not container.app.is_open

    await ScopeMiddleware(app, container=container)({"type": "lifespan"}, startup, record)
    assert sent == [{"type": "lifespan.startup.failed", "message": "no database"}]


@pytestmark_anyio
async def test_error_answered_by_the_framework_still_skips_tasks(caplog: pytest.LogCaptureFixture) -> None:
    """An endpoint raising HTTPException gets the framework's 404, and its pending tasks are not run (logged)."""
    container = Container()
    app = fastapi.FastAPI()

    @app.get("/item")
    @container.inject
    async def item(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(write_log, "must not run")
        raise fastapi.HTTPException(404, "no such item")

    transport = httpx.ASGITransport(app=ScopeMiddleware(app, container=container))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/item")
    assert response.status_code == 404
    assert JOURNAL.lines == []
    assert any("not run because the scope's body raised HTTPException" in r.getMessage() for r in caplog.records)


@pytestmark_anyio
async def test_shutdown_cancels_a_flush_past_the_timeout_on_each_backend(caplog: pytest.LogCaptureFixture) -> None:
    """Past ``shutdown_timeout``: the running task is cancelled, the next one marked, teardown still runs."""
    container = Container()
    events: list[str] = []

    async def resource() -> AsyncIterator[str]:
        try:
            yield "r"
        finally:
            events.append("torn down")

    async def forever() -> None:
        await anyio.sleep_forever()

    @container.inject
    async def endpoint(background_tasks: BackgroundTasks, r: Annotated[str, Depends(resource)]) -> None:
        background_tasks.add_task(forever)
        background_tasks.add_task(events.append, "never")

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await endpoint()

    middleware = ScopeMiddleware(lifespan_app(inner), container=container, shutdown_timeout=0.05)
    with anyio.fail_after(5):
        async with lifespan(middleware):
            await middleware(http_scope("/x"), no_receive, _discard)
    assert events == ["torn down"]
    messages = [r.getMessage() for r in caplog.records if r.name == "di_tasks"]
    assert [m for m in messages if m.startswith("shutdown:")] == [
        f"shutdown: background task {forever.__module__}.{forever.__qualname__} (GET /x) was cancelled after waiting "
        "0.05s for it to finish",
        "shutdown: background task list.append (GET /x) was cancelled before it started",
    ]
    assert (
        "1 background task(s) not run because the scope was cancelled while exiting: list.append (GET /x)" in messages
    )
