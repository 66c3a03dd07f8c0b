"""Solving: walk a function's signature tree once, validate it, and lay it out as a flat plan of steps."""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Callable, Mapping
from typing import Any

from ._errors import DependencyCycleError, DITasksError, ScopeError, WiringError
from ._graph import Graph, Node, ValueNeed
from ._inspect import (
    EMPTY,
    CallableInfo,
    Kind,
    Param,
    analyse,
    foreign_marker_error,
    qualname,
    surely_not_awaitable,
)
from ._markers import Dependency, Lifetime, declared_lifetime
from ._plan import FromScope, FromStep, FromValue, Plan, Source, Special, Step, special_of
from ._util import Same

_VAR_KINDS = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


Lifetimes = dict[Any, tuple[Lifetime, str]]
"""Each provider's lifetime as first used in a container, and where (``parameter 'x' of f``)."""


def solve(
    overrides: Mapping[Any, Callable[..., Any]],
    func: Callable[..., Any],
    nargs: int,
    lifetimes: Lifetimes | None = None,
    *,
    sync_to_thread: bool = False,
) -> Plan:
    """Solve ``func`` (called with ``nargs`` positional arguments) under ``overrides``; with ``lifetimes``, a provider
    used with another lifetime than before in the same container is refused. ``sync_to_thread`` is the container's
    policy for sync dependencies whose ``Depends`` does not say.

    Raises:
        WiringError, DependencyCycleError, ScopeError: the graph cannot be wired (a graph deeper than the
            recursion limit is a WiringError that says how to raise it).
    """
    try:
        return Solver(overrides, lifetimes=lifetimes, sync_to_thread=sync_to_thread).solve(func, nargs)
    except RecursionError:
        raise WiringError(
            f"the dependency graph of {qualname(func)} is deeper than Python's recursion limit lets the solver walk "
            f"(about {sys.getrecursionlimit() // 3} levels); raise it with sys.setrecursionlimit()",
            path=(qualname(func),),
        ) from None


def _bound_type(annotation: Any) -> type | None:
    if isinstance(annotation, type) and annotation.__module__ != "builtins" and annotation is not EMPTY:
        return annotation
    return None  # builtins and non-class annotations are never looked up by type


