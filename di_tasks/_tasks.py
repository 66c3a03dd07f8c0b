"""The collector (``BackgroundTasks``), the task handle (``Task``) and what ``add_task`` knows of a function."""

from __future__ import annotations

import contextvars
import difflib
import enum
import inspect
import logging
import types
import warnings
from collections.abc import Awaitable, Callable, Collection, Coroutine, Generator, Iterator, Mapping
from time import perf_counter
from typing import Any, Final, ParamSpec, Protocol, TypeVar, cast

import anyio

from ._errors import MissingValueError, ScopeError, WiringError
from ._flush import Flusher, TaskChecker
from ._inspect import EMPTY, Kind, kind_of, qualname
from ._plan import Plan
from ._solver import solve
from ._util import ThreadCall, cancelled_from_outside, go_on, leave_event_loop, raise_later, resume, thread_watch

P = ParamSpec("P")
T = TypeVar("T")

logger: Final = logging.getLogger("di_tasks")


class TaskHost(Protocol):
    """What a task needs from the container it belongs to; :class:`~di_tasks.Container` is the one host.

    Every member is public API of ``Container``, so a flusher written outside this package can do all that the
    built-in ones do.
    """

    @property
    def task_timeout(self) -> float | None:
        """The default per-task timeout in seconds."""
        ...

    @property
    def task_checker(self) -> TaskChecker | None:
        """The flusher's add-time check, if it has one."""
        ...

    @property
    def flusher(self) -> Flusher:
        """What happens to a scope's tasks at exit."""
        ...

    @property
    def task_observer(self) -> TaskObserver | None:
        """What watches tasks run (tracing, metrics), if anything."""
        ...

    def task_spec(self, func: Callable[..., Any], /) -> TaskSpec:
        """What ``add_task`` knows of ``func`` (cached)."""
        ...

    @property
    def task_specs(self) -> Mapping[Any, TaskSpec]:
        """The specs :meth:`task_spec` has kept for good, by function: ``add_task`` reads a known one without a call."""
        ...

    async def to_thread(self, func: Callable[..., T], /, *args: Any, abandon_on_cancel: bool = False) -> T:
        """Run a sync callable in a worker thread under the tasks' own capacity limiter."""
        ...

    async def call_task(self, spec: TaskSpec, arguments: dict[str, Any], /, *, abandon_on_cancel: bool = False) -> Any:
        """Run a task function with dependencies in a fresh request scope."""
        ...

    def report_task_error(self, task: Task, exc: BaseException, /) -> None:
        """Pass a failure to the error hook."""
        ...


class TaskObserver(Protocol):
    """Watches tasks run, for tracing and metrics: ``Container(task_observer=...)`` (see ``di_tasks.otel``).

    Called in the flusher's task, before the task's own code, so it can make a span current in ``task.context``.
    """

    @property
    def enabled(self) -> bool:
        """Whether it observes at all now: read before each task (an observer installed ahead of its backend's
        configuration is then skipped), so make it a plain attribute, refreshed elsewhere (e.g. in
        ``flush_started``, once per batch)."""
        ...

    def task_started(self, task: Task, /) -> Callable[[], object] | None:
        """A task starts running; return what to call once it has finished (its state final), or ``None``."""
        ...


_default_host: Callable[[], TaskHost] | None = None


def set_default_host(factory: Callable[[], TaskHost]) -> None:
    """Declare what ``BackgroundTasks()`` without a container uses (the container module does, once)."""
    global _default_host  # set once at import by the module above this one
    _default_host = factory


