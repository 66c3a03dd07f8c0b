"""Faults: failing, hanging, cancelled and blocking tasks, failing teardowns, failing bodies; each has its
documented outcome, no other task is affected, and every loss is logged by task name."""

import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import anyio
import pytest
from _servers import Journal, LiveServer, serve

from di_tasks import BackgroundTaskError, BackgroundTasks, Container, Depends, Task, TaskState
from di_tasks.asgi import ScopeMiddleware

pytestmark = pytest.mark.anyio


class BoomError(Exception):
    """The failure the tests inject."""


def _logged(caplog: pytest.LogCaptureFixture, level: int) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "di_tasks" and r.levelno == level)


async def ok(log: list[str], name: str) -> None:
    """A task that succeeds."""
    log.append(name)


def sync_ok(log: list[str], name: str) -> None:
    """A sync task that succeeds (runs in a worker thread)."""
    log.append(name)


async def fails() -> None:
    """A task that raises."""
    raise BoomError("task failed on purpose")


async def hangs() -> None:
    """A task that never finishes on its own."""
    await anyio.sleep_forever()


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_a_failing_task_is_logged_and_the_others_run(
    anyio_backend: str, caplog: pytest.LogCaptureFixture, concurrency: int
) -> None:
    """A raising task is FAILED, logged at ERROR by name with its traceback, reported to the hook; the rest run."""
    log: list[str] = []
    hooked: list[tuple[str, BaseException]] = []
    container = Container(task_concurrency=concurrency, on_task_error=lambda t, e: hooked.append((t.name, e)))
    handles: list[Task] = []

    async def endpoint(tasks: BackgroundTasks) -> str:
        handles.append(tasks.add_task(ok, log, "first"))
        handles.append(tasks.add_task(fails))
        handles.append(tasks.add_task(sync_ok, log, "third"))
        return "response"

    with pytest.raises(BackgroundTaskError, match=r"1 background task\(s\) failed: .*fails") as info:
        await container.call(endpoint)
    assert sorted(log) == ["first", "third"]
    assert [h.state for h in handles] == [TaskState.SUCCEEDED, TaskState.FAILED, TaskState.SUCCEEDED]
    assert [type(e) for e in info.value.exceptions] == [BoomError]
    assert [t.name for t in info.value.tasks] == [handles[1].name]
    assert [name for name, _ in hooked] == [handles[1].name]
    record = next(r for r in caplog.records if r.levelno == logging.ERROR)
    assert "fails" in record.getMessage()
    assert record.exc_info is not None


