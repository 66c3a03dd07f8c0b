"""Shared pieces of the benchmark: counters the bodies bump, the no-op task, the hand-written collector."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

REQUEST_ID = "req-42"
W1_RESULT = (26, "user:req-42", "log:req-42")


class Counters:
    """What the W1 bodies count, so a batch can prove that every system did the whole work."""

    __slots__ = ("rid", "settings", "setup", "tasks", "teardown")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Zero every counter (before a timed batch)."""
        self.settings = 0
        self.rid = 0
        self.setup = 0
        self.teardown = 0
        self.tasks = 0


C = Counters()


class CheckError(AssertionError):
    """A system returned a wrong value or skipped part of the work."""


def check_w1(system: str, result: Any, n: int) -> None:
    """Verify a batch of ``n`` W1 resolutions: values, shared dependencies once, 3 tasks, 1 teardown each."""
    expected = {"settings": n, "rid": n, "setup": n, "teardown": n, "tasks": 3 * n}
    got = {name: getattr(C, name) for name in expected}
    if tuple(result) != W1_RESULT:
        raise CheckError(f"{system} W1: result {result!r}, expected {W1_RESULT!r}")
    if got != expected:
        raise CheckError(f"{system} W1: counters {got}, expected {expected} for {n} resolutions")


async def noop_task(x: int) -> None:
    """The no-op background task (async, so no system pays a thread hop)."""
    C.tasks += 1


@dataclass(slots=True)
class HandTasks:
    """The hand-written collector of the direct-call floor: a list, run in order after the endpoint."""

    items: list[tuple[Callable[..., Awaitable[Any]], tuple[Any, ...]]]

    def add_task(self, func: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Remember one task."""
        self.items.append((func, args))

    async def run(self) -> None:
        """Run the tasks in the order added."""
        for func, args in self.items:
            await func(*args)
