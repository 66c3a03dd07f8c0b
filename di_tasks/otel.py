"""OpenTelemetry for background tasks: a span per task and per flush, the numbers an operator watches, and one trace
from the request to every task it added, in this process or on a Celery worker.

Install with the ``otel`` extra (``pip install 'di_tasks[otel]'``, which brings ``opentelemetry-api`` only) and give
the container a :class:`TaskTelemetry`: ``Container(task_observer=TaskTelemetry())``. Spans and metrics go to the
providers you configure with the OpenTelemetry SDK (or to the global ones); with none configured they are no-ops.

The trace: a flush span ``di_tasks.flush <label>`` is the child of the span current when the scope exits (the
request's span, when the app is instrumented: the scope's exit inherits the request's context), or else of the span
current when its first task was added. Each task's span ``di_tasks.task <function>`` is the child of the flush span
and links to the span current at ``add_task`` (the endpoint's or a dependency's). The task's span is current while
its own code runs, so what it calls (an HTTP client, a database driver) nests under it. Tasks sent to Celery carry
the trace context in their message headers, and the worker's span for the task continues the same trace; under it,
``di_tasks.resolve <function>`` covers the resolution of the task's dependencies on the worker.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable, Sequence
from time import monotonic, perf_counter
from typing import Any, Final

import anyio
from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics._internal import _ProxyMeterProvider  # the API's default until an SDK's is set
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from ._graph import Graph
from ._inspect import qualname
from ._scope import Scope
from ._tasks import Task, TaskState
from .asgi import ScopeMiddleware

__all__ = ("FLUSH_SPAN", "RESOLVE_SPAN", "TASK_SPAN", "TaskTelemetry")

TASK_SPAN: Final = "di_tasks.task"
"""The name of a task's span, followed by the function's qualified name: ``di_tasks.task send_email``."""

FLUSH_SPAN: Final = "di_tasks.flush"
"""The name of a scope's flush span, followed by the scope's label when it has one: ``di_tasks.flush POST /signup``."""

RESOLVE_SPAN: Final = "di_tasks.resolve"
"""The name of the span of a task's dependency resolution on a Celery worker, followed by the function's qualified
name: ``di_tasks.resolve send_email``."""

_FLUSH_KEY: Final = otel_context.create_key("di_tasks.flush")
_RECHECK: Final = 1.0  # seconds a "no provider configured" answer is kept
_SCOPE_ID: Final = "di_tasks.scope.id"
_SCOPE_LABEL: Final = "di_tasks.scope.label"
_FUNCTION: Final = "code.function.name"
_STATE: Final = "di_tasks.task.state"
_PENDING: Final = TaskState.PENDING
_SKIPPED: Final = TaskState.SKIPPED
_CANCELLED: Final = TaskState.CANCELLED
_FAILED: Final = TaskState.FAILED
_HANDED_OFF: Final = TaskState.HANDED_OFF


class _Flush:
    """What a task started inside a traced flush learns from it (through the OpenTelemetry context)."""

    __slots__ = ("attributes", "started")

    def __init__(self, attributes: dict[str, str]) -> None:
        self.attributes = attributes
        self.started: set[int] = set()  # ids of the batch's tasks that started (their own finish counts them)


class _AttributeGetter(Getter[Any]):
    """Reads a propagated header from a Celery request, which holds each message header as an attribute."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        value = getattr(carrier, key, None)
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Any) -> list[str]:
        return []


_GETTER: Final = _AttributeGetter()


def _outcome(task: Task) -> str:
    """The state a task's span and counter record: its final state, with a timeout told from other failures."""
    exc = task.exception
    # anyio.fail_after raises TimeoutError while handling the cancellation it caused; the task's own TimeoutError
    # (a client's) has no cancellation behind it
    if (
        task.state is _FAILED
        and task.timeout is not None
        and isinstance(exc, TimeoutError)
        and isinstance(exc.__context__, anyio.get_cancelled_exc_class())
    ):
        return "timed_out"
    return str(task.state.value).replace(" ", "_")


def _has_span(context: otel_context.Context) -> bool:
    return trace.get_current_span(context).get_span_context().is_valid