async def test_a_broken_error_hook_does_not_hide_the_failure(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An on_task_error hook that raises is logged and ignored; the other tasks still run."""
    log: list[str] = []

    def hook(task: Task, exc: BaseException) -> None:
        raise RuntimeError("the hook is broken")

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(fails)
        tasks.add_task(ok, log, "after")

    with pytest.raises(BackgroundTaskError, match="fails"):
        await Container(on_task_error=hook).call(endpoint)
    assert log == ["after"]
    assert "the on_task_error hook raised while reporting background task" in _logged(caplog, logging.ERROR)


async def test_a_task_past_its_timeout_fails_and_the_others_run(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An async task that hangs past its timeout is FAILED with TimeoutError and logged; the next task runs."""
    log: list[str] = []
    handles: list[Task] = []

    async def endpoint(tasks: BackgroundTasks) -> None:
        handles.append(tasks.add_task(hangs))
        handles.append(tasks.add_task(ok, log, "next"))

    with pytest.raises(BackgroundTaskError, match="hangs"):
        await Container(task_timeout=0.05).call(endpoint)
    assert handles[0].state is TaskState.FAILED
    assert isinstance(handles[0].exception, TimeoutError)
    assert handles[1].state is TaskState.SUCCEEDED
    assert log == ["next"]
    assert "hangs timed out after 0.05s" in _logged(caplog, logging.ERROR)


async def test_a_per_task_timeout_overrides_the_default(anyio_backend: str) -> None:
    """Setting Task.timeout on one handle limits that task only."""
    handles: list[Task] = []

    async def endpoint(tasks: BackgroundTasks) -> None:
        handle = tasks.add_task(hangs)
        handle.timeout = 0.05
        handles.append(handle)

    with pytest.raises(BackgroundTaskError, match="hangs"):
        await Container().call(endpoint)
    assert isinstance(handles[0].exception, TimeoutError)


async def test_sync_code_that_never_yields_is_abandoned_at_its_timeout(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A sync task stuck in its worker thread fails with TimeoutError at its timeout; the next task runs meanwhile."""
    release = threading.Event()
    finished = threading.Event()
    log: list[str] = []

    def stuck() -> None:
        release.wait(30)  # blocks its worker thread; no cancellation can reach it
        finished.set()

    handles: list[Task] = []

    async def endpoint(tasks: BackgroundTasks) -> None:
        handles.append(tasks.add_task(stuck))
        handles.append(tasks.add_task(sync_ok, log, "next"))

    try:
        with pytest.raises(BackgroundTaskError, match="stuck"):
            await Container(task_timeout=0.05).call(endpoint)
        assert handles[0].state is TaskState.FAILED
        assert isinstance(handles[0].exception, TimeoutError)
        assert not finished.is_set()  # abandoned, still running in its thread
        assert log == ["next"]
        assert "stuck timed out" in _logged(caplog, logging.ERROR)
    finally:
        release.set()
    await anyio.to_thread.run_sync(finished.wait, 30)


async def test_an_async_task_that_blocks_the_loop_finishes_late(anyio_backend: str) -> None:
    """An async task running sync code that never yields cannot be interrupted by its timeout: it completes, late,
    and the tasks after it still run (the fix is to make it a sync function, which runs in a thread)."""
    log: list[str] = []
    handles: list[Task] = []

    async def blocks() -> str:
        time.sleep(0.1)  # noqa: ASYNC251  # the fault under test: sync code that never yields
        return "done"

    async def endpoint(tasks: BackgroundTasks) -> None:
        handles.append(tasks.add_task(blocks))
        handles.append(tasks.add_task(ok, log, "next"))

    await Container(task_timeout=0.02).call(endpoint)
    assert handles[0].state is TaskState.SUCCEEDED
    assert handles[0].result == "done"
    assert log == ["next"]


async def test_cancelling_a_flush_cancels_and_logs_every_unfinished_task(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Cancelled while flushing: the running task and the queued ones are CANCELLED, logged by name; teardown runs."""
    log: list[str] = []
    started = anyio.Event()
    handles: list[Task] = []

    async def running() -> None:
        started.set()
        await anyio.sleep_forever()

    def resource() -> Iterator[str]:
        try:
            yield "db"
        finally:  # the cancellation is thrown in at the yield
            log.append("resource closed")

    async def endpoint(tasks: BackgroundTasks, db: Annotated[str, Depends(resource)]) -> None:
        handles.append(tasks.add_task(ok, log, "before"))
        handles.append(tasks.add_task(running))
        handles.append(tasks.add_task(ok, log, "queued"))

    container = Container()
    async with anyio.create_task_group() as tg:

        async def request() -> None:
            await container.call(endpoint)

        tg.start_soon(request)
        await started.wait()
        tg.cancel_scope.cancel()
    assert [h.state for h in handles] == [TaskState.SUCCEEDED, TaskState.CANCELLED, TaskState.CANCELLED]
    assert log == ["before", "resource closed"]
    warnings = _logged(caplog, logging.WARNING)
    assert "running was cancelled" in warnings
    assert "not run because the scope was cancelled while exiting" in warnings
    assert ".ok" in warnings


async def test_a_body_that_raises_skips_and_logs_its_tasks(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """When the body raises, its pending tasks are SKIPPED and named in a WARNING; the body's error propagates."""
    handles: list[Task] = []

    async def endpoint(tasks: BackgroundTasks) -> None:
        handles.append(tasks.add_task(ok, [], "never"))
        raise BoomError("the body failed")

    with pytest.raises(BoomError, match="the body failed"):
        await Container().call(endpoint)
    assert handles[0].state is TaskState.SKIPPED
    assert "1 background task(s) not run because the scope's body raised BoomError" in _logged(caplog, logging.WARNING)


async def test_run_tasks_on_error_runs_them_anyway(anyio_backend: str) -> None:
    """With run_tasks_on_error=True the tasks of a failed body still run, and the body's error propagates."""
    log: list[str] = []

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(ok, log, "ran")
        raise BoomError("the body failed")

    with pytest.raises(BoomError, match="the body failed"):
        await Container(run_tasks_on_error=True).call(endpoint)
    assert log == ["ran"]


async def test_a_generator_cannot_swallow_the_body_error(anyio_backend: str) -> None:
    """A generator dependency that catches the body's exception and returns still lets it propagate."""
    seen: list[str] = []

    def swallowing() -> Iterator[int]:
        try:
            yield 1
        except BoomError:
            seen.append("saw BoomError")

    async def endpoint(x: Annotated[int, Depends(swallowing)]) -> None:
        raise BoomError("must reach the caller")

    with pytest.raises(BoomError, match="must reach the caller"):
        await Container().call(endpoint)
    assert seen == ["saw BoomError"]


async def test_a_failing_teardown_runs_after_the_tasks_and_the_other_teardowns(anyio_backend: str) -> None:
    """A request-scoped teardown that raises: the tasks already ran, the other generators still close, the error
    reaches the caller."""
    log: list[str] = []

    def outer() -> Iterator[str]:
        try:
            yield "outer"
        except BoomError:  # the earlier teardown's error is passed on to the next ones
            log.append("outer closed after BoomError")
            raise

    async def broken(o: Annotated[str, Depends(outer)]) -> AsyncIterator[str]:
        yield "broken"
        log.append("broken tearing down")
        raise BoomError("teardown failed")

    def inner(b: Annotated[str, Depends(broken)]) -> Iterator[str]:
        yield "inner"
        log.append("inner closed")

    async def endpoint(i: Annotated[str, Depends(inner)], tasks: BackgroundTasks) -> str:
        tasks.add_task(ok, log, "task")
        return i

    with pytest.raises(BoomError, match="teardown failed"):
        await Container().call(endpoint)
    assert log == ["task", "inner closed", "broken tearing down", "outer closed after BoomError"]


async def test_a_failing_call_scoped_teardown_does_not_stop_the_tasks(anyio_backend: str) -> None:
    """A call-scoped teardown that raises fails the call, but tasks already added are handled (skipped, logged)."""
    log: list[str] = []

    def per_call() -> Iterator[int]:
        yield 1
        raise BoomError("call teardown failed")

    async def endpoint(x: Annotated[int, Depends(per_call, scope="call")], tasks: BackgroundTasks) -> None:
        tasks.add_task(ok, log, "task")

    with pytest.raises(BoomError, match="call teardown failed"):
        await Container().call(endpoint)
    assert log == []  # the body's call failed, so its tasks are skipped as documented


async def test_a_failing_app_teardown_still_closes_the_others(anyio_backend: str) -> None:
    """At the app's exit, one app-scoped teardown that raises does not stop the others; its error propagates."""
    log: list[str] = []

    def first() -> Iterator[str]:
        try:
            yield "first"
        finally:
            log.append("first closed")

    async def second() -> AsyncIterator[str]:
        yield "second"
        raise BoomError("app teardown failed")

    async def endpoint(
        a: Annotated[str, Depends(first, scope="app")], b: Annotated[str, Depends(second, scope="app")]
    ) -> str:
        return a + b

    container = Container()
    with pytest.raises(BoomError, match="app teardown failed"):
        async with container:
            assert await container.call(endpoint) == "firstsecond"
    assert log == ["first closed"]


async def test_tasks_added_during_teardown_run_too(anyio_backend: str) -> None:
    """A generator that adds a task while tearing down gets it run after the teardown."""
    log: list[str] = []

    def resource(tasks: BackgroundTasks) -> Iterator[str]:
        yield "db"
        tasks.add_task(ok, log, "added in teardown")
        log.append("closed")

    async def endpoint(db: Annotated[str, Depends(resource)], tasks: BackgroundTasks) -> None:
        tasks.add_task(ok, log, "added in body")

    await Container().call(endpoint)
    assert log == ["added in body", "closed", "added in teardown"]


async def test_a_task_whose_dependency_fails_fails_alone(anyio_backend: str, caplog: pytest.LogCaptureFixture) -> None:
    """A task with a dependency that raises is FAILED and logged; the tasks around it run."""
    log: list[str] = []

    def broken_dependency() -> str:
        raise BoomError("dependency of a task failed")

    async def task_with_dependency(x: Annotated[str, Depends(broken_dependency)]) -> None:
        log.append("never")

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(ok, log, "a")
        tasks.add_task(task_with_dependency)  # type: ignore[call-arg]  # its injected parameter is filled when it runs
        tasks.add_task(ok, log, "b")

    with pytest.raises(BackgroundTaskError, match="task_with_dependency"):
        await Container().call(endpoint)
    assert log == ["a", "b"]
    assert "task_with_dependency failed" in _logged(caplog, logging.ERROR)


async def test_base_exceptions_in_a_task_are_recorded_and_propagate(anyio_backend: str) -> None:
    """A task raising KeyboardInterrupt is recorded as FAILED and the interrupt is not swallowed."""
    handles: list[Task] = []

    async def interrupt() -> None:
        raise KeyboardInterrupt

    async def endpoint(tasks: BackgroundTasks) -> Any:
        handles.append(tasks.add_task(interrupt))

    with pytest.raises(KeyboardInterrupt, match=r"^$"):
        await Container().call(endpoint)
    assert handles[0].state is TaskState.FAILED


# -- ASGI: disconnects and shutdown on a real uvicorn server -------------------------------------------------


class ClientGoneError(Exception):
    """What a streaming app raises when it notices the client left."""


def _raw_app(container: Container, journal: Journal) -> Any:
    """A framework-free ASGI app whose endpoints add tasks through an injected function."""

    @container.inject
    async def add_tasks(label: str, tasks: BackgroundTasks) -> None:
        tasks.add_task(journal.write, f"{label}: task ran")

    async def running_task() -> None:
        journal.write("running started")
        try:
            await anyio.sleep_forever()
        finally:
            journal.write("running stopped")

    @container.inject
    async def add_shutdown_tasks(tasks: BackgroundTasks) -> None:
        tasks.add_task(running_task)
        tasks.add_task(journal.write, "queued ran")

    async def respond(send: Any, body: bytes) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]}
        )
        await send({"type": "http.response.body", "body": body})

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        path = scope["path"]
        await receive()  # the (empty) request body
        if path == "/hold":  # the client leaves while the endpoint is still working
            journal.write("hold started")
            message = await receive()
            journal.write(f"hold saw {message['type']}")
            await add_tasks("hold")
            await respond(send, b"nobody reads this")
        elif path.startswith("/stream"):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await add_tasks(path[1:])
            await send({"type": "http.response.body", "body": b"first chunk", "more_body": True})
            message = await receive()  # the client leaves after the first chunk
            journal.write(f"{path[1:]} saw {message['type']}")
            if path == "/stream-raises":
                raise ClientGoneError("the client left mid-stream")
        elif path == "/shutdown":
            await add_shutdown_tasks()
            await respond(send, b"ok")
        else:
            await add_tasks("ok")
            await respond(send, b"ok")

    return app


