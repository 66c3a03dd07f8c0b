"""``Container.inject``: a wrapper that shows a framework only the parameters it provides.

The wrapper's ``__signature__`` and ``__annotations__`` keep the parameters without a ``Depends`` marker or a
special type (what Starlette, FastAPI or Litestar fill in); the others are resolved in the current scope. The
arguments the caller gives are passed to that scope as values by name, and bound by type, so every dependency at
every depth sees them (a ``Request`` asked for as ``request: Request`` by a sub-dependency, whatever its name).

Sync functions: frameworks call them in a worker thread. There the wrapper resolves the dependencies on the event
loop (``anyio.from_thread.run``) and then runs the body in the caller's own worker thread, so the body can block
and the framework's thread pool works as usual. The dependencies' set-up, the body and the dependencies' teardown
all run in one copy of the caller's context, as FastAPI does: a context variable a dependency sets is seen by the
body, and resetting it after the ``yield`` is valid.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import sys
import warnings
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import anyio
import anyio.from_thread

from ._errors import ScopeError, WiringError
from ._inspect import CallableInfo, Kind, analyse
from ._markers import Dependency, Lifetime
from ._plan import Teardown, special_of
from ._scope import Scope, current_scope
from ._tasks import run_in_context
from ._util import in_event_loop

if TYPE_CHECKING:
    from ._container import Container

T = TypeVar("T")

# An injected call that fails in a scope it did not open records its error as the scope's ``body_error``:
# frameworks turn an endpoint's exception into an error response, so the ASGI middleware never sees it raised, and
# exits the scope with it (pending tasks not run) as the core policy says. A later injected call in the same scope
# that returns (an endpoint that caught its helper's error) clears it.


class _Injected:
    """What one decorated function needs at each call; built once, at decoration."""

    __slots__ = (
        "checked", "container", "entry", "extras", "func", "keywords", "kind", "name", "only", "positional",
        "resolver", "runtime", "signature", "types",
    )  # fmt: skip

    def __init__(
        self, container: Container | None, func: Callable[..., Any], dependencies: Sequence[object] = ()
    ) -> None:
        _refuse_route_handler(func)
        info = analyse(func)  # WiringError with the function's name if its signature cannot be used
        if info.kind in (Kind.GENERATOR, Kind.ASYNC_GENERATOR, Kind.CLASS):
            raise WiringError(
                f"Container.inject() takes a function or an async function, got the {info.kind.value} {info.name}; "
                "decorate a function that uses it through Depends(...) instead",
                path=(info.name,),
            )
        signature = inspect.signature(func, eval_str=True)  # analyse() proved this works
        hidden, visible = _split(signature, info)
        extras = _extra_parameters(info.name, signature, dependencies)
        self.container = container  # None: resolve in whichever container's scope is current (a route class)
        self.func = func
        self.extras = tuple(p.name for p in extras)
        # What is solved and called: the function itself, or one that resolves the effect-only dependencies first
        self.entry = _with_dependencies(func, info, signature, extras) if extras else func
        self.checked = False  # whether an own-scope call was checked for a missing middleware (once per function)
        self.name = info.name
        self.signature = signature.replace(parameters=visible)
        self.positional = tuple(
            p.name for p in signature.parameters.values() if p.kind is inspect.Parameter.POSITIONAL_ONLY
        )
        # the declared class of each provided parameter, to bind its value by type as well as by name
        shown = {p.name for p in visible}
        self.types = {p.name: p.annotation for p in info.params if p.name in shown and _bindable(p.annotation)}
        self.resolver = _resolver(func, [*extras, *hidden])
        self.kind = info.kind
        # Fast paths for how frameworks call endpoints: every parameter by keyword (FastAPI, Litestar) or a lone
        # positional request (Starlette). Anything else goes through Signature.bind, which explains mistakes.
        self.keywords, self.only = _fast_paths(visible)
        self.runtime: dict[type, bool] = {}  # whether a value's own class may be bound by type, per class

    def values(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The caller's arguments by name (``TypeError`` naming the function when they do not fit)."""
        if not args:
            if self.keywords is not None and kwargs.keys() == self.keywords:
                return kwargs
        elif self.only is not None and len(args) == 1 and not kwargs:
            return {self.only: args[0]}
        try:
            return self.signature.bind(*args, **kwargs).arguments
        except TypeError as exc:
            raise TypeError(f"{self.name}{self.signature}: {exc} (injected parameters are not passed)") from None

    def bind_types(self, scope: Scope, values: Mapping[str, Any]) -> None:
        """Make each provided value visible by its declared class and by its own class."""
        bound = scope.types  # written directly: the classes were vetted once, here or at decoration
        known = self.runtime
        for name, value in values.items():
            declared = self.types.get(name)
            if declared is not None:
                bound[declared] = value
            runtime: type[Any] = value.__class__
            ok = known.get(runtime)
            if ok is None:
                ok = known[runtime] = _bindable(runtime)
            if ok:
                bound[runtime] = value

    def scope_for_call(self) -> Scope | None:
        """The active scope of this container (of any container when unbound), if there is an open one."""
        scope = current_scope.get()
        if scope is None or not scope.is_open or (self.container is not None and scope.container is not self.container):
            return None
        return scope

    def own_scope(self, values: Mapping[str, Any], request: str | None) -> Scope:
        """A scope for a call made outside any: refused for a route class's endpoint (it has no container), and
        said out loud when the call is part of an ASGI request (the tasks will run before the response)."""
        container = self.bound_container()
        if not self.checked:
            # once per function: the point is to be seen, not to flood the log, nor to walk the stack on every call
            # of a script that calls it outside any scope
            self.checked = True
            request = request if request is not None else _asgi_request_in(values)
            if request is not None:
                warnings.warn(_NO_MIDDLEWARE.format(name=self.name, request=request), RuntimeWarning, stacklevel=4)
        return container.scope()

    def bound_container(self) -> Container:
        """The container given at decoration; a route class's endpoint has none, and cannot open a scope."""
        if self.container is None:
            raise ScopeError(
                f"{self.name} is injected by a di_tasks route class or plugin and was called with no di_tasks request "
                "scope active; call di_tasks.fastapi.setup(app, container) (or add di_tasks.asgi.ScopeMiddleware) "
                "so each request has one",
                path=(self.name,),
            )
        return self.container

    async def call(self, values: dict[str, Any]) -> Any:
        """Resolve and call an async (or, from a script, a sync) function in the active scope or a new one."""
        scope = self.scope_for_call()
        if scope is not None:
            self.bind_types(scope, values)
            try:
                result = await scope.call(self.entry, **values)
            except BaseException as exc:
                scope.body_error = exc
                raise
            scope.body_error = None
            return result
        async with self.own_scope(values, None if self.checked else _asgi_request_on_stack()) as own:
            self.bind_types(own, values)
            return await own.call(self.entry, **values)

    def call_args(self, values: Mapping[str, Any], resolved: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """Split the final arguments into positional-only ones and the rest."""
        merged = {**values, **resolved}
        for name in self.extras:  # effect-only dependencies: resolved, never passed
            del merged[name]
        pos = [merged.pop(name) for name in self.positional if name in merged]
        return pos, merged


def _split(signature: inspect.Signature, info: CallableInfo) -> tuple[list[inspect.Parameter], list[inspect.Parameter]]:
    """The injected parameters (made keyword-only: a default may be the marker) and the ones the caller gives.

    Raises:
        WiringError: ``*args`` or ``**kwargs``, which cannot be passed on to dependencies by name.
    """
    hidden: list[inspect.Parameter] = []
    visible: list[inspect.Parameter] = []
    for param, parsed in zip(signature.parameters.values(), info.params, strict=True):
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            star = "*" if param.kind is inspect.Parameter.VAR_POSITIONAL else "**"
            raise WiringError(
                f"parameter {star}{param.name} of {info.name} cannot go through Container.inject(): the wrapper "
                "passes the caller's arguments to dependencies by name; declare the parameters explicitly",
                path=(info.name,),
            )
        if parsed.marker is not None or special_of(parsed.annotation) is not None:
            hidden.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY))
        else:
            visible.append(param)
    return hidden, visible


