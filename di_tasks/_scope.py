"""Scopes: executing a plan, caching per lifetime, tearing down, and the exit order."""

from __future__ import annotations

import contextlib
import functools
import logging
import types
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final, TypeVar, overload

import anyio

from ._compile import compile_plan
from ._concurrent import resolve_concurrently
from ._errors import BackgroundTaskError, DITasksError, MissingValueError, ScopeError
from ._flush import InProcessFlusher
from ._inspect import EMPTY, Kind
from ._solve import (
    APP_VALUE,
    CACHE_APP,
    CACHE_REQUEST,
    CONTAINER,
    SCOPE,
    SLOT,
    TASKS,
    TEARDOWN_CALL,
    TEARDOWN_REQUEST,
    Plan,
    Step,
    ValueNeed,
)
from ._tasks import BackgroundTasks, TaskState

if TYPE_CHECKING:
    from ._container import Container

T = TypeVar("T")
logger: Final = logging.getLogger("di_tasks")
_MISSING: Final[Any] = object()

current_scope: ContextVar[Scope | None] = ContextVar("di_tasks.current_scope", default=None)
"""The scope ``Container.inject`` resolves in: set by the ASGI middleware and by ``Container.scope()``."""

# A teardown entry: (generator, is_async, to_thread, name)
Teardown = tuple[Any, bool, bool, str]

_OPEN, _CLOSING, _CLOSED = 0, 1, 2


def _missing(need: ValueNeed) -> MissingValueError:
    bindable = isinstance(need.annotation, type) and need.annotation.__module__ != "builtins"
    hint = f"{need.annotation.__name__} " if bindable else ""
    return MissingValueError(
        f"no value for parameter {need.name!r} of {need.function}: it has no Depends marker, no default, and no "
        f"{hint}value was given by name{' or bound by type' if hint else ''}. Pass {need.name}=... to "
        "call()/run()/scope(), give the parameter a default, or declare it with Depends(...)",
        parameter=need.name,
        function=need.function,
        path=need.path,
    )


async def unwind(stack: list[Teardown], exc: BaseException | None) -> BaseException | None:
    """Tear generators down last-in first-out; returns the exception to raise afterwards (if any).

    The body's exception is thrown into each generator so it can react, but a generator cannot swallow
    it: suppressing an error in teardown would hide it from the caller. An exception raised by a
    teardown replaces the current one (chained) and is passed on to the next teardowns.
    """
    while stack:
        gen, is_async, to_thread, name = stack.pop()
        try:
            if exc is None:
                if is_async:
                    await gen.__anext__()
                elif to_thread:
                    if await anyio.to_thread.run_sync(next_or_done, gen) is _MISSING:
                        continue
                else:
                    next(gen)
            elif is_async:
                await gen.athrow(exc)
            elif to_thread:
                if await anyio.to_thread.run_sync(throw_or_done, gen, exc) is _MISSING:
                    continue
            else:
                gen.throw(exc)
        except (StopIteration, StopAsyncIteration):
            continue
        except BaseException as new:  # noqa: BLE001  # the teardown's own error replaces the current one
            if new is not exc:
                exc = new
            continue
        # the generator yielded again instead of finishing
        if is_async:
            await gen.aclose()
        else:
            gen.close()
        error = DITasksError(
            f"generator dependency {name} yielded more than once; a dependency must yield exactly one value"
        )
        if exc is not None:
            error.__context__ = exc
        exc = error
    return exc


COMPILE_AFTER: Final = 2
"""A plan is compiled on its second execution: a plan solved for a single call (an unhashable callable is
solved at every call) never pays for compiling."""


def execute(
    plan: Plan,
    scope: Scope,
    args: tuple[Any, ...],
    values: dict[str, Any],
    root_thread: Any = None,
    *,
    fresh: bool = False,
) -> Coroutine[Any, Any, Any]:
    """Run a plan in ``scope``: compute every step in order, then call the root with the caller's ``args``.

    Returns the coroutine of the compiled plan directly (no extra frame per resolution); await it. The first
    execution of a plan is interpreted, later ones run the compiled form (see ``_compile``). ``fresh`` says the
    scope was made for this call alone, so the form without request-cache lookups may run.
    Call-scoped generators are torn down before the coroutine returns.
    """
    if scope.container.concurrent_resolution:
        return resolve_concurrently(plan, scope, args, values, root_thread)
    if args and not plan.nargs:  # extra positional arguments the plan was not solved for: prepend them
        return interpret(plan, scope, args, values, root_thread)
    if fresh and plan.fresh_ok:
        run = plan.run_fresh
        if run is None:
            plan.uses += 1
            if plan.uses < COMPILE_AFTER:
                return interpret(plan, scope, args, values, root_thread)
            run = plan.run_fresh = compile_plan(plan, fresh=True)
        return run(scope, args, values, root_thread)
    run = plan.run
    if run is None:
        plan.uses += 1
        if plan.uses < COMPILE_AFTER:
            return interpret(plan, scope, args, values, root_thread)
        run = plan.run = compile_plan(plan)
    return run(scope, args, values, root_thread)