def _request(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_client_disconnect_mid_request_still_runs_the_tasks() -> None:
    """A client that leaves while the endpoint works: the endpoint finishes, its tasks run, other requests are fine."""
    journal = Journal()
    container = Container()
    with serve(ScopeMiddleware(_raw_app(container, journal), container=container)) as server:
        sock = _request(server.port, "/hold")
        journal.wait_for("hold started")
        sock.close()
        lines = journal.wait_for("hold: task ran")
        with _request(server.port, "/ok") as other:
            assert b"200 OK" in _read_until(other, b"ok")
        journal.wait_for("ok: task ran")
    assert lines[:3] == ["hold started", "hold saw http.disconnect", "hold: task ran"]


def test_client_disconnect_mid_stream_depends_on_how_the_app_ends(caplog: pytest.LogCaptureFixture) -> None:
    """Mid-stream disconnect: an app that returns has its tasks run; one that raises has them skipped and logged."""
    journal = Journal()
    container = Container()
    with serve(ScopeMiddleware(_raw_app(container, journal), container=container)) as server:
        for path in ("/stream-returns", "/stream-raises"):
            sock = _request(server.port, path)
            assert b"first chunk" in _read_until(sock, b"first chunk")
            sock.close()
            journal.wait_for(f"{path[1:]} saw http.disconnect")
        journal.wait_for("stream-returns: task ran")
        with _request(server.port, "/ok") as other:
            assert b"200 OK" in _read_until(other, b"ok")
        journal.wait_for("ok: task ran")
    assert "stream-raises: task ran" not in journal.lines
    skipped = _logged(caplog, logging.WARNING)
    assert "not run because the scope's body raised ClientGoneError" in skipped
    assert "write" in skipped


def test_shutdown_with_tasks_running_and_queued_cancels_and_logs_each(caplog: pytest.LogCaptureFixture) -> None:
    """Shutdown past its timeout cancels the running task and the queued one, logging each by name and request;
    tasks of other requests that finished are untouched and the container is closed."""
    caplog.set_level(logging.WARNING)
    journal = Journal()
    container = Container()

    def app_resource() -> Iterator[str]:
        try:
            yield "resource"
        finally:
            journal.write("app resource closed")

    @container.inject
    async def open_resource(r: Annotated[str, Depends(app_resource, scope="app")]) -> None:
        journal.write(f"{r} open")

    app = _raw_app(container, journal)

    async def with_resource(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await open_resource()
        await app(scope, receive, send)

    server = LiveServer(ScopeMiddleware(with_resource, container=container, shutdown_timeout=0.2))
    server.start()
    try:
        with _request(server.port, "/ok") as first:
            assert b"200 OK" in _read_until(first, b"ok")
        journal.wait_for("ok: task ran")
        with _request(server.port, "/shutdown") as second:
            assert b"200 OK" in _read_until(second, b"ok")
        journal.wait_for("running started")
    finally:
        took = server.stop()
    assert took < 10
    assert "queued ran" not in journal.lines
    assert journal.lines[-2:] == ["running stopped", "app resource closed"]
    messages = [r.getMessage() for r in caplog.records if r.name == "di_tasks" and r.levelno == logging.WARNING]
    cancelled = [m for m in messages if m.startswith("shutdown: background task")]
    assert any("running_task (GET /shutdown)" in m for m in cancelled)
    assert any("write (GET /shutdown)" in m for m in cancelled)
    assert not any("GET /ok" in m for m in messages)