_NO_MIDDLEWARE = (
    "{name} was called during the ASGI request {request} with no di_tasks request scope active, so it opened a "
    "scope of its own and ran its background tasks before the response was sent; use the framework integration "
    "(di_tasks.fastapi.setup(app, container), di_tasks.starlette.setup(app, container) or Litestar's "
    "plugins=[di_tasks.litestar.DITasksPlugin(container)]) or add di_tasks.asgi.ScopeMiddleware to the app"
)
_STACK_DEPTH = 64  # an ASGI app call is a few dozen frames above an endpoint at most


def _asgi_label(scope: object) -> str | None:
    """``"GET /path"`` if ``scope`` is an ASGI HTTP or WebSocket connection scope."""
    if not isinstance(scope, Mapping):
        return None
    asgi = cast("Mapping[str, Any]", scope)
    kind = asgi.get("type")
    if kind not in ("http", "websocket") or "path" not in asgi:
        return None
    return f"{asgi.get('method', 'WEBSOCKET')} {asgi['path']}"


def _asgi_request_in(values: Mapping[str, Any]) -> str | None:
    """The request an argument belongs to (a framework's ``Request`` or ``WebSocket`` keeps its ASGI ``scope``)."""
    for value in values.values():
        try:
            label = _asgi_label(getattr(value, "scope", None))
        except Exception:  # noqa: BLE001, S112  # a user object whose ``scope`` property fails is simply not a request
            continue
        if label is not None:
            return label
    return None


