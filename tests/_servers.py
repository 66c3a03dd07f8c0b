"""A real uvicorn server for tests: 127.0.0.1, a free port, a thread of its own, bounded start and stop."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Generator
from contextlib import contextmanager
from typing import Any, Literal

import uvicorn

START_TIMEOUT = 10.0
STOP_TIMEOUT = 15.0


class LiveServer:
    """uvicorn serving ``app`` in a daemon thread; ``url`` is where to reach it."""

    def __init__(self, app: Any, *, lifespan: Literal["on", "off", "auto"] = "on") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))  # the OS picks a free port; uvicorn serves on this very socket
        self.port: int = self.sock.getsockname()[1]
        config = uvicorn.Config(app, lifespan=lifespan, log_config=None, access_log=False, ws="websockets-sansio")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start serving; raise ``RuntimeError`` if the server is not up within ``START_TIMEOUT``."""
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.01)

    def stop(self) -> float:
        """Ask the server to exit (lifespan shutdown runs) and wait for it; returns the seconds it took.

        Raises:
            RuntimeError: the server thread is still alive after ``STOP_TIMEOUT``.
        """
        started = time.monotonic()
        self.server.should_exit = True
        self.thread.join(STOP_TIMEOUT)
        self.sock.close()
        if self.thread.is_alive():
            raise RuntimeError(f"uvicorn on {self.url} did not stop within {STOP_TIMEOUT}s")
        return time.monotonic() - started


@contextmanager
def serve(app: Any, *, lifespan: Literal["on", "off", "auto"] = "on") -> Generator[LiveServer]:
    """Serve ``app`` for the duration of the block."""
    server = LiveServer(app, lifespan=lifespan)
    server.start()
    try:
        yield server
    finally:
        if server.thread.is_alive():
            server.stop()


class Journal:
    """A thread-safe list of lines written by tasks running in the server's thread."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()

    def write(self, line: str) -> None:
        """Append a line."""
        with self._changed:
            self.lines.append(line)
            self._changed.notify_all()

    def wait_for(self, line: str, timeout: float = 5.0) -> list[str]:
        """Wait until ``line`` was written and return a copy of all lines; ``AssertionError`` after ``timeout``."""
        with self._changed:
            if not self._changed.wait_for(lambda: line in self.lines, timeout):
                raise AssertionError(f"{line!r} was not written within {timeout}s; lines: {self.lines}")
            return list(self.lines)
