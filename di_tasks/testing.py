"""Helpers for unit-testing dependency graphs: capture tasks instead of running them, run them on demand,
call one function or dependency with chosen overrides and values, and validate many entry points at once.

Typical use::

    from di_tasks.testing import capture_tasks

    with capture_tasks(container) as captured, container.override(get_db, fake_db):
        container.run(signup, email="ada@example.com")
    assert [(t.func, t.args) for t in captured] == [(send_welcome, ("ada@example.com",))]
    captured.run_sync()  # run them now, raising their failures

Captured tasks run after their scope has exited (``container.run`` returns only then). A task that needs the
request's resources still open (its DB session) is tested with ``capture_tasks(container, hold=True)``: see
:func:`capture_tasks`.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from typing import Annotated, Any, Final, Generic, Literal, TypeVar, overload

import anyio
import anyio.lowlevel

from ._container import Container
from ._errors import BackgroundTaskError, DITasksError, format_path
from ._flush import Flusher, TaskChecker
from ._inspect import Kind, kind_of, qualname
from ._markers import Depends
from ._scope import Scope
from ._solver import Solver
from ._tasks import Task, TaskObserver, TaskState, task_value_errors

_library: contextvars.ContextVar[str | None] | None
_current_library: Callable[[], str] | None
try:  # installed with trio, which needs it; without it no context names an event loop library
    from sniffio import current_async_library, current_async_library_cvar
except ImportError:  # pragma: no cover  # the test extra installs trio
    _library = _current_library = None
else:
    _library, _current_library = current_async_library_cvar, current_async_library

__all__ = (
    "CallResult",
    "CapturedTasks",
    "call",
    "capture_tasks",
    "run",
    "validate",
    "wiring_errors",
)

_T = TypeVar("_T")
logger: Final = logging.getLogger("di_tasks")
Overrides = Mapping[Callable[..., Any], Callable[..., Any]]


class CapturedTasks(Sequence[Task]):
    """The tasks captured instead of run: a read-only sequence of :class:`~di_tasks.Task`, in the order added.

    It is a :class:`~di_tasks.Flusher`: :func:`capture_tasks` installs it on a container. Each captured task is
    marked ``TaskState.HANDED_OFF`` (it has no outcome yet) and keeps its ``func``, ``args`` and ``kwargs`` to
    assert on. :meth:`run` (or :meth:`run_sync`) runs the captured tasks later, under the overrides that were
    active when they were captured, and raises their failures.

    Made with ``hold=True`` (``capture_tasks(container, hold=True)``), a scope that exits with request-scoped
    resources still to tear down waits in its exit, tasks captured, until :meth:`run` runs them there, before its
    teardown, in the documented exit order (see :func:`capture_tasks`).
    """

    def __init__(
        self,
        container: Container,
        checker: TaskChecker | None = None,
        *,
        hold: bool = False,
        hold_timeout: float = 10.0,
    ) -> None:
        """Make an empty capture for ``container``.

        Args:
            container: the container whose tasks are captured; it also runs them in :meth:`run`.
            checker: the add-time check of the flusher being replaced (e.g. an external queue's
                serialisation check), still applied to every task added while capturing.
            hold: keep each exiting scope open, its tasks captured, until :meth:`run` runs them in it.
            hold_timeout: seconds a scope is held at most; then its exit raises ``TimeoutError``.
        """
        self.container = container
        self.hold: bool = hold
        self.hold_timeout = hold_timeout
        self._held: list[_Hold] = []  # the scopes waiting in their exit for run(), oldest first
        self._running = 0  # run() calls under way: a scope exiting meanwhile runs its tasks at once
        self._ran: list[Task] = []  # the tasks run by the current run(), wherever they ran
        self._arrived: anyio.Event | None = None  # made by wait_for(): Event() needs a running loop
        self._checker = checker
        self._tasks: list[Task] = []
        self._overrides: list[dict[Any, Callable[..., Any]]] = []  # the overrides active when each was captured
        # The context each task was added in: marking a task handed off drops it (only a finished task should), and
        # the task must run in it later, as in production, never in a context shared with other tasks or threads.
        self._contexts: list[contextvars.Context] = []
        # the batch a scope is about to flush, and that scope, as told by _ExitWatch (see capture_tasks)
        self._exiting: tuple[Sequence[Task], Scope] | None = None

    # -- Flusher and TaskChecker ---------------------------------------------------------------------------

    async def flush(self, tasks: Sequence[Task], /) -> None:
        """Record ``tasks`` instead of running them (the :class:`~di_tasks.Flusher` method).

        With ``hold``, when their scope still has request-scoped dependencies to tear down, wait here (in the
        scope's exit, before that teardown) until :meth:`run` has them run here, or the capture block exits.

        Raises:
            TimeoutError: held for ``hold_timeout`` seconds without :meth:`run` being awaited.
        """
        exiting, self._exiting = self._exiting, None
        await self._capture(tasks, exiting[1] if exiting is not None and exiting[0] is tasks else None)

    async def _capture(self, tasks: Sequence[Task], scope: Scope | None) -> None:
        """Record ``tasks``, flushed by ``scope`` (when known), and hold that scope's exit if it is worth it."""
        overrides = dict(self.container.overrides)
        # only when the scope still has request-scoped dependencies to tear down does holding its exit change
        # anything (tasks added during teardown are flushed after it)
        worth_holding = self.hold and scope is not None and bool(scope.exit_stack)
        first = len(self._tasks)
        for task in tasks:
            context = task.context
            task.mark(TaskState.HANDED_OFF)
            self._tasks.append(task)
            self._overrides.append(overrides)
            self._contexts.append(context)
        if self._arrived is not None:
            self._arrived.set()
        if not worth_holding:
            return
        if self._running:  # run() is under way: no one would release a new hold, so run these now, in this exit
            await self._run_from(first, len(self._tasks))
            return
        await self._wait_in_exit(_Hold(first, len(self._tasks)))

    async def _wait_in_exit(self, hold: _Hold) -> None:
        """Hold a scope's exit until :meth:`run` lets it run its tasks (then run them) or the block exits."""
        self._held.append(hold)
        try:
            with anyio.move_on_after(self.hold_timeout) as deadline:
                await hold.go.wait()
        finally:
            if hold in self._held:
                self._held.remove(hold)
        if deadline.cancelled_caught:
            names = ", ".join(t.name for t in self._tasks[hold.start : hold.stop])
            raise TimeoutError(
                f"capture_tasks(hold=True) held a scope's exit for {self.hold_timeout} s with its task(s) {names} "
                "captured, and no 'await captured.run()' came: await it while the request runs (e.g. "
                "tg.start_soon(container.call, endpoint); await captured.wait_for(1); await captured.run()), or "
                "capture without hold=True"
            )
        if hold.run:
            try:
                await self._run_from(hold.start, hold.stop)
            finally:
                hold.finished.set()

    async def _run_from(self, start: int, stop: int) -> None:
        """Run the captured tasks ``start:stop`` not run yet, here, as :meth:`run` does."""
        for index in range(start, stop):
            task = self._tasks[index]
            if task.state is TaskState.HANDED_OFF:
                _reopen(task, self._contexts[index])
                self._ran.append(task)
                with _overrides(self.container, self._overrides[index]):
                    await task.run()

    def release(self) -> None:
        """Let every held scope go on exiting without running its tasks (``capture_tasks`` calls it on exit).

        The tasks stay captured (``HANDED_OFF``, in :attr:`pending`) and are logged at WARNING by name; a later
        :meth:`run` runs them after their scope's teardown, as without ``hold``. No scope is held after this.
        """
        self.hold = False
        held, self._held = self._held, []
        for hold in held:
            names = ", ".join(t.display_name for t in self._tasks[hold.start : hold.stop])
            logger.warning("capture block exited with held task(s) not run; their scope goes on exiting: %s", names)
            hold.go.set()

    async def wait_for(self, count: int, *, timeout: float = 5.0) -> None:  # noqa: ASYNC109  # bounded by default: a request that never adds its tasks fails the test with what was captured, not a hang
        """Wait until at least ``count`` tasks have been captured (all scopes together, since the capture began).

        With ``hold``, a test drives the request concurrently and waits here until its scope has exited up to
        its tasks (held), then asserts and runs them: see :func:`capture_tasks`.

        Args:
            count: how many captured tasks to wait for.
            timeout: seconds to wait at most.

        Raises:
            TimeoutError: fewer than ``count`` tasks were captured within ``timeout`` seconds.
        """
        with anyio.move_on_after(timeout):
            while len(self._tasks) < count:
                self._arrived = anyio.Event()
                await self._arrived.wait()
        self._arrived = None
        if len(self._tasks) < count:
            raise TimeoutError(
                f"CapturedTasks.wait_for({count}): {len(self._tasks)} task(s) captured after {timeout} s "
                f"({', '.join(t.name for t in self._tasks) or 'none'}); did the request run, and add its tasks?"
            )

    def check_task(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any], /) -> None:
        """Apply the replaced flusher's add-time check, so a test fails where production would."""
        if self._checker is not None:
            self._checker.check_task(func, args, kwargs)

    # -- the sequence --------------------------------------------------------------------------------------

    @overload
    def __getitem__(self, index: int) -> Task: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Task]: ...
    def __getitem__(self, index: int | slice) -> Task | Sequence[Task]:
        return self._tasks[index]

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(list(self._tasks))

    def __repr__(self) -> str:
        return f"<CapturedTasks {[t.name for t in self._tasks]}>"

    def of(self, func: Callable[..., Any]) -> list[Task]:
        """The captured tasks whose function is ``func``, in the order added."""
        return [t for t in self._tasks if t.func is func]

    @property
    def pending(self) -> list[Task]:
        """The captured tasks that have not been run yet."""
        return [t for t in self._tasks if t.state is TaskState.HANDED_OFF]

    def clear(self) -> None:
        """Forget every captured task (run or not)."""
        self._tasks.clear()
        self._overrides.clear()
        self._contexts.clear()

    # -- running on demand ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run every captured task not run yet, one at a time in the order added, and raise their failures.

        Each task runs as the container would have run it when it was captured: under the overrides active
        then, in the context it was added in (the copy ``add_task`` made, holding the context variables set before
        it), with the container's app lifetime open (entered here if it is not). Tasks added while these run (by
        tasks that have dependencies) are captured and run too, in the same call.

        With ``hold``, the tasks of the scopes held in their exit run first, each in its scope's exit (so with the
        request's resources still open), one scope after another; each scope then goes on with its teardown.

        Raises:
            BackgroundTaskError: one or more tasks failed; every task still ran.
            RuntimeError: a scope is held on another event loop than this one.
        """
        self._check_loop()
        container = self.container
        previous = container.flusher
        container.flusher = self  # tasks added by the tasks run here are captured, then run below
        self._running += 1
        if self._running == 1:
            self._ran = []
        ran = self._ran
        try:
            async with container:
                await self._run_held()
                index = 0
                while index < len(self._tasks):  # read per turn: the tasks run here may capture more
                    await self._run_from(index, index + 1)
                    index += 1
        finally:
            self._running -= 1
            container.flusher = previous
        failed = [t for t in ran if t.state is TaskState.FAILED]
        if failed:
            raise BackgroundTaskError.of(
                f"{len(failed)} captured task(s) failed: {', '.join(t.name for t in failed)}", failed
            )

    async def _run_held(self) -> None:
        """Let each held scope run its tasks in its exit, one scope at a time, oldest first."""
        while self._held:
            hold = self._held.pop(0)
            hold.run = True
            hold.go.set()
            await hold.finished.wait()

    def _check_loop(self) -> None:
        if self._held and self._held[0].loop != anyio.lowlevel.current_token():
            raise RuntimeError(
                "CapturedTasks.run() was awaited on another event loop than the one its held scopes exit on; "
                "await it in the test that drives the request"
            )

    def run_sync(self, *, backend: Literal["asyncio", "trio"] = "asyncio") -> None:
        """:meth:`run` from synchronous code, on a new event loop of ``backend``.

        Raises:
            BackgroundTaskError: one or more tasks failed; every task still ran.
            RuntimeError: called inside a running event loop (``await captured.run()`` there), or while scopes
                are held (``hold=True``): their tasks run in their exit, on their loop, by ``await captured.run()``.
        """
        if self._held:
            names = ", ".join(t.name for hold in self._held for t in self._tasks[hold.start : hold.stop])
            raise RuntimeError(
                f"CapturedTasks.run_sync() cannot run held task(s) {names}: their scope waits in its exit on an "
                "event loop; use 'await captured.run()' in the async test that drives the request"
            )
        _no_running_loop("CapturedTasks.run_sync()", "await captured.run()")
        anyio.run(self.run, backend=backend)


class _Hold:
    """One scope waiting in its exit: its captured tasks are ``start:stop`` of the capture."""

    __slots__ = ("finished", "go", "loop", "run", "start", "stop")

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop
        self.go = anyio.Event()  # set by run() (with ``run``) or by the block's exit (without)
        self.finished = anyio.Event()  # set once the scope has run its tasks
        self.run = False
        self.loop = anyio.lowlevel.current_token()


class _ExitWatch:
    """The container's task observer while a capture holds scopes: tells the capture which scope is flushing each batch
    (the FlushObserver method, called just before the flush), and passes every call on to the observer it replaced."""

    def __init__(self, inner: TaskObserver | None, captured: CapturedTasks) -> None:
        self.inner = inner
        self.captured = captured

    @property
    def enabled(self) -> bool:
        return self.inner is not None and self.inner.enabled

    def task_started(self, task: Task, /) -> Callable[[], object] | None:
        return None if self.inner is None else self.inner.task_started(task)

    def flush_started(self, scope: Scope, tasks: Sequence[Task], /) -> Callable[[], object] | None:
        self.captured._exiting = (tasks, scope)
        watch = getattr(self.inner, "flush_started", None)
        return None if watch is None else watch(scope, tasks)  # the replaced observer watches flushes too


class _ScopeCapture:
    """Captures the tasks of one scope and hands every other scope's tasks to the flusher it replaced."""

    def __init__(self, scope: Scope, captured: CapturedTasks, delegate: Flusher) -> None:
        self.scope = scope
        self.captured = captured
        self.delegate = delegate

    async def flush(self, tasks: Sequence[Task], /) -> None:
        mine = {id(t) for t in self.scope.tasks.all}
        ours = [t for t in tasks if id(t) in mine]
        others = [t for t in tasks if id(t) not in mine]
        if ours:
            await self.captured._capture(ours, self.scope)
        if others:
            await self.delegate.flush(others)

    def check_task(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any], /) -> None:
        self.captured.check_task(func, args, kwargs)


