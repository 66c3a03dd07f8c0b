"""One container shared by threads (each running scripts) and an event loop at the same time."""

import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any, Literal

import anyio
import pytest

from di_tasks import BackgroundTasks, Container, Depends, Scope, ScopeError

pytestmark = pytest.mark.anyio

THREADS = 8
RUNS = 5
JOIN_TIMEOUT = 30.0


class Counters:
    """Thread-safe counts of creations, teardowns and task runs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.task_runs: list[tuple[str, int]] = []

    def bump(self, name: str) -> None:
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + 1

    def ran(self, who: str, n: int) -> None:
        with self.lock:
            self.task_runs.append((who, n))


def _graph(counters: Counters) -> Callable[..., Any]:
    """A script with app-scoped sync, async and generator dependencies, a request one, and tasks at two depths."""

    def settings() -> dict[str, str]:
        counters.bump("settings")
        time.sleep(0.02)  # widen the window in which first uses overlap
        return {"dsn": "db://"}

    async def client(s: Annotated[dict[str, str], Depends(settings, scope="app")]) -> dict[str, str]:
        counters.bump("client")
        await anyio.sleep(0.02)
        return {"client": s["dsn"]}

    def pool() -> Iterator[list[str]]:
        counters.bump("pool")
        time.sleep(0.02)
        yield ["connection"]
        counters.bump("pool closed")

    async def session(
        who: str,
        n: int,
        p: Annotated[list[str], Depends(pool, scope="app")],
        tasks: BackgroundTasks,
    ) -> AsyncIterator[tuple[str, int]]:
        tasks.add_task(counters.ran, who, n)
        yield who, n
        await anyio.lowlevel.checkpoint()

    def script(
        who: str,
        n: int,
        s: Annotated[dict[str, str], Depends(settings, scope="app")],
        c: Annotated[dict[str, str], Depends(client, scope="app")],
        sess: Annotated[tuple[str, int], Depends(session)],
        scope: Scope,
        tasks: BackgroundTasks,
    ) -> tuple[str, int, int, int, str]:
        assert sess == (who, n), "a value given by name leaked between threads or loops"
        assert scope.values["who"] == who
        tasks.add_task(counters.ran, who, -n)
        return who, n, id(s), id(c), c["client"]

    return script


async def test_threads_running_scripts_and_a_loop_share_one_container(anyio_backend: str) -> None:
    """Threads running Container.run (asyncio and trio) and calls on the main loop: right values, one app value each."""
    counters = Counters()
    script = _graph(counters)
    container = Container()
    results: list[tuple[str, int, int, int, str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS + 1, timeout=JOIN_TIMEOUT)

    def worker(k: int) -> None:
        try:
            barrier.wait()
            for n in range(RUNS):
                backend: Literal["asyncio", "trio"] = "trio" if k % 2 else "asyncio"
                results.append(container.run(script, who=f"thread-{k}", n=n, backend=backend))
        except BaseException as exc:
            errors.append(exc)

    async with container:
        threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(THREADS)]
        for t in threads:
            t.start()
        await anyio.to_thread.run_sync(barrier.wait)

        async def on_loop(n: int) -> None:
            results.append(await container.call(script, who="loop", n=n))

        async with anyio.create_task_group() as tg:
            for n in range(RUNS * 2):
                tg.start_soon(on_loop, n)
        for t in threads:
            await anyio.to_thread.run_sync(t.join, JOIN_TIMEOUT)
        assert not any(t.is_alive() for t in threads)
        assert counters.counts.get("pool closed", 0) == 0  # the app lifetime is still open
    assert errors == []
    assert len(results) == THREADS * RUNS + RUNS * 2
    assert len({r[2:] for r in results}) == 1  # the same app-scoped objects everywhere
    assert counters.counts == {"settings": 1, "client": 1, "pool": 1, "pool closed": 1}
    expected = {(f"thread-{k}", n) for k in range(THREADS) for n in range(RUNS)} | {
        ("loop", n) for n in range(RUNS * 2)
    }
    assert sorted(counters.task_runs) == sorted([*expected, *((w, -n) for w, n in expected)])


async def test_concurrent_first_use_on_one_loop_creates_app_values_once(anyio_backend: str) -> None:
    """Many concurrent requests on one loop that first use app-scoped dependencies create each one once."""
    counters = Counters()
    script = _graph(counters)
    container = Container()
    seen: list[tuple[str, int, int, int, str]] = []

    async def one(n: int) -> None:
        seen.append(await container.call(script, who="loop", n=n))

    async with container, anyio.create_task_group() as tg:
        for n in range(50):
            tg.start_soon(one, n)
    assert counters.counts == {"settings": 1, "client": 1, "pool": 1, "pool closed": 1}
    assert len({r[2:] for r in seen}) == 1
    assert len(counters.task_runs) == 100


def test_threads_alone_share_the_app_lifetime() -> None:
    """Threads only: each run enters the container; app values exist while any run is active, each torn down once."""
    counters = Counters()
    script = _graph(counters)
    container = Container()
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS, timeout=JOIN_TIMEOUT)

    def worker(k: int) -> None:
        try:
            barrier.wait()
            for n in range(RUNS):
                container.run(script, who=f"t{k}", n=n, backend="trio" if k % 2 else "asyncio")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert not container.app.is_open
    assert counters.counts["pool"] == counters.counts["pool closed"] >= 1
    assert len(counters.task_runs) == THREADS * RUNS * 2


def test_a_failing_app_dependency_is_retried_by_the_next_first_use() -> None:
    """When the first creation of an app value fails, waiters do not hang and a later use creates it."""
    attempts: list[int] = []

    async def flaky() -> int:
        attempts.append(1)
        await anyio.sleep(0.01)
        if len(attempts) == 1:
            raise ConnectionError("first attempt fails")
        return len(attempts)

    async def script(v: Annotated[int, Depends(flaky, scope="app")]) -> int:
        return v

    container = Container()
    outcomes: list[object] = []

    async def one() -> None:
        try:
            outcomes.append(await container.call(script))
        except ConnectionError as exc:
            outcomes.append(exc)

    async def main() -> None:
        async with container, anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(one)

    anyio.run(main)
    errors = [o for o in outcomes if isinstance(o, ConnectionError)]
    assert len(errors) == 1
    assert len(outcomes) == 10
    assert {o for o in outcomes if not isinstance(o, ConnectionError)} == {2}
    assert len(attempts) == 2


def test_concurrent_first_solves_from_threads_agree() -> None:
    """Threads solving the same function for the first time at once all get an equivalent graph."""

    def leaf(x: int) -> int:
        return x

    def mid(a: Annotated[int, Depends(leaf)]) -> int:
        return a

    def top(a: Annotated[int, Depends(mid)], b: Annotated[int, Depends(leaf)]) -> int:
        return a + b

    container = Container()
    barrier = threading.Barrier(THREADS, timeout=JOIN_TIMEOUT)
    graphs: list[tuple[str, ...]] = []

    def worker() -> None:
        barrier.wait()
        graphs.append(tuple(n.name for n in container.solve(top).nodes))
        graphs.append((str(container.run(top, x=2)),))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT)
    shapes = {g for g in graphs if len(g) > 1}
    assert len(shapes) == 1
    assert next(iter(shapes))[-1].endswith("top")
    assert {g for g in graphs if len(g) == 1} == {("4",)}


async def shared_agen_pool() -> AsyncIterator[str]:
    yield "pool"


async def uses_shared_agen(p: Annotated[str, Depends(shared_agen_pool, scope="app")]) -> str:
    return p


async def does_nothing() -> None:
    return None


def _hold(
    container: Container, first: Callable[..., Any] | None, ready: threading.Event, release: threading.Event
) -> None:
    """In a thread of its own: enter the container on that thread's loop, call ``first``, hold until released."""

    async def main() -> None:
        async with container:
            if first is not None:
                await container.call(first)
            ready.set()
            await anyio.to_thread.run_sync(release.wait)

    anyio.run(main)


@pytest.mark.parametrize("first", ["agen first", "loops first"])
def test_app_async_generators_are_not_shared_across_event_loops(first: str) -> None:
    """An app-scoped async generator belongs to the loop that runs it: a second loop gets a ScopeError, not a
    resource closed under it when the first loop ends."""
    container = Container()
    ready, release = threading.Event(), threading.Event()
    holder = threading.Thread(
        target=_hold, args=(container, uses_shared_agen if first == "agen first" else None, ready, release)
    )
    holder.start()
    try:
        assert ready.wait(JOIN_TIMEOUT)
        if first == "agen first":
            with pytest.raises(ScopeError, match="async generator dependency run by another event loop"):
                container.run(does_nothing)
        else:
            with pytest.raises(ScopeError, match=r"several event loops .* hold the container's app lifetime"):
                container.run(uses_shared_agen)
    finally:
        release.set()
        holder.join(JOIN_TIMEOUT)
    assert not container.app.is_open
