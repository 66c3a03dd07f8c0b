"""The flush seam: the default flusher is what runs a scope's tasks, and a flusher of one's own sees them all."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

from di_tasks import BackgroundTasks, Container, InProcessFlusher, Task, TaskState

pytestmark = pytest.mark.anyio


async def test_the_default_flusher_is_the_path_tasks_take(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks of a default container run through InProcessFlusher.flush: the protocol is the default path."""
    seen: list[list[tuple[object, ...]]] = []
    original = InProcessFlusher.flush

    async def spy(self: InProcessFlusher, tasks: Sequence[Task], /) -> None:
        seen.append([t.args for t in tasks])
        await original(self, tasks)

    monkeypatch.setattr(InProcessFlusher, "flush", spy)
    ran: list[int] = []

    async def job(n: int) -> None:
        ran.append(n)

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(job, 1)
        tasks.add_task(job, 2)

    await Container().call(endpoint)
    assert ran == [1, 2]
    assert seen == [[(1,), (2,)]]


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