class Solver:
    """Walks one function's graph; used once per (function, overrides) and thrown away.

    With ``errors`` (a list), a parameter that cannot be wired is recorded there and skipped, so one walk finds
    every wiring error of a graph (``di_tasks.testing.wiring_errors``); without it, the first error is raised.
    ``sync_to_thread`` is where a sync dependency runs when its marker does not say (the container's policy).
    """

    def __init__(
        self,
        overrides: Mapping[Any, Callable[..., Any]],
        *,
        errors: list[DITasksError] | None = None,
        lifetimes: Lifetimes | None = None,
        sync_to_thread: bool = False,
    ) -> None:
        self._overrides = overrides
        self._sync_to_thread = sync_to_thread
        self._errors = errors
        self._lifetimes = lifetimes
        self._infos: dict[Any, CallableInfo] = {}
        self._steps: list[Step] = []
        self._nodes: list[Node] = []
        self._values: list[ValueNeed] = []
        self._done: dict[tuple[Any, Lifetime], tuple[int, Node]] = {}
        self._visiting: list[Any] = []

    def _info(self, call: Callable[..., Any], path: tuple[str, ...]) -> CallableInfo:
        with contextlib.suppress(KeyError, TypeError):  # TypeError: an unhashable callable instance
            return self._infos[call]
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
        self._node(
            info, Lifetime.CALL, use_cache=False, sync_to_thread=False, path=(info.name,), nargs=nargs, hide=hide
        )
        graph = Graph(root=self._nodes[-1], nodes=tuple(self._nodes), values=tuple(self._values))
        return Plan(tuple(self._steps), graph, nargs)

    def _node(
        self,
        info: CallableInfo,
        lifetime: Lifetime,
        *,
        use_cache: bool,
        sync_to_thread: bool,
        path: tuple[str, ...],
        nargs: int = 0,
        hide: frozenset[str] = frozenset(),
        overridden: Callable[..., Any] | None = None,
    ) -> tuple[int, Node]:
        # async ones stay on the loop
        to_thread = sync_to_thread and info.kind in (Kind.SYNC, Kind.CLASS, Kind.GENERATOR)
        node = Node(info.call, info.name, info.kind, lifetime, use_cache, to_thread, path, overridden=overridden)
        self._visiting.append(info.call)
        pos, kw, kwpos = self._arguments(info, node, path, nargs, hide)
        self._visiting.pop()
        slot = len(self._steps)
        step = Step(
            info.call,
            info.kind,
            lifetime,
            use_cache and lifetime is not Lifetime.CALL,
            slot,
            pos,
            kw,
            to_thread=to_thread,
            name=info.name,
            kwpos=kwpos,
            check=info.kind is Kind.SYNC and not surely_not_awaitable(info.returns),
            path=path,
        )
        if step.app_cached and self._overrides and self._touched(node):
            # An app value built from an override must not be served once the override is gone (nor a value
            # built before it while it is active): it gets a key of its own for this set of overrides.
            overrides = sorted(self._overrides.items(), key=lambda kv: (id(kv[0]), id(kv[1])))
            step.key = (step.key, tuple((Same(k), Same(v)) for k, v in overrides))
        self._steps.append(step)
        self._nodes.append(node)
        return slot, node

    def _arguments(
        self, info: CallableInfo, node: Node, path: tuple[str, ...], nargs: int, hide: frozenset[str]
    ) -> tuple[tuple[Source, ...], tuple[tuple[str, Source], ...], int]:
        """The sources of a callable's parameters: positional-only ones, the others by name, and how many of
        those may be passed positionally (see ``Step.kwpos``)."""
        pos: list[Source] = []
        kw: list[tuple[str, Source]] = []
        skip = nargs
        kwpos, in_order = 0, True
        for p in info.params:
            if p.kind in _VAR_KINDS:
                if len(path) > 1:
                    star = "*" if p.kind is inspect.Parameter.VAR_POSITIONAL else "**"
                    raise WiringError(
                        f"parameter {star}{p.name} of {info.name} cannot be injected: dependencies are called with "
                        "their declared parameters only; give it explicit parameters",
                        path=path,
                    )
                in_order = False  # the called function's *args/**kwargs are the caller's business
            elif skip and p.kind in _POSITIONAL:
                skip -= 1  # filled by the caller's positional arguments
            elif p.name in hide:
                in_order = False
            else:
                source = self._source(p, info, node, path)
                if p.kind is inspect.Parameter.POSITIONAL_ONLY:
                    pos.append(source)
                else:
                    kw.append((p.name, source))
                    in_order = in_order and p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
                    kwpos += in_order
        return tuple(pos), tuple(kw), kwpos

    def _touched(self, node: Node) -> bool:
        """Whether an override replaced this node or anything it depends on."""
        return node.overridden is not None or any(self._touched(child) for _, child in node.dependencies)

    def _source(self, p: Param, info: CallableInfo, node: Node, path: tuple[str, ...]) -> Source:
        if self._errors is None:
            return self._find_source(p, info, node, path)
        depth = len(self._visiting)
        try:
            return self._find_source(p, info, node, path)
        except DITasksError as exc:
            del self._visiting[depth:]  # the failed subtree did not get to pop what it pushed
            self._errors.append(exc)
            return FromStep(-1)

    def _find_source(self, p: Param, info: CallableInfo, node: Node, path: tuple[str, ...]) -> Source:
        if p.marker is not None:
            node.injected.append(p.name)
            return FromStep(self._dependency(p.marker, p, info, node, path))
        special = special_of(p.annotation)
        if special is not None:
            if special is not Special.CONTAINER and node.scope is Lifetime.APP:
                what = special.value
                raise ScopeError(
                    f"parameter {p.name!r} of {info.name} asks for {what}, which belongs to the request scope, "
                    f"but {info.name} is app-scoped and outlives every request; make it request-scoped or move "
                    f"the {what} parameter to a request-scoped dependency",
                    path=path,
                )
            node.wants_tasks = node.wants_tasks or special is Special.TASKS
            node.injected.append(p.name)
            return FromScope(special)
        if p.foreign is not None and len(path) > 1:  # at the root, a framework may fill it (FastAPI's Depends)
            raise foreign_marker_error(p, info.name, path)
        need = ValueNeed(p.name, p.annotation, p.default is not EMPTY, info.name, path)
        node.values.append(need)
        self._values.append(need)
        return FromValue(p.name, _bound_type(p.annotation), p.default, need, node.scope is Lifetime.APP)

    def _target(self, marker: Dependency, p: Param, info: CallableInfo, path: tuple[str, ...]) -> Callable[..., Any]:
        if marker.dependency is not None:
            return marker.dependency
        if not isinstance(p.annotation, type):
            raise WiringError(
                f"parameter {p.name!r} of {info.name} uses Depends() without a callable, which needs a class "
                f"annotation to call, but its annotation is {p.annotation!r}; write Depends(some_function)",
                path=path,
            )
        return p.annotation

    def _replacement(self, target: Callable[..., Any]) -> Callable[..., Any]:
        """What an override puts in place of ``target``, or ``target`` itself."""
        try:
            replacement = self._overrides.get(target)
        except TypeError:  # an unhashable callable instance cannot be overridden
            return target
        return target if replacement is None else replacement

    def _lifetime(
        self, marker: Dependency, provider: Callable[..., Any], place: str, path: tuple[str, ...]
    ) -> Lifetime:
        """A dependency's lifetime: its marker's, else the one ``@provider`` declared, else request. A provider has one
        lifetime per container: another one, here or in an earlier graph, is refused with both places."""
        declared = declared_lifetime(provider)
        lifetime = Lifetime(marker.scope) if marker.scope is not None else declared or Lifetime.REQUEST
        name = qualname(provider)
        if declared is not None and lifetime is not declared:
            raise WiringError(
                f"{place} asks for {name} with scope={str(lifetime)!r}, but {name} is declared "
                f"@provider(scope={str(declared)!r}); drop scope= from this Depends, or change the declaration",
                path=path,
            )
        if self._lifetimes is None:
            return lifetime
        try:
            first, where = self._lifetimes.setdefault(provider, (lifetime, place))
        except TypeError:  # an unhashable callable instance: not tracked
            return lifetime
        if first is not lifetime:
            raise WiringError(
                f"{name} is used with two lifetimes in one container: {str(first)!r} by {where}, and "
                f"{str(lifetime)!r} by {place}; a provider has one lifetime (two would make two instances). Give "
                f"both Depends the same scope=, or declare it once with @provider(scope=...)",
                path=path,
            )
        return lifetime

    def _dependency(self, marker: Dependency, p: Param, info: CallableInfo, node: Node, path: tuple[str, ...]) -> int:
        original = self._target(marker, p, info, path)
        target = self._replacement(original)
        lifetime = self._lifetime(marker, original, f"parameter {p.name!r} of {info.name}", path)
        child_path = (*path, qualname(target))
        if node.scope.outlives(lifetime):
            raise _outlives(p, info, node, lifetime, qualname(original), child_path)
        if any(target is v for v in self._visiting):
            start = next(i for i, v in enumerate(self._visiting) if v is target)
            cycle = (*path[start:], child_path[-1])
            raise DependencyCycleError(
                f"dependency cycle: {' -> '.join(cycle)}; break it by removing one of these Depends parameters",
                path=cycle,
            )
        key = (target, lifetime)
        if marker.use_cache:
            with contextlib.suppress(KeyError, TypeError):
                slot, child = self._done[key]
                node.dependencies.append((p.name, child))
                return slot
        slot, child = self._node(
            self._info(target, child_path),
            lifetime,
            use_cache=marker.use_cache,
            sync_to_thread=self._sync_to_thread if marker.sync_to_thread is None else marker.sync_to_thread,
            path=child_path,
            overridden=original if target is not original else None,
        )
        if marker.use_cache:
            with contextlib.suppress(TypeError):
                self._done[key] = (slot, child)
        node.dependencies.append((p.name, child))
        return slot


def _outlives(
    p: Param, info: CallableInfo, node: Node, lifetime: Lifetime, written: str, path: tuple[str, ...]
) -> ScopeError:
    """The error for a dependency that would end before the one that uses it, with the marker to write."""
    child = path[-1]
    return ScopeError(
        f"{info.name} ({node.scope}-scoped) depends on {child} through parameter {p.name!r}, but {child} is "
        f"{lifetime}-scoped and would end before it; write Depends({written.rsplit('.', 1)[-1]}, "
        f"scope={str(node.scope)!r}) on parameter {p.name!r} of {info.name} (or a longer scope), or make "
        f"{info.name} shorter-lived",
        path=path,
    )