@contextmanager
def capture_tasks(
    target: Container | Scope, *, hold: bool = False, hold_timeout: float = 10.0
) -> Generator[CapturedTasks, None, None]:
    """Inside the block, capture tasks instead of running them.

    With a container, every scope of that container is captured (``Container.call``/``run``, ``scope()``,
    the ASGI middleware, tasks' own scopes). With a scope not entered yet (``container.scope(...)``), only
    that scope's tasks are captured; the other scopes run theirs as usual::

        scope = container.scope(email="ada@example.com")
        with capture_tasks(scope) as captured:
            async with scope:
                await scope.call(signup)

    The flusher's add-time check (:class:`~di_tasks.TaskChecker`), if it has one, still applies. Blocks nest;
    on exit the previous flusher is back.

    Without ``hold``, the scope has exited (its request-scoped dependencies torn down) by the time its tasks can be
    run: ``container.run``/``call`` return only then. With ``hold=True``, a scope that exits with request-scoped
    dependencies still to tear down waits in its exit, its tasks captured, until ``await captured.run()`` runs them
    there, before the teardown, as in production. The test drives the request concurrently::

        with capture_tasks(container, hold=True) as captured:
            async with anyio.create_task_group() as tg:
                tg.start_soon(container.call, endpoint)
                await captured.wait_for(1)  # captured; the scope waits with its DB session open
                await captured.run()  # runs in the scope's exit; then the session is closed

    Leaving the block releases the scopes still held: their tasks stay captured, not run (logged at WARNING).
    A scope held longer than ``hold_timeout`` seconds raises ``TimeoutError`` from its exit.

    Args:
        target: a :class:`~di_tasks.Container`, or a :class:`~di_tasks.Scope` that exits inside the block.
        hold: hold each exiting scope until :meth:`CapturedTasks.run` (see above).
        hold_timeout: seconds a scope is held at most.

    Returns:
        A context manager yielding the :class:`CapturedTasks`, filled as scopes exit.

    Raises:
        TypeError: ``target`` is neither a container nor a scope.
    """
    if isinstance(target, Container):
        container = target
    elif isinstance(target, Scope):
        container = target.container
    else:
        raise TypeError(f"capture_tasks() takes a Container or a Scope, got {target!r}")
    previous, observer = container.flusher, container.task_observer
    captured = CapturedTasks(container, container.task_checker, hold=hold, hold_timeout=hold_timeout)
    if isinstance(target, Scope):
        container.flusher = _ScopeCapture(target, captured, previous)
    else:
        container.flusher = captured
        if hold:  # which scope exits is told by the FlushObserver seam, watched while the block lasts
            container.task_observer = _ExitWatch(observer, captured)
    try:
        yield captured
    finally:
        container.flusher, container.task_observer = previous, observer
        captured.release()


