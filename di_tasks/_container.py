"""The container: overrides, app-scoped values, solved plans and the flush policy."""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
import threading
import types
import weakref
from collections.abc import Awaitable, Callable, Generator
from contextlib import contextmanager
from typing import Any, Literal, Protocol, TypeVar, cast, overload

import anyio
import anyio.lowlevel

from ._compile import forget
from ._errors import ScopeError, WiringError
from ._flush import Flusher, InProcessFlusher, TaskChecker
from ._inspect import Kind, kind_of, qualname
from ._scope import (
    Scope,
    Teardown,
    current_scope,
    execute,
    in_event_loop,
    returned_coroutine_error,
    setup_generator,
    unwind,
)
from ._solve import CONTAINER, SCOPE, TASKS, Graph, Plan, Solver, Step, TaskSpec, register_special
from ._tasks import BackgroundTasks, Task

T = TypeVar("T")

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
        self.on_task_error = on_task_error
        self.concurrent_resolution = concurrent_resolution
        self._overrides: dict[Any, Callable[..., Any]] = {}
        self._override_stack: list[tuple[object, Any, Callable[..., Any]]] = []
        self._override_key: tuple[tuple[int, int], ...] = ()
        self._plan_caches: dict[tuple[tuple[int, int], ...], dict[Any, Plan]] = {(): {}}
        self._plans = self._plan_caches[()]
        self._task_specs: dict[Any, TaskSpec] = {}
        self._app_cache: dict[Any, Any] = {}
        self._app_teardown: list[Teardown] = []
        # Guards the enter count and the app values being created: a container may be shared by several
        # threads, each running its own event loop (Container.run in threads), so no loop-bound lock fits.
        self._app_guard = threading.Lock()
        self._app_pending: dict[Any, threading.Event] = {}
        self._entered = 0
        self._loops: dict[object, int] = {}  # the event loops holding the app lifetime, with their entry counts
        self._agen_loop: object | None = None  # the loop that runs an app-scoped async generator, if any
        # What a pure compiled plan receives as its scope in Container.call: it reads only the (empty) types.
        self._bare_scope = Scope(self, {})

    @property
    def flusher(self) -> Flusher:
        """What happens to a scope's tasks at exit (settable; see :class:`Flusher`)."""
        return self._flusher

    @flusher.setter
    def flusher(self, flusher: Flusher) -> None:
        self._flusher = flusher
        # the optional second method of a flusher (see TaskChecker), looked up once
        vets = callable(getattr(flusher, "check_task", None))
        self._task_checker: TaskChecker | None = cast("TaskChecker", flusher) if vets else None

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
        return self._plan(getattr(func, "__di_tasks_injected__", func), 0).graph

    def _plan(self, func: Callable[..., Any], nargs: int) -> Plan:
        key: Any = func if nargs == 0 else (func, nargs)
        try:
            return self._plans[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable callable: solved every time, correct but slower
            return _solve(self._overrides, func, nargs)
        plan = _solve(self._overrides, func, nargs)
        self._plans[key] = plan
        return plan

    def _task_spec(self, func: Callable[..., Any]) -> TaskSpec:
        try:
            spec = self._task_specs.get(func)
        except TypeError:
            spec = None
        if spec is not None:
            return spec
        spec = self._make_task_spec(func)
        with contextlib.suppress(TypeError):  # unhashable callables are checked every time
            self._task_specs[func] = spec
        return spec

    def _make_task_spec(self, func: Callable[..., Any]) -> TaskSpec:
        if inspect.isawaitable(func):
            raise TypeError(
                f"add_task() takes a function and its arguments, got the awaitable {func!r}; write "
                "add_task(f, arg) instead of add_task(f(arg))"
            )
        if not callable(func):
            raise TypeError(f"add_task() takes a function and its arguments, got {func!r}, which is not callable")
        kind = kind_of(func)
        if kind in (Kind.GENERATOR, Kind.ASYNC_GENERATOR):
            raise TypeError(f"add_task({qualname(func)}, ...): a generator function cannot be a background task")
        try:
            plan = Solver({}).solve(func, 0)
        except WiringError as exc:
            raise TypeError(f"add_task({qualname(func)}, ...): {exc}") from exc
        # the solver read the signature already, so this cannot fail
        signature = inspect.signature(func)
        injected = plan.graph.root.injected
        if not injected:
            return TaskSpec(func, None, signature)
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
        parameters = [p for p in signature.parameters.values() if p.name not in injected]
        return TaskSpec(func, plan, signature.replace(parameters=parameters))

    # -- scopes --------------------------------------------------------------------------------------------

    def scope(self, **values: Any) -> Scope:
        """Open a request scope: ``async with container.scope(user=u) as scope: await scope.call(f)``.

        Args:
            **values: values by name, visible to every dependency resolved in the scope.

        Returns:
            The :class:`Scope`, an async context manager that yields itself and exits in the documented order.
        """
        return Scope(self, {**self._values, **values} if self._values else values)

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
            plan = self._plans[func] if not args else self._plan(func, len(args))
        except (KeyError, TypeError):
            plan = self._plan(func, len(args))
        run = plan.run_fresh
        if run is not None and plan.pure and not args and not self.concurrent_resolution:
            # nothing to cache, flush or tear down: no scope of its own, nothing to exit
            return await run(self._bare_scope, args, {**self._values, **values} if self._values else values, None)
        scope = Scope(self, {**self._values, **values} if self._values else values)
        token = current_scope.set(scope)  # an injected helper called by func resolves in this scope too
        try:
            if run is not None and not args and not self.concurrent_resolution:  # compiled: no dispatch needed
                result = await run(scope, args, scope.values, None)
            else:
                result = await execute(plan, scope, args, scope.values, fresh=True)
        except BaseException as exc:
            current_scope.reset(token)
            await scope.close(exc)
            raise
        current_scope.reset(token)
        if not scope._close_idle():
            await scope.close()
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
        loop = anyio.lowlevel.current_token()
        with self._app_guard:
            owner = self._agen_loop
            if owner is not None and owner != loop:
                raise ScopeError(
                    "the container's app lifetime holds an async generator dependency run by another event loop, "
                    "which closes it when that loop ends; a second loop cannot share it. Give each thread's event "
                    "loop a container of its own, or make that dependency a sync generator"
                )
            self._entered += 1
            self._loops[loop] = self._loops.get(loop, 0) + 1
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        loop = anyio.lowlevel.current_token()
        with self._app_guard:
            if not self._entered:
                raise ScopeError("the container's app lifetime was exited more often than it was entered")
            self._entered -= 1
            if self._loops.get(loop, 0) > 1:
                self._loops[loop] -= 1
            else:
                self._loops.pop(loop, None)
            if self._entered:
                return
            stack, self._app_teardown = self._app_teardown, []
            self._app_cache.clear()
            self._agen_loop = None
        exc = exc_info[1] if isinstance(exc_info[1], BaseException) else None
        error = await unwind(stack, exc)
        if error is not None and error is not exc:
            raise error

    def _claim_for_async_generator(self, step: Step) -> None:
        """An async generator is closed by the event loop that first ran it when that loop ends, so an app-scoped one
        may only live in a lifetime that a single loop holds."""
        loop = anyio.lowlevel.current_token()
        with self._app_guard:
            if any(other != loop for other in self._loops):
                raise ScopeError(
                    f"{step.name} is an app-scoped async generator, but several event loops (threads) hold the "
                    "container's app lifetime, and the loop that runs it would close it when it ends; give each "
                    "thread's event loop a container of its own, or make it a sync generator",
                    path=step.path,
                )
            self._agen_loop = loop

    def _require_app(self, step: Step) -> None:
        if not self._entered:
            raise ScopeError(
                f"{step.name} is app-scoped, but the container's app lifetime is not open; wrap the app in "
                "'async with container:' (the ASGI middleware does this on lifespan startup, Container.run does "
                "it for you)",
                path=step.path,
            )

    def _app_stack(self, step: Step) -> list[Teardown]:
        """The app's teardown stack, for a generator that lives until the app exits."""
        self._require_app(step)
        return self._app_teardown

    async def _app_value(self, step: Step, pos: list[Any], kw: dict[str, Any]) -> Any:
        self._require_app(step)
        # Concurrent first uses create the value once: the first caller (in any thread or loop) creates it, the
        # others poll until it is there (first use only, so polling costs nothing later).
        while True:
            with self._app_guard:
                try:
                    return self._app_cache[step.key]
                except KeyError:
                    pass
                pending = self._app_pending.get(step.key)
                if pending is None:
                    pending = self._app_pending[step.key] = threading.Event()
                    break
            while not pending.is_set():  # noqa: ASYNC110  # the creator may run on another loop: no anyio.Event
                await anyio.sleep(0.001)
        try:
            kind = step.kind
            if kind is Kind.ASYNC:
                value = await step.call(*pos, **kw)
            elif kind is Kind.ASYNC_GENERATOR:
                self._claim_for_async_generator(step)
                value = await setup_generator(step, step.call, pos, kw, self._app_teardown)
            elif kind is Kind.GENERATOR:
                value = await setup_generator(step, step.call, pos, kw, self._app_teardown)
            elif step.to_thread:
                value = await anyio.to_thread.run_sync(functools.partial(step.call, *pos, **kw))
            else:
                value = step.call(*pos, **kw)
            if step.check and type(value) is types.CoroutineType:
                value.close()
                raise returned_coroutine_error(step)
            with self._app_guard:
                self._app_cache[step.key] = value
            return value
        finally:
            with self._app_guard:
                del self._app_pending[step.key]
            pending.set()

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
        self._plans = self._plan_caches.setdefault(self._override_key, {})

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

    async def _call_task(self, spec: TaskSpec, arguments: dict[str, Any], *, abandon: bool) -> Any:
        # the task's own arguments become values by name, so they fill its parameters and reach its dependencies
        values = {**self._values, **arguments} if self._values else arguments
        scope = Scope(self, values)
        # a sync task's own body runs in a worker thread under the tasks' limiter; past a timeout the flush stops
        # waiting for it (the thread finishes on its own), as for a sync task without dependencies
        root_thread = (
            None
            if spec.is_async
            else functools.partial(anyio.to_thread.run_sync, limiter=self._thread_limiter(), abandon_on_cancel=abandon)
        )
        plan = self._plan(spec.func, 0)  # solved under the overrides active now
        token = current_scope.set(scope)
        try:
            result = await execute(plan, scope, (), values, root_thread=root_thread, fresh=True)
        except BaseException as exc:
            current_scope.reset(token)
            await scope.close(exc)
            raise
        current_scope.reset(token)
        await scope.close()
        return result

    def _report_task_error(self, task: Task, exc: BaseException) -> None:
        if self.on_task_error is None:
            return
        try:
            self.on_task_error(task, exc)
        except Exception:  # noqa: BLE001  # a broken hook must not hide the task's own failure
            from ._tasks import logger

            logger.exception("the on_task_error hook raised while reporting background task %s", task.name)

    # -- injection -----------------------------------------------------------------------------------------

    def inject(self, func: Callable[..., T]) -> Callable[..., T]:
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

        Args:
            func: a function or async function.

        Returns:
            The wrapper, sync or async like ``func``.

        Raises:
            WiringError: ``func`` is a generator function or a class, has ``*args``/``**kwargs``, or its graph
                cannot be wired; DependencyCycleError and ScopeError likewise: the graph is solved here, once.
        """
        from ._inject import inject

        return inject(self, func)


def _solve(overrides: dict[Any, Callable[..., Any]], func: Callable[..., Any], nargs: int) -> Plan:
    try:
        return Solver(overrides).solve(func, nargs)
    except RecursionError:
        raise WiringError(
            f"the dependency graph of {qualname(func)} is deeper than Python's recursion limit lets the solver walk "
            f"(about {sys.getrecursionlimit() // 3} levels); raise it with sys.setrecursionlimit()",
            path=(qualname(func),),
        ) from None


register_special(BackgroundTasks, TASKS)
register_special(Scope, SCOPE)
register_special(Container, CONTAINER)