class TaskSpec:
    """What ``add_task`` knows about a task function: how to check its arguments and how to run it.

    Attributes:
        func: the task function.
        name: its qualified name.
        plan: the solved plan of its own dependencies, or ``None`` when it has none.
        is_async: whether it is an ``async def`` function.
        signature: the parameters a caller passes (injected ones removed), or ``None`` when unreadable.
    """

    __slots__ = ("direct", "func", "is_async", "name", "npos", "plan", "signature")

    def __init__(self, func: Callable[..., Any], plan: Plan | None, signature: inspect.Signature | None) -> None:
        self.func: Callable[..., Any] = func
        self.name: str = qualname(func)
        self.plan: Plan | None = plan
        self.is_async: bool = kind_of(func) is Kind.ASYNC
        self.signature: inspect.Signature | None = signature
        # The common case, a function with plain positional parameters and no defaults, is checked by counting
        # (``npos`` positional arguments and no keyword) instead of a full Signature.bind; -1 when it cannot be.
        simple = signature is not None and all(
            p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.default is EMPTY
            for p in signature.parameters.values()
        )
        self.npos: int = len(signature.parameters) if simple and signature is not None else -1
        # An ``async def`` function without dependencies: calling it only makes its coroutine (no code of the task
        # runs), so a task of it is driven straight in its context, with no frame in between.
        self.direct: bool = plan is None and _makes_coroutine(func)

    def check(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """Bind the arguments to the signature, raising ``TypeError`` that names the function.

        Returns:
            The arguments by parameter name (what a task with dependencies passes to its scope as values).
        """
        if self.signature is None:
            return dict(kwargs)
        try:
            return dict(self.signature.bind(*args, **kwargs).arguments)
        except TypeError as exc:
            raise self._misfit(exc, kwargs) from None

    def _misfit(self, exc: TypeError, kwargs: Mapping[str, Any]) -> TypeError:
        """The error for arguments that do not fit: an unknown keyword first (a typo also makes the parameter it
        meant look missing, and Signature.bind reports that one), with the closest parameter name."""
        assert self.signature is not None  # only called after a failed bind
        injected = ""
        if self.plan is not None:
            injected = " (its injected parameters are filled when it runs and must not be passed)"
        problem = _unknown_keyword(self.signature, kwargs) or str(exc)
        return TypeError(
            f"add_task({self.name}, ...): {problem}; the arguments must fit {self.name}{self.signature}{injected}"
        )


def _makes_coroutine(func: Callable[..., Any]) -> bool:
    """Whether calling ``func`` only creates a coroutine: a plain ``async def`` function (not a wrapper that could
    run code first)."""
    return isinstance(func, types.FunctionType) and bool(func.__code__.co_flags & inspect.CO_COROUTINE)


def _unknown_keyword(signature: inspect.Signature, kwargs: Mapping[str, Any]) -> str | None:
    """The first keyword no parameter takes, with the closest parameter name; ``None`` when there is none."""
    params = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    named = [n for n, p in params.items() if p.kind is not inspect.Parameter.POSITIONAL_ONLY]
    unknown = next((k for k in kwargs if k not in named), None)
    if unknown is None:
        return None
    close = difflib.get_close_matches(unknown, named, n=1)
    meant = f" (did you mean {close[0]!r}?)" if close else ""
    return f"got an unexpected keyword argument {unknown!r}{meant}"


def make_task_spec(func: Callable[..., Any], values: Collection[str] = ()) -> TaskSpec:
    """Vet ``func`` as a task function and solve its own dependencies (without overrides: they apply at run time).

    Args:
        func: the task function.
        values: the names of the container's values, which a task's dependencies may ask for.

    Raises:
        TypeError: not a function, a generator function, an unwirable graph, a dependency that asks for a value
            no task can have, or a signature a task with dependencies cannot have.
    """
    _vet_task_function(func)
    try:
        plan = solve({}, func, 0)
    except WiringError as exc:
        raise TypeError(f"add_task({qualname(func)}, ...): {exc}") from exc
    signature = inspect.signature(func)  # the solver read it already, so this cannot fail
    injected = plan.graph.root.injected
    if not injected:
        return TaskSpec(func, None, signature)
    unfound = task_value_errors(plan, signature, values)
    if unfound:
        raise TypeError(f"add_task({qualname(func)}, ...): {unfound[0]}") from unfound[0]
    _vet_injected_signature(func, signature)
    parameters = [p for p in signature.parameters.values() if p.name not in injected]
    return TaskSpec(func, plan, signature.replace(parameters=parameters))


def task_value_errors(plan: Plan, signature: inspect.Signature, values: Collection[str]) -> list[MissingValueError]:
    """The values a task's dependencies ask for that it can never have when it runs.

    A task runs in a fresh request scope whose values are its own arguments (by parameter name) and the
    container's values: a request's values and bound types are not there. Anything else fails every run, in the
    background, after the client got its response; this finds it when the task is added (or validated).

    Args:
        plan: the task function's solved plan.
        signature: the task function's full signature.
        values: the names of the container's values.

    Returns:
        One :class:`~di_tasks.MissingValueError` per value no task run can find, with its dependency path.
    """
    task = plan.graph.root.name
    own = set(signature.parameters) - set(plan.graph.root.injected)
    errors: list[MissingValueError] = []
    for need in plan.graph.required_values:
        if need.name in own or need.name in values:
            continue
        errors.append(
            MissingValueError(
                f"parameter {need.name!r} of {need.function} needs a value that the task {task} will never have: "
                "a task runs after the response, in a fresh scope whose values are only its own arguments and the "
                f"container's values (not the request's). Add a parameter {need.name} to {task} and pass it to "
                f"add_task(), give Container(values={{{need.name!r}: ...}}), or give the parameter a default or a "
                "Depends(...) marker",
                parameter=need.name,
                function=need.function,
                path=need.path,
            )
        )
    return errors


def _vet_task_function(func: Callable[..., Any]) -> None:
    if inspect.isawaitable(func):
        raise TypeError(
            f"add_task() takes a function and its arguments, got the awaitable {func!r}; write "
            "add_task(f, arg) instead of add_task(f(arg))"
        )
    if not callable(func):
        raise TypeError(
            f"add_task() takes a function and its arguments, got {func!r}, which is not callable: the function was "
            "probably called instead of passed (add_task(send_email(to)) calls send_email right away and hands "
            "add_task what it returned); pass the function and its arguments: add_task(send_email, to)"
        )
    if kind_of(func) in (Kind.GENERATOR, Kind.ASYNC_GENERATOR):
        raise TypeError(f"add_task({qualname(func)}, ...): a generator function cannot be a background task")


def _vet_injected_signature(func: Callable[..., Any], signature: inspect.Signature) -> None:
    """A task with dependencies gets its arguments by name: refuse what cannot be passed that way."""
    if any(p.kind is inspect.Parameter.POSITIONAL_ONLY for p in signature.parameters.values()):
        raise TypeError(
            f"add_task({qualname(func)}, ...): a task with injected parameters cannot have "
            "positional-only parameters (its arguments are passed by name); make them regular parameters"
        )
    star = next((p for p in signature.parameters.values() if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)), None)
    if star is not None:  # arguments travel by name, so *args/**kwargs would be dropped silently
        prefix = "*" if star.kind is inspect.Parameter.VAR_POSITIONAL else "**"
        raise TypeError(
            f"add_task({qualname(func)}, ...): a task with injected parameters cannot take {prefix}{star.name} "
            "(its arguments are passed by name); give it explicit parameters"
        )


