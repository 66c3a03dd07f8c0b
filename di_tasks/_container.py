"""The container: overrides, app-scoped values, solved plans and the flush policy."""

from __future__ import annotations

import functools
import logging
import types
import weakref
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final, Literal, Protocol, TypeVar, cast, overload

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from ._app import AppLifetime
from ._compile import forget
from ._execute import execute
from ._flush import Flusher, FlushStarter, InProcessFlusher, TaskChecker
from ._graph import Graph
from ._inject import inject
from ._inspect import Kind, kind_of, qualname
from ._plan import Plan, Special, register_special
from ._scope import Scope, current_scope
from ._solver import Lifetimes, solve
from ._tasks import Task, TaskObserver, TaskSpec, make_task_spec, set_default_host
from ._util import CallableCache, ThreadCall, in_event_loop, thread_watch

T = TypeVar("T")
logger: Final = logging.getLogger("di_tasks")

# One capacity limiter per container per event loop: a limiter belongs to the loop it was made in.
_limiters: anyio.lowlevel.RunVar[weakref.WeakKeyDictionary[Container, anyio.CapacityLimiter]] = anyio.lowlevel.RunVar(
    "di_tasks_limiters"
)


class TaskErrorHook(Protocol):
    """Called with each failed task and its exception, after it was logged."""

    def __call__(self, task: Task, exc: BaseException, /) -> object:
        """React to a failure (report it, count it); exceptions raised here are logged and ignored."""
        ...


