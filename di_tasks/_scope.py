"""Request scopes: their values, cache and collector, and the exit order, in one place (:meth:`Scope.close`)."""

from __future__ import annotations

import logging
import types
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, overload

import anyio

from ._errors import BackgroundTaskError, ScopeError
from ._execute import execute
from ._plan import Special, Teardown, register_special
from ._run import start_unwind, unwind
from ._tasks import BackgroundTasks, GuardedTasks, Task, TaskObserver, TaskState
from ._util import raise_later

if TYPE_CHECKING:
    from ._container import Container

T = TypeVar("T")
logger: Final = logging.getLogger("di_tasks")

current_scope: ContextVar[Scope | None] = ContextVar("di_tasks.current_scope", default=None)
"""The scope ``Container.inject`` resolves in: set by the ASGI middleware, ``Container.call`` and ``scope()``."""

_OPEN, _CLOSING, _CLOSED = 0, 1, 2


class FlushObserver(Protocol):
    """Optional second method of a :class:`~di_tasks.TaskObserver`: watch each batch of a scope's tasks as the scope
    exits, for a span around the flush and for tasks that never start (skipped, cancelled before their turn).

    Looked up on ``container.task_observer`` once per batch (an observer without it costs nothing here).
    """

    def flush_started(self, scope: Scope, tasks: Sequence[Task], /) -> Callable[[], object] | None:
        """A batch of ``scope``'s tasks is about to be flushed or skipped; return what to call once it was dealt
        with (each task then finished, skipped, handed off, or still pending because the exit was cancelled), or
        ``None``. Called in the exiting scope's own task, so a context it attaches is current for the flusher."""
        ...


