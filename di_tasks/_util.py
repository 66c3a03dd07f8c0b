"""Small helpers every layer uses: the missing-value marker and the event-loop check."""

from __future__ import annotations

from typing import Any, Final

import anyio

MISSING: Final[Any] = object()
"""Marks "no value" where ``None`` is a value (cache lookups, a worker thread's finished generator)."""


def in_event_loop() -> bool:
    """Whether this thread is running an AnyIO-supported event loop right now."""
    try:
        anyio.get_current_task()
    except RuntimeError:
        return False
    return True