class Container:
    """Owns overrides, app-scoped values, solved plans and the flush policy.

    ``async with container:`` is the app lifetime: app-scoped dependencies are created once inside it and
    torn down, last-in first-out, at its exit.
    """

    def __init__(
        self,
        *,
        values: dict[str, Any] | None = None,
        flusher: Flusher | None = None,
        task_concurrency: int = 1,
        task_timeout: float | None = None,
        task_threads: int = 10,
        run_tasks_on_error: bool = False,
        on_task_error: TaskErrorHook | None = None,
        concurrent_resolution: bool = False,
        task_observer: TaskObserver | None = None,
        sync_to_thread: bool = False,
    ) -> None:
        """Make a container.

        Args:
            values: app-wide values by name, visible to every dependency (app-scoped ones see only these).
            flusher: what happens to a scope's tasks at exit; default: run them in-process.
            task_concurrency: with the default flusher, how many tasks of one scope may run at once.
            task_timeout: default per-task timeout in seconds (``None``: none).
            task_threads: how many sync tasks may run in worker threads at once; a limiter of their own, so
                background work never starves the app's thread pool.
            run_tasks_on_error: run the pending tasks even when the scope's body raised.
            on_task_error: called with each failed task and its exception.
            concurrent_resolution: resolve independent async dependencies of a call concurrently, in child
                tasks (a shared dependency is still computed once; the first failure cancels the others).
                Off by default: a context variable set by a dependency is then not seen by the function.
            task_observer: watches each task run (tracing, metrics: see ``di_tasks.otel``); ``None`` costs nothing.
            sync_to_thread: where sync dependencies (functions, classes, generators and their teardown) run when
                their ``Depends`` does not say: ``False`` (the default) inline on the event loop, which is fast but
                lets a blocking one stall every request; ``True`` in a worker thread each, as FastAPI runs them.
                ``Depends(f, sync_to_thread=True/False)`` overrides it for one dependency.

        Raises:
            ValueError: a count below 1, a negative timeout, or ``task_concurrency`` with a flusher of your own.
        """
        if task_threads < 1:
            raise ValueError(f"Container(task_threads=...) must be at least 1, got {task_threads!r}")
        if task_timeout is not None and task_timeout <= 0:
            raise ValueError(f"Container(task_timeout=...) must be positive or None, got {task_timeout!r}")
        if flusher is not None and task_concurrency != 1:
            raise ValueError(
                "Container(task_concurrency=...) configures the default flusher and would be ignored with "
                "flusher=...; pass InProcessFlusher(concurrency=...) as the flusher instead"
            )
        self._values: dict[str, Any] = dict(values or {})
        self.flusher = flusher if flusher is not None else InProcessFlusher(task_concurrency)
        self.task_timeout = task_timeout
        self.task_threads = task_threads
        self.run_tasks_on_error = run_tasks_on_error
        self.on_task_error: TaskErrorHook | None = _checked_hook(on_task_error)
        self._concurrent_resolution = concurrent_resolution
        self.task_observer = task_observer
        self._sync_to_thread = sync_to_thread
        self.task_failures: int = 0
        """How many tasks of this container have failed so far (each ``Task.fail``)."""
        self._overrides: dict[Any, Callable[..., Any]] = {}
        self._override_stack: list[tuple[object, Any, Callable[..., Any]]] = []
        self._override_key: tuple[tuple[int, int], ...] = ()
        # Plans and task specs are cached per callable, so per-request callables (lambdas, partials, bound methods,
        # which the docs say work) must not make these caches grow: see CallableCache.
        self._plan_caches: dict[tuple[tuple[int, int], ...], CallableCache[Any, Plan]] = {(): CallableCache()}
        self._plans = self._plan_caches[()]
        self._task_specs: CallableCache[Any, TaskSpec] = CallableCache()
        self.task_specs: Mapping[Any, TaskSpec] = self._task_specs.fixed
        """The task specs kept for good (functions and classes; see :meth:`task_spec`), by function: read-only."""
        self.shared: set[Any] = set()
        """The request-scoped dependencies (their callables) that functions decorated with :meth:`inject` ask for.
        A plan run in a scope made for it alone (``call``, a task's scope) stores only these in the scope's cache:
        an injected function it calls resolves in that scope and must get the same values; nothing else reads it."""
        self.lifetimes: Lifetimes = {}
        """Each provider's lifetime as first used in this container, and where: one provider, one lifetime."""
        self.app: AppLifetime = AppLifetime()
        """The app lifetime: app-scoped values and their teardown (see :meth:`__aenter__`)."""
        self._injected = False  # whether any function was injected with this container (see call)
        self._bare_scope = Scope(self, {})  # what a pure plan reads (its empty types) when it needs no scope

    @property
    def values(self) -> Mapping[str, Any]:
        """The app-wide values by name given to the constructor (what app-scoped dependencies see)."""
        return self._values

    @property
    def concurrent_resolution(self) -> bool:
        """Whether independent async dependencies of a call are resolved concurrently (set at construction: solved
        plans keep it)."""
        return self._concurrent_resolution

    @property
    def sync_to_thread(self) -> bool:
        """Whether a sync dependency whose ``Depends`` does not say runs in a worker thread (set at construction:
        solved plans keep it)."""
        return self._sync_to_thread

    @property
    def overrides(self) -> Mapping[Any, Callable[..., Any]]:
        """The active overrides, target to replacement (read-only: use :meth:`override`)."""
        return types.MappingProxyType(self._overrides)

    @property
    def flusher(self) -> Flusher:
        """What happens to a scope's tasks at exit (settable; see :class:`Flusher`)."""
        return self._flusher

    @flusher.setter
    def flusher(self, flusher: Flusher) -> None:
        self._flusher = flusher
        # the optional second method of a flusher (see TaskChecker), looked up once
        vets = callable(getattr(flusher, "check_task", None))
        self.task_checker: TaskChecker | None = cast("TaskChecker", flusher) if vets else None
        """The flusher's add-time check (its ``check_task``), or ``None`` when it has none (follows ``flusher``)."""
        starts = callable(getattr(flusher, "start_flush", None))
        self.flush_starter: FlushStarter | None = cast("FlushStarter", flusher) if starts else None
        """The flusher as a :class:`FlushStarter` (its ``start_flush``), or ``None`` when it has no such method
        (follows ``flusher``)."""

    # -- solving -------------------------------------------------------------------------------------------

    def solve(self, func: Callable[..., Any]) -> Graph:
        """Validate ``func``'s whole dependency graph without calling anything (a ``Container.inject`` wrapper is
        solved as the function it wraps).

        Returns:
            The :class:`Graph`: its nodes, the values it needs from outside.

        Raises:
            WiringError: a signature cannot be used (with the path).
            DependencyCycleError: the graph has a cycle.
            ScopeError: a dependency needs a shorter-lived one.
        """
        return self.plan(getattr(func, "__di_tasks_injected__", func)).graph

    def plan(self, func: Callable[..., Any], nargs: int = 0) -> Plan:
        """The execution plan of ``func`` called with ``nargs`` positional arguments, solved once per set of
        overrides and cached (for executors; :meth:`solve` is the user's view of it).

        Raises:
            WiringError, DependencyCycleError, ScopeError: as :meth:`solve`.
        """
        key: Any = func if nargs == 0 else (func, nargs)
        try:  # the common case, read inline: a fixed function solved before
            return self._plans.fixed[key]
        except (KeyError, TypeError):
            return self._plans.get(key, lambda: self._solve(func, nargs), func)

    def _solve(self, func: Callable[..., Any], nargs: int) -> Plan:
        plan = solve(self._overrides, func, nargs, self.lifetimes, sync_to_thread=self._sync_to_thread)
        plan.concurrent = self._concurrent_resolution
        return plan

    def task_spec(self, func: Callable[..., Any], /) -> TaskSpec:
        """What ``add_task`` knows of a task function: its checked signature and its own dependencies (cached).

        Raises:
            TypeError: ``func`` cannot be a background task (see ``BackgroundTasks.add_task``).
        """
        return self._task_specs.get(func, lambda: make_task_spec(func, self._values), func)

    # -- scopes --------------------------------------------------------------------------------------------

    def scope(self, **values: Any) -> Scope:
        """Open a request scope: ``async with container.scope(user=u) as scope: await scope.call(f)``.

        Args:
            **values: values by name, visible to every dependency resolved in the scope.

        Returns:
            The :class:`Scope`, an async context manager that yields itself and exits in the documented order.
        """
        values = {**self._values, **values} if self._values else values
        return Scope(self, values, False, True)  # made current when entered; guarded: the user holds it

    @overload
    async def call(self, func: Callable[..., Awaitable[T]], /, *args: Any, **values: Any) -> T: ...
    @overload
    async def call(self, func: Callable[..., T], /, *args: Any, **values: Any) -> T: ...
    async def call(self, func: Callable[..., Any], /, *args: Any, **values: Any) -> Any:
        """Open a request scope, resolve ``func``'s dependencies, call it, exit the scope (flushing its tasks).

        Args:
            func: the function to call, sync or async.
            *args: positional arguments for its leading parameters.
            **values: values by name, visible to every dependency at every depth.

        Returns:
            What ``func`` returns (awaited if async), after its tasks have run.

        Raises:
            BackgroundTaskError: one or more tasks failed (all of them ran).
            MissingValueError, WiringError, DependencyCycleError, ScopeError: the graph cannot be resolved.
        """
        try:  # the plan cache, read inline: this is every script call's path
            plan = self._plans.fixed[(func, len(args)) if args else func]
        except (KeyError, TypeError):
            plan = self.plan(func, len(args))
        merged = {**self._values, **values} if self._values else values
        # the compiled form for a scope of its own: none before the plan's second call, nor for concurrent resolution
        run = plan.run_fresh
        if run is not None and plan.pure and not self._injected:
            # Nothing to flush or tear down, and no function injected with this container exists that could resolve
            # in a scope of this call: it needs no scope of its own (a scope costs a fifth of a small resolution).
            return await run(self._bare_scope, args, merged, None)
        # An injected function that func calls resolves in this scope, so it is made current; only when one exists:
        # nothing else reads it, and making a scope current costs as much as the scope itself.
        scope = Scope(self, merged, self._injected)  # current: see Scope
        try:
            coro = run(scope, args, merged, None) if run is not None else execute(plan, scope, args, merged, fresh=True)
            result = await coro
        except BaseException as exc:
            await scope.close(exc)
            raise
        rest = scope.start_close()
        if rest is not None:
            await rest
        return result

    @overload
    def run(
        self,
        func: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        backend: Literal["asyncio", "trio"] = "asyncio",
        **values: Any,
    ) -> T: ...
    @overload
    def run(
        self, func: Callable[..., T], /, *args: Any, backend: Literal["asyncio", "trio"] = "asyncio", **values: Any
    ) -> T: ...
    def run(
        self, func: Callable[..., Any], /, *args: Any, backend: Literal["asyncio", "trio"] = "asyncio", **values: Any
    ) -> Any:
        """Like :meth:`call`, from synchronous code: starts an event loop, enters the container for the call (so
        app-scoped dependencies are set up, and torn down when the last entry exits), and returns the result.

        Args:
            func: the function to call.
            *args: positional arguments for its leading parameters.
            backend: the AnyIO backend, ``"asyncio"`` or ``"trio"``.
            **values: values by name, visible at every depth.

        Raises:
            RuntimeError: called from inside a running event loop (use ``await container.call(...)``).
            ValueError: an unknown backend.
        """
        if backend not in ("asyncio", "trio"):
            raise ValueError(f"Container.run(backend=...) must be 'asyncio' or 'trio', got {backend!r}")
        if in_event_loop():
            raise RuntimeError(
                f"Container.run({qualname(func)}) was called inside a running event loop; use "
                "'await container.call(...)' there"
            )

        async def main() -> Any:
            # Always enter (entries are counted): a run in another thread keeps the app lifetime open while
            # this one still uses it, and the last one out tears it down.
            async with self:
                return await self.call(func, *args, **values)

        return anyio.run(main, backend=backend)

    async def __aenter__(self) -> Container:
        """Enter the app lifetime (entries are counted; the first opens it).

        Raises:
            ScopeError: an app-scoped async generator of another event loop lives in it.
        """
        self.app.enter()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Exit the app lifetime; the last exit tears app-scoped generators down, last-in first-out.

        Raises:
            ScopeError: more exits than entries.
        """
        await self.app.exit(exc_info[1] if isinstance(exc_info[1], BaseException) else None)

    # -- overrides -----------------------------------------------------------------------------------------

    @contextmanager
    def override(self, target: Callable[..., Any], replacement: Callable[..., Any]) -> Generator[None]:
        """Inside the block, every resolution of ``target`` (a function or a class) calls ``replacement``,
        whose own dependencies are resolved. Nests (the innermost override of a target wins) and removes
        exactly its own entry on exit, in whatever order blocks exit. Overrides belong to the container:
        tests that run concurrently should each use a container of their own.

        Raises:
            TypeError: ``target`` or ``replacement`` is not callable.
        """
        for what, obj in (("target", target), ("replacement", replacement)):
            if not callable(obj):
                raise TypeError(f"Container.override(): the {what} must be a function or a class, got {obj!r}")
        try:
            hash(target)
        except TypeError:
            raise TypeError(
                f"Container.override(): cannot override {target!r}: it is unhashable, so it cannot be looked up; "
                "depend on a function that returns it and override that function instead"
            ) from None
        token = object()
        self._override_stack.append((token, target, replacement))
        self._set_overrides()
        try:
            yield
        finally:
            # Remove this entry wherever it is, so overrides that exit out of order (concurrent tasks,
            # fixtures torn down in any order) never leave one another behind.
            self._override_stack = [entry for entry in self._override_stack if entry[0] is not token]
            self._set_overrides()
            # leave nothing behind: plans solved under override sets that are no longer active go
            for key in [k for k in self._plan_caches if k and k != self._override_key]:
                forget(self._plan_caches.pop(key).values())

    def _set_overrides(self) -> None:
        self._overrides = {target: replacement for _, target, replacement in self._override_stack}
        self._override_key = tuple(sorted((id(k), id(v)) for k, v in self._overrides.items()))
        self._plans = self._plan_caches.setdefault(self._override_key, CallableCache())

    # -- tasks ---------------------------------------------------------------------------------------------

    def _thread_limiter(self) -> anyio.CapacityLimiter:
        try:
            limiters = _limiters.get()
        except LookupError:
            limiters = weakref.WeakKeyDictionary[Container, anyio.CapacityLimiter]()
            _limiters.set(limiters)
        limiter = limiters.get(self)
        if limiter is None:
            limiter = limiters[self] = anyio.CapacityLimiter(self.task_threads)
        return limiter

    async def to_thread(self, func: Callable[..., T], /, *args: Any, abandon_on_cancel: bool = False) -> T:
        """Run a sync callable in a worker thread under the tasks' own capacity limiter (``task_threads``), so
        background work never starves the app's thread pool. What sync tasks and flushers that block use.

        Args:
            func: the callable; ``*args`` are passed to it.
            abandon_on_cancel: on cancellation (a timeout), stop waiting and let the thread finish on its own.

        Returns:
            What ``func`` returned.
        """
        return await anyio.to_thread.run_sync(
            func, *args, abandon_on_cancel=abandon_on_cancel, limiter=self._thread_limiter()
        )

    async def call_task(self, spec: TaskSpec, arguments: dict[str, Any], /, *, abandon_on_cancel: bool = False) -> Any:
        """Run a task function that has dependencies as a background task runs: its arguments become values by
        name, its ``Depends`` are resolved in a fresh request scope of this container (under the overrides active
        now), a sync body runs in a worker thread under the tasks' limiter, and the scope exits before it returns.

        Args:
            spec: what :meth:`task_spec` returned for the function.
            arguments: its arguments by parameter name (``spec.check(args, kwargs)``).
            abandon_on_cancel: past a cancellation (a timeout), stop waiting for a sync body's thread.

        Returns:
            What the function returned.

        Raises:
            BaseException: what the function, a dependency or a teardown raised; BackgroundTaskError if tasks it
                added failed.
        """
        values = {**self._values, **arguments} if self._values else arguments
        scope = Scope(self, values)
        threads: list[ThreadCall] = []

        async def in_thread(body: Callable[[], Any]) -> Any:  # the task's own body, in the tasks' worker threads
            call = ThreadCall(body)
            threads.append(call)
            watching = thread_watch.get()  # the Task running this, which tells shutdown it waits for a thread
            if watching is not None:
                watching.append(call)
            return await self.to_thread(call, abandon_on_cancel=abandon_on_cancel)

        token = current_scope.set(scope)
        try:
            result = await execute(
                self.plan(spec.func), scope, (), values, root_thread=None if spec.is_async else in_thread, fresh=True
            )
        except BaseException as exc:
            current_scope.reset(token)
            if threads and threads[0].after(functools.partial(_close_from_thread, scope, exc, spec.name)):
                # the body's thread was abandoned (a timeout) and still uses the scope's resources: they are torn
                # down when it returns, not under it
                raise
            await scope.close(exc)
            raise
        current_scope.reset(token)
        await scope.close()
        return result

    def report_task_error(self, task: Task, exc: BaseException, /) -> None:
        """Pass a task's failure to the ``on_task_error`` hook (``Task.fail`` logs it and calls this); a hook that
        raises is logged, never allowed to hide the task's own failure."""
        self.task_failures += 1
        if self.on_task_error is None:
            return
        try:
            returned = self.on_task_error(task, exc)
        except Exception:  # a broken hook must not hide the task's own failure
            logger.exception("the on_task_error hook raised while reporting background task %s", task.name)
            return
        if type(returned) is types.CoroutineType:  # a callable instance with an async __call__: never awaited
            returned.close()
            logger.error(
                "the on_task_error hook returned a coroutine, which is never awaited, while reporting background "
                "task %s; make the hook a plain function",
                task.name,
            )

    # -- injection -----------------------------------------------------------------------------------------

    @overload
    def inject(self, func: Callable[..., T], /, *, dependencies: Sequence[object] = ()) -> Callable[..., T]: ...
    @overload
    def inject(
        self, func: None = None, /, *, dependencies: Sequence[object] = ()
    ) -> Callable[[Callable[..., T]], Callable[..., T]]: ...
    def inject(
        self, func: Callable[..., T] | None = None, /, *, dependencies: Sequence[object] = ()
    ) -> Callable[..., T] | Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorate ``func`` so its injected parameters are resolved in the current scope.

        The wrapper's ``__signature__`` (and ``__annotations__``) keep the parameters the caller or a framework
        provides and hide the injected ones (a ``Depends`` marker, ``BackgroundTasks``, ``Scope``, ``Container``),
        so Starlette, FastAPI and Litestar see only theirs. The provided arguments are visible to every dependency
        by name and by type (their declared class and their own class). The function runs in the current scope
        (opened by :class:`di_tasks.asgi.ScopeMiddleware` or ``container.scope()``) if it is an open scope of this
        container, else in a scope of its own that is exited, tasks flushed, before the call returns.

        A sync function called in a worker thread (as frameworks call sync endpoints) has its dependencies
        resolved on the event loop through ``anyio.from_thread``, then runs in that same thread; with no event
        loop at all (a script) the call runs one. The parameters' static type is ``...``: a ``ParamSpec`` cannot
        drop the injected parameters, and keeping them would make type checkers demand arguments the wrapper
        rejects. The return type is kept.

        Called inside an ASGI request with no scope active (``ScopeMiddleware`` or the framework integration
        forgotten), the function still runs in a scope of its own, whose tasks run before the response is sent:
        that is said once per function with a ``RuntimeWarning`` naming the request and the fix. It is noticed when
        an argument is the framework's request (it keeps its ASGI ``scope``) or, for an async function, when the
        ASGI app call is on the stack; it is looked for at the function's first call outside a scope only, so a script
        that calls it outside any scope pays nothing afterwards.

        ``@container.inject(dependencies=[Depends(verify_token)])`` adds dependencies run for their effect only,
        as FastAPI's ``dependencies=[...]`` on a route: each is resolved (in order, before the function's own
        parameters) in the same scope and cache, and its value is not passed. A generator dependency's teardown
        runs with its scope's.

        Args:
            func: a function or async function; omitted, ``inject(dependencies=...)`` returns the decorator.
            dependencies: effect-only dependencies, each a ``Depends(f)`` marker (for ``use_cache``/``scope``) or
                a callable.

        Returns:
            The wrapper, sync or async like ``func`` (or, without ``func``, a decorator that makes it).

        Raises:
            WiringError: ``func`` is a generator function, a class or a route handler object (the decorators are
                in the wrong order), has ``*args``/``**kwargs``, a ``dependencies`` item is not a callable or a
                ``Depends(f)``, or its graph cannot be wired; DependencyCycleError and ScopeError likewise: the
                graph is solved here, once.
        """
        if func is None:
            return functools.partial(self._inject, dependencies=dependencies)
        return self._inject(func, dependencies=dependencies)

    def _inject(self, func: Callable[..., T], dependencies: Sequence[object]) -> Callable[..., T]:
        self._injected = True  # from now on every call needs its scope current: the wrapper may be called in it
        wrapper = inject(self, func, dependencies)
        self._share(self.plan(getattr(wrapper, "__di_tasks_injected__", func)))
        return wrapper

    def _share(self, plan: Plan) -> None:
        """Note the request-scoped dependencies of an injected function; plans compiled for scopes of their own
        before it was decorated are compiled again, so they store what it may now ask for."""
        new = {step.key for step in plan.steps if step.request_cached} - self.shared
        if not new:
            return
        self.shared |= new
        for plans in self._plan_caches.values():
            for known in plans.values():
                known.run_fresh = None


register_special(Container, Special.CONTAINER)
set_default_host(Container)


def _close_from_thread(scope: Scope, exc: BaseException, name: str) -> None:
    """In a task's abandoned worker thread, once its body has returned: close the task's scope on the event loop."""
    try:
        anyio.from_thread.run(functools.partial(scope.close, exc, raise_task_errors=False))
    except Exception:  # the loop may be gone (the app shut down): say what was not torn down
        logger.exception("background task %s: tearing down its scope after its worker thread returned failed", name)


def _checked_hook(hook: TaskErrorHook | None) -> TaskErrorHook | None:
    """Refuse an error hook that could never do its job: not callable, or ``async def`` (it is called from the
    failing task's own path, synchronously, after the failure was logged)."""
    if hook is None:
        return None
    if not callable(hook):
        raise TypeError(f"Container(on_task_error=...) takes a function (task, exc) -> None, got {hook!r}")
    if kind_of(hook) in (Kind.ASYNC, Kind.GENERATOR, Kind.ASYNC_GENERATOR):
        raise TypeError(
            f"Container(on_task_error=...) takes a plain function, got the {kind_of(hook).value} {qualname(hook)}: it "
            "is called synchronously right after the failure is logged, so a coroutine would never be awaited. "
            "Make it a plain function; for async work, hand the failure to a queue or a task group from it"
        )
    return hook
