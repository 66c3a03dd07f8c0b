"""W7, the task path: a scope whose collector receives N no-op tasks, run at its exit, next to Starlette's
``BackgroundTasks`` doing the same (create, add N, run them in order): the floor of each row.

Rows: a bare call (no collector), a collector that receives nothing, then 3, 10 and 100 async tasks and 10 sync
ones. The per-task cost the report prints is (time with N tasks - time with none) / N, for both systems.
"""

from collections.abc import Awaitable, Callable
from typing import Any

from common import C, CheckError

Run = Callable[[], Awaitable[Any]]
ROWS: tuple[tuple[str, int, bool], ...] = (
    ("bare call", -1, True),
    ("0 tasks", 0, True),
    ("3 async", 3, True),
    ("10 async", 10, True),
    ("100 async", 100, True),
    ("10 sync", 10, False),
)


async def async_task(i: int) -> None:
    """A no-op async task that counts itself."""
    C.tasks += 1


def sync_task(i: int) -> None:
    """A no-op sync task that counts itself (a worker thread in both systems)."""
    C.tasks += 1


def build_starlette(n: int, is_async: bool) -> Run:
    """Starlette's own collector, created per call like a request's, run after the 'endpoint'."""
    from starlette.background import BackgroundTasks

    task = async_task if is_async else sync_task

    async def bare() -> int:
        return 0

    async def run() -> int:
        tasks = BackgroundTasks()
        for i in range(n):
            tasks.add_task(task, i)
        await tasks()
        return n

    return bare if n < 0 else run


def build_di_tasks(n: int, is_async: bool) -> Run:
    """``Container.call`` of an endpoint that adds ``n`` tasks to the scope's collector."""
    from di_tasks import BackgroundTasks, Container

    task = async_task if is_async else sync_task
    container = Container()

    async def bare() -> int:
        return 0

    async def endpoint(tasks: BackgroundTasks) -> int:
        for i in range(n):
            tasks.add_task(task, i)
        return n

    async def run() -> int:
        return await container.call(endpoint if n >= 0 else bare)

    run.container = container  # type: ignore[attr-defined]  # otel_cost.py installs an observer on it
    return run


def check(n: int) -> Callable[[str, Any, int], None]:
    """Each call returns ``n`` and ran its ``n`` tasks."""

    def checked(system: str, result: Any, calls: int) -> None:
        expected = max(n, 0)
        if result != expected or C.tasks != expected * calls:
            raise CheckError(f"{system} W7 {n}: result {result!r}, {C.tasks} task runs for {calls} calls")

    return checked


BUILDERS: dict[str, Callable[[int, bool], Run]] = {"starlette": build_starlette, "di_tasks": build_di_tasks}
