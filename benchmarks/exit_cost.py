"""What a busy scope's exit costs in W1: an experiment, not a product path.

    python benchmarks/exit_cost.py            # 30 rounds
    python benchmarks/exit_cost.py --rounds 10

W1 (``w1.build_di_tasks``) is timed against the hand-written floor with Starlette's ``BackgroundTasks``
(``w1.build_starlette``), in the same rounds, with ``Scope.start_close`` (what ``Container.call`` exits with) as it is
and replaced, in this process only, by two stripped versions that do the same work for W1 (run the 3 tasks, tear the
generator down) with less around it:

- ``lean``: the container's flusher (its ``start_flush``) and the count of failed tasks kept; no task observer, no
  skipping when the body failed, nothing caught from the flusher, one coroutine for the whole exit;
- ``bare``: each task's ``start()`` called in a loop, then the teardown; nothing else.

The difference between the three is what the exit's documented behaviour costs (the ``Flusher`` seam, the observer,
skipping and logging, what a task lets through, ``BackgroundTaskError``); ``bare`` is about the floor of a scope
with this design (its object, its collector, the context variable that makes it current). Medians over rounds of the
ratio to the floor; each batch is timed and checked by ``run.py``'s harness.
"""

import argparse
import asyncio
import statistics
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench
import w1
from common import check_w1

from di_tasks import Scope
from di_tasks._run import unwind  # the experiment replaces the exit, so it needs the teardown the exit calls

Start = Callable[..., Coroutine[Any, Any, None] | None]


def lean_start(self: Any, exc: BaseException | None = None, *, raise_task_errors: bool = True) -> Any:
    """The flusher and the count of failed tasks kept, nothing else."""
    return _lean(self, exc, raise_task_errors)


async def _lean(self: Any, exc: BaseException | None, raise_task_errors: bool) -> None:
    collector = self._collector
    failures = self.container.task_failures
    if collector is not None:
        batch = collector.take()
        while batch:
            rest = self.container.flush_starter.start_flush(batch)
            if rest is not None:
                await rest
            batch = collector.take()
    if self.exit_stack:
        await unwind(self.exit_stack, exc)
    if collector is not None:
        collector.close()
    if raise_task_errors and self.container.task_failures != failures:
        raise AssertionError("a W1 task failed")


def bare_start(self: Any, exc: BaseException | None = None, *, raise_task_errors: bool = True) -> Any:
    """Each task started in a loop, then the teardown."""
    return _bare(self, exc)


async def _bare(self: Any, exc: BaseException | None) -> None:
    for task in self._collector.take():
        rest = task.start()
        if rest is not None:
            await rest
    if self.exit_stack:
        await unwind(self.exit_stack, exc)


async def main(rounds: int, n: int) -> None:
    """Run the rounds and print the medians."""
    floor = bench.Cell("starlette", w1.build_starlette(), check_w1, n)
    di_tasks = bench.Cell("di_tasks", w1.build_di_tasks(), check_w1, n)
    variants: dict[str, Start] = {"as shipped": Scope.start_close, "lean": lean_start, "bare": bare_start}
    ratios: dict[str, list[float]] = {name: [] for name in variants}
    for name, start in variants.items():  # warm up each form
        Scope.start_close = start  # type: ignore[method-assign]
        await bench.timed_batch(di_tasks, name)
    await bench.timed_batch(floor, "floor")
    for _ in range(rounds):
        base = await bench.timed_batch(floor, "floor")
        for name, start in variants.items():
            Scope.start_close = start  # type: ignore[method-assign]
            ratios[name].append(await bench.timed_batch(di_tasks, name) / base)
    Scope.start_close = variants["as shipped"]  # type: ignore[method-assign]
    print(f"W1 against hand-written calls with Starlette's BackgroundTasks, {rounds} rounds of {n} calls")
    print("| exit | median ratio |\n|---|---|")
    for name, values in ratios.items():
        print(f"| {name} | {statistics.median(values):.2f}x |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="What a busy scope's exit costs in W1 (an experiment).")
    parser.add_argument("--rounds", type=int, default=30, help="rounds (default 30)")
    parser.add_argument("--calls", type=int, default=2000, help="calls per batch (default 2000)")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.rounds, arguments.calls))