def _asgi_request_on_stack() -> str | None:
    """The request being served, if an ASGI app call (``app(scope, receive, send)``) is on the caller's stack.

    Only looked for when an injected function opens a scope of its own, which a correctly wired app never does.
    """
    frame: FrameType | None = sys._getframe(2)
    for _ in range(_STACK_DEPTH):
        if frame is None:
            return None
        names = frame.f_code.co_varnames
        if "scope" in names and "receive" in names:
            label = _asgi_label(frame.f_locals.get("scope"))
            if label is not None:
                return label
        frame = frame.f_back
    return None


def _refuse_route_handler(func: object) -> None:
    """A Litestar route handler (what ``@get``/``@post`` return) given to ``inject``: the decorators are in the
    wrong order, and the handler would keep calling the function with its dependencies as request input."""
    if hasattr(func, "fn") and hasattr(func, "paths") and not inspect.isfunction(func):
        raise WiringError(
            f"Container.inject() was given {func!r}, a route handler (the object a route decorator such as "
            "Litestar's @get returns), not a function: put @container.inject below the route decorator, or inject "
            "every handler with plugins=[di_tasks.litestar.DITasksPlugin(container)]"
        )


def _extra_parameters(
    name: str, signature: inspect.Signature, dependencies: Sequence[object]
) -> list[inspect.Parameter]:
    """One hidden keyword-only parameter per effect-only dependency (``inject(dependencies=[...])``).

    Raises:
        WiringError: an item is neither a ``Depends(f)`` marker nor a callable.
    """
    if isinstance(dependencies, str | bytes) or not isinstance(dependencies, Sequence):
        raise WiringError(
            f"Container.inject(dependencies=...) of {name} takes a list of Depends(f) markers or callables, "
            f"got {dependencies!r}"
        )
    taken = set(signature.parameters)
    extras: list[inspect.Parameter] = []
    for index, item in enumerate(dependencies):
        if isinstance(item, Dependency):
            if item.dependency is None:
                raise WiringError(
                    f"dependencies[{index}] of {name} is Depends() with no callable: an effect-only dependency has "
                    "no annotated class to fall back on; write Depends(the_function)",
                    path=(name,),
                )
            marker = item
        elif callable(item):
            marker = Dependency(item, True, None, None)
        else:
            raise WiringError(
                f"dependencies[{index}] of {name} is {item!r}, not a callable or a Depends(f) marker; write "
                "dependencies=[Depends(verify_token)]",
                path=(name,),
            )
        extra = f"dependencies_{index}"
        while extra in taken:
            extra = f"_{extra}"
        taken.add(extra)
        extras.append(inspect.Parameter(extra, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[Any, marker]))
    return extras


