"""di_tasks.otel: spans, metrics and structured logs of background tasks, with the real OpenTelemetry SDK; one trace
from a request under a real uvicorn, and across a real Redis + Celery worker."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import celery_app
import httpx
import pytest
import redis
from _servers import serve
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware  # pyright: ignore[reportMissingTypeStubs]
from opentelemetry.instrumentation.celery import CeleryInstrumentor  # pyright: ignore[reportMissingTypeStubs]
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from test_celery import Worker, collect, start_worker

from di_tasks import BackgroundTaskError, BackgroundTasks, Container, Depends, InProcessFlusher
from di_tasks.asgi import ScopeMiddleware
from di_tasks.celery import CeleryFlusher, CeleryWorker
from di_tasks.otel import TaskTelemetry


class Telemetry:
    """An SDK tracer and meter provider, read back in memory, and the observer reporting to them."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.observer = TaskTelemetry(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider)
        self.tracer = self.tracer_provider.get_tracer("test")

    def spans(self) -> dict[str, ReadableSpan]:
        """The finished spans by name (each name once in these tests)."""
        return {span.name: span for span in self.exporter.get_finished_spans()}

    def points(self, metric: str) -> list[Any]:
        """The data points of ``metric`` collected now."""
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for found in scope.metrics
            if found.name == metric
            for point in found.data.data_points
        ]

    def counts(self) -> dict[tuple[str, str], int]:
        """``di_tasks.tasks`` by (function, state)."""
        return {
            (str(p.attributes["code.function.name"]), str(p.attributes["di_tasks.task.state"])): int(p.value)
            for p in self.points("di_tasks.tasks")
        }


@pytest.fixture
def otel() -> Telemetry:
    """A fresh in-memory SDK setup and its observer."""
    return Telemetry()


async def ok() -> str:
    return "done"


async def boom() -> None:
    raise ValueError("bad input")


def a_value() -> str:
    return "a value"


async def slow() -> None:
    await anyio.sleep(5)