async def interpret(
    plan: Plan, scope: Scope, args: tuple[Any, ...], values: dict[str, Any], root_thread: Any = None
) -> Any:
    """The reference executor: walk the plan's steps in a loop (what the compiled form does in straight lines)."""
    results: list[Any] = [None] * len(plan.steps)
    call_stack: list[Teardown] = []
    last = len(plan.steps) - 1
    check_values(plan, scope, values)
    try:
        for step in plan.steps:
            results[step.slot] = await run_step(step, results, scope, values, args, root_thread, last, call_stack)
    except BaseException as exc:
        await end_call(call_stack, exc)
        raise
    await end_call(call_stack, None)
    return results[last]


async def end_call(call_stack: list[Teardown], exc: BaseException | None) -> None:
    """Tear the call-scoped generators down when the call ends; raise what a teardown raised instead of the
    body's ``exc`` (which the caller re-raises otherwise)."""
    if call_stack:
        error = await unwind(call_stack, exc)
        if error is not None and error is not exc:
            if exc is not None:
                raise error from None  # chained to the body's error through __context__
            raise error


def in_event_loop() -> bool:
    """Whether this thread is running an AnyIO-supported event loop right now."""
    try:
        anyio.get_current_task()
    except RuntimeError:
        return False
    return True


def returned_coroutine_error(step: Step) -> DITasksError:
    """The error for a plain function that returned a coroutine (it would be injected unawaited)."""
    return DITasksError(
        f"{step.name} is a plain function but returned a coroutine; declare it with 'async def' so it is awaited",
        path=step.path,
    )


def no_yield_error(step: Step) -> DITasksError:
    """The error for a generator dependency that returned without yielding."""
    return DITasksError(
        f"generator dependency {step.name} returned without yielding; it must yield exactly one value", path=step.path
    )


def check_values(plan: Plan, scope: Scope, values: dict[str, Any]) -> None:
    """Raise ``MissingValueError`` for the first value the plan cannot find, before any step runs."""
    if plan.value_sources:
        types_ = scope.types
        for src in plan.value_sources:
            _arg(src, [], scope, values, types_)


async def run_step(
    step: Step,
    results: list[Any],
    scope: Scope,
    values: dict[str, Any],
    args: tuple[Any, ...],
    root_thread: Any,
    last: int,
    call_stack: list[Teardown],
) -> Any:
    """Compute one step's value from the earlier ``results``: its cache, its arguments, its call, its teardown."""
    cache = step.cache
    container = scope.container
    if cache == CACHE_REQUEST:
        value = scope.cache.get(step.key, _MISSING)
        if value is not _MISSING:
            return value
    elif cache == CACHE_APP:
        value = container._app_cache.get(step.key, _MISSING)
        if value is not _MISSING:
            return value
    types_ = scope.types
    pos: list[Any] = []
    kw: dict[str, Any] = {}
    for src in step.pos:
        pos.append(_arg(src, results, scope, values, types_))
    for name, src in step.kw:
        kw[name] = _arg(src, results, scope, values, types_)
    if step.slot == last and args:
        pos[:0] = args
    kind = step.kind
    call = step.call
    if cache == CACHE_APP:
        return await container._app_value(step, pos, kw)
    if kind is Kind.ASYNC:
        value = await call(*pos, **kw)
    elif kind is Kind.SYNC or kind is Kind.CLASS:
        if step.to_thread:
            value = await anyio.to_thread.run_sync(functools.partial(call, *pos, **kw))
        elif root_thread is not None and step.slot == last:
            value = await root_thread(functools.partial(call, *pos, **kw))
        else:
            value = call(*pos, **kw)
        if step.check and type(value) is types.CoroutineType:
            value.close()
            raise returned_coroutine_error(step)
    else:
        value = await setup_generator(step, call, pos, kw, teardown_stack(step, scope, call_stack))
    if cache == CACHE_REQUEST:
        scope.cache[step.key] = value
    return value


def teardown_stack(step: Step, scope: Scope, call_stack: list[Teardown]) -> list[Teardown]:
    """Where a generator step's teardown goes: the call's, the request scope's or the app's exit."""
    if step.teardown == TEARDOWN_CALL:
        return call_stack
    if step.teardown == TEARDOWN_REQUEST:
        return scope._teardown
    return scope.container._app_stack(step)  # an uncached app-scoped generator: torn down at app exit