def _reopen(task: Task, context: contextvars.Context) -> None:
    """Take a captured task back from the capture, so ``Task.run`` runs it in the context it was added in."""
    if _library is not None and _current_library is not None:
        # anyio.run names its backend in the context (sniffio's variable), so a context copied under trio says
        # "trio"; a test may run the task on another backend (captured under trio, run_sync() on asyncio)
        context.run(_library.set, _current_library())
    task.reopen(context)


@contextmanager
def _overrides(container: Container, overrides: Overrides) -> Generator[None, None, None]:
    with ExitStack() as stack:
        for target, replacement in overrides.items():
            if container.overrides.get(target) is not replacement:
                stack.enter_context(container.override(target, replacement))
        yield


def _no_running_loop(what: str, instead: str) -> None:
    try:
        anyio.get_current_task()
    except RuntimeError:
        return
    raise RuntimeError(f"{what} was called inside a running event loop; use '{instead}' there")


# -- calling one function or dependency ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallResult(Generic[_T]):
    """What :func:`call` and :func:`run` return.

    Attributes:
        result: what the function returned (for a generator dependency: the value it yielded).
        tasks: the tasks its scope queued, captured instead of run.
    """

    result: _T
    tasks: CapturedTasks


# One wrapper per generator dependency, so a container's plan cache is reused; weak, so none outlives its function.
_roots: weakref.WeakKeyDictionary[Any, Callable[..., Any]] = weakref.WeakKeyDictionary()