class Scope:
    """A request scope: its values, its cache, its generators to tear down, and its task collector.

    Get one from ``async with container.scope(**values) as scope``. ``scope.call(f)`` resolves and calls
    ``f`` in it; on exit the scope runs its tasks and tears down in the documented order.

    Attributes:
        container: the container it belongs to.
        values: values given by name, visible to every dependency at every depth.
        types: values bound by type (see :meth:`bind`).
        label: where the scope comes from (e.g. ``"GET /users"``), shown in its tasks' log lines.
        cache: request-scoped values computed so far.
        exit_stack: the request-scoped generators started so far, torn down last-in first-out at exit.
        body_error: the error the scope's body ended with, as recorded by whoever runs the body without seeing
            it raised (an injected endpoint whose framework turned the error into a response); the ASGI
            middleware exits the scope with it.
    """

    __slots__ = (
        "__weakref__", "_collector", "_guarded", "_state", "_token", "body_error", "cache", "container", "exit_stack",
        "label", "types", "values",
    )  # fmt: skip

    def __init__(
        self, container: Container, values: dict[str, Any], current: bool = False, guarded: bool = False
    ) -> None:
        """Make a scope (users get one from ``container.scope()``).

        Args:
            container: the container it belongs to.
            values: values by name (the container's merged in by the caller).
            current: make it the current scope (the one injected functions resolve in) now, in this context, until
                its exit begins, as ``async with`` does at its entry.
            guarded: whether its collector warns if the scope is garbage-collected before it exited: for scopes a
                user holds; one that the opener closes in a ``finally`` needs no such guard.

        The flags are passed by position on the hot paths: a keyword argument costs a call through a class a dict.
        """
        self.container: Container = container
        self.values: dict[str, Any] = values
        self.types: dict[type, Any] = {}
        self.cache: dict[Any, Any] = {}
        self.label: str | None = None
        self.exit_stack: list[Teardown] = []
        self.body_error: BaseException | None = None
        self._collector: BackgroundTasks | None = None  # made on first use: many scopes never add a task
        self._guarded = guarded
        self._state = _OPEN
        self._token: Token[Scope | None] | None = current_scope.set(self) if current else None

    @property
    def tasks(self) -> BackgroundTasks:
        """The scope's :class:`BackgroundTasks`: one per scope, the same object at every depth."""
        collector = self._collector
        if collector is None:
            kind = GuardedTasks if self._guarded else BackgroundTasks
            collector = self._collector = kind(self.container, self.label)
            if self._state == _CLOSED:
                collector.close()
        return collector

    @property
    def is_open(self) -> bool:
        """Whether the scope still resolves calls (it has not started exiting)."""
        return self._state == _OPEN

    def bind(self, tp: type[T], value: T) -> None:
        """Make ``value`` the value of every parameter annotated exactly ``tp`` (not given by name) in this scope.

        Raises:
            TypeError: ``tp`` is not a class, or is a builtin type (builtins are never matched by type).
        """
        if not isinstance(tp, type) or tp.__module__ == "builtins":  # type: ignore[redundant-expr]  # runtime check of user input
            raise TypeError(f"Scope.bind() takes a non-builtin class, got {tp!r}; pass builtin values by name")
        self.types[tp] = value

    @overload
    async def call(self, func: Callable[..., Awaitable[T]], /, *args: Any, **values: Any) -> T: ...
    @overload
    async def call(self, func: Callable[..., T], /, *args: Any, **values: Any) -> T: ...
    async def call(self, func: Callable[..., Any], /, *args: Any, **values: Any) -> Any:
        """Resolve ``func``'s dependencies in this scope and call it.

        Args:
            func: the function to call (sync or async).
            *args: positional arguments for ``func``'s leading parameters.
            **values: values by name for this call, visible at every depth, added to the scope's.

        Returns:
            What ``func`` returns (awaited if it is async).

        Raises:
            ScopeError: the scope has already exited.
            DITasksError: a wiring error (at the first call of ``func``) or a missing value.
        """
        if self._state != _OPEN:
            raise ScopeError(f"cannot call {getattr(func, '__qualname__', func)!r}: this scope has already exited")
        plan = self.container.plan(func, len(args))
        return await execute(plan, self, args, {**self.values, **values} if values else self.values)

    async def __aenter__(self) -> Scope:
        self._token = current_scope.set(self)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: types.TracebackType | None
    ) -> None:
        rest = self.start_close(exc)  # close(), without a coroutine of its own
        if rest is not None:
            await rest

    def _leave(self, token: Token[Scope | None]) -> None:
        """Stop being the current scope, as its exit begins (``token``: from when it was made current)."""
        self._token = None
        # exited in another context than it was entered in (e.g. a lifespan task): nothing to reset there
        try:  # noqa: SIM105  # contextlib.suppress would cost three calls on every scope's exit
            current_scope.reset(token)
        except ValueError:
            pass

    async def close(self, exc: BaseException | None = None, *, raise_task_errors: bool = True) -> None:
        """Exit the scope in the documented order (docs/explanation/exit-order.md): :meth:`start_close`, then what it
        leaves to wait for.

        Args:
            exc: the exception the body raised, if any: pending tasks are then skipped (and logged) unless the
                container runs tasks on error, and generators see the exception. A cancelled body runs no task
                (each is logged as cancelled) and its teardowns run shielded.
            raise_task_errors: raise :class:`BackgroundTaskError` afterwards if a task failed.

        Raises:
            BackgroundTaskError: a task failed (and ``raise_task_errors``, and the body did not raise).
            BaseException: a teardown raised, or a task let a ``BaseException`` through; it propagates after the
                tasks were handled and every teardown ran.
        """
        rest = self.start_close(exc, raise_task_errors=raise_task_errors)
        if rest is not None:
            await rest

    def start_close(
        self, exc: BaseException | None = None, *, raise_task_errors: bool = True
    ) -> Coroutine[Any, Any, None] | None:
        """Begin :meth:`close` and do what needs no waiting now: return ``None`` when the scope has closed, else what
        does the rest (await it). Same arguments and errors as :meth:`close`.

        A scope whose tasks all finish without suspending and that has nothing to tear down closes here, without a
        coroutine (``Task.start`` and :class:`~di_tasks.FlushStarter` do the same for a task and a flush).
        """
        if self._token is not None:
            self._leave(self._token)
        if self._state != _OPEN:
            return None
        collector = self._collector
        if exc is None and not self.exit_stack and not collector:  # nothing to do (no task pending): the common case
            self._state = _CLOSED
            if collector is not None:
                collector.close()
            return None
        self._state = _CLOSING
        failures = self.container.task_failures
        if exc is None:
            return self._close_now(failures, raise_task_errors)
        if isinstance(exc, anyio.get_cancelled_exc_class()):
            return self._exit_cancelled(exc)
        escaped: list[BaseException] = []  # what a task or the flusher let through (KeyboardInterrupt, SystemExit)
        return self._exit(exc, self._flush(exc, escaped), None, escaped, failures, raise_task_errors)

    def _close_now(self, failures: int, raise_task_errors: bool) -> Coroutine[Any, Any, None] | None:
        """The exit of a body that succeeded, as far as it goes without waiting: tasks that never suspend run, and
        generators whose teardown ends at once are torn down. ``None`` when that was all; else what does the rest."""
        # 1. the body has returned, or raised ``exc`` (for ASGI: the response has been sent).
        # 2. call-scoped dependencies were torn down when the call returned (``_run.start_end_call``).
        # 3. the tasks are flushed, so a task may still use request-scoped resources (a DB session): started here.
        escaped: list[BaseException] = []  # what a task or the flusher let through (KeyboardInterrupt, SystemExit)
        flushing = self._flush(None, escaped)
        unwinding = None
        if flushing is None and self.exit_stack:  # the tasks are done: 4. and 5. begin here too
            unwinding = start_unwind(self.exit_stack)
            if unwinding is None:
                flushing = self._flush(None, escaped)
        if flushing is None and unwinding is None and not self.exit_stack:
            self._mark_closed()
            self._end(None, None, failures, raise_task_errors)  # nothing escaped: only an awaited flush adds to it
            return None
        return self._exit(None, flushing, unwinding, escaped, failures, raise_task_errors)

    async def _exit(
        self,
        exc: BaseException | None,
        flushing: Awaitable[None] | None,
        unwinding: Awaitable[BaseException | None] | None,
        escaped: list[BaseException],
        failures: int,
        raise_task_errors: bool,
    ) -> None:
        """The exit from where :meth:`start_close` left it: what is left of the flush (``flushing``) and of the
        teardown (``unwinding``), then the steps after them."""
        error = exc
        try:
            if flushing is not None:
                await flushing
            # 4. request-scoped dependencies are torn down, last-in first-out.
            if unwinding is not None or self.exit_stack:
                error = await (unwinding or unwind(self.exit_stack, exc))
                if error is not exc and isinstance(error, anyio.get_cancelled_exc_class()):  # cancelled in teardown
                    await self._abandon(error, "the scope was cancelled while exiting")
                    escaped.insert(0, error)  # it propagates first
                # 5. tasks added during teardown are flushed too (and after this, adding one is an error).
                elif (flushing := self._flush(exc, escaped)) is not None:
                    await flushing
        except anyio.get_cancelled_exc_class() as stopped:  # cancelled from outside while flushing (a shutdown)
            await self._abandon(stopped, "the scope was cancelled while exiting")
            raise
        finally:
            self._mark_closed()
        # what escaped the flush propagates now that every task was run or logged and every teardown ran
        self._end(exc, escaped[0] if escaped else error, failures, raise_task_errors)

    async def _exit_cancelled(self, exc: BaseException) -> None:
        """The exit of a cancelled body: no task runs, teardowns run to completion; the caller re-raises ``exc``."""
        try:
            await self._abandon(exc, "the scope's body was cancelled")
        finally:
            self._mark_closed()

    def _mark_closed(self) -> None:
        self._state = _CLOSED
        if self._collector is not None:
            self._collector.close()

    def _end(self, exc: BaseException | None, error: BaseException | None, failures: int, raise_errors: bool) -> None:
        """Raise what the exit must: ``error`` when it is not the body's own ``exc`` (a teardown's, what escaped a
        task), else :class:`BackgroundTaskError` if a task failed, the body succeeded and ``raise_errors``."""
        if error is not None and error is not exc:
            raise error
        if exc is None and raise_errors and self.container.task_failures != failures:
            self._raise_task_errors()

    async def _abandon(self, cancelled: BaseException, why: str) -> BaseException:
        """Cancelled (the body, or the exit itself from outside): still release request-scoped resources, shielded,
        and record and log every task that will not run instead of dropping it silently."""
        if self.exit_stack:
            error: BaseException | None = cancelled  # bound on every path (a CancelScope may, to a checker, swallow)
            with anyio.CancelScope(shield=True):
                error = await unwind(self.exit_stack, cancelled)
            if error is not cancelled:
                logger.error("tearing down a cancelled scope failed", exc_info=error)
        if self._collector is not None:
            left = [task for task in self._collector.all if task.state is TaskState.PENDING]
            self._collector.take()
            self._skip(left, f"background task(s) not run because {why}", TaskState.CANCELLED)
        return cancelled

    def _flush(self, exc: BaseException | None, escaped: list[BaseException]) -> Coroutine[Any, Any, None] | None:
        """Flush the pending tasks (see :meth:`_flushing`); ``None`` if that is done already, else what does the rest.

        The common case, a body that succeeded and no task observer, hands the batch over here: with the default
        flusher, tasks that never suspend then run without a coroutine of the exit's own.
        """
        collector = self._collector
        if collector is None or not (batch := collector.take()):
            return None
        if exc is not None or escaped:
            return self._flushing(batch, None, exc, escaped)
        observer = self.container.task_observer
        finished = None if observer is None else self._observe_flush(observer, batch)
        try:
            rest = self._hand_over(batch)
        except BaseException as stopped:  # noqa: BLE001  # handled as if raised by the rest, in _flushing
            rest = raise_later(stopped)
        if rest is not None:
            return self._flushing(batch, rest, exc, escaped, finished)
        if finished is not None:
            finished()
        batch = collector.take()  # what the batch's tasks added
        return self._flushing(batch, None, exc, escaped) if batch else None

    async def _flushing(
        self,
        batch: list[Task],
        rest: Awaitable[None] | None,
        exc: BaseException | None,
        escaped: list[BaseException],
        finished: Callable[[], object] | None = None,
    ) -> None:
        """Hand ``batch``, the pending tasks just taken, to the container's flusher, then the tasks they add, batch
        after batch; or, when the body raised (or something escaped an earlier batch), skip and log them unless the
        container runs tasks on error. What escapes the flusher is kept in ``escaped``, and the batch's tasks it did
        not get to are logged by name. ``rest`` and ``finished``: what is left to await of a batch already handed over,
        and what the task observer asked to be called once it has been dealt with."""
        collector = self._collector
        assert collector is not None  # checked by the caller, not user input
        observer = self.container.task_observer
        while batch:
            if rest is None:
                finished = None if observer is None else self._observe_flush(observer, batch)
            try:
                if rest is None:
                    rest = self._start_batch(batch, exc, escaped)
                if rest is not None:
                    await rest
            except anyio.get_cancelled_exc_class():
                raise
            except BaseException as stopped:  # noqa: BLE001  # propagates after the rest of the exit
                escaped.append(stopped)
                self._skip_left(batch, f"background task(s) not run because {type(stopped).__name__} stopped the flush")
            finally:
                if finished is not None:
                    finished()
            rest = finished = None
            batch = collector.take()  # what the batch's tasks added

    def _start_batch(
        self, batch: list[Task], exc: BaseException | None, escaped: list[BaseException]
    ) -> Awaitable[None] | None:
        """Skip and log ``batch`` if it is not to run (see :meth:`_skip_reason`), else hand it over; what is left."""
        why = self._skip_reason(exc, escaped)
        if why is None:
            return self._hand_over(batch)
        self._skip(batch, why)
        return None

    def _hand_over(self, batch: list[Task]) -> Awaitable[None] | None:
        """Give ``batch`` to the container's flusher: started at once when it is a FlushStarter (the default is)."""
        starter = self.container.flush_starter
        return self.container.flusher.flush(batch) if starter is None else starter.start_flush(batch)

    def _skip_reason(self, exc: BaseException | None, escaped: list[BaseException]) -> str | None:
        """Why a batch is not run (something stopped the flush, or the body raised), or ``None`` to run it."""
        if escaped:
            return f"background task(s) not run because {type(escaped[0]).__name__} stopped the flush"
        if exc is not None and not self.container.run_tasks_on_error:
            return f"background task(s) not run because the scope's body raised {type(exc).__name__}"
        return None

    def _observe_flush(self, observer: TaskObserver, batch: list[Task]) -> Callable[[], object] | None:
        """Tell the container's task observer a batch is being flushed, if it watches flushes (see FlushObserver);
        return what to call once the batch was dealt with, if anything."""
        watch = getattr(observer, "flush_started", None)
        return None if watch is None else watch(self, batch)

    @classmethod
    def _skip_left(cls, batch: list[Task], why: str) -> None:
        """Skip and log the tasks of ``batch`` still pending (something stopped its flush)."""
        cls._skip([task for task in batch if task.state is TaskState.PENDING], why)

    @staticmethod
    def _skip(tasks: list[Task], why: str, state: TaskState = TaskState.SKIPPED) -> None:
        """Mark tasks that will not run (skipped, or cancelled) and log them by name: nothing is dropped silently."""
        if not tasks:
            return
        for task in tasks:
            task.mark(state)
        logger.warning(
            "%d %s: %s",
            len(tasks),
            why,
            ", ".join(t.display_name for t in tasks),
            extra={
                "task_names": [t.name for t in tasks],
                "task_label": tasks[0].label,
                "task_state": state.value,
                "task_reason": why,
            },
        )

    def _raise_task_errors(self) -> None:
        if self._collector is None:
            return
        failed_state = TaskState.FAILED  # read once: enum member access is slow on CPython 3.11
        failed: list[Task] = [t for t in self._collector.all if t.state is failed_state]
        if failed:
            raise BackgroundTaskError.of(
                f"{len(failed)} background task(s) failed: {', '.join(t.name for t in failed)}", failed
            )


register_special(BackgroundTasks, Special.TASKS)
register_special(Scope, Special.SCOPE)
