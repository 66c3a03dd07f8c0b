"""What a task raises is that task's business: its own cancellation error, a BaseException, or a broken hook
fail that task only; the other tasks still run or are logged by name, every teardown runs, the app lives on."""

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Annotated

import anyio
import anyio.lowlevel
import httpx
import pytest
from _servers import Journal, serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from di_tasks import (
    BackgroundTaskError,
    BackgroundTasks,
    Container,
    DependencyCycleError,
    Depends,
    InProcessFlusher,
    TaskState,
)
from di_tasks.asgi import ScopeMiddleware

pytestmark = pytest.mark.anyio


class Halt(BaseException):  # named like SystemExit: a BaseException a program raises to stop
    """A BaseException that is not a cancellation (as SystemExit or KeyboardInterrupt)."""


async def cancelled_by_someone_else() -> None:
    """Await a future another task cancelled: CancelledError raised in this task, with no cancel scope of ours."""
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    await future


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("concurrency", [1, 4])
async def test_a_tasks_own_cancelled_error_fails_that_task_only(
    concurrency: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A CancelledError the task raised itself fails it; the next tasks run; Container.call reports the failure."""
    ran: list[int] = []

    async def after(n: int) -> None:
        await anyio.lowlevel.checkpoint()
        ran.append(n)

    async def endpoint(tasks: BackgroundTasks) -> str:
        tasks.add_task(cancelled_by_someone_else)
        for n in range(3):
            tasks.add_task(after, n)
        return "ok"

    container = Container(flusher=InProcessFlusher(concurrency))
    with pytest.raises(BackgroundTaskError, match="1 background task") as info:
        await container.call(endpoint)
    assert sorted(ran) == [0, 1, 2]
    (task,) = info.value.tasks
    assert task.state is TaskState.FAILED
    assert isinstance(task.exception, asyncio.CancelledError)
    assert "raised CancelledError" in str(info.value.exceptions[0])
    assert "cancelled_by_someone_else failed" in caplog.text


async def test_a_cancellation_from_outside_still_cancels() -> None:
    """A deadline around the flush is a real cancellation: the running task is cancelled, the call ends on time."""
    log: list[str] = []

    async def slow() -> None:
        await anyio.sleep(5)
        log.append("slow done")

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(slow)

    with anyio.move_on_after(0.1) as scope:
        await Container().call(endpoint)
    assert scope.cancelled_caught
    assert log == []


def test_under_uvicorn_a_tasks_own_cancelled_error_leaves_the_app_alive() -> None:
    """Under uvicorn, such a task fails alone: later requests still get app-scoped values, other tasks run,
    and shutdown completes."""
    journal = Journal()
    container = Container()

    def pool() -> Iterator[str]:
        yield "pool"
        journal.write("pool closed")

    async def note(line: str) -> None:
        journal.write(line)

    @container.inject
    async def endpoint(
        request: Request, tasks: BackgroundTasks, p: Annotated[str, Depends(pool, scope="app")]
    ) -> PlainTextResponse:
        n = request.query_params["n"]
        if n == "0":
            tasks.add_task(cancelled_by_someone_else)
        tasks.add_task(note, f"task {n}")
        return PlainTextResponse(p)

    app = ScopeMiddleware(Starlette(routes=[Route("/", endpoint)]), container=container)
    with serve(app) as server:
        responses = [httpx.get(server.url, params={"n": n}) for n in range(4)]
        for n in range(4):
            journal.wait_for(f"task {n}")
        assert [r.text for r in responses] == ["pool"] * 4
        assert "pool closed" not in journal.lines
        server.stop()
    assert journal.lines[-1] == "pool closed"


async def test_a_base_exception_from_a_task_lets_the_exit_finish_first(caplog: pytest.LogCaptureFixture) -> None:
    """A task raising a BaseException: the tasks after it are logged as not run, the teardown runs, and the
    BaseException propagates afterwards."""
    log: list[str] = []

    def session() -> Iterator[str]:
        yield "session"
        log.append("session closed")

    async def halts() -> None:
        raise Halt

    async def later() -> None:
        log.append("later ran")

    async def endpoint(tasks: BackgroundTasks, s: Annotated[str, Depends(session)]) -> None:
        tasks.add_task(halts)
        tasks.add_task(later)

    with caplog.at_level(logging.WARNING, logger="di_tasks"), pytest.raises(Halt):
        await Container().call(endpoint)
    assert log == ["session closed"]
    assert "halts raised Halt" in caplog.text
    assert "1 background task(s) not run because Halt stopped the flush" in caplog.text
    assert "later" in caplog.text.split("stopped the flush")[1]


async def test_a_base_exception_from_the_error_hook_lets_the_exit_finish_first() -> None:
    """An on_task_error hook raising SystemExit: the other tasks are logged, teardown runs, SystemExit propagates."""
    log: list[str] = []

    def hook(task: object, exc: BaseException) -> None:
        raise SystemExit(3)

    def session() -> Iterator[str]:
        yield "session"
        log.append("session closed")

    async def fails() -> None:
        raise ValueError("boom")

    async def later() -> None:
        log.append("later ran")

    async def endpoint(tasks: BackgroundTasks, s: Annotated[str, Depends(session)]) -> None:
        tasks.add_task(fails)
        tasks.add_task(later)

    async with Container(on_task_error=hook).scope() as scope:
        await scope.call(endpoint)
        tasks = list(scope.tasks)
        with pytest.raises(SystemExit):
            await scope.close()
    assert log == ["session closed"]
    assert [t.state for t in tasks] == [TaskState.FAILED, TaskState.SKIPPED]


async def test_a_helper_error_the_endpoint_caught_does_not_skip_the_tasks() -> None:
    """A plain Starlette endpoint catches an injected helper's KeyError and answers 200: the tasks run."""
    journal = Journal()
    container = Container()

    async def note(line: str) -> None:
        journal.write(line)

    @container.inject
    async def remember(tasks: BackgroundTasks) -> None:
        tasks.add_task(note, "task ran")

    @container.inject
    async def lookup(key: str) -> str:
        raise KeyError(key)

    async def endpoint(request: Request) -> PlainTextResponse:
        await remember()
        try:
            await lookup(key="missing")
        except KeyError:
            return PlainTextResponse("fallback")
        return PlainTextResponse("found")  # pragma: no cover  # the helper always raises

    async def failing(request: Request) -> PlainTextResponse:
        await remember()
        await lookup(key="missing")
        return PlainTextResponse("unreachable")  # pragma: no cover

    app = ScopeMiddleware(Starlette(routes=[Route("/", endpoint), Route("/fails", failing)]), container=container)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/")).text == "fallback"
        assert journal.lines == ["task ran"]
        assert (await client.get("/fails")).status_code == 500
    assert journal.lines == ["task ran"]  # the endpoint that raised: its task was skipped


def test_every_run_makes_its_scope_current_for_injected_helpers() -> None:
    """Called many times, Container.run keeps an injected helper in the caller's scope: its tasks run after the
    endpoint returned, on every call (the plan is compiled from the second call on)."""
    container = Container()
    events: list[list[str]] = []
    log: list[str] = []

    async def note() -> None:
        log.append("task ran")

    @container.inject
    async def audit(tasks: BackgroundTasks) -> None:
        tasks.add_task(note)

    async def checkout() -> str:
        await audit()
        log.append("checkout returned")
        return "ok"

    for _ in range(5):
        log.clear()
        assert container.run(checkout) == "ok"
        events.append(list(log))
    assert events == [["checkout returned", "task ran"]] * 5


async def test_an_app_value_whose_creation_reaches_itself_is_a_cycle() -> None:
    """An app-scoped dependency whose creation calls the container and needs itself again: DependencyCycleError
    with the path, instead of waiting forever."""
    container = Container()

    async def pool() -> str:
        return await container.call(warm_up)

    async def warm_up(p: Annotated[str, Depends(pool, scope="app")]) -> str:
        return p  # pragma: no cover  # never reached: its own dependency is being created

    async with container:
        with anyio.fail_after(3), pytest.raises(DependencyCycleError, match=r"pool is app-scoped and is needed again"):
            await container.call(warm_up)
        # nothing is left half-made: the next try fails the same way, at once
        with anyio.fail_after(3), pytest.raises(DependencyCycleError, match="needed again while it is being created"):
            await container.call(warm_up)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_timed_out_sync_task_keeps_its_session_until_its_thread_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A sync task with a dependency, past its timeout: its session is closed only once its thread returned."""
    import threading

    events: list[str] = []
    release = threading.Event()
    returned = threading.Event()

    class Session:
        closed = False

    def session() -> Iterator[Session]:
        s = Session()
        try:
            yield s
        finally:  # the task was stopped: the teardown sees that error thrown in
            s.closed = True
            events.append("session closed")
            returned.set()

    def slow(report: str, s: Session = Depends(session)) -> None:
        release.wait(5)
        events.append(f"closed={s.closed} inside the task")

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(slow, "r")

    container = Container(task_timeout=0.1)
    with pytest.raises(BackgroundTaskError, match="1 background task"):
        await container.call(endpoint)
    assert events == []  # the thread is still running: its session is still open
    release.set()
    await anyio.to_thread.run_sync(returned.wait, 5)
    assert events == ["closed=False inside the task", "session closed"]


def test_a_sync_task_can_run_an_event_loop_of_its_own() -> None:
    """Inside a sync task's worker thread no event loop runs, so Container.run works there (as in
    anyio.to_thread.run_sync)."""
    container = Container()
    results: list[int] = []

    async def inner() -> int:
        return 42

    def sync_task() -> None:
        results.append(Container().run(inner))

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(sync_task)

    container.run(endpoint)
    assert results == [42]


def test_an_async_or_uncallable_error_hook_is_refused() -> None:
    """on_task_error must be a plain function: an async one (never awaited) and a non-callable are refused."""

    async def hook(task: object, exc: BaseException) -> None: ...

    with pytest.raises(TypeError, match=r"takes a plain function, got the async .*hook"):
        Container(on_task_error=hook)
    with pytest.raises(TypeError, match="takes a function \\(task, exc\\) -> None, got 'not a function'"):
        Container(on_task_error="not a function")  # type: ignore[arg-type]  # the mistake under test


async def test_a_cancellation_during_a_teardown_lets_the_later_teardowns_run(caplog: pytest.LogCaptureFixture) -> None:
    """Cancelled while a request-scoped teardown awaits: every teardown after it still runs, one WARNING names the
    one that was cut, and the cancellation propagates."""
    log: list[str] = []

    async def pool_connection() -> AsyncIterator[str]:
        yield "connection"
        log.append("connection returned to the pool")

    async def transaction(c: Annotated[str, Depends(pool_connection)]) -> AsyncIterator[str]:
        yield "tx"
        log.append("transaction committed")

    async def audit(t: Annotated[str, Depends(transaction)]) -> AsyncIterator[None]:
        yield
        await anyio.sleep(5)  # the cancellation arrives here
        log.append("audit flushed")  # pragma: no cover  # cut by the cancellation

    async def endpoint(a: Annotated[None, Depends(audit)]) -> str:
        return "ok"

    with caplog.at_level(logging.WARNING, logger="di_tasks"), anyio.move_on_after(0.2) as deadline:
        await Container().call(endpoint)
    assert deadline.cancelled_caught
    assert log == ["transaction committed", "connection returned to the pool"]
    assert "the teardown of" in caplog.text
    assert "audit was cancelled; 2 teardown(s) after it ran shielded" in caplog.text


async def test_a_cancelled_body_runs_no_task_even_with_run_tasks_on_error(caplog: pytest.LogCaptureFixture) -> None:
    """A body cancelled by a deadline: no task is run (a stuck one would hang the caller), each is logged as
    cancelled, teardowns run, and the caller gets control back at its deadline."""
    log: list[str] = []

    def session() -> Iterator[str]:
        try:
            yield "s"
        finally:  # the body's cancellation is thrown in at the yield
            log.append("session closed")

    async def stuck() -> None:
        await anyio.sleep(3)  # pragma: no cover  # never started

    async def endpoint(tasks: BackgroundTasks, s: Annotated[str, Depends(session)]) -> None:
        tasks.add_task(stuck)
        await anyio.sleep(5)

    with caplog.at_level(logging.WARNING, logger="di_tasks"):
        start = anyio.current_time()
        with anyio.move_on_after(0.1):
            await Container(run_tasks_on_error=True).call(endpoint)
        assert anyio.current_time() - start < 1
    assert log == ["session closed"]
    assert "1 background task(s) not run because the scope's body was cancelled" in caplog.text