def _with_dependencies(
    func: Callable[..., Any], info: CallableInfo, signature: inspect.Signature, extras: list[inspect.Parameter]
) -> Callable[..., Any]:
    """``func`` with the effect-only dependencies as extra parameters, resolved first (as FastAPI resolves a
    route's ``dependencies=`` before the endpoint's own parameters) and not passed on."""
    drop = tuple(p.name for p in extras)
    positional = tuple(p.name for p in signature.parameters.values() if p.kind is inspect.Parameter.POSITIONAL_ONLY)

    def split(kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        for name in drop:
            del kwargs[name]
        return [kwargs.pop(name) for name in positional if name in kwargs], kwargs

    entry: Callable[..., Any]
    if info.kind is Kind.ASYNC:

        async def async_entry(**kwargs: Any) -> Any:
            args, rest = split(kwargs)
            return await func(*args, **rest)

        entry = async_entry
    else:

        def sync_entry(**kwargs: Any) -> Any:
            args, rest = split(kwargs)
            return func(*args, **rest)

        entry = sync_entry
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values()]
    cast("Any", entry).__signature__ = signature.replace(parameters=[*extras, *own])
    for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
        if hasattr(func, attribute):
            setattr(entry, attribute, getattr(func, attribute))
    return entry


def _fast_paths(visible: list[inspect.Parameter]) -> tuple[frozenset[str] | None, str | None]:
    """The names when every parameter may come by keyword, and the name of a lone positional parameter."""
    simple = [p for p in visible if p.kind is not inspect.Parameter.POSITIONAL_ONLY]
    keywords = frozenset(p.name for p in simple) if len(simple) == len(visible) else None
    lone = len(visible) == 1 and visible[0].kind is not inspect.Parameter.KEYWORD_ONLY
    return keywords, (visible[0].name if lone else None)


def _bindable(tp: object) -> bool:
    return isinstance(tp, type) and tp.__module__ != "builtins" and special_of(tp) is None


def _resolver(func: Callable[..., Any], hidden: list[inspect.Parameter]) -> Callable[..., dict[str, Any]]:
    """A function whose parameters are ``func``'s injected ones and which returns them: resolving it resolves
    exactly what ``func`` would get, without calling ``func`` (used for sync functions run in a worker thread)."""

    def resolve(**resolved: Any) -> dict[str, Any]:
        return resolved

    resolve.__signature__ = inspect.Signature(hidden)  # type: ignore[attr-defined]  # read by inspect.signature
    resolve.__qualname__ = getattr(func, "__qualname__", resolve.__qualname__)
    resolve.__module__ = getattr(func, "__module__", resolve.__module__)
    return resolve


def inject(
    container: Container | None, func: Callable[..., T], dependencies: Sequence[object] = ()
) -> Callable[..., T]:
    """Wrap ``func`` so its injected parameters are resolved in the current scope.

    See :meth:`Container.inject` for the contract. With ``container=None`` (a route class or plugin) nothing is
    solved here and the function resolves in whichever container's scope is current; the integration's startup
    check solves it against its container.
    """
    target = _Injected(container, func, dependencies)
    if container is not None:
        container.solve(target.entry)  # every wiring error at decoration time, like a framework registering a route
    wrapper: Callable[..., Any]
    if target.kind is Kind.ASYNC:

        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            return await target.call(target.values(args, kwargs))

        wrapper = async_wrapper
    else:
        if container is not None:
            check_sync(container, target.entry)

        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            return _call_sync(target, target.values(args, kwargs))

        wrapper = sync_wrapper
    functools.update_wrapper(wrapper, func)
    cast("Any", wrapper).__di_tasks_injected__ = target.entry  # Container.solve and di_tasks.testing see through it
    if target.extras:
        cast("Any", wrapper).__wrapped__ = target.entry  # so that a graph read through __wrapped__ has them too
    cast("Any", wrapper).__signature__ = target.signature  # read by inspect.signature before __wrapped__
    annotations = {p.name: p.annotation for p in target.signature.parameters.values() if p.annotation is not p.empty}
    if target.signature.return_annotation is not inspect.Signature.empty:
        annotations["return"] = target.signature.return_annotation
    wrapper.__annotations__ = annotations  # frameworks read type hints from here (typing.get_type_hints)
    return cast("Callable[..., T]", wrapper)


def check_sync(container: Container, func: Callable[..., Any]) -> None:
    """A sync function's body runs after its dependencies are resolved, so nothing call-scoped can be torn down
    after it: refuse call-scoped generators when the function is decorated (or, for a route class, at startup)."""
    plan = container.plan(func)
    name = plan.steps[-1].name
    for step in plan.steps[:-1]:
        if step.generator and step.lifetime is Lifetime.CALL:
            raise WiringError(
                f"{step.name} is a call-scoped generator dependency of the sync function {name}, which runs in "
                "a worker thread after its dependencies are resolved, so it could not be torn down after the call; "
                "make the dependency request-scoped (the default) or the function 'async def'",
                path=(name, step.name),
            )