def _as_root(func: Callable[..., Any], nargs: int) -> Callable[..., Any]:
    """A generator dependency cannot be the function called, so call a function that depends on it."""
    if kind_of(func) not in (Kind.GENERATOR, Kind.ASYNC_GENERATOR):
        return func
    if nargs:
        raise TypeError(
            f"{qualname(func)} is a generator dependency: pass its parameters by name (as values), not positionally"
        )
    try:
        return _roots[func]
    except (KeyError, TypeError):
        pass

    def root(value: Any) -> Any:
        return value

    # through a partial, so an override of ``func`` itself does not apply: call() always calls ``func``
    root.__annotations__ = {"value": Annotated[Any, Depends(functools.partial(func))], "return": Any}
    root.__module__ = getattr(func, "__module__", None) or __name__
    root.__qualname__ = f"{getattr(func, '__qualname__', 'dependency')}[yielded]"
    with suppress(TypeError):  # an unhashable callable: built again next time
        _roots[func] = root
    return root


@overload
async def call(
    func: Callable[..., AsyncIterator[_T]],
    /,
    *args: Any,
    container: Container | None = None,
    overrides: Overrides | None = None,
    **values: Any,
) -> CallResult[_T]: ...
@overload
async def call(
    func: Callable[..., Iterator[_T]],
    /,
    *args: Any,
    container: Container | None = None,
    overrides: Overrides | None = None,
    **values: Any,
) -> CallResult[_T]: ...
@overload
async def call(
    func: Callable[..., Awaitable[_T]],
    /,
    *args: Any,
    container: Container | None = None,
    overrides: Overrides | None = None,
    **values: Any,
) -> CallResult[_T]: ...
@overload
async def call(
    func: Callable[..., _T],
    /,
    *args: Any,
    container: Container | None = None,
    overrides: Overrides | None = None,
    **values: Any,
) -> CallResult[_T]: ...
async def call(
    func: Callable[..., Any],
    /,
    *args: Any,
    container: Container | None = None,
    overrides: Overrides | None = None,
    **values: Any,
) -> CallResult[Any]:
    """Call ``func`` (an endpoint, or any single dependency) in a request scope, with chosen overrides and
    values, capturing the tasks it queues instead of running them.

    The overrides apply to ``func``'s dependencies (``func`` itself is always what is called) for this call
    only, and again when the captured tasks are run later; nothing is left on the container. A generator
    dependency is set up and torn down, and its yielded value returned.

    Args:
        func: the function or dependency to call (sync, async, generator, class).
        *args: positional arguments for ``func``'s leading parameters.
        container: the container to resolve in (default: a new ``Container()``). Its app lifetime is opened
            for the call if it is not open.
        overrides: ``{target: replacement}``, as with ``Container.override``.
        **values: values by name, visible at every depth (the names ``container`` and ``overrides`` are
            taken by this function).

    Returns:
        A :class:`CallResult` with the result and the captured tasks.

    Raises:
        DITasksError: the graph cannot be resolved (wiring error, missing value).
        TypeError: positional arguments for a generator dependency.
        BaseException: whatever ``func`` or a dependency raised.
    """
    container = container if container is not None else Container()
    root = _as_root(func, len(args))
    with ExitStack() as stack:
        for target, replacement in (overrides or {}).items():
            stack.enter_context(container.override(target, replacement))
        captured = stack.enter_context(capture_tasks(container))
        async with container:
            result = await container.call(root, *args, **values)
    return CallResult(result, captured)


