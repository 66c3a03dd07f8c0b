"""Solving: turn a function's signature tree into a validated graph and a flat execution plan, once."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from ._errors import DependencyCycleError, ScopeError, WiringError
from ._inspect import EMPTY, CallableInfo, Kind, analyse, foreign_marker_error, qualname, surely_not_awaitable
from ._markers import SCOPE_RANK, Dependency, ScopeName

# Source codes of a plan argument, kept as small ints so executing a plan is a tight loop.
SLOT: Final = 0  # (SLOT, index): the value of an earlier step
TASKS: Final = 1  # (TASKS,): the scope's BackgroundTasks
SCOPE: Final = 2  # (SCOPE,): the Scope
CONTAINER: Final = 3  # (CONTAINER,): the Container
VALUE: Final = 4  # (VALUE, name, bound_type, default, need): a value by name, then by type, then default
APP_VALUE: Final = 5  # same, looked up in the container's values only (for app-scoped dependencies)

# Which scope's exit tears a generator step down (``Step.teardown``): the scope's rank.
TEARDOWN_APP: Final = SCOPE_RANK["app"]
TEARDOWN_REQUEST: Final = SCOPE_RANK["request"]
TEARDOWN_CALL: Final = SCOPE_RANK["call"]

# Where a step's value is cached and torn down.
CACHE_NONE: Final = 0
CACHE_REQUEST: Final = 1
CACHE_APP: Final = 2


@dataclass(frozen=True, slots=True)
class ValueNeed:
    """A value the graph needs from outside: given by name to the scope or call, bound by type, or a default.

    Attributes:
        name: the parameter name the value is looked up by.
        annotation: the parameter's annotation (``inspect.Parameter.empty`` when none).
        has_default: whether the parameter falls back to a default.
        function: qualified name of the function that declares the parameter.
        path: dependency path from the root to that function.
    """

    name: str
    annotation: Any
    has_default: bool
    function: str
    path: tuple[str, ...]


@dataclass(eq=False, slots=True)
class Node:
    """One dependency in a solved graph.

    Attributes:
        call: the callable that produces the value (after overrides).
        name: its qualified name.
        kind: sync, async, generator, async generator or class.
        scope: ``"app"``, ``"request"`` or ``"call"`` (the root is ``"call"``).
        use_cache: whether its value is shared within its scope.
        sync_to_thread: whether a sync dependency runs in a worker thread.
        dependencies: the parameter name and node of each ``Depends`` parameter.
        wants_tasks: whether it asks for ``BackgroundTasks``.
        values: the outside values it reads.
        overridden: the original target when an override replaced it.
        path: dependency path from the root to this node.
        injected: names of its parameters filled by injection (Depends markers and special types).
    """

    call: Callable[..., Any]
    name: str
    kind: Kind
    scope: ScopeName
    use_cache: bool
    sync_to_thread: bool
    path: tuple[str, ...]
    dependencies: list[tuple[str, Node]] = field(default_factory=list[tuple[str, "Node"]])
    wants_tasks: bool = False
    values: list[ValueNeed] = field(default_factory=list[ValueNeed])
    overridden: Callable[..., Any] | None = None
    injected: list[str] = field(default_factory=list[str])


@dataclass(frozen=True, slots=True)
class Graph:
    """The solved graph of a function, as returned by ``Container.solve``.

    Attributes:
        root: the node of the function itself.
        nodes: every distinct node, dependencies before their dependents (the root is last).
        values: every value needed from outside, in the order first met.
    """

    root: Node
    nodes: tuple[Node, ...]
    values: tuple[ValueNeed, ...]

    @property
    def required_values(self) -> tuple[ValueNeed, ...]:
        """The outside values with no default: a resolution fails without them."""
        return tuple(v for v in self.values if not v.has_default)

    @property
    def task_users(self) -> tuple[Node, ...]:
        """The nodes that ask for ``BackgroundTasks``."""
        return tuple(n for n in self.nodes if n.wants_tasks)

    def render(self, format: Literal["text", "mermaid", "dot"] = "text") -> str:
        """Draw the graph: ``"text"`` (a tree), ``"mermaid"`` (renders on GitHub) or ``"dot"`` (Graphviz).

        Returns:
            The rendering, ending with a newline.

        Raises:
            ValueError: an unknown format.
        """
        from ._render import render  # the renderers are only loaded by those who draw

        return render(self, format)


class Step:
    """One call of an execution plan; plain slots, read in the hot loop."""

    __slots__ = (
        "cache", "call", "check", "key", "kind", "kw", "kwpos", "name", "path", "pos", "slot", "teardown", "to_thread",
    )  # fmt: skip

    def __init__(
        self,
        call: Callable[..., Any],
        kind: Kind,
        cache: int,
        teardown: int,
        slot: int,
        pos: tuple[tuple[Any, ...], ...],
        kw: tuple[tuple[str, tuple[Any, ...]], ...],
        to_thread: bool,
        name: str,
        kwpos: int = 0,
        check: bool = True,
        path: tuple[str, ...] = (),
    ) -> None:
        self.call = call
        self.path = path  # from the root to this step, for the errors raised while it runs
        # whether a sync call's result must be checked for a coroutine (see ``surely_not_awaitable``)
        self.check = check
        try:
            hash(call)
        except TypeError:  # an unhashable callable instance: cached by identity (plans keep it alive)
            self.key: Any = id(call)
        else:
            self.key = call
        self.kind = kind
        self.cache = cache
        self.teardown = teardown  # SCOPE_RANK of the scope whose exit tears a generator down
        self.slot = slot
        self.pos = pos
        self.kw = kw
        self.to_thread = to_thread
        self.name = name
        # How many leading ``kw`` entries may be passed positionally. A compiled plan does: CPython matches
        # keyword arguments by a scan per parameter, so a call with many of them costs quadratic time.
        self.kwpos = kwpos


class Plan:
    """A solved function, ready to execute many times with no introspection.

    Attributes:
        steps: the calls in dependency order; the root is last.
        graph: the solved graph.
        nargs: how many positional arguments the caller passes to the root.
        run: the compiled form (see ``_compile``), made on the plan's second execution; ``None`` before.
        run_fresh: the compiled form for a scope made for this one call, without request-cache lookups.
        fresh_ok: whether ``run_fresh`` may be used (no dependency is handed the ``Scope``).
        pure: whether the plan needs no scope state at all (see ``Container.call``).
        uses: how many times the plan ran interpreted.
        source: the compiled form's Python source, for reading and tracebacks (empty before).
    """

    __slots__ = (
        "filenames",
        "fresh_ok",
        "graph",
        "nargs",
        "pure",
        "run",
        "run_fresh",
        "source",
        "steps",
        "uses",
        "value_sources",
    )

    def __init__(self, steps: tuple[Step, ...], graph: Graph, nargs: int) -> None:
        self.steps = steps
        self.graph = graph
        self.nargs = nargs
        self.run: Callable[..., Coroutine[Any, Any, Any]] | None = None
        self.run_fresh: Callable[..., Coroutine[Any, Any, Any]] | None = None
        sources = [src for st in steps for src in (*st.pos, *(src for _, src in st.kw))]
        # Every value looked up by name: checked before the first step runs, so a missing one fails the
        # resolution before anything is called.
        self.value_sources = tuple(src for src in sources if src[0] in (VALUE, APP_VALUE))
        codes = {src[0] for src in sources}
        # A plan that touches no scope state (no generator to tear down, no collector, no app value, no Scope or
        # Container handed out) can run without a scope of its own when nothing is bound by type.
        self.pure = not (codes & {TASKS, SCOPE, CONTAINER, APP_VALUE}) and not any(
            st.cache == CACHE_APP or st.kind in (Kind.GENERATOR, Kind.ASYNC_GENERATOR) for st in steps
        )
        # A plan may skip request-cache lookups when it runs alone in a scope made for it (Container.call, a
        # task's scope): that cache starts empty, unless a dependency is handed the Scope and calls more in it.
        self.fresh_ok = SCOPE not in codes
        self.filenames: list[str] = []  # of its compiled forms in linecache, dropped with the plan
        self.uses = 0
        self.source = ""


class TaskSpec:
    """What ``add_task`` knows about a task function: how to check its arguments and how to run it."""

    __slots__ = ("func", "is_async", "name", "npos", "plan", "signature", "simple")

    def __init__(self, func: Callable[..., Any], plan: Plan | None, signature: inspect.Signature | None) -> None:
        self.func = func
        self.name = qualname(func)
        self.plan = plan
        self.is_async = _is_async(func)
        self.signature = signature
        # The common case, a function with plain positional parameters and no defaults, is checked by
        # counting instead of a full Signature.bind.
        self.simple = signature is not None and all(
            p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.default is EMPTY
            for p in signature.parameters.values()
        )
        self.npos = len(signature.parameters) if signature is not None else -1

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
            injected = ""
            if self.plan is not None:
                injected = " (its injected parameters are filled when it runs and must not be passed)"
            raise TypeError(
                f"add_task({self.name}, ...): {exc}; the arguments must fit {self.name}{self.signature}{injected}"
            ) from None


def _is_async(func: Callable[..., Any]) -> bool:
    from ._inspect import kind_of

    return kind_of(func) is Kind.ASYNC


_SPECIAL: dict[type, int] = {}


def register_special(tp: type, code: int) -> None:
    """Declare a special parameter type (BackgroundTasks, Scope, Container) filled by the scope."""
    _SPECIAL[tp] = code


def _bound_type(annotation: Any) -> type | None:
    if isinstance(annotation, type) and annotation.__module__ != "builtins":
        return annotation
    return None  # builtins and non-class annotations are never looked up by type


class Solver:
    """Walks one function's graph; used once per (function, overrides) and thrown away."""

    def __init__(self, overrides: Mapping[Any, Callable[..., Any]]) -> None:
        self._overrides = overrides
        self._infos: dict[Any, CallableInfo] = {}
        self._steps: list[Step] = []
        self._nodes: list[Node] = []
        self._values: list[ValueNeed] = []
        self._done: dict[tuple[Any, str], tuple[int, Node]] = {}
        self._visiting: list[Any] = []

    def _info(self, call: Callable[..., Any], path: tuple[str, ...]) -> CallableInfo:
        try:
            return self._infos[call]
        except KeyError:
            pass
        except TypeError:  # unhashable callable instance
            pass
        try:
            info = analyse(call)
        except WiringError as exc:
            raise WiringError(str(exc), path=path) from exc.__cause__
        with contextlib.suppress(TypeError):  # unhashable callables are analysed again when met again
            self._infos[call] = info
        return info

    def solve(self, func: Callable[..., Any], nargs: int, *, hide: frozenset[str] = frozenset()) -> Plan:
        """Solve ``func`` called with ``nargs`` positional arguments (and ``hide`` parameters given by the caller)."""
        info = self._info(func, (qualname(func),))
        if info.kind in (Kind.GENERATOR, Kind.ASYNC_GENERATOR):
            raise WiringError(
                f"{info.name} is a generator function; it can be a dependency (Depends) but not the function "
                "called. Call a function that depends on it instead",
                path=(info.name,),
            )
        self._node(info, "call", use_cache=False, sync_to_thread=False, path=(info.name,), nargs=nargs, hide=hide)
        graph = Graph(root=self._nodes[-1], nodes=tuple(self._nodes), values=tuple(self._values))
        return Plan(tuple(self._steps), graph, nargs)

    def _node(
        self,
        info: CallableInfo,
        scope: ScopeName,
        *,
        use_cache: bool,
        sync_to_thread: bool,
        path: tuple[str, ...],
        nargs: int = 0,
        hide: frozenset[str] = frozenset(),
        overridden: Callable[..., Any] | None = None,
    ) -> tuple[int, Node]:
        node = Node(info.call, info.name, info.kind, scope, use_cache, sync_to_thread, path, overridden=overridden)
        rank = SCOPE_RANK[scope]
        pos: list[tuple[Any, ...]] = []
        kw: list[tuple[str, tuple[Any, ...]]] = []
        skip = nargs
        kwpos, in_order = 0, True
        self._visiting.append(info.call)
        for p in info.params:
            if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                if len(path) == 1:
                    in_order = False
                    continue  # the called function's *args/**kwargs are the caller's business
                star = "*" if p.kind is inspect.Parameter.VAR_POSITIONAL else "**"
                raise WiringError(
                    f"parameter {star}{p.name} of {info.name} cannot be injected: dependencies are called with "
                    "their declared parameters only; give it explicit parameters",
                    path=path,
                )
            positional = p.kind is inspect.Parameter.POSITIONAL_ONLY
            if skip and p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
                skip -= 1  # filled by the caller's positional arguments
                continue
            if p.name in hide:
                in_order = False
                continue
            source = self._source(p, info, node, rank, path)
            if positional:
                pos.append(source)
            else:
                kw.append((p.name, source))
                in_order = in_order and p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
                kwpos += in_order
        self._visiting.pop()
        if scope == "app":
            cache, teardown = (CACHE_APP if use_cache else CACHE_NONE), TEARDOWN_APP
        elif scope == "request":
            cache, teardown = (CACHE_REQUEST if use_cache else CACHE_NONE), TEARDOWN_REQUEST
        else:
            cache, teardown = CACHE_NONE, TEARDOWN_CALL
        slot = len(self._steps)
        to_thread = sync_to_thread and info.kind in (Kind.SYNC, Kind.CLASS, Kind.GENERATOR)
        self._steps.append(
            Step(
                info.call,
                info.kind,
                cache,
                teardown,
                slot,
                tuple(pos),
                tuple(kw),
                to_thread,
                info.name,
                kwpos,
                check=info.kind is Kind.SYNC and not surely_not_awaitable(info.returns),
                path=path,
            )
        )
        if cache == CACHE_APP and self._overrides and self._touched(node):
            # An app value built from an override must not be served once the override is gone (nor a value
            # built before it while it is active): it gets a key of its own for this set of overrides.
            step = self._steps[-1]
            step.key = (step.key, tuple(sorted((id(k), id(v)) for k, v in self._overrides.items())))
        self._nodes.append(node)
        return slot, node

    def _touched(self, node: Node) -> bool:
        """Whether an override replaced this node or anything it depends on."""
        return node.overridden is not None or any(self._touched(child) for _, child in node.dependencies)

    def _source(self, p: Any, info: CallableInfo, node: Node, rank: int, path: tuple[str, ...]) -> tuple[Any, ...]:
        marker: Dependency | None = p.marker
        if marker is not None:
            node.injected.append(p.name)
            return (SLOT, self._dependency(marker, p, info, node, rank, path))
        special = _SPECIAL.get(p.annotation) if isinstance(p.annotation, type) else None
        if special is not None:
            if special in (TASKS, SCOPE) and rank < SCOPE_RANK["request"]:
                what = "BackgroundTasks" if special == TASKS else "Scope"
                raise ScopeError(
                    f"parameter {p.name!r} of {info.name} asks for {what}, which belongs to the request scope, "
                    f"but {info.name} is app-scoped and outlives every request; make it request-scoped or move "
                    f"the {what} parameter to a request-scoped dependency",
                    path=path,
                )
            node.wants_tasks = node.wants_tasks or special == TASKS
            node.injected.append(p.name)
            return (special,)
        if p.foreign is not None and len(path) > 1:  # at the root, a framework may fill it (FastAPI's Depends)
            raise foreign_marker_error(p, info.name, path)
        need = ValueNeed(p.name, p.annotation, p.default is not EMPTY, info.name, path)
        node.values.append(need)
        self._values.append(need)
        code = APP_VALUE if rank == SCOPE_RANK["app"] else VALUE
        return (code, p.name, _bound_type(p.annotation), p.default, need)

    def _dependency(
        self, marker: Dependency, p: Any, info: CallableInfo, node: Node, rank: int, path: tuple[str, ...]
    ) -> int:
        target = marker.dependency
        if target is None:
            if not isinstance(p.annotation, type):
                raise WiringError(
                    f"parameter {p.name!r} of {info.name} uses Depends() without a callable, which needs a class "
                    f"annotation to call, but its annotation is {p.annotation!r}; write Depends(some_function)",
                    path=path,
                )
            target = p.annotation
        original: Callable[..., Any] | None = None
        try:
            replacement = self._overrides.get(target)
        except TypeError:
            replacement = None
        if replacement is not None:
            original, target = target, replacement
        child_scope: ScopeName = marker.scope or "request"
        child_name = qualname(target)
        child_path = (*path, child_name)
        if SCOPE_RANK[child_scope] > rank:
            raise ScopeError(
                f"{info.name} ({node.scope}-scoped) depends on {child_name} through parameter {p.name!r}, but "
                f"{child_name} is {child_scope}-scoped and would end before it; write "
                f"Depends({(qualname(original) if original is not None else child_name).rsplit('.', 1)[-1]}, "
                f"scope={node.scope!r}) on parameter {p.name!r} of {info.name} (or a longer scope), or make "
                f"{info.name} shorter-lived",
                path=child_path,
            )
        if any(target is v for v in self._visiting):
            start = next(i for i, v in enumerate(self._visiting) if v is target)
            cycle = (*path[start:], child_name)
            raise DependencyCycleError(
                f"dependency cycle: {' -> '.join(cycle)}; break it by removing one of these Depends parameters",
                path=cycle,
            )
        key = (target, child_scope)
        if marker.use_cache:
            try:
                done = self._done.get(key)
            except TypeError:
                done = None
            if done is not None:
                node.dependencies.append((p.name, done[1]))
                return done[0]
        child_info = self._info(target, child_path)
        slot, child = self._node(
            child_info,
            child_scope,
            use_cache=marker.use_cache,
            sync_to_thread=marker.sync_to_thread,
            path=child_path,
            overridden=original,
        )
        if marker.use_cache:
            with contextlib.suppress(TypeError):
                self._done[key] = (slot, child)
        node.dependencies.append((p.name, child))
        return slot
