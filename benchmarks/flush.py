"""W5, the flush: 1,000 no-op async tasks and 1,000 no-op sync tasks added to one scope and run at its exit.

Compared with Starlette's ``BackgroundTasks`` running the same 2,000 tasks, and with a hand-written loop
(await each async task, run each sync one in a worker thread): the floor.
"""

from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
from common import C

Run = Callable[[], Awaitable[Any]]
N_ASYNC = 1000
N_SYNC = 1000


async def async_task(i: int) -> None:
    """A no-op async task that counts itself."""
    C.tasks += 1


def sync_task(i: int) -> None:
    """A no-op sync task that counts itself (runs in a worker thread in every system)."""
    C.tasks += 1


def build_direct() -> Run:
    """A list of tasks, awaited or sent to a worker thread one after the other."""

    async def run() -> int:
        items: list[tuple[Callable[..., Any], int, bool]] = []
        for i in range(N_ASYNC):
            items.append((async_task, i, True))
        for i in range(N_SYNC):
            items.append((sync_task, i, False))
        for func, arg, is_async in items:
            if is_async:
                await func(arg)
            else:
                await anyio.to_thread.run_sync(func, arg)
        return len(items)

    return run


def build_di_tasks() -> Run:
    """Tasks added to a scope's collector; the scope's exit flushes them in order."""
    from di_tasks import Container

    container = Container()

    async def run() -> int:
        async with container.scope() as scope:
            add = scope.tasks.add_task
            for i in range(N_ASYNC):
                add(async_task, i)
            for i in range(N_SYNC):
                add(sync_task, i)
        return len(scope.tasks.all)

    run.container = container  # type: ignore[attr-defined]  # otel_cost.py installs an observer on it
    return run


def build_starlette() -> Run:
    """Starlette's ``BackgroundTasks``, called as its ``Response`` calls it after sending."""
    from starlette.background import BackgroundTasks

    async def run() -> int:
        tasks = BackgroundTasks()
        for i in range(N_ASYNC):
            tasks.add_task(async_task, i)
        for i in range(N_SYNC):
            tasks.add_task(sync_task, i)
        await tasks()
        return len(tasks.tasks)

    return run


BUILDERS: dict[str, Callable[[], Run]] = {
    "direct": build_direct,
    "di_tasks": build_di_tasks,
    "starlette": build_starlette,
}