@overload
def run(
    func: Callable[..., AsyncIterator[_T]],
    /,
    *args: Any,
    container: Container | None = None,
    overrides: Overrides | None = None,
    backend: Literal["asyncio", "trio"] = "asyncio",
    **values: Any,
) -> CallResult[_T]: ...
@overload
def run(
    func: Callable[..., Iterator[_T]],
    /,
    *args: Any,
    container: Container | None = None,
    overrides: Overrides | None = None,
    backend: Literal["asyncio", "trio"] = "asyncio",
    **values: Any,
) -> CallResult[_T]: ...
@overload
def run(
    func: Callable[..., Awaitable[_T]],
    /,
    *args: Any,
    container: Container | None = None,
    overrides: Overrides | None = None,
    backend: Literal["asyncio", "trio"] = "asyncio",
    **values: Any,
) -> CallResult[_T]: ...
@overload
def run(
    func: Callable[..., _T],
    /,
    *args: Any,
    container: Container | None = None,
    overrides: Overrides | None = None,
    backend: Literal["asyncio", "trio"] = "asyncio",
    **values: Any,
) -> CallResult[_T]: ...
def run(
    func: Callable[..., Any],
    /,
    *args: Any,
    container: Container | None = None,
    overrides: Overrides | None = None,
    backend: Literal["asyncio", "trio"] = "asyncio",
    **values: Any,
) -> CallResult[Any]:
    """:func:`call` from synchronous code, on a new event loop of ``backend`` (``"asyncio"`` or ``"trio"``).

    Returns:
        A :class:`CallResult`; run its tasks with ``result.tasks.run_sync()``.

    Raises:
        RuntimeError: called inside a running event loop (``await di_tasks.testing.call(...)`` there).
        DITasksError, TypeError, BaseException: as :func:`call`.
    """
    _no_running_loop(f"di_tasks.testing.run({qualname(func)})", "await di_tasks.testing.call(...)")
    return anyio.run(
        functools.partial(call, func, *args, container=container, overrides=overrides, **values), backend=backend
    )


