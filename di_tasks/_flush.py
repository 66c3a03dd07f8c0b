"""The flush seam: what happens to a scope's tasks when it exits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import anyio

if TYPE_CHECKING:  # a flusher is handed tasks, and runs them through their own public methods
    from ._tasks import Task


class Flusher(Protocol):
    """Receives the tasks of a scope when it exits.

    Implementations run them in-process (the default, :class:`InProcessFlusher`), record them for tests,
    or hand them to an external queue. ``flush`` returns once the tasks are dealt with; a task's outcome is
    recorded on the task itself (``Task.run`` does that for in-process runners, ``Task.mark`` for the others).
    """

    async def flush(self, tasks: Sequence[Task], /) -> None:
        """Deal with ``tasks``, in the order they were added."""
        ...


class TaskChecker(Protocol):
    """Optional second method of a flusher: vet a task when it is added, so a mistake fails at the call site.

    A flusher that hands tasks to another process implements it to reject functions that cannot be
    imported there or arguments that cannot be serialised.
    """

    def check_task(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any], /) -> None:
        """Raise ``TypeError`` naming the function if this task could not be flushed."""
        ...


class FlushStarter(Protocol):
    """Optional second method of a flusher: start a flush now and return only what is left of it to wait for.

    A scope's exit calls it instead of ``flush`` when the flusher has it, so a batch of tasks that all finish without
    suspending costs no coroutine at all. :class:`InProcessFlusher` has it; its ``flush`` is ``start_flush`` and an
    ``await``.
    """

    def start_flush(self, tasks: Sequence[Task], /) -> Awaitable[None] | None:
        """Deal with ``tasks`` as ``flush`` would, as far as that can be done without waiting; return what is left
        (await it), or ``None`` when they have all been dealt with."""
        ...


class InProcessFlusher:
    """Run tasks in this process: one at a time in order, or up to ``concurrency`` at once.

    One failing task never stops the others: ``Task.run`` records and logs each failure.
    """

    def __init__(self, concurrency: int = 1) -> None:
        """Make a runner.

        Args:
            concurrency: how many tasks of one scope may run at once (1: in order, one at a time).

        Raises:
            ValueError: ``concurrency`` is less than 1.
        """
        if concurrency < 1:
            raise ValueError(f"InProcessFlusher(concurrency=...) must be at least 1, got {concurrency!r}")
        self.concurrency = concurrency

    async def flush(self, tasks: Sequence[Task], /) -> None:
        """Run ``tasks`` (see the class docstring)."""
        rest = self.start_flush(tasks)
        if rest is not None:
            await rest

    def start_flush(self, tasks: Sequence[Task], /) -> Awaitable[None] | None:
        """Start running ``tasks``: one at a time, each up to its end or its first suspension (``Task.start``), so
        ``None`` when every one finished at once; else (or with ``concurrency`` above 1) what runs the rest.

        See :class:`FlushStarter`.
        """
        if self.concurrency > 1 and len(tasks) > 1:
            return self._concurrently(tasks)
        following = iter(tasks)  # the default: in order, on the scope's own task
        for task in following:
            rest = task.start()
            if rest is not None:
                return _in_order_after(rest, following)
        return None

    async def _concurrently(self, tasks: Sequence[Task]) -> None:
        limiter = anyio.Semaphore(self.concurrency)

        async def run_one(task: Task) -> None:
            async with limiter:
                await task.run()

        async with anyio.create_task_group() as tg:
            for task in tasks:
                tg.start_soon(run_one, task)


async def _in_order_after(rest: Awaitable[None], following: Iterator[Task]) -> None:
    """Finish a task that suspended, then run the ones after it, in order."""
    await rest
    for task in following:
        rest_of_task = task.start()
        if rest_of_task is not None:
            await rest_of_task