class TaskState(enum.Enum):
    """Where a task is in its life."""

    PENDING = "pending"
    """Added, not started."""
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    """It raised, or exceeded its timeout; ``Task.exception`` says which."""
    CANCELLED = "cancelled"
    """Cancelled from outside while running or before it could start (e.g. at shutdown)."""
    SKIPPED = "skipped"
    """Not run because the body of its scope raised (logged at WARNING)."""
    HANDED_OFF = "handed off"
    """Given to another runner (an external queue, a test recorder) that reports no outcome here."""


_FINAL: Final = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.SKIPPED})
# Reading an enum member through its class costs ~70 ns on CPython 3.11; the per-task paths use these.
_PENDING: Final = TaskState.PENDING
_RUNNING: Final = TaskState.RUNNING
_SUCCEEDED: Final = TaskState.SUCCEEDED
_DONE_CONTEXT: Final = contextvars.Context()  # what a finished task keeps instead of the context it ran in


@types.coroutine
def run_in_context(context: contextvars.Context, coro: Coroutine[Any, Any, T]) -> Generator[Any, Any, T]:
    """Drive ``coro`` on the current task with every step run inside ``context``.

    Spawning a task per background task would copy the context for free but costs an order of magnitude
    more than the task itself; stepping the coroutine by hand keeps the task on the flusher's own task
    (so cancel scopes and deadlines apply as usual) at the cost of one ``Context.run`` per suspension.
    """
    try:
        yielded = context.run(coro.send, None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]  # StopIteration.value is Any
    return (yield from go_on(coro, yielded, context))


