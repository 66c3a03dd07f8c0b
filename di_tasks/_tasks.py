"""The collector (``BackgroundTasks``) and the task handle (``Task``)."""

from __future__ import annotations

import contextvars
import enum
import logging
import types
import warnings
from collections.abc import Callable, Coroutine, Generator, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, cast

import anyio

from ._errors import ScopeError

if TYPE_CHECKING:
    from ._container import Container
    from ._solve import TaskSpec

P = ParamSpec("P")
T = TypeVar("T")

logger: Final = logging.getLogger("di_tasks")


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
    return (yield from _resume(context, coro, yielded))


def _resume(context: contextvars.Context, coro: Coroutine[Any, Any, T], yielded: Any) -> Generator[Any, Any, T]:
    """Drive ``coro`` on inside ``context`` after its first step suspended with ``yielded``.

    Split from :func:`run_in_context` so a task that finishes without suspending (its first step) needs no
    generator at all: ``Task.run`` takes that first step itself.
    """
    while True:
        try:
            value = yield yielded
        except BaseException as exc:  # noqa: BLE001  # forwarded into the coroutine, which decides
            try:
                yielded = context.run(coro.throw, exc)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]  # StopIteration.value is Any
        else:
            try:
                yielded = context.run(coro.send, value)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]  # StopIteration.value is Any


resume_in_context = types.coroutine(_resume)
"""Go on driving a coroutine inside a context after its first step suspended (awaitable form of ``_resume``)."""


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
        "_container",
        "_context",
        "_done",
        "_spec",
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
        container: Container,
        context: contextvars.Context,
    ) -> None:
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.state = _PENDING
        self.result: Any = None
        self.exception: BaseException | None = None
        self.timeout: float | None = container.task_timeout
        self.options: dict[str, Any] | None = None
        self.label: str | None = None
        self._spec = spec
        self._values: dict[str, Any] | None = None  # the arguments by name, when add_task had to bind them
        self._container = container
        self._context = context
        self._done: anyio.Event | None = None  # made on first wait(): Event() needs a running loop

    @property
    def name(self) -> str:
        """The task function's qualified name."""
        return self._spec.name

    def __repr__(self) -> str:
        return f"<Task {self.name} {self.state.value}>"

    @property
    def display_name(self) -> str:
        """The name with its label, as written in log lines: ``send_email (POST /signup)``."""
        return self.name if self.label is None else f"{self.name} ({self.label})"

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

    def mark(self, state: TaskState) -> None:
        """Record an outcome decided elsewhere (a runner that skips, cancels or hands tasks off)."""
        self._finish(state)

    async def run(self) -> None:
        """Run the task once, recording its outcome; never raises for the task's own failure.

        A failure is logged on the ``di_tasks`` logger at ERROR with the traceback and passed to the
        container's error hook. Cancellation from outside is recorded, logged and re-raised.
        """
        if self.state is not _PENDING:
            return
        self.state = _RUNNING
        deadline: anyio.CancelScope | None = None
        try:
            if self.timeout is None:
                spec = self._spec
                if spec.plan is None and spec.is_async:  # the common case, without the frame of _invoke
                    context = self._context
                    coro = context.run(self.func, *self.args, **self.kwargs)
                    try:  # the first step here: a task that never suspends needs no driving generator
                        yielded = context.run(coro.send, None)
                    except StopIteration as stop:
                        self.result = stop.value
                    else:
                        self.result = await resume_in_context(context, coro, yielded)
                else:
                    self.result = await self._invoke(abandon=False)
            else:
                with anyio.fail_after(self.timeout) as deadline:
                    self.result = await self._invoke(abandon=True)
        except anyio.get_cancelled_exc_class() as cancelled:
            self.exception = cancelled  # tells a task interrupted while running from one never started
            self._finish(TaskState.CANCELLED)
            logger.warning("background task %s was cancelled", self.display_name)
            raise
        except Exception as exc:
            self.exception = exc
            self._finish(TaskState.FAILED)
            if isinstance(exc, TimeoutError) and deadline is not None and deadline.cancel_called:
                logger.error("background task %s timed out after %ss", self.display_name, self.timeout, exc_info=exc)
            else:
                logger.error("background task %s failed", self.display_name, exc_info=exc)
            self._container._report_task_error(self, exc)
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: recorded, then let through
            self.exception = exc
            self._finish(TaskState.FAILED)
            raise
        else:
            self._finish(_SUCCEEDED)

    def _arguments(self) -> dict[str, Any]:
        """The arguments by parameter name: bound once at add_task, or (plain positional calls) zipped here."""
        if self._values is not None:
            return self._values
        signature = self._spec.signature
        if signature is None:
            return dict(self.kwargs)
        return dict(zip(signature.parameters, self.args, strict=True))

    async def _invoke(self, *, abandon: bool) -> Any:
        spec = self._spec
        if spec.plan is not None:
            # dependencies: a fresh request scope of the same container, in the task's context
            return await run_in_context(
                self._context,
                self._container._call_task(spec, self._arguments(), abandon=abandon),
            )
        if spec.is_async:
            return await run_in_context(self._context, self._context.run(self.func, *self.args, **self.kwargs))
        return await anyio.to_thread.run_sync(
            _call_in, self._context, self.func, self.args, self.kwargs,
            abandon_on_cancel=abandon,
            limiter=self._container._thread_limiter(),
        )  # fmt: skip


def _call_in(
    context: contextvars.Context, func: Callable[..., T], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> T:
    result: Any = context.run(func, *args, **kwargs)
    if type(result) is types.CoroutineType:  # e.g. add_task(lambda: send()): never awaited, a silent no-op
        result.close()
        from ._inspect import qualname

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

    __slots__ = ("_closed", "_container", "_flushed", "_owned", "_tasks", "label")

    def __init__(self, container: Container | None = None) -> None:
        """Make a collector.

        Args:
            container: whose settings (timeouts, thread limiter, error hook) the tasks use and which
                resolves their dependencies; a private default container when ``None``.
        """
        if container is None:
            from ._container import Container

            container = Container()
        self._container = container
        self._tasks: list[Task] = []
        self._flushed = 0
        self._closed = False
        self._owned = False  # set by the scope that flushes it
        self.label: str | None = None
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
        container = self._container
        try:  # the container's cache of specs, read inline: add_task is on every request's path
            spec = container._task_specs[func]
        except (KeyError, TypeError):  # first use, or an unhashable callable
            spec = container._task_spec(func)
        values = None
        if not (spec.simple and not kwargs and len(args) == spec.npos):  # plain positional calls checked by counting
            values = spec.check(args, kwargs)  # raises the precise TypeError
        checker = container._task_checker
        if checker is not None:
            checker.check_task(func, args, kwargs)
        task = Task(func, args, kwargs, spec, container, contextvars.copy_context())
        task._values = values
        task.label = self.label
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

    def __del__(self) -> None:
        if not self._owned or self._closed:
            return
        lost = [t.name for t in self._tasks if t.state is _PENDING]
        if lost:
            warnings.warn(
                f"a di_tasks scope was garbage-collected without exiting, so {len(lost)} background task(s) "
                f"never ran: {', '.join(lost)}. Use 'async with container.scope()'",
                RuntimeWarning,
                stacklevel=1,
            )

    def _take(self) -> list[Task]:
        batch = self._tasks[self._flushed :]
        self._flushed = len(self._tasks)
        return batch