# -- validating many entry points ------------------------------------------------------------------------------


def _unwrap(func: Callable[..., Any]) -> Callable[..., Any]:
    """The function under its decorators: a ``Container.inject`` wrapper hides the injected parameters from its
    signature, so its graph is read from the function it wraps."""
    inner: Callable[..., Any] = inspect.unwrap(func)
    return inner


def _base_message(exc: DITasksError) -> str:
    message = str(exc)
    return message.removesuffix(f"\n  dependency path: {format_path(exc.path)}") if exc.path else message


def _errors_of(container: Container, func: Callable[..., Any]) -> list[DITasksError]:
    found: list[DITasksError] = []
    try:  # a broken parameter is recorded and skipped; only an error about the function itself stops the walk
        Solver(
            container.overrides, errors=found, lifetimes=container.lifetimes, sync_to_thread=container.sync_to_thread
        ).solve(_unwrap(func), 0)
    except DITasksError as exc:
        found.append(exc)
    errors: list[DITasksError] = []
    seen: set[tuple[type[DITasksError], str]] = set()
    for error in found:
        key = (type(error), _base_message(error))
        if key not in seen:
            seen.add(key)
            errors.append(error)
    return errors


def _task_errors(container: Container, func: Callable[..., Any]) -> list[DITasksError]:
    """What a task function's own graph needs that no run of the task can have (see ``add_task``)."""
    try:
        plan = container.plan(func)
    except DITasksError:  # reported by _errors_of
        return []
    return list(task_value_errors(plan, inspect.signature(func), container.values.keys()))


