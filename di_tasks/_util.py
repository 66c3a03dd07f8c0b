"""Small helpers every layer uses: the missing-value marker and the event-loop check."""

from __future__ import annotations

import asyncio
from typing import Any, Final

import anyio
import anyio.lowlevel

MISSING: Final[Any] = object()
"""Marks "no value" where ``None`` is a value (cache lookups, a worker thread's finished generator)."""


def in_event_loop() -> bool:
    """Whether this thread is running an AnyIO-supported event loop right now."""
    try:
        anyio.get_current_task()
    except RuntimeError:
        return False
    return True


async def cancelled_from_outside() -> bool:
    """Whether the running task is being cancelled from outside (a cancel scope around it, a shutdown, a deadline),
    as opposed to a cancellation error some awaited thing raised on its own (a future another task cancelled).

    On asyncio a cancellation of the task itself is counted by ``Task.cancelling()``; on both backends a cancelled
    enclosing cancel scope makes the next checkpoint raise.
    """
    if anyio.get_cancelled_exc_class() is asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            return True
    try:
        await anyio.lowlevel.checkpoint_if_cancelled()
    except anyio.get_cancelled_exc_class():
        return True
    return False
