"""What solving produces and every executor reads: steps, their argument sources, plans, teardown entries."""

from __future__ import annotations

import enum
from collections.abc import Callable, Coroutine
from typing import Any, NamedTuple

from ._graph import Graph, ValueNeed
from ._inspect import Kind
from ._markers import Lifetime


class Special(enum.Enum):
    """A parameter filled by the scope itself, found by its annotation."""

    TASKS = "BackgroundTasks"
    SCOPE = "Scope"
    CONTAINER = "Container"


_SPECIAL: dict[type, Special] = {}


def register_special(tp: type, what: Special) -> None:
    """Declare the class of a special parameter (done once by the modules that define them)."""
    _SPECIAL[tp] = what


def special_of(annotation: Any) -> Special | None:
    """The special parameter an annotation asks for, if it is one (``BackgroundTasks``, ``Scope``, ``Container``)."""
    return _SPECIAL.get(annotation) if isinstance(annotation, type) else None


class FromStep(NamedTuple):
    """An argument that is the value of an earlier step of the plan."""

    slot: int


class FromScope(NamedTuple):
    """An argument the scope provides: its collector, itself, or its container."""

    what: Special


class FromValue(NamedTuple):
    """An argument looked up by name, then by type, then its default (else ``MissingValueError`` from ``need``).

    App-scoped dependencies (``app_only``) look only in the container's own values: they outlive every request.
    """

    name: str
    bound: type | None  # the class it may be bound by (``Scope.bind``); None for builtins and non-classes
    default: Any  # ``inspect.Parameter.empty`` when there is none
    need: ValueNeed
    app_only: bool


Source = FromStep | FromScope | FromValue


class Teardown(NamedTuple):
    """A started generator dependency, to be finished when its lifetime ends."""

    gen: Any
    is_async: bool
    to_thread: bool
    name: str


class Step:
    """One call of an execution plan: what to call, with which arguments, and where its value lives."""

    __slots__ = (
        "app_cached", "call", "check", "generator", "key", "kind", "kw", "kwpos", "lifetime", "name", "path", "pos",
        "request_cached", "slot", "to_thread",
    )  # fmt: skip

    def __init__(
        self,
        call: Callable[..., Any],
        kind: Kind,
        lifetime: Lifetime,
        cached: bool,
        slot: int,
        pos: tuple[Source, ...],
        kw: tuple[tuple[str, Source], ...],
        *,
        to_thread: bool,
        name: str,
        kwpos: int = 0,
        check: bool = True,
        path: tuple[str, ...] = (),
    ) -> None:
        self.call: Callable[..., Any] = call
        self.kind: Kind = kind
        # where its value is cached (nowhere for call-scoped steps) and which exit tears a generator down
        self.lifetime: Lifetime = lifetime
        self.request_cached: bool = cached and lifetime is Lifetime.REQUEST
        self.app_cached: bool = cached and lifetime is Lifetime.APP
        self.generator: bool = kind in (Kind.GENERATOR, Kind.ASYNC_GENERATOR)
        self.slot: int = slot
        self.pos: tuple[Source, ...] = pos
        self.kw: tuple[tuple[str, Source], ...] = kw
        self.to_thread: bool = to_thread
        self.name: str = name
        self.path: tuple[str, ...] = path  # from the root to this step, for the errors raised while it runs
        # whether a sync call's result must be checked for a coroutine (see ``_inspect.surely_not_awaitable``)
        self.check: bool = check
        # How many leading ``kw`` entries may be passed positionally. A compiled plan does: CPython matches
        # keyword arguments by a scan per parameter, so a call with many of them costs quadratic time.
        self.kwpos: int = kwpos
        try:
            hash(call)
        except TypeError:  # an unhashable callable instance: cached by identity (plans keep it alive)
            self.key: Any = id(call)
        else:
            self.key = call

    def sources(self) -> tuple[Source, ...]:
        """Every argument source of the step, positional ones first."""
        return (*self.pos, *(src for _, src in self.kw))


class Plan:
    """A solved function, ready to execute many times with no introspection.

    Attributes:
        steps: the calls in dependency order; the root is last.
        graph: the solved graph.
        nargs: how many positional arguments the caller passes to the root.
        run: the compiled form (see ``_compile``), made on the plan's second execution; ``None`` before.
        run_fresh: the compiled form for a scope made for this one call, without request-cache lookups.
        fresh_ok: whether ``run_fresh`` may be used (no dependency is handed the ``Scope``).
        concurrent: whether it is resolved concurrently, in child tasks (the container's ``concurrent_resolution``,
            set when it is solved); such a plan is never compiled, so ``run`` and ``run_fresh`` stay ``None``.
        pure: whether the plan touches no scope state: no collector, ``Scope`` or ``Container`` handed out, no app
            value, no generator to tear down (see ``Container.call``).
        value_sources: every value looked up by name, checked before the first step runs.
        uses: how many times the plan ran interpreted.
        source: the compiled form's Python source, for reading and tracebacks (empty before).
        filenames: the names its compiled forms are registered under in :mod:`linecache`.
    """

    __slots__ = (
        "__weakref__", "concurrent", "filenames", "fresh_ok", "graph", "nargs", "pure", "run", "run_fresh", "source",
        "steps", "uses", "value_sources",
    )  # fmt: skip

    def __init__(self, steps: tuple[Step, ...], graph: Graph, nargs: int) -> None:
        self.steps: tuple[Step, ...] = steps
        self.graph: Graph = graph
        self.nargs: int = nargs
        self.run: Callable[..., Coroutine[Any, Any, Any]] | None = None
        self.run_fresh: Callable[..., Coroutine[Any, Any, Any]] | None = None
        self.concurrent: bool = False
        sources = [src for step in steps for src in step.sources()]
        # a missing value fails the resolution before anything is called
        self.value_sources: tuple[FromValue, ...] = tuple(src for src in sources if type(src) is FromValue)
        specials = {src.what for src in sources if type(src) is FromScope}
        # A plan may skip request-cache lookups when it runs alone in a scope made for it (Container.call, a
        # task's scope): that cache starts empty, unless a dependency is handed the Scope and calls more in it.
        self.fresh_ok: bool = Special.SCOPE not in specials
        self.pure: bool = not specials and _needs_no_state(steps, self.value_sources)
        self.filenames: list[str] = []
        self.uses: int = 0
        self.source: str = ""


def _needs_no_state(steps: tuple[Step, ...], value_sources: tuple[FromValue, ...]) -> bool:
    """Whether no step reads the app lifetime (a value or an app-scoped step) or leaves a generator to tear down."""
    return not any(src.app_only for src in value_sources) and not any(s.app_cached or s.generator for s in steps)
