"""The Celery app, tasks and dependencies that the test worker imports (``celery -A celery_app worker``).

The web side (the test process) and the worker import this same module, as a project's web app and its
workers share a tasks module. Each side has its own container, so each gets its own ``Database``: the
tests check the worker's is a different object, made in a different process.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Annotated, Any
from urllib.parse import urlsplit

import anyio
import redis
from celery import Celery
from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor  # pyright: ignore[reportMissingTypeStubs]
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from di_tasks import BackgroundTasks, Container, Depends
from di_tasks.celery import celery_task, register_worker
from di_tasks.otel import TaskTelemetry

QUEUE = "di_tasks_tests"
URL_VARIABLE = "DI_TASKS_TEST_REDIS"

app = Celery("di_tasks_tests")


def url_options(url: str) -> dict[str, Any]:
    """Connection arguments for a ``redis://host:port/db`` URL (``from_url`` is untyped in its kwargs)."""
    parsed = urlsplit(url)
    return {"host": parsed.hostname, "port": parsed.port, "db": int(parsed.path.lstrip("/") or 0)}


def configure(url: str) -> None:
    """Point the app at the test's Redis server (broker and result backend)."""
    app.conf.update(
        broker_url=url,
        result_backend=url,
        task_default_queue=QUEUE,
        broker_connection_retry_on_startup=True,
        result_expires=300,
        worker_hijack_root_logger=False,
    )


configure(os.environ.get(URL_VARIABLE, "redis://127.0.0.1:6379/15"))

OTEL_VARIABLE = "DI_TASKS_TEST_OTEL"
SPANS_KEY = "di_tasks_test_spans"
tracer = trace.get_tracer("celery_app")


class RedisSpanExporter(SpanExporter):
    """Pushes each finished span onto a Redis list as JSON, so the test process reads the worker's spans."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Push ``spans`` onto :data:`SPANS_KEY`."""
        client = redis.Redis(**url_options(str(app.conf.broker_url)))
        for span in spans:
            context, parent = span.get_span_context(), span.parent
            assert context is not None  # a finished SDK span has one
            entry = {
                "name": span.name,
                "trace_id": format(context.trace_id, "032x"),
                "span_id": format(context.span_id, "016x"),
                "parent_id": None if parent is None else format(parent.span_id, "016x"),
                "kind": span.kind.name,
                "attributes": dict(span.attributes or {}),
                "status": [span.status.status_code.name, span.status.description],
                "events": [event.name for event in span.events],
            }
            client.rpush(SPANS_KEY, json.dumps(entry, default=str))
        client.close()
        return SpanExportResult.SUCCESS


telemetry: TaskTelemetry | None = None
if os.environ.get(OTEL_VARIABLE):  # the worker of tests/test_otel.py: traced, with Celery's own instrumentation too
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(RedisSpanExporter()))
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]  # untyped package
    telemetry = TaskTelemetry(tracer_provider=provider)

worker_container = Container(task_observer=telemetry)
worker = register_worker(app, worker_container, modules=("celery_app",))
TRIO_TASK_NAME = "di_tasks.run_on_trio"
trio_worker = register_worker(app, Container(), modules=("celery_app",), name=TRIO_TASK_NAME, backend="trio")


class Database:
    """A stand-in for a database connection: a Redis client and a token unique to this object."""

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self.client = redis.Redis(connection_pool=pool)
        self.token = uuid.uuid4().hex
        self.pool = pool
        self.closed = False

    def record(self, key: str, **fields: Any) -> None:
        """Push one JSON record onto the list ``key``: the fields, this connection's token and the process."""
        entry = {**fields, "db": self.token, "pool": id(self.pool), "pid": os.getpid()}
        self.client.rpush(key, json.dumps(entry))


def get_pool() -> Iterator[redis.ConnectionPool]:
    """App-scoped: one connection pool per process and container."""
    pool = redis.ConnectionPool(**url_options(str(app.conf.broker_url)))
    yield pool
    pool.disconnect()


def get_db(pool: Annotated[redis.ConnectionPool, Depends(get_pool, scope="app")]) -> Iterator[Database]:
    """Request-scoped: a fresh connection per request scope, closed at its end."""
    db = Database(pool)
    yield db
    db.closed = True


DB = Annotated[Database, Depends(get_db)]


