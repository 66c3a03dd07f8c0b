"""Load test: a real uvicorn server with ``ScopeMiddleware``, driven by concurrent keep-alive clients.

Each request adds one background task at each of three depths (the endpoint, a dependency, a sub-dependency).
The script checks that every task ran exactly once, that no task started before its response was fully sent,
and that the server's memory returns to its baseline (tracemalloc, and live counts of scopes, tasks, collectors
and contexts); then it measures the same app without di_tasks (Starlette's own ``BackgroundTasks``) and prints
both p99 latencies.

    python benchmarks/load.py --requests 20000          # the full size
    python benchmarks/load.py --requests 2000 --json    # what tests/test_load.py runs

The server runs in a subprocess (``--serve``) on a free 127.0.0.1 port; the clients are plain asyncio
streams speaking HTTP/1.1 with keep-alive, so the client costs little next to the server.
"""

import argparse
import asyncio
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

MODES = ("di_tasks", "plain")
TASK_SLEEP = 0.02  # each request's async tasks sleep this long, so a response that waited for them would show


# -- the server (runs in the subprocess) ---------------------------------------------------------------------


class Ledger:
    """Per-request counters, preallocated so that recording a task allocates nothing."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.depth = [bytearray(capacity) for _ in range(3)]
        self.sent = bytearray(capacity)  # 1 once the request's last body chunk went through send()
        self.early = 0  # tasks that started before their response was sent

    def task(self, depth: int, rid: int) -> None:
        if not self.sent[rid]:
            self.early += 1
        self.depth[depth][rid] += 1

    def summary(self, start: int, stop: int) -> dict[str, Any]:
        counts = [sum(d[start:stop]) for d in self.depth]
        exact = all(all(v == 1 for v in d[start:stop]) for d in self.depth)
        return {"tasks_per_depth": counts, "exactly_once": exact, "early_tasks": self.early}


def _live_objects() -> dict[str, int]:
    """How many di_tasks scopes, tasks, collectors and contexts are alive (after a full collection)."""
    import contextvars

    from di_tasks import BackgroundTasks, Scope, Task

    gc.collect()
    kinds = {"Scope": Scope, "Task": Task, "BackgroundTasks": BackgroundTasks, "Context": contextvars.Context}
    counts = dict.fromkeys(kinds, 0)
    for obj in gc.get_objects():
        for name, cls in kinds.items():
            if type(obj) is cls:
                counts[name] += 1
    return counts


def _rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def build_app(mode: str, ledger: Ledger, use_tracemalloc: bool) -> Any:
    """The app under load: Starlette, three task depths; with ``ScopeMiddleware`` or with Starlette's own tasks."""
    import anyio
    from starlette.applications import Starlette
    from starlette.background import BackgroundTasks as StarletteTasks
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    def sync_task(depth: int, rid: int) -> None:
        ledger.task(depth, rid)

    async def async_task(depth: int, rid: int) -> None:
        ledger.task(depth, rid)
        await anyio.sleep(TASK_SLEEP)

    state: dict[str, Any] = {}

    async def baseline(request: Request) -> JSONResponse:
        state["before"] = {
            "objects": _live_objects(),
            "rss_kib": _rss_kib(),
            "traced": _traced(),
            "blocks": _traced_blocks(),
        }
        return JSONResponse(state["before"])

    async def progress(request: Request) -> JSONResponse:
        """Cheap enough to poll while tasks drain (``/stats`` walks every object and blocks the loop)."""
        start, stop = int(request.query_params["start"]), int(request.query_params["stop"])
        return JSONResponse([sum(d[start:stop]) for d in ledger.depth])

    async def stats(request: Request) -> JSONResponse:
        start, stop = int(request.query_params["start"]), int(request.query_params["stop"])
        after = {
            "objects": _live_objects(),
            "rss_kib": _rss_kib(),
            "traced": _traced(),
            "blocks": _traced_blocks(),
            "top": _top_allocations(),
        }
        return JSONResponse({**ledger.summary(start, stop), "before": state.get("before"), "after": after})

    if mode == "plain":

        async def plain_work(request: Request) -> PlainTextResponse:
            rid = int(request.query_params["rid"])
            tasks = StarletteTasks()
            tasks.add_task(async_task, 2, rid)  # the same three tasks, added in the endpoint
            tasks.add_task(sync_task, 1, rid)
            tasks.add_task(async_task, 0, rid)
            return PlainTextResponse(str(rid), background=tasks)

        app: Any = Starlette(
            routes=[
                Route("/work", plain_work),
                Route("/baseline", baseline),
                Route("/stats", stats),
                Route("/progress", progress),
            ]
        )
    else:
        from di_tasks import BackgroundTasks, Container, Depends
        from di_tasks.asgi import ScopeMiddleware

        container = Container()

        def request_id(request: Request) -> int:
            return int(request.query_params["rid"])

        async def sub_dependency(rid: Annotated[int, Depends(request_id)], tasks: BackgroundTasks) -> int:
            tasks.add_task(async_task, 2, rid)
            return rid

        def dependency(rid: Annotated[int, Depends(sub_dependency)], tasks: BackgroundTasks) -> int:
            tasks.add_task(sync_task, 1, rid)
            return rid

        @container.inject
        async def work(
            request: Request, rid: Annotated[int, Depends(dependency)], tasks: BackgroundTasks
        ) -> PlainTextResponse:
            tasks.add_task(async_task, 0, rid)
            return PlainTextResponse(str(rid))

        inner = Starlette(
            routes=[
                Route("/work", work),
                Route("/baseline", baseline),
                Route("/stats", stats),
                Route("/progress", progress),
            ]
        )
        app = ScopeMiddleware(_MarkSent(inner, ledger), container=container)
    return _MarkSent(app, ledger) if mode == "plain" else app


