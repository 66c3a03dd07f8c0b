"""The seed scenario of DESIGN.md: FastAPI's two "Background Tasks" examples, ported unchanged in spirit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest

from di_tasks import BackgroundTasks, Container, Depends

pytestmark = pytest.mark.anyio

LOG: list[str] = []


def write_log(message: str) -> None:
    LOG.append(message)


def write_notification(email: str, message: str = "") -> None:
    LOG.append(f"notification for {email}: {message}")


async def send_notification_simple(email: str, background_tasks: BackgroundTasks) -> dict[str, str]:
    background_tasks.add_task(write_notification, email, message="some notification")
    return {"message": "Notification sent in the background"}


def get_query(background_tasks: BackgroundTasks, q: str | None = None) -> str | None:
    if q:
        background_tasks.add_task(write_log, f"found query: {q}\n")
    return q


async def send_notification(
    email: str,
    background_tasks: BackgroundTasks,
    q: Annotated[str | None, Depends(get_query)],
) -> dict[str, str]:
    background_tasks.add_task(write_log, f"message to {email}\n")
    return {"message": "Message sent"}


@pytest.fixture(autouse=True)
def _clear_log() -> None:
    LOG.clear()


async def test_first_example_runs_the_task_after_the_call() -> None:
    """The tutorial's first example: one task, run after the function returned."""
    result = await Container().call(send_notification_simple, email="a@example.com")
    assert result == {"message": "Notification sent in the background"}
    assert LOG == ["notification for a@example.com: some notification"]


async def test_second_example_merges_tasks_from_the_dependency() -> None:
    """`q` reaches get_query by name and both depths' tasks run, dependency first."""
    result = await Container().call(send_notification, email="a@example.com", q="x")
    assert result == {"message": "Message sent"}
    assert LOG == ["found query: x\n", "message to a@example.com\n"]


async def test_second_example_without_query_uses_the_default() -> None:
    """Without `q`, get_query sees its default None and adds nothing."""
    await Container().call(send_notification, email="a@example.com")
    assert LOG == ["message to a@example.com\n"]


def test_run_from_a_script_writes_the_log_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`Container().run(...)` in a script, writing log.txt like the tutorial, on both backends."""
    monkeypatch.chdir(tmp_path)

    def write_file(message: str) -> None:
        with open("log.txt", mode="a") as log:
            log.write(message)

    async def endpoint(email: str, background_tasks: BackgroundTasks) -> str:
        background_tasks.add_task(write_file, f"message to {email}\n")
        return "sent"

    assert Container().run(endpoint, email="a@example.com") == "sent"
    assert Container().run(endpoint, email="b@example.com", backend="trio") == "sent"
    assert (tmp_path / "log.txt").read_text() == "message to a@example.com\nmessage to b@example.com\n"