def parent_of(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    context = span.get_span_context()
    assert context is not None
    return context.span_id


def trace_id(span: ReadableSpan) -> int:
    context = span.get_span_context()
    assert context is not None
    return context.trace_id


@pytest.mark.anyio
async def test_a_task_span_is_the_child_of_its_flush_span_in_the_request_trace(otel: Telemetry) -> None:
    """The flush span's parent is the span current at the scope's exit; each task's span is its child, links to the
    span current at add_task, and carries the function, label, scope, state and timeout."""
    container = Container(task_observer=otel.observer, task_timeout=2.0)
    with otel.tracer.start_as_current_span("request") as request:
        async with container.scope() as scope:
            scope.label = "POST /signup"
            with otel.tracer.start_as_current_span("dependency"):
                scope.tasks.add_task(ok)
    spans = otel.spans()
    flush, task, added = spans["di_tasks.flush POST /signup"], spans["di_tasks.task test_otel.ok"], spans["dependency"]
    assert parent_of(flush) == request.get_span_context().span_id
    assert parent_of(task) == span_id(flush)
    assert trace_id(task) == request.get_span_context().trace_id
    assert [link.context.span_id for link in task.links] == [span_id(added)]
    assert task.attributes is not None
    assert dict(task.attributes) == {
        "code.function.name": "test_otel.ok",
        "di_tasks.task.label": "POST /signup",
        "di_tasks.task.timeout": 2.0,
        "di_tasks.scope.id": f"{id(scope):x}",
        "di_tasks.scope.label": "POST /signup",
        "di_tasks.task.state": "succeeded",
    }
    assert task.status.status_code is StatusCode.UNSET


@pytest.mark.anyio
async def test_a_failure_and_a_timeout_are_recorded_on_their_spans_and_counted(otel: Telemetry) -> None:
    """A failing task's span has the exception and status ERROR; a timed-out one says ``timed_out``; the counter and
    the duration histogram see every state."""
    container = Container(task_observer=otel.observer)
    with pytest.raises(BackgroundTaskError, match="2 background task"):
        async with container.scope() as scope:
            scope.tasks.add_task(ok)
            scope.tasks.add_task(boom)
            scope.tasks.add_task(slow).timeout = 0.05
    spans = otel.spans()
    failed, timed_out = spans["di_tasks.task test_otel.boom"], spans["di_tasks.task test_otel.slow"]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "ValueError: bad input"
    assert [event.name for event in failed.events] == ["exception"]
    assert failed.attributes is not None
    assert failed.attributes["di_tasks.task.state"] == "failed"
    assert timed_out.attributes is not None
    assert timed_out.attributes["di_tasks.task.state"] == "timed_out"
    assert timed_out.status.status_code is StatusCode.ERROR
    assert otel.counts() == {
        ("test_otel.ok", "started"): 1,
        ("test_otel.ok", "succeeded"): 1,
        ("test_otel.boom", "started"): 1,
        ("test_otel.boom", "failed"): 1,
        ("test_otel.slow", "started"): 1,
        ("test_otel.slow", "timed_out"): 1,
    }
    durations = {str(p.attributes["code.function.name"]): p for p in otel.points("di_tasks.task.duration")}
    assert durations["test_otel.slow"].sum >= 0.05
    counts = {name.removeprefix("test_otel."): p.count for name, p in durations.items()}
    assert counts == {"ok": 1, "boom": 1, "slow": 1}


@pytest.mark.anyio
async def test_the_task_span_is_current_in_the_task_code(otel: Telemetry) -> None:
    """A span the task's own code opens (what an instrumented client does) is a child of the task's span, for async
    tasks, sync tasks in worker threads and tasks with dependencies alike."""
    container = Container(task_observer=otel.observer)

    def call_out(name: str) -> None:
        with otel.tracer.start_as_current_span(f"inside {name}"):
            pass

    async def async_task() -> None:
        call_out("async")

    def sync_task() -> None:
        call_out("sync")

    async def with_dependency(value: str = Depends(a_value)) -> None:
        call_out("dependency")

    async with container.scope() as scope:
        scope.tasks.add_task(async_task)
        scope.tasks.add_task(sync_task)
        scope.tasks.add_task(with_dependency)
    spans = otel.spans()
    for kind, task in [("async", "async_task"), ("sync", "sync_task"), ("dependency", "with_dependency")]:
        task_span = next(s for name, s in spans.items() if name.endswith(f".{task}") or name.endswith(f" {task}"))
        assert parent_of(spans[f"inside {kind}"]) == span_id(task_span)
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing left attached here


@pytest.mark.anyio
async def test_skipped_and_never_started_tasks_are_counted_on_the_flush_span(otel: Telemetry) -> None:
    """Tasks skipped because the body raised, and tasks an exit cancelled before their turn, never start: they are
    counted by state and named in events of their flush span."""
    container = Container(task_observer=otel.observer)
    with pytest.raises(RuntimeError, match="endpoint failed"):
        async with container.scope() as scope:
            scope.tasks.add_task(ok)
            raise RuntimeError("endpoint failed")
    skipped = otel.spans()["di_tasks.flush"]
    assert skipped.attributes is not None
    assert skipped.attributes["di_tasks.flush.skipped"] == 1
    assert [(e.name, dict(e.attributes or {})) for e in skipped.events] == [
        ("task skipped", {"code.function.name": "test_otel.ok"})
    ]
    otel.exporter.clear()
    with anyio.move_on_after(0.05):
        async with container.scope() as scope:
            scope.tasks.add_task(slow)
            scope.tasks.add_task(ok)
    assert otel.counts() == {
        ("test_otel.ok", "skipped"): 1,
        ("test_otel.slow", "started"): 1,
        ("test_otel.slow", "cancelled"): 1,
        ("test_otel.ok", "cancelled"): 1,
    }
    flush = otel.spans()["di_tasks.flush"]
    assert flush.attributes is not None
    assert flush.attributes["di_tasks.flush.cancelled"] == 1


@pytest.mark.anyio
async def test_concurrent_tasks_each_get_a_span_under_the_flush(otel: Telemetry) -> None:
    """With ``task_concurrency`` the tasks run in child tasks; each span is still a child of the flush span."""
    container = Container(task_observer=otel.observer, flusher=InProcessFlusher(concurrency=3))
    async with container.scope() as scope:
        for _ in range(3):
            scope.tasks.add_task(ok)
    spans = otel.exporter.get_finished_spans()
    (flush,) = [s for s in spans if s.name == "di_tasks.flush"]
    assert [parent_of(s) for s in spans if s.name == "di_tasks.task test_otel.ok"] == [span_id(flush)] * 3


def test_log_records_about_tasks_carry_structured_fields(caplog: pytest.LogCaptureFixture) -> None:
    """A failed task's record and a skipped batch's record carry the task's name, label and state as fields."""
    container = Container()

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(boom)

    async def failing(tasks: BackgroundTasks) -> None:
        tasks.add_task(ok)
        raise RuntimeError("endpoint failed")

    with caplog.at_level(logging.WARNING, logger="di_tasks"):
        with pytest.raises(Exception, match="1 background task"):
            container.run(endpoint)
        with pytest.raises(RuntimeError, match="endpoint failed"):
            container.run(failing)
    failed, skipped = caplog.records
    assert (failed.task_name, failed.task_label, failed.task_state) == ("test_otel.boom", None, "failed")  # type: ignore[attr-defined]
    assert failed.task_duration >= 0  # type: ignore[attr-defined]  # seconds the task ran before it failed
    assert (skipped.task_names, skipped.task_state) == (["test_otel.ok"], "skipped")  # type: ignore[attr-defined]


def unreachable() -> str:
    """A dependency that cannot be made."""
    raise ConnectionError("the database is down")


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_workers_resolution_of_a_tasks_dependencies_has_its_span(otel: Telemetry, is_async: bool) -> None:
    """On a worker (its event loop, in this process), ``di_tasks.resolve <function>`` is a child of the task's span,
    current while the dependencies are set up, ended as the body starts, which runs in the task's span again; an
    error raised by the body leaves it as it was, one raised while resolving is recorded on it."""
    worker = CeleryWorker(Container(task_observer=otel.observer), ("test_otel",), "asyncio")
    inside: list[int] = []

    def connect() -> str:
        with otel.tracer.start_as_current_span("connect"):  # what an instrumented driver does
            return "connection"

    def sync_task(n: int, conn: str = Depends(connect)) -> int:
        inside.append(trace.get_current_span().get_span_context().span_id)
        if n < 0:
            raise ValueError("negative")
        return n

    async def async_task(n: int, conn: str = Depends(connect)) -> int:
        return sync_task(n, conn)

    def never(conn: str = Depends(unreachable)) -> None: ...

    task = async_task if is_async else sync_task
    name = f"test_otel.{task.__qualname__}"
    try:
        for n, func in [(1, task), (-1, task), (0, never)]:
            with otel.tracer.start_as_current_span(f"task {n}"), contextlib.suppress(ValueError, ConnectionError):
                worker.call(func, (n,) if func is task else (), {})
    finally:
        worker.close()
    spans = otel.exporter.get_finished_spans()
    for n in (1, -1):
        (outer,) = [s for s in spans if s.name == f"task {n}"]
        (resolve,) = [s for s in spans if s.name == f"di_tasks.resolve {name}" and parent_of(s) == span_id(outer)]
        (connected,) = [s for s in spans if s.name == "connect" and parent_of(s) == span_id(resolve)]
        assert resolve.attributes is not None
        assert resolve.attributes["di_tasks.resolve.dependencies"] == (f"test_otel.{connect.__qualname__}",)
        assert resolve.status.status_code is StatusCode.UNSET
        assert resolve.end_time is not None
        assert connected.end_time is not None
        assert connected.end_time <= resolve.end_time
    assert inside == [span_id(s) for s in spans if s.name in ("task 1", "task -1")]
    (failed,) = [s for s in spans if s.name == f"di_tasks.resolve test_otel.{never.__qualname__}"]
    assert parent_of(failed) == span_id(next(s for s in spans if s.name == "task 0"))
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "ConnectionError: the database is down"
    assert [event.name for event in failed.events] == ["exception"]


# -- a real server: the request's trace goes on into its tasks ----------------------------------------------


@contextmanager
def traced_app(otel: Telemetry, container: Container, task: Any, shutdown_timeout: float = 10.0) -> Generator[str]:
    """A Starlette app, instrumented by ``opentelemetry-instrumentation-asgi``, under a real uvicorn with lifespan;
    its endpoint adds ``task``. Yields the base URL."""

    @container.inject
    async def add(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(task)

    async def endpoint(request: Request) -> JSONResponse:
        await add()
        return JSONResponse({"queued": True})

    app = Starlette(
        routes=[Route("/signup", endpoint, methods=["POST"])],
        middleware=[
            Middleware(OpenTelemetryMiddleware, tracer_provider=otel.tracer_provider),
            Middleware(ScopeMiddleware, container=container, shutdown_timeout=shutdown_timeout),
        ],
    )
    with serve(app) as server:
        yield server.url


def test_a_request_and_its_task_are_one_trace_under_uvicorn(otel: Telemetry) -> None:
    """Under uvicorn, the task runs after the response, yet its span is in the request's trace, under the flush span
    whose parent is the server span of the request."""
    container = Container(task_observer=otel.observer)
    with traced_app(otel, container, ok) as url:
        assert httpx.post(f"{url}/signup").json() == {"queued": True}
    spans = otel.exporter.get_finished_spans()
    (server,) = [s for s in spans if s.kind is trace.SpanKind.SERVER]
    (flush,) = [s for s in spans if s.name == "di_tasks.flush POST /signup"]
    (task,) = [s for s in spans if s.name == "di_tasks.task test_otel.ok"]
    assert parent_of(flush) == span_id(server)
    assert parent_of(task) == span_id(flush)
    assert trace_id(task) == trace_id(server)


def test_pending_exits_and_shutdown_cancellations_are_reported(otel: Telemetry) -> None:
    """The gauge shows a request scope waiting for its task; a task cancelled at shutdown is counted."""
    container = Container(task_observer=otel.observer)
    started = threading.Event()

    async def waits() -> None:
        started.set()
        await anyio.sleep(30)

    with traced_app(otel, container, waits, shutdown_timeout=0.1) as url:
        assert httpx.post(f"{url}/signup").status_code == 200
        assert started.wait(10)
        (pending,) = otel.points("di_tasks.asgi.pending_exits")
        assert pending.value == 1
    # the server has stopped: its lifespan shutdown cancelled the task after shutdown_timeout
    (cancelled,) = otel.points("di_tasks.asgi.cancelled_at_shutdown")
    assert cancelled.value == 1
    assert [v for (f, state), v in otel.counts().items() if f.endswith(".waits") and state == "cancelled"] == [1]


# -- Celery: the trace goes on in the worker ---------------------------------------------------------------

OTEL_QUEUE = "di_tasks_tests_otel"


@pytest.fixture(scope="session")
def otel_worker(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """A real Celery worker (solo pool) traced with the SDK and ``opentelemetry-instrumentation-celery``; its spans
    are pushed to Redis (``celery_app.RedisSpanExporter``)."""
    log = tmp_path_factory.mktemp("celery") / "otel.log"
    os.environ[celery_app.OTEL_VARIABLE] = "1"
    try:
        with start_worker(redis_url, log, OTEL_QUEUE, "--pool=solo") as running:
            del os.environ[celery_app.OTEL_VARIABLE]
            yield running
    finally:
        os.environ.pop(celery_app.OTEL_VARIABLE, None)


def worker_spans(client: redis.Redis, trace_hex: str, count: int, worker: Worker) -> list[dict[str, Any]]:
    """Wait (bounded) until the worker has pushed ``count`` spans of the trace ``trace_hex``."""
    found: list[dict[str, Any]] = []
    end = time.monotonic() + 30
    while len(found) < count and time.monotonic() < end:
        found = [
            span
            for raw in client.lrange(celery_app.SPANS_KEY, 0, -1)
            if (span := json.loads(raw))["trace_id"] == trace_hex
        ]
        time.sleep(0.05)
    assert len(found) == count, f"{found}\nworker log:\n{worker.tail()}"
    return found


@pytest.mark.parametrize("web_instrumented", [False, True], ids=["web-plain", "web-instrumented"])
def test_a_task_sent_to_celery_continues_the_request_trace_on_the_worker(
    otel_worker: Worker, redis_url: str, web_instrumented: bool
) -> None:
    """The message carries the trace context; on the worker the task's span, the span of its dependencies'
    resolution and a span a dependency opens while it is resolved, are in the web side's trace, under Celery's own
    consumer span, each span once; the task's own code runs in the task's span."""
    otel = Telemetry()
    client = redis.Redis(**celery_app.url_options(redis_url))
    key = uuid.uuid4().hex
    container = Container(
        flusher=CeleryFlusher(celery_app.app, options={"queue": OTEL_QUEUE}), task_observer=otel.observer
    )
    instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]  # an untyped package
    if web_instrumented:
        instrumentor.instrument(tracer_provider=otel.tracer_provider)
    try:

        async def endpoint(tasks: BackgroundTasks) -> None:
            tasks.add_task(celery_app.traced, key)

        with otel.tracer.start_as_current_span("request") as request:
            container.run(endpoint)
    finally:
        if web_instrumented:
            instrumentor.uninstrument()
    trace_hex = format(request.get_span_context().trace_id, "032x")
    (done,) = collect(client, key, 1, otel_worker)
    assert done["trace_id"] == trace_hex  # the task's own code ran in the request's trace
    web = {s.name: s for s in otel.exporter.get_finished_spans()}
    flush = web["di_tasks.flush"]
    remote = {s["name"]: s for s in worker_spans(client, trace_hex, 4, otel_worker)}
    assert set(remote) == {
        "run/di_tasks.run",
        "di_tasks.task celery_app.traced",
        "di_tasks.resolve celery_app.traced",
        "celery_app.session",
    }
    consumer, task, resolve, dependency = (
        remote["run/di_tasks.run"],
        remote["di_tasks.task celery_app.traced"],
        remote["di_tasks.resolve celery_app.traced"],
        remote["celery_app.session"],
    )
    if web_instrumented:  # Celery's producer span sits between the flush and the worker
        producer = web["apply_async/di_tasks.run"]
        assert parent_of(producer) == span_id(flush)
        assert consumer["parent_id"] == format(span_id(producer), "016x")
    else:
        assert consumer["parent_id"] == format(span_id(flush), "016x")
    assert task["parent_id"] == consumer["span_id"]
    assert task["kind"] == "INTERNAL"
    assert resolve["parent_id"] == task["span_id"]
    assert dependency["parent_id"] == resolve["span_id"]  # the dependency was set up while the resolution ran
    assert done["span_id"] == task["span_id"]  # and the body, in a worker thread, ran in the task's span again
    assert resolve["attributes"]["di_tasks.resolve.dependencies"] == [
        "celery_app.get_pool",
        "celery_app.get_db",
        "celery_app.session",
    ]
    assert task["attributes"]["di_tasks.task.state"] == "succeeded"
    client.close()


def send_traced(otel: Telemetry, func: Any, *args: Any) -> str:
    """Send ``func(*args)`` to the traced worker from a request span; return the trace id (hex)."""
    container = Container(
        flusher=CeleryFlusher(celery_app.app, options={"queue": OTEL_QUEUE}), task_observer=otel.observer
    )

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(func, *args)

    with otel.tracer.start_as_current_span("request") as request:
        container.run(endpoint)
    return format(request.get_span_context().trace_id, "032x")


def test_the_resolution_of_an_async_task_on_the_worker_has_its_span(otel_worker: Worker, redis_url: str) -> None:
    """For an ``async def`` task, whose body runs on the worker's event loop, the resolution's span is the task
    span's child, the dependency's span its child, and the body runs in the task's span."""
    otel = Telemetry()
    client = redis.Redis(**celery_app.url_options(redis_url))
    key = uuid.uuid4().hex
    trace_hex = send_traced(otel, celery_app.atraced, key)
    (done,) = collect(client, key, 1, otel_worker)
    remote = {s["name"]: s for s in worker_spans(client, trace_hex, 4, otel_worker)}
    task, resolve = remote["di_tasks.task celery_app.atraced"], remote["di_tasks.resolve celery_app.atraced"]
    assert resolve["parent_id"] == task["span_id"]
    assert remote["celery_app.session"]["parent_id"] == resolve["span_id"]
    assert done["span_id"] == task["span_id"]
    client.close()


def test_an_error_resolving_a_task_on_the_worker_is_recorded_on_the_resolution_span(
    otel_worker: Worker, redis_url: str
) -> None:
    """A dependency that raises on the worker: the resolution's span records the exception with the status
    ``ERROR``, and the task's span says the task failed."""
    otel = Telemetry()
    client = redis.Redis(**celery_app.url_options(redis_url))
    trace_hex = send_traced(otel, celery_app.traced_unreachable, uuid.uuid4().hex)
    remote = {s["name"]: s for s in worker_spans(client, trace_hex, 3, otel_worker)}
    task = remote["di_tasks.task celery_app.traced_unreachable"]
    resolve = remote["di_tasks.resolve celery_app.traced_unreachable"]
    assert resolve["parent_id"] == task["span_id"]
    assert resolve["status"] == ["ERROR", "ConnectionError: the database is down"]
    assert resolve["events"] == ["exception"]
    assert resolve["attributes"]["di_tasks.resolve.dependencies"] == ["celery_app.unreachable"]
    assert task["attributes"]["di_tasks.task.state"] == "failed"
    client.close()


@pytest.mark.anyio
async def test_without_a_configured_provider_tasks_are_not_observed() -> None:
    """With the API's default (no SDK configured), the observer returns nothing to call, so tasks pay next to
    nothing; with a provider it is enabled."""
    observer = TaskTelemetry()
    container = Container(task_observer=observer)
    assert not observer.enabled
    async with container.scope() as scope:
        task = scope.tasks.add_task(ok)
        assert observer.task_started(task) is None
        assert observer.flush_started(scope, [task]) is None
    assert TaskTelemetry(tracer_provider=TracerProvider()).enabled


LATER = textwrap.dedent(
    """
    import di_tasks.otel
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from di_tasks import BackgroundTasks, Container
    from di_tasks.otel import TaskTelemetry

    now = [100.0]
    di_tasks.otel.monotonic = lambda: now[0]  # the observer's clock only, not the event loop's


    async def ok() -> None: ...


    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(ok)


    observer = TaskTelemetry()  # before the SDK is configured
    container = Container(task_observer=observer)
    container.run(endpoint)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    container.run(endpoint)  # under a second since the last look-up: its "no" still holds
    print(observer.enabled, len(exporter.get_finished_spans()))
    now[0] += 1.0
    container.run(endpoint)  # the next flush looks again
    print(observer.enabled, sorted(span.name for span in exporter.get_finished_spans()))
    """
)


def test_an_observer_made_before_the_sdk_is_configured_observes_from_the_next_flush(tmp_path: Path) -> None:
    """A ``TaskTelemetry`` made before the global provider is set is off, keeps its "no" for a second, then sees the
    provider at the next flush and observes that flush and its tasks (in a fresh interpreter: the global provider
    can be set once per process)."""
    script = tmp_path / "later.py"
    script.write_text(LATER)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["False 0", "True ['di_tasks.flush', 'di_tasks.task ok']"]
