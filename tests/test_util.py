"""Small helpers: the event-loop check."""

import anyio
import pytest

from di_tasks._util import in_event_loop


def test_no_event_loop_in_plain_code() -> None:
    """Outside any loop, in_event_loop() is false."""
    assert not in_event_loop()


@pytest.mark.anyio
async def test_inside_a_loop_and_not_in_its_worker_threads() -> None:
    """On the loop it is true; in a worker thread of that loop it is false."""
    assert in_event_loop()
    assert not await anyio.to_thread.run_sync(in_event_loop)
