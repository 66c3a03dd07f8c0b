"""Small helpers: the event-loop check, driving a coroutine on by hand."""

import types
from collections.abc import Generator
from typing import Any

import anyio
import pytest

from di_tasks._util import go_on, in_event_loop


def test_no_event_loop_in_plain_code() -> None:
    """Outside any loop, in_event_loop() is false."""
    assert not in_event_loop()


@pytest.mark.anyio
async def test_inside_a_loop_and_not_in_its_worker_threads() -> None:
    """On the loop it is true; in a worker thread of that loop it is false."""
    assert in_event_loop()
    assert not await anyio.to_thread.run_sync(in_event_loop)


@types.coroutine
def suspend(marker: str) -> Generator[str, Any, Any]:
    """Suspend with ``marker`` and return what the driver sends back."""
    return (yield marker)


def test_a_coroutine_driven_on_by_hand_gets_what_is_thrown_in_and_may_return() -> None:
    """go_on goes on with a coroutine whose first step was taken by hand: it passes on what the coroutine yields and
    what is sent or thrown in, and returns what the coroutine returns, also after catching what was thrown in."""

    async def waits_then_catches() -> str:
        sent = await suspend("first")
        try:
            await suspend("second")
        except LookupError:
            return f"caught, after {sent}"
        return "not reached"

    coro = waits_then_catches()
    driven = go_on(coro, coro.send(None))
    assert driven.send(None) == "first"  # the first step's suspension goes out as it was
    assert driven.send("an answer") == "second"
    with pytest.raises(StopIteration) as stopped:
        driven.throw(LookupError())
    assert stopped.value.value == "caught, after an answer"
