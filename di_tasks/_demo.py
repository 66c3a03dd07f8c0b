"""``python -m di_tasks demo``: FastAPI's "send notification" example, ported, with tasks at three depths."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from typing import Annotated

from ._container import Container
from ._markers import Depends
from ._tasks import BackgroundTasks

_events: list[str] = []
_log_path = ""


def write_log(message: str) -> None:
    """The background task: append one line to the log file (runs in a worker thread: it is sync)."""
    with open(_log_path, mode="a", encoding="utf-8") as log:
        log.write(message)
    _events.append(f"task ran: write_log({message.strip()!r})")


def audit(background_tasks: BackgroundTasks, email: str) -> str:
    """A sub-dependency: it reads the call's ``email`` value by name and adds a task of its own."""
    background_tasks.add_task(write_log, f"audit: notification requested for {email}\n")
    _events.append("sub-dependency audit added a task")
    return email


def get_query(background_tasks: BackgroundTasks, _: Annotated[str, Depends(audit)], q: str | None = None) -> str | None:
    """A dependency, as in FastAPI's tutorial: logs the query when there is one."""
    if q:
        background_tasks.add_task(write_log, f"found query: {q}\n")
        _events.append("dependency get_query added a task")
    return q


async def send_notification(
    email: str, background_tasks: BackgroundTasks, q: Annotated[str | None, Depends(get_query)]
) -> dict[str, str]:
    """The endpoint of the tutorial, unchanged but for the imports."""
    background_tasks.add_task(write_log, f"message to {email}\n")
    _events.append("endpoint send_notification added a task")
    return {"message": "Message sent"}


async def _play(container: Container, email: str, q: str) -> None:
    async with container.scope(email=email, q=q) as scope:
        result = await scope.call(send_notification)
        _events.append(f"send_notification returned {result} (the {len(scope.tasks)} tasks have not run yet)")
        _events.append(f"same collector at every depth, tasks in order: {[t.args[0].strip() for t in scope.tasks]}")
    _events.append("scope exited: its one flush ran every task")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo and print what happened, in order. Returns the exit code."""
    global _log_path
    parser = argparse.ArgumentParser(prog="python -m di_tasks demo", description=__doc__)
    parser.add_argument("--email", default="ada@example.com")
    parser.add_argument("--q", default="pending invoices")
    parser.add_argument("--log", help="log file to append to (default: a fresh temporary file)")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        _log_path = args.log or os.path.join(tmp, "log.txt")
        _events.clear()
        import anyio

        anyio.run(_play, Container(), args.email, args.q, backend=args.backend)
        print("What happened, in order:")
        for number, event in enumerate(_events, 1):
            print(f"  {number}. {event}")
        with open(_log_path, encoding="utf-8") as log:
            # the full path: without --log the file is a temporary one, deleted when the demo ends
            where = "" if args.log else " (a temporary file, deleted now; pass --log PATH to keep one)"
            print(f"\n{os.path.abspath(_log_path)}{where} now contains:")
            print("".join(f"  {line}" for line in log))
    return 0
