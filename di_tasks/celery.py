"""Hand background tasks to Celery: a flusher for the web process and the task that runs them on a worker.

Install with the ``celery`` extra (``pip install 'di_tasks[celery]'``). The endpoint code does not change:
``add_task`` keeps working, and ``container.flusher = CeleryFlusher(celery_app)`` sends each task of a scope
to the broker instead of running it in-process. A worker built with :func:`register_worker` imports the task
function by its qualified name, resolves its own ``Depends`` parameters in a fresh request scope of the
worker's container, and calls it.

Only the function's reference (``module:qualname``) and its arguments travel; dependencies never do, so
the worker uses its own resources (its own database connection, its own settings).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Final, Literal, TypeVar, overload

import anyio
from anyio.from_thread import BlockingPortal
from celery import Celery, signals
from celery import Task as CeleryTask
from kombu.serialization import dumps

from ._container import Container
from ._errors import DITasksError
from ._flush import Flusher, InProcessFlusher
from ._inspect import qualname
from ._tasks import Task, TaskSpec, TaskState
from ._util import CallableCache, is_fixed

__all__ = (
    "CeleryFlusher",
    "CeleryWorker",
    "RETRY_OPTIONS",
    "SEND_OPTIONS",
    "TASK_NAME",
    "celery_task",
    "register_worker",
    "task_reference",
    "to_celery",
)

_F = TypeVar("_F", bound=Callable[..., Any])

logger: Final = logging.getLogger("di_tasks")

TASK_NAME: Final = "di_tasks.run"
"""The name of the one Celery task that runs every di_tasks task on a worker."""

SEND_OPTIONS: Final = frozenset(
    {
        "compression",
        "countdown",
        "eta",
        "exchange",
        "expires",
        "headers",
        "ignore_result",
        "link",
        "link_error",
        "priority",
        "queue",
        "retry",
        "retry_policy",
        "routing_key",
        "shadow",
        "soft_time_limit",
        "task_id",
        "time_limit",
    }
)
"""Options passed unchanged to Celery's ``send_task`` (see Celery's ``apply_async`` for their meaning)."""

RETRY_OPTIONS: Final = frozenset({"max_retries", "retry_delay"})
"""Options carried in the message and applied by the worker with Celery's own ``Task.retry``:
``max_retries`` (how many times a failing task is sent again; 0, the default, never) and ``retry_delay``
(seconds before each retry; default: the worker task's ``default_retry_delay``, 180 s unless configured)."""

_MARK: Final = "__di_tasks_celery__"


def _check_options(options: Mapping[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(options) - SEND_OPTIONS - RETRY_OPTIONS)
    if unknown:
        raise TypeError(
            f"{where}: unknown Celery option(s) {', '.join(map(repr, unknown))}; the options are "
            f"{', '.join(sorted(SEND_OPTIONS | RETRY_OPTIONS))}"
        )
    max_retries = options.get("max_retries", 0)
    if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
        raise ValueError(f"{where}: max_retries must be an int >= 0, got {max_retries!r}")
    delay = options.get("retry_delay")
    if delay is not None and (not isinstance(delay, int | float) or isinstance(delay, bool) or delay < 0):
        raise ValueError(f"{where}: retry_delay must be a number of seconds >= 0 or None, got {delay!r}")
    return dict(options)


def _marked(func: Callable[..., Any]) -> dict[str, Any] | None:
    mark: dict[str, Any] | None = getattr(func, _MARK, None)
    return mark


@overload
def celery_task(func: _F, /) -> _F: ...
@overload
def celery_task(*, queue: str | None = None, max_retries: int = 0, **options: Any) -> Callable[[_F], _F]: ...
def celery_task(func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Mark a task function to be sent to Celery, with default options for each of its tasks.

    Use it bare (``@celery_task``) or with options (``@celery_task(queue="mail", max_retries=3)``). In mixed
    mode (a :class:`CeleryFlusher` with ``local=...``) only marked functions go to Celery; with every flusher
    the options apply to the function's tasks. The function itself is returned unchanged, so it stays
    importable under its own name.

    Args:
        func: the function, when used without parentheses.
        **options: any of :data:`SEND_OPTIONS` and :data:`RETRY_OPTIONS`.

    Returns:
        The function (or a decorator that returns it).

    Raises:
        TypeError: an unknown option, or ``func`` is not a function.
        ValueError: a bad ``max_retries`` or ``retry_delay``.
    """
    checked = _check_options(options, "celery_task()")

    def mark(target: _F) -> _F:
        try:
            setattr(target, _MARK, checked)
        except AttributeError:
            raise TypeError(
                f"celery_task() marks a module-level function, got {target!r}, which takes no attributes"
            ) from None
        return target

    return mark if func is None else mark(func)


def _resolve(module: str, name: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def task_reference(func: Callable[..., Any]) -> str:
    """The ``module:qualname`` reference by which a worker imports ``func``.

    Args:
        func: a module-level function, a static method or a class method of a module-level class.

    Returns:
        The reference, e.g. ``"myapp.tasks:send_email"``.

    Raises:
        TypeError: ``func`` cannot be imported back under its own name (a lambda, a nested function, a
            function of ``__main__``, a method bound to an instance, a callable object), with the fix.
    """
    module = getattr(func, "__module__", None)
    name = getattr(func, "__qualname__", None)
    label = qualname(func)
    if not isinstance(module, str) or not isinstance(name, str):
        raise TypeError(
            f"add_task({label}, ...): a task sent to Celery must be a module-level function so a worker can "
            f"import it, got {func!r}; wrap it in a module-level function"
        )
    if "<" in name:
        raise TypeError(
            f"add_task({label}, ...): a task sent to Celery must be importable by its qualified name, but "
            f"{name!r} is a lambda or is defined inside a function; move it to module level"
        )
    if module == "__main__":
        raise TypeError(
            f"add_task({label}, ...): {name} is defined in __main__ (the script being run), which a worker "
            "cannot import under that name; move it to a module and import it from there"
        )
    try:
        found = _resolve(module, name)
    except (ImportError, AttributeError) as exc:
        raise TypeError(
            f"add_task({label}, ...): a worker could not import {module}:{name} ({exc}); define the task "
            "function at module level under its own name"
        ) from None
    if found != func:
        raise TypeError(
            f"add_task({label}, ...): {module}:{name} imports to {found!r}, not to this function (a method "
            "bound to an instance, or a decorator that changed the name); send a module-level function, "
            "and keep __module__/__qualname__ right in decorators (functools.wraps)"
        )
    return f"{module}:{name}"


class CeleryFlusher:
    """A flusher that sends tasks to Celery instead of running them here (the web side).

    Each task becomes one Celery message for the task :data:`TASK_NAME`, carrying the function's reference,
    its arguments and its options; a worker made with :func:`register_worker` runs it. A task that was sent
    is marked ``HANDED_OFF``; one that could not be sent (broker down, bad option) is marked ``FAILED``,
    logged at ERROR and passed to the container's error hook, like any failed task.

    Which tasks go to Celery, per task first, then per function, then for the flusher:

    * ``task.options = {"celery": False}`` (or ``True``, see :func:`to_celery`) decides for one task;
    * a function marked with :func:`celery_task` goes to Celery;
    * otherwise: to Celery when ``local`` is ``None`` (the default), to ``local`` when it is set (mixed mode).

    Options for a task's message, later ones winning: the flusher's ``options``, the function's
    :func:`celery_task` options, the task's own ``task.options`` (the ``"celery"`` key aside).

    It is also a :class:`~di_tasks.TaskChecker`: ``add_task`` of a task that will go to Celery raises
    ``TypeError`` at once if the function cannot be imported by name or its arguments cannot be serialised.
    """

    def __init__(
        self,
        app: Celery,
        *,
        local: Flusher | None = None,
        options: Mapping[str, Any] | None = None,
        serializer: str | None = None,
        name: str = TASK_NAME,
    ) -> None:
        """Make a flusher.

        Args:
            app: the Celery app whose broker receives the messages.
            local: mixed mode: run the tasks not chosen for Celery with this flusher (e.g.
                ``InProcessFlusher()``). ``None``: every task goes to Celery unless it opts out.
            options: default options for every message: any of :data:`SEND_OPTIONS` (``queue``,
                ``countdown``, ``priority``, ...) and :data:`RETRY_OPTIONS`.
            serializer: the serializer checked at ``add_task`` and used to send; default: the app's
                ``task_serializer`` (``"json"`` unless configured).
            name: the Celery task name the worker registered (see :func:`register_worker`).

        Raises:
            TypeError: an unknown option.
            ValueError: an unknown serializer or a bad option value.
        """
        self.app = app
        self.local = local
        self.name = name
        self.options: dict[str, Any] = _check_options(options or {}, "CeleryFlusher(options=...)")
        self.serializer: str = serializer if serializer is not None else str(app.conf.task_serializer)
        try:
            dumps(None, serializer=self.serializer)
        except Exception as exc:  # noqa: BLE001  # kombu raises its own errors, and the encoder's
            raise ValueError(f"CeleryFlusher(serializer=...): {self.serializer!r} cannot be used: {exc}") from None
        self._fallback: Flusher = local if local is not None else InProcessFlusher()
        self._refs: dict[Any, str] = {}

    def sends(self, task: Task) -> bool:
        """Whether ``task`` goes to Celery (see the class docstring for the order of the choices)."""
        options = task.options
        if options is not None and "celery" in options:
            return bool(options["celery"])
        return self.local is None or _marked(task.func) is not None

    def check_task(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any], /) -> None:
        """Vet a task at ``add_task`` if it will go to Celery.

        Without ``local`` every task is checked (a task can still opt out later, with ``{"celery": False}``);
        in mixed mode only tasks of functions marked with :func:`celery_task` are, and :func:`to_celery` checks
        the tasks it chooses.

        Raises:
            TypeError: the function cannot be imported by name, or an argument cannot be serialised.
        """
        if self.local is not None and _marked(func) is None:
            return  # mixed mode: decided per task later, see to_celery()
        self.check(func, args, kwargs)

    def check(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        """Raise ``TypeError`` unless ``func(*args, **kwargs)`` can be sent to a worker.

        Raises:
            TypeError: the function cannot be imported by name, or an argument cannot be serialised by
                this flusher's serializer (the message names the argument).
        """
        self._reference(func)
        try:
            dumps([list(args), dict(kwargs)], serializer=self.serializer)
        except Exception as exc:  # noqa: BLE001  # an encoder may raise anything on a foreign object
            raise TypeError(
                f"add_task({qualname(func)}, ...): {self._culprit(args, kwargs)} cannot be serialised with "
                f"Celery's {self.serializer!r} serializer ({exc}); pass plain data (ids, strings, numbers, "
                "lists, dicts) and load objects inside the task, e.g. through a Depends parameter"
            ) from None

    def _culprit(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
        named = [(f"positional argument {i}", v) for i, v in enumerate(args)] + [
            (f"argument {k!r}", v) for k, v in kwargs.items()
        ]
        for what, value in named:
            try:
                dumps(value, serializer=self.serializer)
            except Exception:  # noqa: BLE001  # as in check()
                return f"{what} ({type(value).__qualname__})"
        return "the arguments"

    def _reference(self, func: Callable[..., Any]) -> str:
        try:
            return self._refs[func]
        except (KeyError, TypeError):
            pass
        ref = task_reference(func)
        with contextlib.suppress(TypeError):  # an unhashable callable is checked every time
            self._refs[func] = ref
        return ref

    def message(self, task: Task) -> dict[str, Any]:
        """The keyword arguments of ``app.send_task`` for ``task`` (useful to inspect routing in tests).

        Raises:
            TypeError: the function cannot be imported by name, or an unknown option.
            ValueError: a bad option value.
        """
        ref = self._reference(task.func)
        task_options = {k: v for k, v in (task.options or {}).items() if k != "celery"}
        options = _check_options(
            {**self.options, **(_marked(task.func) or {}), **task_options}, f"background task {task.name}"
        )
        retry: dict[str, Any] = {}
        max_retries = options.pop("max_retries", 0)
        delay = options.pop("retry_delay", None)
        if max_retries:
            retry["max_retries"] = max_retries
            if delay is not None:
                retry["retry_delay"] = delay
        options.setdefault("shadow", ref)  # logs and monitoring show the function, not the carrier task
        # the trace context travels in the message headers (an observer that has it: di_tasks.otel.TaskTelemetry)
        headers_of = getattr(task.container.task_observer, "message_headers", None)
        if headers_of is not None:
            options["headers"] = {**headers_of(task), **(options.get("headers") or {})}
        options.setdefault("serializer", self.serializer)
        return {"name": self.name, "args": [ref, list(task.args), dict(task.kwargs)], "kwargs": retry, **options}

    async def flush(self, tasks: Sequence[Task], /) -> None:
        """Send the tasks chosen for Celery (in a worker thread: publishing blocks), then flush the others
        with the local flusher."""
        remote: list[Task] = []
        local: list[Task] = []
        for task in tasks:
            (remote if self.sends(task) else local).append(task)
        if remote:
            batch: list[tuple[Task, dict[str, Any] | Exception]] = []
            for task in remote:
                try:
                    batch.append((task, self.message(task)))
                except Exception as exc:  # noqa: BLE001  # recorded on the task, never dropped
                    batch.append((task, exc))
            outcomes = await remote[0].container.to_thread(self._send, batch)
            for task, outcome in zip(remote, outcomes, strict=True):
                if outcome is None:
                    task.mark(TaskState.HANDED_OFF)
                else:
                    task.fail(outcome, "could not be sent to Celery")
        if local:
            await self._fallback.flush(local)

    def _send(self, batch: list[tuple[Task, dict[str, Any] | Exception]]) -> list[Exception | None]:
        outcomes: list[Exception | None] = []
        for task, message in batch:
            if isinstance(message, Exception):
                outcomes.append(message)
                continue
            try:
                result = self.app.send_task(**message)
            except Exception as exc:  # noqa: BLE001  # broker and encoder errors: recorded on the task
                outcomes.append(exc)
            else:
                logger.debug("background task %s sent to Celery as %s", task.display_name, result.id)
                outcomes.append(None)
        return outcomes


def to_celery(task: Task, /, **options: Any) -> Task:
    """Send this one task to Celery, with options; the choice per task (see :class:`CeleryFlusher`).

    The task is checked now, so a function that cannot be imported or an argument that cannot be serialised
    raises here, at the call site: ``to_celery(tasks.add_task(report, day), queue="slow")``.

    Args:
        task: the handle ``add_task`` returned.
        **options: any of :data:`SEND_OPTIONS` and :data:`RETRY_OPTIONS`, added to ``task.options``.

    Returns:
        The same task.

    Raises:
        TypeError: an unknown option; with a :class:`CeleryFlusher` on the task's container, the function
            cannot be imported by name or an argument cannot be serialised.
        ValueError: a bad option value.
    """
    _check_options(options, f"to_celery({task.name})")
    flusher = task.container.flusher
    if isinstance(flusher, CeleryFlusher):
        flusher.check(task.func, task.args, task.kwargs)
    task.options = {**(task.options or {}), **options, "celery": True}
    return task


class CeleryWorker:
    """The worker side: the Celery task that runs di_tasks tasks, and the event loop they run on.

    Made by :func:`register_worker`. Task functions with dependencies, and async ones, run on one event loop
    per worker process (started at the first task, in a daemon thread) inside the container's app lifetime,
    so app-scoped dependencies (a connection pool) are created once per process. Sync functions without
    dependencies are called directly in Celery's own worker thread.

    Attributes:
        container: the worker's container: its dependencies, overrides and settings apply to every task.
        task: the registered Celery task.
        modules: the module prefixes whose functions this worker agrees to run.
    """

    def __init__(
        self,
        container: Container,
        modules: tuple[str, ...],
        backend: Literal["asyncio", "trio"],
    ) -> None:
        """Made by :func:`register_worker`, which also registers :attr:`task`.

        Args:
            container: the worker's container.
            modules: the module prefixes whose functions may run.
            backend: the AnyIO backend of the event loop.
        """
        self.container = container
        self.modules = modules
        self.task: CeleryTask[Any, Any]
        self._backend = backend
        self._lock = threading.Lock()
        self._portal: BlockingPortal | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._announcers: CallableCache[Any, Callable[..., Any]] = CallableCache()  # see _announcing

    def resolve(self, ref: str) -> Callable[..., Any]:
        """Import the task function named by ``ref`` (``module:qualname``).

        Raises:
            DITasksError: the module is not one this worker runs (``modules=``), or the name does not import
                to a callable.
        """
        module, _, name = ref.partition(":")
        if not any(module == prefix or module.startswith(prefix + ".") for prefix in self.modules):
            raise DITasksError(
                f"refusing to run {ref!r}: its module is not in register_worker(modules={self.modules!r}); add "
                "its package there if this worker should run it"
            )
        try:
            func = _resolve(module, name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise DITasksError(f"cannot import background task {ref!r} on this worker: {exc}") from exc
        if not callable(func):
            raise DITasksError(f"background task {ref!r} imports to {func!r}, which is not callable")
        return func  # type: ignore[no-any-return]  # callable() narrowed Any

    def call(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run one task function here, resolving its dependencies in a fresh request scope; returns its result.

        An async function, or one with dependencies, runs on the worker's event loop while this thread waits. If
        this thread is interrupted while it waits (Celery's ``soft_time_limit`` raises ``SoftTimeLimitExceeded``
        here), the task on the loop is cancelled and has stopped before the interruption propagates.

        Raises:
            TypeError: the arguments do not fit the function's signature (a message sent for another version
                of the function).
            Exception: whatever the function (or a dependency) raised.
        """
        return self._call(func, args, kwargs, self._check(func, args, kwargs))

    def _check(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The arguments by name, or ``TypeError`` in the worker's words (``TaskSpec.check`` speaks of add_task)."""
        spec = self.container.task_spec(func)
        if spec.signature is None:
            return spec.check(args, kwargs)
        try:
            return dict(spec.signature.bind(*args, **kwargs).arguments)
        except TypeError as exc:
            raise TypeError(
                f"this worker's {spec.name}{spec.signature} does not accept the message's arguments "
                f"(args={list(args)!r}, kwargs={kwargs!r}): {exc}. The message was sent for another version of "
                "the function: deploy web processes and workers together, or give a new parameter a default. "
                "Not retried: the arguments will not fit next time either"
            ) from None

    def _call(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], arguments: dict[str, Any]
    ) -> Any:
        spec = self.container.task_spec(func)
        if spec.plan is None and not spec.is_async:
            return func(*args, **kwargs)  # in this thread, where Celery's time limits interrupt it
        stopped = threading.Event()
        future = self._loop().start_task_soon(self._run, stopped, spec, func, args, kwargs, arguments)
        try:
            return future.result()
        except BaseException:
            # This thread was interrupted while it waited: Celery's soft time limit raises SoftTimeLimitExceeded
            # here from a signal handler. Cancelling the future cancels the task on the loop; wait until it has
            # stopped, so an attempt reported as failed (and retried) never goes on running beside its retry.
            if future.cancel():
                stopped.wait()
            raise

    async def _run(
        self,
        stopped: threading.Event,
        spec: TaskSpec,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        arguments: dict[str, Any],
    ) -> Any:
        try:
            if spec.plan is None:
                return await func(*args, **kwargs)
            observer = self.container.task_observer
            # an observer that traces the resolution (di_tasks.otel.TaskTelemetry); read like the core reads it for
            # a task, so an observer that is off (or none) costs no more than this line
            resolving = None if observer is None or not observer.enabled else getattr(observer, "resolve_started", None)
            if resolving is None:
                return await self.container.call_task(spec, arguments)
            return await self._call_observed(spec, arguments, resolving)
        finally:
            stopped.set()

    async def _call_observed(self, spec: TaskSpec, arguments: dict[str, Any], resolving: Callable[..., Any]) -> Any:
        """``call_task`` with the observer told when the resolution of the task's dependencies starts, and when it
        ends: as the task's own body starts (``None``), or with what ``call_task`` raised (which the observer ignores
        when the body had started: then the body raised)."""
        resolved: Callable[[BaseException | None], object] = resolving(spec.func, self.container.solve(spec.func))
        token = _resolved.set(resolved)
        try:
            return await self.container.call_task(self._announcing(spec), arguments)
        except BaseException as exc:
            resolved(exc)
            raise
        finally:
            _resolved.reset(token)

    def _announcing(self, spec: TaskSpec) -> TaskSpec:
        """The spec of a wrapper of the task function that announces its body's start (made once per function): the
        executor calls it with the resolved arguments, in the context the body runs in (a sync body's thread
        too). Its plan is the function's own, as the solver reads a ``functools.wraps`` wrapper's signature through
        ``__wrapped__``."""
        func = spec.func
        return self.container.task_spec(self._announcers.get(func, lambda: _announcer(func, spec.is_async), func))

    def _loop(self) -> BlockingPortal:
        with self._lock:
            if self._portal is None or self._pid != os.getpid():  # first task, or a forked pool process
                self._start()
            assert self._portal is not None  # set by _start
            return self._portal

    def _start(self) -> None:
        ready = threading.Event()
        portals: list[BlockingPortal] = []

        async def main() -> None:
            async with BlockingPortal() as portal, self.container:
                portals.append(portal)
                ready.set()
                await portal.sleep_until_stopped()

        def target() -> None:
            try:
                anyio.run(main, backend=self._backend)
            finally:
                ready.set()

        # A daemon thread: a worker killed without its shutdown signal must not hang on this loop at exit.
        thread = threading.Thread(target=target, name="di_tasks-celery-loop", daemon=True)
        thread.start()
        ready.wait()
        self._portal, self._thread, self._pid = portals[0], thread, os.getpid()

    def close(self, **_: Any) -> None:
        """Stop the event loop, tearing down app-scoped dependencies (connected to the worker's shutdown
        signals; safe to call twice)."""
        with self._lock:
            portal, thread = self._portal, self._thread
            self._portal = self._thread = None
            if portal is None or thread is None or self._pid != os.getpid():
                return
        portal.call(portal.stop)
        thread.join()


_resolved: ContextVar[Callable[[BaseException | None], object]] = ContextVar("di_tasks.celery.resolved")
"""What to tell that a task's dependencies are resolved, set while a worker resolves them for an observer (the only
time a wrapper made by :func:`_announcer` runs)."""


def _body_starts() -> None:
    _resolved.get()(None)


def _announcer(func: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
    """A wrapper of ``func`` with its signature, kind and name, that calls :func:`_body_starts` first."""

    @functools.wraps(func)
    async def announce_async(*args: Any, **kwargs: Any) -> Any:
        _body_starts()
        return await func(*args, **kwargs)

    @functools.wraps(func)
    def announce(*args: Any, **kwargs: Any) -> Any:
        _body_starts()
        return func(*args, **kwargs)

    wrapper = announce_async if is_async else announce
    # The container keeps what it solves for a function made with def for good. A wrapper of a callable made per
    # call (a bound method, a lambda) must not pass for one: as a partial, the container keeps it for a while only.
    return wrapper if is_fixed(func) else functools.partial(wrapper)


def register_worker(
    app: Celery,
    container: Container,
    *,
    modules: Collection[str],
    name: str = TASK_NAME,
    backend: Literal["asyncio", "trio"] = "asyncio",
    **task_options: Any,
) -> CeleryWorker:
    """Register the Celery task that runs di_tasks tasks on a worker.

    Call it in the module the worker loads (``celery -A myapp.worker worker``). Each message names a
    function by ``module:qualname``; the worker imports it (only from ``modules``), resolves its ``Depends``
    parameters in a fresh request scope of ``container`` and calls it, sync or async. A failing task is sent
    again by Celery's own ``Task.retry`` when its message allows retries (``max_retries``). With a
    :class:`di_tasks.otel.TaskTelemetry` as the container's ``task_observer``, the task's span continues the trace
    its message carries (the web side's :class:`CeleryFlusher` puts it in the headers when its container has one),
    and a child span covers the resolution of the task's dependencies, up to the start of its own body.

    Args:
        app: the worker's Celery app.
        container: the worker's container (its own dependencies, e.g. its own database connection).
        modules: the packages or modules whose functions this worker runs, e.g. ``("myapp",)``. A message
            naming anything else is refused: whoever can write to the broker must not run arbitrary code.
        name: the Celery task name; the same as the web side's :class:`CeleryFlusher` ``name``.
        backend: the AnyIO backend of the worker's event loop.
        **task_options: passed to ``app.task`` (e.g. ``acks_late=True``, ``default_retry_delay=10``).

    Returns:
        The :class:`CeleryWorker` (its ``task`` attribute is the Celery task).

    Raises:
        TypeError: ``modules`` is a single string.
        ValueError: ``modules`` is empty, or an unknown backend.
    """
    if isinstance(modules, str):
        raise TypeError(
            f"register_worker(modules=...) takes a collection of module names; write modules=({modules!r},)"
        )
    if not modules:
        raise ValueError("register_worker(modules=...) must name at least one package whose tasks this worker runs")
    if backend not in ("asyncio", "trio"):
        raise ValueError(f"register_worker(backend=...) must be 'asyncio' or 'trio', got {backend!r}")
    worker = CeleryWorker(container, tuple(modules), backend)

    def run(
        self: CeleryTask[Any, Any],
        ref: str,
        args: list[Any],
        kwargs: dict[str, Any],
        max_retries: int = 0,
        retry_delay: float | None = None,
    ) -> Any:
        # outside the retry: a refused or missing function, or arguments that do not fit it, never get better
        func = worker.resolve(ref)
        arguments = worker._check(func, tuple(args), kwargs)
        # an observer that traces (di_tasks.otel.TaskTelemetry) continues the message's trace while the task's
        # dependencies are resolved and it runs: the event loop's portal runs it in this thread's context
        received = getattr(worker.container.task_observer, "message_received", None)
        finished = None if received is None else received(func, self.request)
        try:
            result = worker._call(func, tuple(args), kwargs, arguments)
        except BaseException as exc:
            if finished is not None:
                finished(exc)
            if max_retries > 0 and isinstance(exc, Exception):
                raise self.retry(exc=exc, countdown=retry_delay, max_retries=max_retries) from exc
            raise
        if finished is not None:
            finished(None)
        return result

    decorate: Callable[[Callable[..., Any]], CeleryTask[Any, Any]] = app.task(name=name, bind=True, **task_options)
    worker.task = decorate(run)
    signals.worker_process_shutdown.connect(worker.close, weak=False)  # prefork pool processes
    signals.worker_shutdown.connect(worker.close, weak=False)  # solo and threads pools
    return worker
