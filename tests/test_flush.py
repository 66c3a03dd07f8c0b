"""The flush seam: the default flusher is what runs a scope's tasks, and a flusher of one's own sees them all."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Annotated

import anyio
import anyio.lowlevel
import pytest

from di_tasks import BackgroundTaskError, BackgroundTasks, Container, Depends, InProcessFlusher, Task, TaskState

pytestmark = pytest.mark.anyio

torn_down: list[str] = []


async def resource() -> AsyncIterator[int]:
    """A request-scoped resource that records its teardown."""
    yield 1
    torn_down.append("teardown")


async def test_the_default_flusher_is_the_path_tasks_take(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks of a default container run through InProcessFlusher.start_flush: the protocol is the default path."""
    seen: list[list[tuple[object, ...]]] = []
    original = InProcessFlusher.start_flush

    def spy(self: InProcessFlusher, tasks: Sequence[Task], /) -> Awaitable[None] | None:
        seen.append([t.args for t in tasks])
        return original(self, tasks)

    monkeypatch.setattr(InProcessFlusher, "start_flush", spy)
    ran: list[int] = []

    async def job(n: int) -> None:
        ran.append(n)

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(job, 1)
        tasks.add_task(job, 2)

    await Container().call(endpoint)
    assert ran == [1, 2]
    assert seen == [[(1,), (2,)]]


async def test_a_flusher_that_starts_flushes_is_started_and_what_it_returns_is_awaited() -> None:
    """A FlushStarter's start_flush is called instead of flush; what it returns is awaited before the teardown."""
    events: list[str] = []

    class Starter:
        async def flush(self, tasks: Sequence[Task], /) -> None:
            raise AssertionError("start_flush is called instead")

        def start_flush(self, tasks: Sequence[Task], /) -> Awaitable[None] | None:
            events.append(f"start {len(tasks)}")
            return self._later(tasks)

        async def _later(self, tasks: Sequence[Task]) -> None:
            await anyio.lowlevel.checkpoint()
            for task in tasks:
                await task.run()
            events.append(f"awaited before the teardown: {not torn_down}")

    async def job() -> None:
        events.append("job")

    async def endpoint(tasks: BackgroundTasks, r: Annotated[int, Depends(resource)]) -> None:
        tasks.add_task(job)

    starter = Starter()
    container = Container(flusher=starter)
    assert container.flush_starter is starter
    torn_down.clear()
    await container.call(endpoint)
    assert events == ["start 1", "job", "awaited before the teardown: True"]
    assert torn_down == ["teardown"]


async def test_a_flusher_whose_start_raises_stops_the_flush_like_one_whose_flush_raises() -> None:
    """An error raised by start_flush itself is handled as one raised while awaiting a flush: the tasks not run are
    logged and skipped, the teardown runs, and the error propagates."""

    class Broken:
        async def flush(self, tasks: Sequence[Task], /) -> None:
            raise AssertionError("start_flush is called instead")

        def start_flush(self, tasks: Sequence[Task], /) -> Awaitable[None] | None:
            raise KeyboardInterrupt

    async def job() -> None:
        raise AssertionError("never run")

    handle: list[Task] = []

    async def endpoint(tasks: BackgroundTasks, r: Annotated[int, Depends(resource)]) -> None:
        handle.append(tasks.add_task(job))

    torn_down.clear()
    with pytest.raises(KeyboardInterrupt):
        await Container(flusher=Broken()).call(endpoint)
    assert torn_down == ["teardown"]
    assert handle[0].state is TaskState.SKIPPED


async def test_a_flusher_of_ones_own_gets_every_batch_in_order() -> None:
    """A custom flusher receives the tasks, including those added during teardown, in the order added."""
    batches: list[list[tuple[object, ...]]] = []

    class Recorder:
        async def flush(self, tasks: Sequence[Task], /) -> None:
            batches.append([t.args for t in tasks])
            for task in tasks:
                task.mark(TaskState.HANDED_OFF)

    def note(n: int) -> None: ...

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(note, 1)
        tasks.add_task(note, 2)

    await Container(flusher=Recorder()).call(endpoint)
    assert batches == [[(1,), (2,)]]


async def test_concurrent_flusher_runs_up_to_its_limit() -> None:
    """InProcessFlusher(concurrency=2) runs two tasks of one scope at the same time, never three."""
    running = 0
    most = 0

    async def job() -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await anyio.sleep(0.01)
        running -= 1

    async def endpoint(tasks: BackgroundTasks) -> None:
        for _ in range(5):
            tasks.add_task(job)

    await Container(flusher=InProcessFlusher(concurrency=2)).call(endpoint)
    assert most == 2


def test_concurrency_below_one_is_refused() -> None:
    """InProcessFlusher(concurrency=0) fails at construction with the value in the message."""
    with pytest.raises(ValueError, match="at least 1, got 0"):
        InProcessFlusher(concurrency=0)


async def test_a_flusher_of_ones_own_may_hand_tasks_to_the_in_process_flusher() -> None:
    """InProcessFlusher.flush, called by a flusher of one's own, runs the tasks, those that finish at once included."""
    ran: list[int] = []

    class Counting:
        def __init__(self) -> None:
            self.inner = InProcessFlusher()
            self.seen = 0

        async def flush(self, tasks: Sequence[Task], /) -> None:
            self.seen += len(tasks)
            await self.inner.flush(tasks)

    async def job(n: int) -> None:
        ran.append(n)

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(job, 1)
        tasks.add_task(job, 2)

    flusher = Counting()
    await Container(flusher=flusher).call(endpoint)
    assert (flusher.seen, ran) == (2, [1, 2])


async def test_a_flusher_that_fails_tasks_as_it_starts_them_makes_the_scope_raise() -> None:
    """Task failures recorded while a FlushStarter starts a flush, with nothing left to await, are raised by the
    scope's exit as any other task failure is."""

    class Refusing:
        async def flush(self, tasks: Sequence[Task], /) -> None:
            raise AssertionError("start_flush is called instead")

        def start_flush(self, tasks: Sequence[Task], /) -> Awaitable[None] | None:
            for task in tasks:
                task.fail(RuntimeError("refused"), "was refused")
            return None

    async def job() -> None:
        raise AssertionError("never run")

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(job)

    with pytest.raises(BackgroundTaskError, match="job"):
        await Container(flusher=Refusing()).call(endpoint)


@pytest.mark.parametrize("suspends", [False, True])
async def test_a_flush_observer_hears_of_a_batch_before_it_starts_and_after_its_tasks(suspends: bool) -> None:
    """A FlushObserver's flush_started comes before the batch's first task and what it returns is called after the
    last, whether the tasks finished at once or one suspended first."""
    events: list[str] = []

    class Watching:
        enabled = False

        def task_started(self, task: Task, /) -> None:
            raise AssertionError("not called: the observer is off")

        def flush_started(self, scope: object, tasks: Sequence[Task], /) -> Callable[[], object]:
            events.append(f"flush of {len(tasks)}")
            return lambda: events.append("flushed")

    async def first() -> None:
        events.append("first")

    async def second() -> None:
        if suspends:
            await anyio.lowlevel.checkpoint()
        events.append("second")

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(first)
        tasks.add_task(second)

    await Container(task_observer=Watching()).call(endpoint)
    assert events == ["flush of 2", "first", "second", "flushed"]