def _call_sync(target: _Injected, values: dict[str, Any]) -> Any:
    if in_event_loop():
        raise RuntimeError(
            f"{target.name} is a sync function decorated with Container.inject() and was called on the event loop's "
            "thread, where resolving its dependencies would block the loop; make it 'async def', or call it in a "
            "worker thread (anyio.to_thread.run_sync), as web frameworks do for sync endpoints"
        )
    # One context for the dependencies' set-up, the body and the dependencies' teardown, as FastAPI runs them: a
    # context variable a dependency sets is seen by the body, and its `var.reset(token)` after the yield is valid.
    context = contextvars.copy_context()
    try:
        scope, own, resolved = anyio.from_thread.run(_resolve_in_thread, target, values, context)
    except anyio.NoEventLoopError:  # a plain script: no loop anywhere, run one for this call
        target.bound_container()  # a route class's endpoint has no container to run a loop for: refused
        return anyio.run(_call_in_new_loop, target, values)
    pos, kw = target.call_args(values, resolved)
    if own is None:
        try:
            result = context.run(target.func, *pos, **kw)
        except BaseException as exc:
            scope.body_error = exc
            raise
        scope.body_error = None
        return result
    try:
        result = context.run(target.func, *pos, **kw)
    except BaseException as exc:
        anyio.from_thread.run(own.close, exc)
        raise
    anyio.from_thread.run(own.close)
    return result


async def _resolve_in_thread(
    target: _Injected, values: dict[str, Any], context: contextvars.Context
) -> tuple[Scope, Scope | None, dict[str, Any]]:
    """On the loop, for a worker thread: resolve the injected parameters (opening a scope when none is active)
    with every step run inside ``context``, whose generators' teardowns will run inside it too.

    Returns the scope used, the same scope if it was opened here (else ``None``), and the resolved values.
    """
    scope = target.scope_for_call()
    own = None
    if scope is None:
        scope = own = target.own_scope(values, None)
    target.bind_types(scope, values)
    started = len(scope.exit_stack)
    try:
        resolved: dict[str, Any] = await run_in_context(context, scope.call(target.resolver, **values))
    except BaseException as exc:
        _pin(scope.exit_stack, started, context)
        if own is None:
            scope.body_error = exc
        else:
            await own.close(exc)
        raise
    _pin(scope.exit_stack, started, context)
    return scope, own, resolved


def _pin(stack: list[Teardown], started: int, context: contextvars.Context) -> None:
    """Make the teardowns pushed since ``started`` run inside ``context``, where their generators started."""
    for index in range(started, len(stack)):
        entry = stack[index]
        pinned = _PinnedAsyncGenerator(entry.gen, context) if entry.is_async else _PinnedGenerator(entry.gen, context)
        stack[index] = entry._replace(gen=pinned)


class _PinnedGenerator:
    """A started generator whose every step (``next``, ``throw``, ``close``) runs inside one context."""

    __slots__ = ("context", "gen")

    def __init__(self, gen: Generator[Any, None, None], context: contextvars.Context) -> None:
        self.gen = gen
        self.context = context

    def __next__(self) -> Any:
        return self.context.run(next, self.gen)

    def throw(self, exc: BaseException) -> Any:
        return self.context.run(self.gen.throw, exc)

    def close(self) -> None:
        self.context.run(self.gen.close)


class _PinnedAsyncGenerator:
    """A started async generator whose every step (``__anext__``, ``athrow``, ``aclose``) runs inside one context."""

    __slots__ = ("context", "gen")

    def __init__(self, gen: AsyncGenerator[Any, None], context: contextvars.Context) -> None:
        self.gen = gen
        self.context = context

    def __anext__(self) -> Awaitable[Any]:
        return run_in_context(self.context, self.gen.__anext__())

    def athrow(self, exc: BaseException) -> Awaitable[Any]:
        return run_in_context(self.context, self.gen.athrow(exc))

    def aclose(self) -> Awaitable[None]:
        return run_in_context(self.context, self.gen.aclose())


async def _call_in_new_loop(target: _Injected, values: dict[str, Any]) -> Any:
    container = target.bound_container()
    if container.app.is_open:
        return await target.call(values)
    async with container:
        return await target.call(values)