async def setup_generator(
    step: Any, call: Callable[..., Any], pos: list[Any], kw: dict[str, Any], stack: list[Teardown]
) -> Any:
    """Start a generator dependency, push its teardown, and return the value it yields."""
    gen = call(*pos, **kw)
    try:
        if step.kind is Kind.ASYNC_GENERATOR:
            value = await gen.__anext__()
        elif step.to_thread:
            value = await anyio.to_thread.run_sync(next_or_done, gen)
            if value is _MISSING:
                raise StopIteration
        else:
            value = next(gen)
    except (StopIteration, StopAsyncIteration):
        raise no_yield_error(step) from None
    stack.append((gen, step.kind is Kind.ASYNC_GENERATOR, step.to_thread, step.name))
    return value


def throw_or_done(gen: Any, exc: BaseException) -> Any:
    """``gen.throw(exc)`` for worker threads: a generator that handles the error and returns ends with a marker."""
    try:
        return gen.throw(exc)
    except StopIteration:
        return _MISSING


def next_or_done(gen: Any) -> Any:
    """``next(gen)`` for worker threads: StopIteration cannot cross into a coroutine, so return a marker."""
    try:
        return next(gen)
    except StopIteration:
        return _MISSING


def _arg(
    src: tuple[Any, ...], results: list[Any], scope: Scope, values: dict[str, Any], types_: dict[type, Any]
) -> Any:
    code = src[0]
    if code == SLOT:
        return results[src[1]]
    if code == TASKS:
        return scope.tasks
    if code == SCOPE:
        return scope
    if code == CONTAINER:
        return scope.container
    if code == APP_VALUE:
        values, types_ = scope.container._values, {}
    value = values.get(src[1], _MISSING)
    if value is _MISSING:
        bound = src[2]
        if bound is not None:
            value = types_.get(bound, _MISSING)
        if value is _MISSING:
            value = src[3]
            if value is EMPTY:
                raise _missing(src[4])
    return value


