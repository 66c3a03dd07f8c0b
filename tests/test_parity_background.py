"""Starlette parity (upstream ``tests/test_background.py``): background tasks of a request, behind Starlette.

An endpoint adds tasks to di_tasks' ``BackgroundTasks``; ``di_tasks.starlette.setup`` runs them after the response:
an async task, a sync task, several tasks with their arguments in order, a task that raises (di_tasks' documented
difference: the others still run and the failure is logged, not raised to the server), tasks after a streaming
response, and Starlette's own ``Response(background=...)`` next to them. On asyncio and trio.
"""

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from di_tasks import BackgroundTaskError, BackgroundTasks, Container, Task, TaskState
from di_tasks.starlette import setup

pytestmark = pytest.mark.anyio


def _app(*routes: Route, container: Container | None = None) -> Starlette:
    app = Starlette(routes=list(routes))
    setup(app, container or Container())
    return app


async def _get(app: Starlette, path: str = "/") -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.get(path)


async def test_an_async_task_runs_after_the_response() -> None:
    """An ``async def`` task runs once the response is out, and before the client's call returns."""
    done: list[str] = []

    async def task() -> None:
        done.append("async")

    async def endpoint(request: Request, tasks: BackgroundTasks) -> Response:
        tasks.add_task(task)
        assert done == []
        return PlainTextResponse("task initiated")

    response = await _get(_app(Route("/", endpoint)))
    assert response.text == "task initiated"
    assert done == ["async"]


async def test_a_sync_task_runs_after_the_response() -> None:
    """A sync task runs too (in a worker thread of the container's own limiter)."""
    done: list[str] = []

    def task() -> None:
        done.append("sync")

    async def endpoint(request: Request, tasks: BackgroundTasks) -> Response:
        tasks.add_task(task)
        return PlainTextResponse("task initiated")

    response = await _get(_app(Route("/", endpoint)))
    assert response.text == "task initiated"
    assert done == ["sync"]


async def test_several_tasks_run_in_order_with_their_arguments() -> None:
    """Three tasks with keyword arguments all run, in the order they were added."""
    amounts: list[int] = []

    def increment(amount: int) -> None:
        amounts.append(amount)

    async def endpoint(request: Request, tasks: BackgroundTasks) -> Response:
        for amount in (1, 2, 3):
            tasks.add_task(increment, amount=amount)
        return PlainTextResponse("tasks initiated")

    response = await _get(_app(Route("/", endpoint)))
    assert response.text == "tasks initiated"
    assert amounts == [1, 2, 3]


async def test_a_failing_task_does_not_stop_the_next_one(caplog: pytest.LogCaptureFixture) -> None:
    """Difference: Starlette skips the tasks after a failing one and the error reaches the server; di_tasks runs
    every task, logs the failure at ERROR by name and passes it to ``on_task_error``, and the client gets its
    response (docs/how-to/migrate-from-fastapi.md, "a task raises")."""
    calls: list[int] = []
    failures: list[str] = []

    def increment() -> None:
        calls.append(len(calls) + 1)
        if len(calls) == 1:
            raise RuntimeError("task failed")

    async def endpoint(request: Request, tasks: BackgroundTasks) -> Response:
        tasks.add_task(increment)
        tasks.add_task(increment)
        return PlainTextResponse("tasks initiated")

    container = Container(on_task_error=lambda task, exc: failures.append(str(exc)))
    with caplog.at_level(logging.ERROR, logger="di_tasks"):
        response = await _get(_app(Route("/", endpoint), container=container))
    assert response.status_code == 200
    assert calls == [1, 2]
    assert failures == ["task failed"]
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert "increment" in caplog.records[0].getMessage()


def test_a_failing_task_is_raised_by_container_run() -> None:
    """Without a server, ``Container.run`` runs every task and then raises the failures together."""
    calls: list[str] = []

    def fails() -> None:
        calls.append("fails")
        raise RuntimeError("task failed")

    def job(tasks: BackgroundTasks) -> str:
        tasks.add_task(fails)
        tasks.add_task(calls.append, "next")
        return "done"

    with pytest.raises(BackgroundTaskError, match="1 background task"):
        Container().run(job)
    assert calls == ["fails", "next"]


async def test_tasks_run_after_the_last_chunk_of_a_streaming_response() -> None:
    """With a streaming body, the tasks start only once every chunk has been sent."""
    events: list[str] = []

    async def body() -> AsyncIterator[str]:
        for chunk in ("a", "b", "c"):
            events.append(f"chunk {chunk}")
            yield chunk

    async def endpoint(request: Request, tasks: BackgroundTasks) -> Response:
        tasks.add_task(events.append, "task")
        return StreamingResponse(body(), media_type="text/plain")

    response = await _get(_app(Route("/", endpoint)))
    assert response.text == "abc"
    assert events == ["chunk a", "chunk b", "chunk c", "task"]


async def test_starlettes_own_background_task_runs_next_to_ours() -> None:
    """A ``Response(background=...)`` of Starlette's still runs, and the di_tasks tasks run too."""
    events: list[str] = []

    async def endpoint(request: Request, tasks: BackgroundTasks) -> Response:
        tasks.add_task(events.append, "di_tasks")
        return PlainTextResponse("ok", background=BackgroundTask(events.append, "starlette"))

    response = await _get(_app(Route("/", endpoint)))
    assert response.text == "ok"
    assert sorted(events) == ["di_tasks", "starlette"]


async def test_each_task_handle_reports_its_result() -> None:
    """Difference: Starlette's ``add_task`` returns nothing; di_tasks returns a ``Task`` whose state and result
    can be read once it has run (docs/how-to/migrate-from-fastapi.md, "tasks and task results")."""
    handles: list[Task] = []

    async def double(n: int) -> int:
        return 2 * n

    async def endpoint(request: Request, tasks: BackgroundTasks) -> Response:
        handles.append(tasks.add_task(double, 21))
        return PlainTextResponse("ok")

    await _get(_app(Route("/", endpoint)))
    (task,) = handles
    assert task.state is TaskState.SUCCEEDED
    assert task.result == 42


async def test_wrong_task_arguments_fail_at_add_task() -> None:
    """Difference: Starlette meets wrong arguments in the background after the response; di_tasks raises the
    ``TypeError`` at ``add_task``, in the endpoint (docs/how-to/migrate-from-fastapi.md, "wrong task arguments")."""

    def increment(amount: int) -> None:
        raise AssertionError("never run")

    async def endpoint(request: Request, tasks: BackgroundTasks) -> Response:
        wrong: dict[str, Any] = {"wrong": 1}  # what the type checker would also refuse, written past it
        tasks.add_task(increment, **wrong)
        raise AssertionError("not reached")

    with pytest.raises(TypeError, match="increment"):
        await _get(_app(Route("/", endpoint)))