class TaskTelemetry:
    """A task observer that reports to OpenTelemetry: ``Container(task_observer=TaskTelemetry())``.

    Spans (see the module docstring for how they nest): ``di_tasks.task <function>`` per task, with the attributes
    ``code.function.name``, ``di_tasks.task.label`` (``"GET /path"`` under ASGI), ``di_tasks.scope.id`` and
    ``di_tasks.scope.label`` (the scope that added it), ``di_tasks.task.state`` (its final state; ``timed_out`` for a
    timeout), ``di_tasks.task.timeout``, and on failure the exception recorded and the status ``ERROR``;
    ``di_tasks.flush <label>`` per batch of a scope's tasks, with how many tasks it had and how many were skipped or
    never started (an event names each).

    Metrics: ``di_tasks.tasks`` (counter; attributes ``di_tasks.task.state``: ``started``, ``succeeded``, ``failed``,
    ``timed_out``, ``cancelled``, ``skipped``, ``handed_off``, and ``code.function.name``), ``di_tasks.task.duration``
    (histogram in seconds, by function and state), ``di_tasks.asgi.pending_exits`` (gauge: request scopes waiting
    for their tasks, the backlog ``max_pending_exits`` bounds) and ``di_tasks.asgi.cancelled_at_shutdown`` (counter),
    both summed over the :class:`~di_tasks.asgi.ScopeMiddleware` instances of the container.

    On a Celery worker, give the worker's container one too: the task's span there continues the web side's trace
    (see :func:`di_tasks.celery.register_worker`), and a span ``di_tasks.resolve <function>`` under it covers the
    resolution of the task's dependencies.

    Off until a provider is configured: with the API's defaults (no SDK set up, and no provider given), tasks and
    flushes are not observed at all, so an observer installed ahead of the SDK's configuration costs an attribute
    read per task and a call per flush. Whether a provider is configured is looked up when the observer is made,
    then at the start of each flush (once per batch of a scope's tasks) and of each task a Celery worker receives,
    and kept: a yes for good (a provider, once set, stays), a no for a second (looking the global providers up reads
    the environment). So an SDK configured later is seen at the first flush that starts a second or more after the
    previous look-up, and observed from that flush on.

    Attributes:
        enabled: whether it observes now (see above); the core reads it before each task (see
            :class:`~di_tasks.TaskObserver`).
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        """Make an observer.

        Args:
            tracer_provider: where spans go; default: the global one (``trace.set_tracer_provider``), looked up
                when a span starts, so it may be configured after this object is made.
            meter_provider: where metrics go; default: the global one, likewise.
        """
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._tracer = trace.get_tracer("di_tasks", tracer_provider=tracer_provider)
        meter = metrics.get_meter("di_tasks", meter_provider=meter_provider)
        self._tasks = meter.create_counter(
            "di_tasks.tasks", unit="{task}", description="Background tasks by state (started, then how each ended)"
        )
        self._duration = meter.create_histogram(
            "di_tasks.task.duration", unit="s", description="How long each background task ran, by function"
        )
        self._middlewares: weakref.WeakSet[ScopeMiddleware] = weakref.WeakSet()
        self.enabled: bool = False
        self._recheck = 0.0
        self._refresh()
        meter.create_observable_gauge(
            "di_tasks.asgi.pending_exits",
            callbacks=[self._pending_exits],
            unit="{scope}",
            description="Request scopes waiting in the lifespan's task group for their tasks",
        )
        meter.create_observable_counter(
            "di_tasks.asgi.cancelled_at_shutdown",
            callbacks=[self._cancelled_at_shutdown],
            unit="{task}",
            description="Background tasks cancelled by lifespan shutdown",
        )

    def _refresh(self) -> bool:
        """Refresh :attr:`enabled` (see the class docstring) and return it."""
        if self.enabled:
            return True
        now = monotonic()
        if now >= self._recheck:
            self.enabled = self._configured()
            self._recheck = now + _RECHECK
        return self.enabled

    def _configured(self) -> bool:
        tracing = self._tracer_provider if self._tracer_provider is not None else trace.get_tracer_provider()
        measuring = self._meter_provider if self._meter_provider is not None else metrics.get_meter_provider()
        return not isinstance(tracing, trace.ProxyTracerProvider | trace.NoOpTracerProvider) or not isinstance(
            measuring, metrics.NoOpMeterProvider | _ProxyMeterProvider
        )

    # -- in this process ---------------------------------------------------------------------------------

    def task_started(self, task: Task, /) -> Callable[[], object] | None:
        """Start the task's span and make it current for the task's own code (see :class:`~di_tasks.TaskObserver`).

        Returns:
            What ends the span and records the outcome once the task has finished; ``None`` when not :attr:`enabled`.
        """
        if not self.enabled:
            return None
        context = task.context  # kept: a finished task drops its context before the callback below runs
        added = context.run(otel_context.get_current)  # the OpenTelemetry context at add_task
        flushing = otel_context.get_current()  # the flusher's: holds the flush span when the flush is traced
        parent = flushing if _has_span(flushing) else added
        attributes: dict[str, Any] = {_FUNCTION: task.name}
        if task.label is not None:
            attributes["di_tasks.task.label"] = task.label
        if task.timeout is not None:
            attributes["di_tasks.task.timeout"] = task.timeout
        flush = otel_context.get_value(_FLUSH_KEY, flushing)
        if isinstance(flush, _Flush):
            flush.started.add(id(task))
            attributes.update(flush.attributes)
        links = None
        origin = trace.get_current_span(added).get_span_context()
        if origin.is_valid and parent is not added:
            links = [Link(origin, {"di_tasks.link": "added here"})]
        span = self._tracer.start_span(f"{TASK_SPAN} {task.name}", parent, attributes=attributes, links=links)
        token = context.run(otel_context.attach, trace.set_span_in_context(span, added))
        self._tasks.add(1, {_STATE: "started", _FUNCTION: task.name})
        start = perf_counter()

        def finished() -> None:
            elapsed = perf_counter() - start
            # still entered by a timed-out sync task's abandoned thread: the context is dropped with it anyway
            with contextlib.suppress(RuntimeError):
                context.run(otel_context.detach, token)
            state = _outcome(task)
            self._end(span, state, task.exception)
            self._tasks.add(1, {_STATE: state, _FUNCTION: task.name})
            self._duration.record(elapsed, {_FUNCTION: task.name, _STATE: state})

        return finished

    def flush_started(self, scope: Scope, tasks: Sequence[Task], /) -> Callable[[], object] | None:
        """Start the flush span of a batch and make it current for the flusher (see :class:`~di_tasks.FlushObserver`).

        Returns:
            What ends the span once the batch was dealt with, and counts the tasks that never started; ``None`` when
            not :attr:`enabled` (refreshed here, see the class docstring), and then none of the batch's tasks is
            observed.
        """
        # off: the cached no is read here, without a call (a flush of an app not yet configured costs this much)
        if not self.enabled and (monotonic() < self._recheck or not self._refresh()):
            return None
        current = otel_context.get_current()
        parent = current if _has_span(current) else tasks[0].context.run(otel_context.get_current)
        scope_attributes = {_SCOPE_ID: f"{id(scope):x}"}
        if scope.label is not None:
            scope_attributes[_SCOPE_LABEL] = scope.label
        name = FLUSH_SPAN if scope.label is None else f"{FLUSH_SPAN} {scope.label}"
        span = self._tracer.start_span(
            name, parent, attributes={**scope_attributes, "di_tasks.flush.tasks": len(tasks)}
        )
        flush = _Flush(scope_attributes)
        token = otel_context.attach(otel_context.set_value(_FLUSH_KEY, flush, trace.set_span_in_context(span, current)))

        def finished() -> None:
            otel_context.detach(token)
            never = [
                (task, "cancelled" if task.state is _PENDING else _outcome(task))
                for task in tasks
                if id(task) not in flush.started
            ]
            counts: dict[str, int] = {}
            for task, state in never:
                # still pending here means the exit was cancelled before the task's turn (the scope marks it
                # cancelled next); one that failed without starting could not be handed off (a broker error)
                counts[state] = counts.get(state, 0) + 1
                self._tasks.add(1, {_STATE: state, _FUNCTION: task.name})
                if state != "handed_off" and span.is_recording():
                    span.add_event(f"task {state}", {_FUNCTION: task.name})
            if span.is_recording():
                for state, count in counts.items():
                    span.set_attribute(f"di_tasks.flush.{state}", count)
            span.end()

        return finished

    @staticmethod
    def _end(span: Span, state: str, exc: BaseException | None) -> None:
        if span.is_recording():
            span.set_attribute(_STATE, state)
            if exc is not None and state in ("failed", "timed_out"):
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        span.end()

    # -- the ASGI middleware ----------------------------------------------------------------------------

    def watch_middleware(self, middleware: ScopeMiddleware, /) -> None:
        """Report ``middleware``'s pending exits and shutdown cancellations. A
        :class:`~di_tasks.asgi.ScopeMiddleware` calls it when it is made with a container whose observer this is;
        call it yourself for a middleware made before the observer was set."""
        self._middlewares.add(middleware)

    def _pending_exits(self, _: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        yield metrics.Observation(sum(m.pending_exits for m in list(self._middlewares)))

    def _cancelled_at_shutdown(self, _: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        yield metrics.Observation(sum(m.cancelled_at_shutdown for m in list(self._middlewares)))

    # -- Celery -------------------------------------------------------------------------------------------

    def message_headers(self, task: Task, /) -> dict[str, str]:
        """The trace context of a task sent to another process, as message headers (W3C ``traceparent``): the
        flush span's, so the worker's span joins the request's trace. :class:`~di_tasks.celery.CeleryFlusher` adds
        them to each message."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return carrier

    def message_received(
        self, func: Callable[..., Any], request: object, /
    ) -> Callable[[BaseException | None], None] | None:
        """Start the span of a task a worker runs, continuing the trace its message carries, and make it current
        while its dependencies are resolved and it runs; the worker calls what this returns with the task's
        exception (``None`` if it succeeded).

        If a span is already current (``opentelemetry-instrumentation-celery``'s ``run/...`` span, which continued
        the same trace), the task's span is its child; otherwise it continues the message's trace itself.

        Args:
            func: the task function.
            request: the Celery request, which holds the message headers as attributes.

        Returns:
            What ends the span; ``None`` when not :attr:`enabled` (refreshed here, see the class docstring).
        """
        if not self._refresh():
            return None
        name = qualname(func)
        current = otel_context.get_current()
        instrumented = _has_span(current)
        parent = current if instrumented else propagate.extract(request, getter=_GETTER)
        kind = SpanKind.INTERNAL if instrumented else SpanKind.CONSUMER
        span = self._tracer.start_span(f"{TASK_SPAN} {name}", parent, kind, attributes={_FUNCTION: name})
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        self._tasks.add(1, {_STATE: "started", _FUNCTION: name})
        start = perf_counter()

        def finished(exc: BaseException | None) -> None:
            elapsed = perf_counter() - start
            otel_context.detach(token)
            state = "succeeded" if exc is None else "failed"
            self._end(span, state, exc)
            self._tasks.add(1, {_STATE: state, _FUNCTION: name})
            self._duration.record(elapsed, {_FUNCTION: name, _STATE: state})

        return finished

    def resolve_started(self, func: Callable[..., Any], graph: Graph, /) -> Callable[[BaseException | None], None]:
        """Start the span of the resolution of a task's dependencies on a worker, ``di_tasks.resolve <function>``, a
        child of the task's span (current here), and make it current while they are resolved, so a span a
        dependency opens is its child. Its attributes: ``code.function.name`` and ``di_tasks.resolve.dependencies``,
        the qualified names of the dependencies in the order they are resolved (the nodes of ``graph`` but its root).

        The worker (:class:`~di_tasks.celery.CeleryWorker`) calls it on its event loop, in a task of its own, when
        :attr:`enabled`, and calls what it returns as the function's own body starts (with ``None``: in the
        context the body runs in, a sync body's thread included) or with what the resolution raised; only the first
        call counts, so a body that raises leaves the span as it was. That call makes the task's span current again
        in the context it is made in, which is dropped with the worker's task (or the body's thread), so nothing is
        detached. A sync body's request-scoped teardowns, back on the event loop after it, still see this span
        as current.

        Args:
            func: the task function.
            graph: its solved graph (``container.solve(func)``).

        Returns:
            What ends the span, recording the exception and the status ``ERROR`` when given one.
        """
        name = qualname(func)
        outer = otel_context.get_current()
        dependencies = [node.name for node in graph.nodes[:-1]]
        span = self._tracer.start_span(
            f"{RESOLVE_SPAN} {name}", outer, attributes={_FUNCTION: name, "di_tasks.resolve.dependencies": dependencies}
        )
        otel_context.attach(trace.set_span_in_context(span, outer))
        ended = False

        def resolved(exc: BaseException | None) -> None:
            nonlocal ended
            if ended:
                return
            ended = True
            if exc is not None and span.is_recording():
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            span.end()
            otel_context.attach(outer)

        return resolved