def collector(tasks: BackgroundTasks) -> BackgroundTasks:
    """The request scope's collector, as a dependency (so a task can declare it in the default form)."""
    return tasks


# Injected parameters of a task are declared in the default form, so type checkers see them as optional at
# add_task.
def record(key: str, label: str, db: Database = Depends(get_db)) -> str:
    """A sync task with a dependency."""
    db.record(key, label=label)
    return label


async def arecord(
    key: str, label: str, db: Database = Depends(get_db), background_tasks: BackgroundTasks = Depends(collector)
) -> str:
    """An async task with a dependency that adds a follow-up task of its own (run in the worker's process)."""
    db.record(key, label=label)
    background_tasks.add_task(plain, key, f"{label}, follow-up")
    return label


def plain(key: str, label: str) -> str:
    """A sync task without dependencies."""
    redis.Redis(**url_options(str(app.conf.broker_url))).rpush(key, json.dumps({"label": label, "pid": os.getpid()}))
    return label


async def aplain(key: str, label: str) -> str:
    """An async task without dependencies."""
    return plain(key, label)


def flaky(key: str, failures: int, db: Database = Depends(get_db)) -> int:
    """Fail on the first ``failures`` attempts (counted in Redis), then record the attempt that succeeded."""
    attempt = int(db.client.incr(f"{key}:attempts"))
    if attempt <= failures:
        raise RuntimeError(f"attempt {attempt} fails")
    db.record(key, label="flaky", attempt=attempt)
    return attempt


async def charge(key: str, seconds: float, db: Database = Depends(get_db)) -> int:
    """Charge a card after ``seconds`` on the first attempt (at once on later ones); record a cancelled attempt."""
    attempt = int(db.client.incr(f"{key}:attempts"))
    try:
        await anyio.sleep(seconds if attempt == 1 else 0)
    except anyio.get_cancelled_exc_class():
        db.record(key, label="cancelled", attempt=attempt)
        raise
    db.record(key, label="CARD CHARGED", attempt=attempt)
    return attempt


def sync_charge(key: str, seconds: float, db: Database = Depends(get_db)) -> int:
    """The sync form of :func:`charge`: its body runs in a thread of the worker's event loop."""
    attempt = int(db.client.incr(f"{key}:attempts"))
    time.sleep(seconds if attempt == 1 else 0)
    db.record(key, label="CARD CHARGED", attempt=attempt)
    return attempt


def add(a: int, b: int) -> int:
    """A sync task without dependencies that touches nothing."""
    return a + b


async def aadd(a: int, b: int) -> int:
    """An async task without dependencies that touches nothing."""
    return a + b


def pid() -> int:
    """The worker process's id."""
    return os.getpid()


@celery_task(queue="parked", countdown=30)
def parked(n: int) -> int:
    """A function marked for Celery, routed to a queue no worker reads (so its message can be inspected)."""
    return n


class Jobs:
    """Methods as task functions: static and class methods import by name, instance methods do not."""

    @staticmethod
    def static(a: int) -> int:
        """A static method."""
        return a

    @classmethod
    def klass(cls, a: int) -> int:
        """A class method."""
        return a

    def method(self, a: int) -> int:
        """An instance method."""
        return a


def session(db: DB) -> Iterator[Database]:
    """A dependency that opens a span of its own while it is resolved, as an instrumented database driver does."""
    with tracer.start_as_current_span("celery_app.session"):
        assert not db.closed  # a driver would connect here
    yield db


def traced(key: str, db: Database = Depends(session)) -> str:
    """A task that records the trace and the span it runs in."""
    context = trace.get_current_span().get_span_context()
    db.record(key, label="traced", trace_id=format(context.trace_id, "032x"), span_id=format(context.span_id, "016x"))
    return "traced"


async def atraced(key: str, db: Database = Depends(session)) -> str:
    """The async form of :func:`traced`: its body runs on the worker's event loop."""
    return traced(key, db)


def unreachable() -> Database:
    """A dependency that cannot be made, as when a database is down."""
    raise ConnectionError("the database is down")


def traced_unreachable(key: str, db: Database = Depends(unreachable)) -> str:
    """A task whose dependency fails while it is resolved (never called)."""
    raise AssertionError("the body of a task whose dependency failed was called")


NOT_A_FUNCTION = 3
