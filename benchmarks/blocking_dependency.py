"""A sync dependency that blocks, under a real uvicorn: 5 requests at once, each one's latency.

The dependency is a sync generator that sleeps 0.2 s (a database driver without async support). Three apps:

- ``di_tasks inline``: ``Container()``, the default: the dependency runs on the event loop, so the requests queue;
- ``di_tasks threads``: ``Container(sync_to_thread=True)``: each sync dependency runs in a worker thread;
- ``fastapi``: plain FastAPI, which runs every sync dependency in its thread pool.

Run: ``python benchmarks/blocking_dependency.py`` (needs the ``bench`` extra). It prints, per app, the latencies of
the 5 requests, sorted, as the median over ``ROUNDS`` rounds of each position.
"""

import socket
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import fastapi
import httpx
import uvicorn

import di_tasks
import di_tasks.fastapi

REQUESTS = 5
ROUNDS = 3
BLOCK = 0.2


def session() -> Iterator[str]:
    time.sleep(BLOCK)
    yield "session"


def di_tasks_app(*, sync_to_thread: bool) -> Any:
    app = fastapi.FastAPI()
    di_tasks.fastapi.setup(app, di_tasks.Container(sync_to_thread=sync_to_thread))

    @app.get("/")
    async def endpoint(db: Annotated[str, di_tasks.Depends(session)]) -> str:
        return db

    return app


def fastapi_app() -> Any:
    app = fastapi.FastAPI()

    @app.get("/")
    async def endpoint(db: Annotated[str, fastapi.Depends(session)]) -> str:
        return db

    return app


def latencies(url: str) -> list[float]:
    def one(_: int) -> float:
        started = time.perf_counter()
        httpx.get(url, timeout=10.0).raise_for_status()
        return time.perf_counter() - started

    with ThreadPoolExecutor(REQUESTS) as pool:
        return sorted(pool.map(one, range(REQUESTS)))


def measure(app: Any) -> list[float]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    try:
        latencies(url)  # warm-up: thread pool, connections, solved plans
        rounds = [latencies(url) for _ in range(ROUNDS)]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
    return [statistics.median(position) for position in zip(*rounds, strict=True)]


def main() -> None:
    apps = {
        "di_tasks inline": di_tasks_app(sync_to_thread=False),
        "di_tasks threads": di_tasks_app(sync_to_thread=True),
        "fastapi": fastapi_app(),
    }
    print(f"{REQUESTS} concurrent requests, a sync dependency blocking {BLOCK}s; latencies (s), median of {ROUNDS}")
    for name, app in apps.items():
        print(f"{name:>18}: " + "  ".join(f"{t:.2f}" for t in measure(app)))


if __name__ == "__main__":
    main()