_RETURNED: Final = object()  # what next() gives back when a driver has finished


def _result_into(task: Task, coro: Coroutine[Any, Any, Any]) -> Generator[Any, Any, None]:
    """Drive ``coro`` and keep what it returns as ``task.result``.

    The driver itself returns ``None``, so its end is seen by ``next(driver, _RETURNED)`` without a StopIteration
    being raised and caught: for a task that never suspends, that is a third of the cost of stepping it.
    """
    task.result = yield from coro  # type: ignore[misc]  # allowed: see types.coroutine below


types.coroutine(_result_into)  # marks the generator function, in place, as one that may delegate to a coroutine


class Task:
    """A handle on one background task.

    Attributes:
        func: the function to run.
        args: its positional arguments.
        kwargs: its keyword arguments.
        name: the function's qualified name, used in every log line about the task.
        timeout: seconds the task may run before it fails with ``TimeoutError`` (``None``: no limit).
            Defaults to the container's ``task_timeout``; set it on the handle to change one task.
        state: a :class:`TaskState`.
        result: the return value once it succeeded.
        exception: the exception once it failed (or was cancelled).
        options: runner-specific options for this task (e.g. an external queue's routing), or ``None``.
        label: where the task came from (e.g. ``"GET /users"``), added to every log line about it.
    """

    __slots__ = (
        "_context",
        "_done",
        "_host",
        "_spec",
        "_started",
        "_threads",
        "_values",
        "args",
        "exception",
        "func",
        "kwargs",
        "label",
        "options",
        "result",
        "state",
        "timeout",
    )

    def __init__(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        spec: TaskSpec,
        container: TaskHost,
        context: contextvars.Context,
        label: str | None = None,
        values: dict[str, Any] | None = None,
    ) -> None:
        self.func: Callable[..., Any] = func
        self.args: tuple[Any, ...] = args
        self.kwargs: dict[str, Any] = kwargs
        self.state: TaskState = _PENDING
        self.result: Any = None
        self.exception: BaseException | None = None
        self.timeout: float | None = container.task_timeout
        self.options: dict[str, Any] | None = None
        self.label: str | None = label
        self._spec = spec
        self._values = values  # the arguments by name, when add_task had to bind them
        self._host = container
        self._context = context
        self._done: anyio.Event | None = None  # made on first wait(): Event() needs a running loop
        self._threads: list[ThreadCall] | None = None  # the sync function's thread calls while it runs (in_thread)

    @property
    def name(self) -> str:
        """The task function's qualified name."""
        return self._spec.name

    @property
    def container(self) -> TaskHost:
        """The container the task belongs to: its settings, thread limiter and error hook apply to it."""
        return self._host

    def __repr__(self) -> str:
        return f"<Task {self.name} {self.state.value}>"

    @property
    def display_name(self) -> str:
        """The name with its label, as written in log lines: ``send_email (POST /signup)``."""
        return self.name if self.label is None else f"{self.name} ({self.label})"

    @property
    def in_thread(self) -> bool:
        """Whether the task's sync function is in a worker thread now (running, or waiting for one of the container's
        ``task_threads``). A thread cannot be interrupted: cancelling the task (at shutdown) then waits until the
        function returns, unless the task has a ``timeout``, which stops waiting and leaves the thread to finish."""
        threads = self._threads
        return threads is not None and any(not call.returned for call in threads)

    @property
    def done(self) -> bool:
        """Whether the task has reached a final state (succeeded, failed, cancelled or skipped)."""
        return self.state in _FINAL

    async def wait(self) -> Any:
        """Wait until the task has finished and return its result.

        Returns:
            What the task function returned.

        Raises:
            BaseException: the task's own exception if it failed.
            ScopeError: the task was skipped, cancelled or handed off, so it has no outcome here.
        """
        if not self.done and self.state is not TaskState.HANDED_OFF:
            if self._done is None:
                self._done = anyio.Event()
            await self._done.wait()
        if self.state is TaskState.SUCCEEDED:
            return self.result
        if self.state is TaskState.FAILED:
            assert self.exception is not None  # invariant of FAILED, not user input
            raise self.exception
        raise ScopeError(f"task {self.name} has no outcome: it was {self.state.value}")

    def _finish(self, state: TaskState) -> None:
        self.state = state
        # The context copied at add_task may hold the scope (as the current scope), and the scope holds this task:
        # drop it once the task is done so that cycle never outlives the request and needs the garbage collector.
        self._context = _DONE_CONTEXT
        if self._done is not None:
            self._done.set()

    @property
    def context(self) -> contextvars.Context:
        """The context the task runs in: a copy of the one it was added in (an empty one once it has finished or
        was handed off, so a finished task keeps no request alive). A runner that hands a task off and runs it
        later reads it first and gives it back to :meth:`reopen`."""
        return self._context

    def mark(self, state: TaskState) -> None:
        """Record an outcome decided elsewhere (a runner that skips, cancels or hands tasks off)."""
        self._finish(state)

    def reopen(self, context: contextvars.Context) -> None:
        """Make a handed-off task pending again, to run in ``context`` (what :attr:`context` was when it was handed
        off), so that :meth:`run` runs it: for runners that keep tasks and run them later (``di_tasks.testing``).

        Raises:
            ScopeError: the task is not ``HANDED_OFF``.
        """
        if self.state is not TaskState.HANDED_OFF:
            raise ScopeError(f"task {self.name} cannot be reopened: it is {self.state.value}, not handed off")
        self._context = context
        self.state = _PENDING

    def fail(self, exc: BaseException, reason: str = "failed") -> None:
        """Record a failure decided here or by a runner: the task is ``FAILED`` with ``exc``, the failure is
        logged on the ``di_tasks`` logger at ERROR (``background task <name> <reason>``, with the traceback), and
        passed to the container's ``on_task_error`` hook.
        """
        self.exception = exc
        self._finish(TaskState.FAILED)
        logger.error(
            "background task %s %s",
            self.display_name,
            reason,
            exc_info=exc,
            extra=self._log_fields("failed", reason),
        )
        self._host.report_task_error(self, exc)

    async def run(self) -> None:
        """Run the task once, recording its outcome; never raises for the task's own failure.

        A failure is logged on the ``di_tasks`` logger at ERROR with the traceback and passed to the
        container's error hook. Cancellation from outside is recorded, logged and re-raised.
        """
        rest = self.start()
        if rest is not None:
            await rest

    def start(self) -> Coroutine[Any, Any, None] | None:
        """Start the task: run it now, in its context, up to the first time it suspends (the first part of
        :meth:`run`, for runners that go through many tasks: a task that finishes without suspending costs no
        coroutine of its own).

        Returns:
            ``None`` if the task has finished (or was not pending), else what runs the rest and records the outcome:
            await it.
        """
        if self.state is not _PENDING:
            return None
        self.state = _RUNNING
        self._started = perf_counter()
        observer = self._host.task_observer
        finished = None if observer is None or not observer.enabled else observer.task_started(self)
        if self.timeout is not None or not self._spec.direct:
            return self._outcome(self._invoke_into(), finished)
        # the common case: an async function without dependencies or timeout, driven here, in its context
        context = self._context
        try:
            coro = self.func(*self.args, **self.kwargs) if self.kwargs else self.func(*self.args)
            driver = _result_into(self, coro)
            yielded = context.run(next, driver, _RETURNED)  # the first step, which often is the only one
        except BaseException as exc:  # noqa: BLE001  # recorded (or let through) by _outcome, as in a later step
            return self._outcome(raise_later(exc), finished)  # the same handlers as a later step's
        if yielded is not _RETURNED:
            return self._outcome(resume(driver, yielded, context), finished)
        self.state = _SUCCEEDED  # what _outcome records, written out: this is every such task's path
        self._context = _DONE_CONTEXT  # see _finish
        if self._done is not None:
            self._done.set()
        if finished is not None:
            finished()
        return None

    async def _outcome(self, rest: Awaitable[object], finished: Callable[[], object] | None) -> None:
        """Run the rest of a started task, under its timeout, and record how it ended: the one place a task's
        failure, timeout or cancellation is decided."""
        deadline: anyio.CancelScope | None = None
        try:
            if self.timeout is None:
                await rest
            else:
                with anyio.fail_after(self.timeout) as deadline:
                    await rest
        except anyio.get_cancelled_exc_class() as cancelled:
            if await self._cancelled(cancelled):
                raise
        except Exception as exc:  # noqa: BLE001  # the task's own failure: recorded, logged and reported by fail()
            self.fail(exc, self._why_failed(exc, deadline))
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: the task fails, then it is let through
            self.fail(exc, f"raised {type(exc).__name__}, which stops the flush")
            raise
        else:
            self._finish(_SUCCEEDED)
        finally:
            if finished is not None:
                finished()

    def _why_failed(self, exc: Exception, deadline: anyio.CancelScope | None) -> str:
        """How a task that raised ``exc`` under ``deadline`` (its timeout, if it has one) is said to have failed."""
        timed_out = deadline is not None and deadline.cancel_called and isinstance(exc, TimeoutError)
        return f"timed out after {self.timeout}s" if timed_out else "failed"

    async def _cancelled(self, cancelled: BaseException) -> bool:
        """Record a cancellation error; whether it came from outside (then it is re-raised) or is the task's own
        (a future someone else cancelled: then it is the task's failure, and the flush goes on)."""
        if not await cancelled_from_outside():
            self.fail(cancelled, "failed")
            return False
        self.exception = cancelled  # tells a task interrupted while running from one never started
        self._finish(TaskState.CANCELLED)
        logger.warning(
            "background task %s was cancelled",
            self.display_name,
            extra=self._log_fields("cancelled"),
        )
        return True

    def _log_fields(self, state: str, reason: str | None = None) -> dict[str, Any]:
        """The structured fields of a log record about this task, for a JSON formatter to index: its name, label,
        state, the reason (when there is one) and how long it had run, in seconds (``None`` if it never started)."""
        started = getattr(self, "_started", None)  # unset until run() starts it: most tasks never need it
        fields: dict[str, Any] = {
            "task_name": self.name,
            "task_label": self.label,
            "task_state": state,
            "task_duration": None if started is None else perf_counter() - started,
        }
        if reason is not None:
            fields["task_reason"] = reason
        return fields

    def _arguments(self) -> dict[str, Any]:
        """The arguments by parameter name: bound once at add_task, or (plain positional calls) zipped here."""
        if self._values is not None:
            return self._values
        signature = self._spec.signature
        if signature is None:
            return dict(self.kwargs)
        return dict(zip(signature.parameters, self.args, strict=True))

    async def _invoke_into(self) -> None:
        """Run a task that is not driven directly (dependencies, a sync function, a timeout) and keep its result."""
        self.result = await self._invoke(abandon=self.timeout is not None)

    async def _invoke(self, *, abandon: bool) -> Any:
        spec = self._spec
        if spec.plan is not None:
            # dependencies: a fresh request scope of the same container, in the task's context (where the container
            # finds the list to record its sync body's thread in, through thread_watch)
            if not spec.is_async:
                self._threads = []
                self._context.run(thread_watch.set, self._threads)
            try:
                return await run_in_context(
                    self._context, self._host.call_task(spec, self._arguments(), abandon_on_cancel=abandon)
                )
            finally:
                self._threads = None
        if spec.is_async:
            return await run_in_context(self._context, self._context.run(self.func, *self.args, **self.kwargs))
        call = ThreadCall(_call_in, self._context, self.func, self.args, self.kwargs)
        self._threads = [call]
        try:
            return await self._host.to_thread(call, abandon_on_cancel=abandon)
        except anyio.get_cancelled_exc_class():
            if abandon and call.after(self._log_late_return):
                logger.warning(
                    "background task %s runs in a worker thread, which cannot be interrupted: it goes on after "
                    "being stopped, and its return will be logged",
                    self.display_name,
                )
            raise
        finally:
            self._threads = None

    def _log_late_return(self) -> None:
        logger.warning(
            "background task %s: its worker thread, stopped waiting for earlier, returned",
            self.display_name,
            extra=self._log_fields(self.state.value),
        )