class Scope:
    """A request scope: its values, its cache, its generators to tear down, and its task collector.

    Get one from ``async with container.scope(**values) as scope``. ``scope.call(f)`` resolves and calls
    ``f`` in it; on exit the scope runs its tasks and tears down in the documented order.

    Attributes:
        container: the container it belongs to.
        values: values given by name, visible to every dependency at every depth.
        types: values bound by type (see :meth:`bind`).
        tasks: the scope's :class:`BackgroundTasks`, one per scope.
        label: where the scope comes from (e.g. ``"GET /users"``), shown in its tasks' log lines.
        cache: request-scoped values computed so far.
    """

    __slots__ = (
        "__weakref__", "_collector", "_state", "_teardown", "_token", "cache", "container", "label", "types", "values",
    )  # fmt: skip

    def __init__(self, container: Container, values: dict[str, Any]) -> None:
        self.container = container
        self.values = values
        self.types: dict[type, Any] = {}
        self.cache: dict[Any, Any] = {}
        self._collector: BackgroundTasks | None = None  # made on first use: many scopes never add a task
        self.label: str | None = None  # where the scope comes from (``GET /path``), copied to its tasks' log lines
        self._teardown: list[Teardown] = []
        self._state = _OPEN
        self._token: Any = None

    @property
    def tasks(self) -> BackgroundTasks:
        """The scope's :class:`BackgroundTasks`: one per scope, the same object at every depth."""
        collector = self._collector
        if collector is None:
            collector = self._collector = BackgroundTasks(self.container)
            collector._owned = True
            collector.label = self.label
            collector._closed = self._state == _CLOSED
        return collector

    def _close_idle(self) -> bool:
        """Close at once when there is nothing to flush or tear down; the common case skips a coroutine."""
        if self._state != _OPEN or self._teardown:
            return False
        collector = self._collector
        if collector is not None:
            if collector._tasks:
                return False
            collector._closed = True
        self._state = _CLOSED
        return True

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
        plan = self.container._plan(func, len(args))
        return await execute(plan, self, args, {**self.values, **values} if values else self.values)

    async def __aenter__(self) -> Scope:
        self._token = current_scope.set(self)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: types.TracebackType | None
    ) -> None:
        if self._token is not None:
            # exited in another context than it was entered in (e.g. a lifespan task): nothing to reset there
            with contextlib.suppress(ValueError):
                current_scope.reset(self._token)
            self._token = None
        await self.close(exc)

    async def close(self, exc: BaseException | None = None, *, raise_task_errors: bool = True) -> None:
        """Exit the scope in the documented order: flush tasks, tear down request-scoped generators LIFO,
        flush tasks added during teardown.

        Args:
            exc: the exception the body raised, if any: pending tasks are then skipped (and logged) unless the
                container runs tasks on error, and generators see the exception.
            raise_task_errors: raise :class:`BackgroundTaskError` afterwards if a task failed.

        Raises:
            BackgroundTaskError: a task failed (and ``raise_task_errors``, and the body did not raise).
            BaseException: a teardown raised; it propagates after the tasks were handled.
        """
        if exc is None and self._close_idle():
            return
        if self._state != _OPEN:
            return
        self._state = _CLOSING
        error: BaseException | None = None  # bound on every path (a CancelScope may, to a checker, swallow)
        if exc is not None and isinstance(exc, anyio.get_cancelled_exc_class()):
            with anyio.CancelScope(shield=True):  # cancelled: still run the exit steps to completion
                error = await self._exit_steps(exc)
        else:  # an unshielded CancelScope changes nothing and costs a fifth of a small resolution
            try:
                if self._only_tasks(exc):
                    await self._exit_tasks_only()
                else:
                    error = await self._exit_steps(exc)
            except anyio.get_cancelled_exc_class() as cancelled:
                await self._abandon(cancelled)
                raise
        collector = self._collector
        if collector is not None:
            collector._closed = True
        self._state = _CLOSED
        if error is not None and error is not exc:
            raise error
        if exc is None and raise_task_errors and collector is not None:
            failed_state = TaskState.FAILED  # read once: enum member access is slow on CPython 3.11
            failed = [t for t in collector._tasks if t.state is failed_state]
            if failed:
                raise BackgroundTaskError(
                    f"{len(failed)} background task(s) failed: {', '.join(t.name for t in failed)}",
                    [t.exception for t in failed if isinstance(t.exception, Exception)],
                    tasks=failed,
                )

    async def _abandon(self, cancelled: BaseException) -> None:
        """Cancelled from outside while exiting (e.g. a server's shutdown timeout): still release request-scoped
        resources, and record and log every task that will not run instead of dropping it silently."""
        error: BaseException | None = None  # bound on every path (a CancelScope may, to a checker, swallow)
        with anyio.CancelScope(shield=True):
            error = await unwind(self._teardown, cancelled)
        if error is not None and error is not cancelled:
            logger.error("tearing down a cancelled scope failed", exc_info=error)
        self.tasks._closed = True
        self._state = _CLOSED
        left = [t for t in self.tasks._tasks if t.state is TaskState.PENDING]
        self.tasks._take()
        for task in left:
            task.mark(TaskState.CANCELLED)
        if left:
            logger.warning(
                "%d background task(s) not run because the scope was cancelled while exiting: %s",
                len(left),
                ", ".join(t.display_name for t in left),
            )

    def _only_tasks(self, exc: BaseException | None) -> bool:
        """The common exit: the body succeeded, nothing to tear down, tasks for the default in-process runner."""
        if exc is not None or self._teardown or self._collector is None:
            return False
        flusher = self.container.flusher
        return type(flusher) is InProcessFlusher and flusher.concurrency == 1

    async def _exit_tasks_only(self) -> None:
        """The exit steps of :meth:`_only_tasks` scopes in one frame: run the tasks, in order, until none is left."""
        collector = self._collector
        assert collector is not None  # checked by _only_tasks
        tasks = collector._tasks
        while collector._flushed < len(tasks):  # a task may add more to this collector while it runs
            for task in collector._take():
                await task.run()

    async def _exit_steps(self, exc: BaseException | None) -> BaseException | None:
        if self._collector is not None:
            await self._flush(self._collector, exc)
        error = await unwind(self._teardown, exc) if self._teardown else exc
        if self._collector is not None:  # tasks added during teardown (or a collector first asked for there)
            await self._flush(self._collector, exc)
        return error

    async def _flush(self, collector: BackgroundTasks, exc: BaseException | None) -> None:
        tasks = collector._tasks
        while collector._flushed < len(tasks):
            batch = collector._take()
            if exc is not None and not self.container.run_tasks_on_error:
                for task in batch:
                    task.mark(TaskState.SKIPPED)
                logger.warning(
                    "%d background task(s) not run because the scope's body raised %s: %s",
                    len(batch),
                    type(exc).__name__,
                    ", ".join(t.display_name for t in batch),
                )
                continue
            flusher = self.container.flusher
            if type(flusher) is InProcessFlusher and flusher.concurrency == 1:  # the default: one frame less
                for task in batch:
                    await task.run()
            else:
                await flusher.flush(batch)