class _MarkSent:
    """Record in the ledger when a request's last body chunk has gone through ``send``."""

    def __init__(self, app: Any, ledger: Ledger) -> None:
        self.app = app
        self.ledger = ledger

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/work":
            await self.app(scope, receive, send)
            return
        rid = int(scope["query_string"].split(b"=")[1])
        ledger = self.ledger

        async def marking_send(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                ledger.sent[rid] = 1

        await self.app(scope, receive, marking_send)


def _traced() -> int:
    return tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else -1


def _traced_blocks() -> int:
    """How many allocated blocks are alive: leaked objects add blocks, a hash table that grew adds none."""
    if not tracemalloc.is_tracing():
        return -1
    return sum(stat.count for stat in tracemalloc.take_snapshot().statistics("filename"))


def _top_allocations(limit: int = 5) -> list[str]:
    """Where the memory still traced since the baseline was allocated (empty without tracemalloc)."""
    if not tracemalloc.is_tracing():
        return []
    stats = tracemalloc.take_snapshot().statistics("lineno")
    return [str(stat) for stat in stats[:limit]]


def serve(mode: str, capacity: int, use_tracemalloc: bool) -> None:
    """Serve the app on a free 127.0.0.1 port; print ``PORT <n>`` once listening."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    ledger = Ledger(capacity)
    if use_tracemalloc:
        tracemalloc.start()  # from the start, so "after - before" is the net growth across the load
    app = build_app(mode, ledger, use_tracemalloc)
    config = uvicorn.Config(app, lifespan="on", access_log=False, log_level="warning", backlog=4096)
    server = uvicorn.Server(config)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    server.run(sockets=[sock])


# -- the driver ----------------------------------------------------------------------------------------------


@dataclass
class Result:
    """The figures of one mode."""

    mode: str
    requests: int
    errors: int = 0
    seconds: float = 0.0
    drain_seconds: float = 0.0  # from the last response until every task had run
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    server: dict[str, Any] = field(default_factory=lambda: {})
    server_errors: list[str] = field(default_factory=lambda: [])


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> bytes:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    body = await reader.readexactly(length)
    if status != b"200":
        raise RuntimeError(f"GET {path}: HTTP {status.decode()} {body[:200]!r}")
    return body


async def _fetch(port: int, path: str) -> Any:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return json.loads(await _get(reader, writer, path))
    finally:
        writer.close()
        await writer.wait_closed()


async def _drive(port: int, rids: range, concurrency: int, latencies: list[float], per_request: float) -> int:
    """Send one GET per request id over ``concurrency`` keep-alive connections; returns the number of errors."""
    queue: Iterator[int] = iter(rids)
    errors = 0

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for rid in queue:
                started = time.perf_counter()
                try:
                    body = await asyncio.wait_for(_get(reader, writer, f"/work?rid={rid}"), per_request)
                except (OSError, RuntimeError, asyncio.IncompleteReadError, TimeoutError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                latencies.append(time.perf_counter() - started)
                if body != str(rid).encode():
                    errors += 1
        finally:
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return errors


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


async def _settle(port: int, start: int, stop: int, deadline: float) -> dict[str, Any]:
    """Poll the server until every task of the measured requests ran (or the deadline passes)."""
    while True:
        counts: list[int] = await _fetch(port, f"/progress?start={start}&stop={stop}")
        done = all(c == stop - start for c in counts)
        if done or time.monotonic() > deadline:
            await asyncio.sleep(0.2)  # let the last flushes return and drop their scopes
            return dict(await _fetch(port, f"/stats?start={start}&stop={stop}"))
        await asyncio.sleep(0.1)


def run_mode(mode: str, requests: int, concurrency: int, time_limit: float, use_tracemalloc: bool) -> Result:
    """Start a server in a subprocess, warm it up, take the baseline, drive the load, settle, stop it."""
    # the warm-up is as large as the load, so buffers that grow to the peak load's size (dict and set tables,
    # the event loop's queues) have grown before the baseline: what remains after the load is then a leak
    capacity = requests * 2
    command = [sys.executable, os.path.abspath(__file__), "--serve", mode, "--capacity", str(capacity)]
    if not use_tracemalloc:
        command.append("--no-tracemalloc")
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    result = Result(mode=mode, requests=requests)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the {mode} server did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
        port = int(line.split()[1])

        async def main() -> None:
            await _wait_listening(port)
            warm: list[float] = []
            if await _drive(port, range(requests, capacity), concurrency, warm, 10.0):
                raise RuntimeError(f"the {mode} server failed during the warm-up")
            await _settle(port, requests, capacity, time.monotonic() + 120)
            await _fetch(port, "/baseline")
            latencies: list[float] = []
            started = time.perf_counter()
            result.errors = await asyncio.wait_for(
                _drive(port, range(requests), concurrency, latencies, 10.0), time_limit
            )
            result.seconds = time.perf_counter() - started
            result.p50_ms = _percentile(latencies, 0.50)
            result.p99_ms = _percentile(latencies, 0.99)
            result.max_ms = _percentile(latencies, 1.0)
            result.server = await _settle(port, 0, requests, time.monotonic() + 120)
            result.drain_seconds = time.perf_counter() - started - result.seconds

        asyncio.run(main())
    finally:
        proc.send_signal(signal.SIGTERM)  # uvicorn shuts down gracefully (lifespan shutdown), then exits
        try:
            _, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
        result.server_errors = [line for line in stderr.splitlines() if "Traceback" in line or "ERROR" in line]
        if os.environ.get("LOAD_DEBUG"):
            print(stderr, file=sys.stderr)
    return result


async def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        del reader
        return


def report(results: list[Result], out: Callable[[str], None] = print) -> None:
    """Print the figures as a small table."""
    for r in results:
        out(
            f"{r.mode}: {r.requests} requests in {r.seconds:.1f}s (tasks done {r.drain_seconds:.1f}s later), "
            f"errors {r.errors}, "
            f"p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, max {r.max_ms:.2f} ms"
        )
        s = r.server
        out(
            f"  tasks run per depth {s.get('tasks_per_depth')}, exactly once: {s.get('exactly_once')}, "
            f"started before the response was sent: {s.get('early_tasks')}"
        )
        before: dict[str, Any] = s.get("before") or {}
        after: dict[str, Any] = s.get("after") or {}
        out(f"  memory before: {before}")
        out(f"  memory after:  {after}")
        out(f"  server errors: {len(r.server_errors)} {r.server_errors[:3]}")


def main(argv: list[str] | None = None) -> int:
    """Command line: the driver by default, the server with ``--serve MODE``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=20_000, help="requests per mode (default 20000)")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent keep-alive clients (default 64)")
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds the load of one mode may take")
    parser.add_argument("--modes", default="di_tasks,plain", help="comma-separated: di_tasks, plain")
    parser.add_argument("--no-tracemalloc", action="store_true", help="measure memory by object counts and RSS only")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--capacity", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.capacity, not args.no_tracemalloc)
        return 0
    results = [
        run_mode(mode, args.requests, args.concurrency, args.time_limit, not args.no_tracemalloc)
        for mode in args.modes.split(",")
    ]
    if args.json:
        print(json.dumps([asdict(r) for r in results]))
    else:
        report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