def _call_in(
    context: contextvars.Context, func: Callable[..., T], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> T:
    leave_event_loop(context)  # this worker thread runs no event loop (code in it may start one: anyio.run)
    result: Any = context.run(func, *args, **kwargs)
    if type(result) is types.CoroutineType:  # e.g. add_task(lambda: send()): never awaited, a silent no-op
        result.close()
        raise TypeError(
            f"background task {qualname(func)} is a plain function but returned a coroutine, which would never "
            "be awaited; pass the async function itself (add_task(send, arg)) or declare it with 'async def'"
        )
    return cast("T", result)


class BackgroundTasks:
    """The task collector of a request scope.

    Every dependency resolved in one scope that asks for ``BackgroundTasks`` receives this same object, so
    tasks added at any depth merge, in the order added. The scope runs them when it exits (see the exit
    order in the README). Iterating it, or ``len()``, shows the tasks not flushed yet.
    """

    __slots__ = ("_closed", "_flushed", "_host", "_tasks", "label")

    def __init__(self, container: TaskHost | None = None, label: str | None = None) -> None:
        """Make a collector.

        Args:
            container: whose settings (timeouts, thread limiter, error hook) the tasks use and which
                resolves their dependencies; a private default container when ``None``.
            label: copied to each task added here (see ``Task.label``).
        """
        if container is None:
            assert _default_host is not None  # set when the package is imported, not user input
            container = _default_host()
        self._host = container
        self._tasks: list[Task] = []
        self._flushed = 0
        self._closed = False
        self.label: str | None = label
        """Copied to each task added here (see ``Task.label``)."""

    def add_task(self, func: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> Task:
        """Schedule ``func(*args, **kwargs)`` to run when the scope exits.

        Args:
            func: a sync or async function. Sync functions run in a worker thread; ``Depends`` parameters
                are resolved when the task runs, in a fresh request scope.
            *args: positional arguments for ``func``.
            **kwargs: keyword arguments for ``func``.

        Returns:
            The :class:`Task` handle.

        Raises:
            TypeError: ``func`` is not a function, or the arguments do not fit its signature (checked now,
                not in the background).
            ScopeError: the scope owning this collector has already finished flushing.
        """
        if self._closed:
            raise ScopeError(
                f"cannot add {getattr(func, '__qualname__', func)!r}: the scope owning this BackgroundTasks has "
                "already exited and flushed, so the task would never run. Add tasks while the scope is open"
            )
        container = self._host
        try:  # a function added before: its spec, read without a call (add_task is on every request's path)
            spec = container.task_specs[func]
        except (KeyError, TypeError):
            spec = container.task_spec(func)
        # plain positional calls are checked by counting; anything else is bound, which explains a mistake
        values = None if (len(args) == spec.npos and not kwargs) else spec.check(args, kwargs)
        checker = container.task_checker
        if checker is not None:
            checker.check_task(func, args, kwargs)
        task = Task(func, args, kwargs, spec, container, contextvars.copy_context(), self.label, values)
        self._tasks.append(task)
        return task

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks[self._flushed :])

    def __len__(self) -> int:
        return len(self._tasks) - self._flushed

    def __repr__(self) -> str:
        return f"<BackgroundTasks pending={[t.name for t in self]}>"

    @property
    def all(self) -> tuple[Task, ...]:
        """Every task ever added to this collector, flushed or not, in the order added."""
        return tuple(self._tasks)

    def take(self) -> list[Task]:
        """Take the pending tasks, in the order added, for a flush: they no longer count as pending."""
        batch = self._tasks[self._flushed :]
        self._flushed = len(self._tasks)
        return batch

    def close(self) -> None:
        """Refuse further tasks: the owner has flushed for the last time (``add_task`` then raises ScopeError)."""
        self._closed = True


class GuardedTasks(BackgroundTasks):
    """The collector of a scope its user holds (``container.scope()``): garbage-collected before it was closed, it
    warns about the tasks that never ran, so a scope used without ``async with`` loses nothing silently.

    Scopes the library opens and always closes (``Container.call``, the ASGI middleware, a task's own scope) use the
    plain class: a finaliser would cost every request a call when its collector is freed.
    """

    __slots__ = ()

    def __del__(self) -> None:
        if self._closed:
            return
        lost = [t.name for t in self._tasks if t.state is _PENDING]
        if lost:
            warnings.warn(
                f"a di_tasks scope was garbage-collected without exiting, so {len(lost)} background task(s) "
                f"never ran: {', '.join(lost)}. Use 'async with container.scope()'",
                RuntimeWarning,
                stacklevel=1,
            )