def wiring_errors(
    container: Container, *funcs: Callable[..., Any], tasks: Sequence[Callable[..., Any]] = ()
) -> list[DITasksError]:
    """Every wiring error of every graph, in order, instead of only the first one.

    Each function (seen through its decorators, so ``Container.inject`` wrappers are checked whole) is solved
    as ``container.solve`` would (under the container's active overrides); where a
    dependency is broken, the solver records the error and goes on with the next parameter. An error met
    twice in one graph (a broken dependency shared by two dependents) is reported once.

    Args:
        container: the container whose overrides apply.
        *funcs: the entry points (endpoints, commands).
        tasks: the background task functions: their graphs are checked as the entry points' are, and each value
            their dependencies ask for must be a parameter of the task or one of the container's values (a task
            runs in a fresh scope: a request's values are not there), else a :class:`~di_tasks.MissingValueError`.

    Returns:
        The errors (:class:`~di_tasks.WiringError`, :class:`~di_tasks.DependencyCycleError`,
        :class:`~di_tasks.ScopeError`, :class:`~di_tasks.MissingValueError` for tasks), each with its ``.path``
        from its entry point; empty when all is well.
    """
    return [exc for func in funcs for exc in _errors_of(container, func)] + [
        exc for func in tasks for exc in (*_errors_of(container, func), *_task_errors(container, func))
    ]


def validate(container: Container, *funcs: Callable[..., Any], tasks: Sequence[Callable[..., Any]] = ()) -> None:
    """Check that every entry point's graph is wired correctly, reporting every error at once.

    Use it in one test over all the endpoints and task functions of an app:
    ``validate(container, *endpoints, tasks=[send_welcome])``. Values an entry point is given at call time
    (``MissingValueError``) are not checked: they depend on the caller. A task's are: it only ever has its own
    arguments and the container's values.

    Args:
        container: the container whose overrides apply.
        *funcs: the entry points to check.
        tasks: the background task functions to check (see :func:`wiring_errors`).

    Raises:
        ExceptionGroup: one group holding every :class:`~di_tasks.DITasksError` found (see
            :func:`wiring_errors`), each with its path; ``except*`` picks them by type.
    """
    per_func = [_errors_of(container, func) for func in funcs]
    per_func += [[*_errors_of(container, func), *_task_errors(container, func)] for func in tasks]
    everything = [*funcs, *tasks]
    errors = [exc for found in per_func for exc in found]
    if errors:
        broken = [qualname(func) for func, found in zip(everything, per_func, strict=True) if found]
        raise ExceptionGroup(
            f"{len(errors)} wiring error(s) in {len(broken)} of {len(everything)} entry point(s): {', '.join(broken)}",
            errors,
        )
