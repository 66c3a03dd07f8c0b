"""Plan compilation: turn a solved plan into one straight-line async function, generated as Python source.

Interpreting a plan costs a loop iteration, a list of results and a dispatch on every argument source per step. A
compiled plan is the code one would write by hand: each step's value is a local variable, each argument is written
out in the call, and only the checks a step needs are emitted. What a step does is defined once, in ``_run``: the
plain call, the await and the generator start are written inline here exactly as :func:`_run.produce` and
:func:`_run.enter_generator` do them, and everything else (thread hops, app values, value fallbacks, errors,
teardown) calls the same helpers the interpreter calls. Tests run both executors on the same plans.

The source is kept on ``Plan.source`` and registered with :mod:`linecache` while the plan lives, so tracebacks
through a compiled plan show its lines.
"""

from __future__ import annotations

import functools
import itertools
import linecache
import types
import weakref
from collections.abc import Callable, Collection, Coroutine, Generator, Iterable
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import anyio.to_thread

from ._inspect import EMPTY, Kind
from ._markers import Lifetime
from ._plan import FromScope, FromStep, FromValue, Plan, Source, Special, Step, Teardown
from ._run import end_call, enter_generator, fallback, no_yield, returned_coroutine, start_end_call
from ._util import MISSING

if TYPE_CHECKING:
    from ._scope import Scope

CompiledPlan = Callable[["Scope", tuple[Any, ...], dict[str, Any], Any], Coroutine[Any, Any, Any]]
"""``run(scope, args, values, root_thread)``: the signature shared by every compiled plan."""

_counter = itertools.count()
_SPECIAL_NAMES = {Special.TASKS: "tasks", Special.SCOPE: "scope", Special.CONTAINER: "container"}


_new_tuple = cast(
    "Callable[[type[Teardown], tuple[Any, ...]], Teardown]",
    tuple.__new__,  # pyright: ignore[reportUnknownMemberType]  # typeshed's tuple.__new__ is generic
)
"""Makes a Teardown at C speed: a NamedTuple's own ``__new__`` is a Python function, twice the cost."""


class Code:
    """A small code builder: lines at the current depth, blocks that indent for you, and the objects they name."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 0
        self.namespace: dict[str, Any] = {
            "MISSING": MISSING,
            "CoroutineType": types.CoroutineType,
            "Teardown": Teardown,
            "new_tuple": _new_tuple,
            "returned_coroutine": returned_coroutine,
            "no_yield": no_yield,
            "fallback": fallback,
            "partial": functools.partial,
            "run_sync": anyio.to_thread.run_sync,
            "end_call": end_call,
            "start_end_call": start_end_call,
            "enter_generator": enter_generator,
        }

    def line(self, text: str) -> None:
        """Add one line at the current depth."""
        self.lines.append("    " * self.depth + text)

    @contextmanager
    def block(self, header: str) -> Generator[None]:
        """Add ``header`` and indent what is added inside the ``with``."""
        self.line(header)
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def ref(self, name: str, obj: Any) -> str:
        """Make ``obj`` reachable from the generated code as ``name``."""
        self.namespace[name] = obj
        return name

    def source(self) -> str:
        """The source written so far."""
        return "\n".join(self.lines) + "\n"


_STACKS = {Lifetime.CALL: "call_stack", Lifetime.REQUEST: "exit_stack", Lifetime.APP: "app_stack"}
_PROLOGUE: tuple[tuple[str, str], ...] = (
    ("container", "container = scope.container"),
    ("app", "app = container.app"),
    ("app_cache", "app_cache = app.cache"),
    ("app_values", "app_values = container.values"),
    ("cache", "cache = scope.cache"),
    ("tasks", "tasks = scope.tasks"),
    ("exit_stack", "exit_stack = scope.exit_stack"),
)
"""The scope state a compiled plan may read, each bound once per call, in an order that respects what reads what."""


def _source_locals(src: Source) -> tuple[str, ...]:
    """The prologue locals one argument reads (``scope`` itself is the function's parameter)."""
    if type(src) is FromScope:
        return (_SPECIAL_NAMES[src.what],)
    if type(src) is FromValue:
        return ("app_values",) if src.app_only else ()
    return ()


def _step_locals(step: Step) -> tuple[str, ...]:
    """The prologue locals one step reads for its cache and its teardown."""
    if step.app_cached:
        return ("app_cache",)
    stack = (_STACKS[step.lifetime],) if step.generator else ()
    return (*stack, "cache") if step.request_cached else stack


def _locals(plan: Plan) -> set[str]:
    """The names of the prologue's locals the steps of ``plan`` read, and the locals those are read from."""
    needed = {name for step in plan.steps for name in _step_locals(step)}
    needed.update(name for step in plan.steps for src in step.sources() for name in _source_locals(src))
    if needed & {"app_cache", "app_stack"}:
        needed.add("app")
    if needed & {"app", "app_values"}:
        needed.add("container")
    return needed


def _prologue(code: Code, plan: Plan, *, stores: bool) -> None:
    """Bind, once per call, the scope state the steps read (``stores``: whether any step uses the cache)."""
    needed = _locals(plan)
    if not stores:
        needed.discard("cache")
    for name, line in _PROLOGUE:
        if name in needed:
            code.line(line)
    if "app_stack" in needed:  # an uncached app-scoped generator: torn down at app exit, if the app is open
        first = next(s for s in plan.steps if s.generator and s.lifetime is Lifetime.APP and not s.app_cached)
        code.line(f"app_stack = app.exit_stack({code.ref(f's{first.slot}', first)})")


def generate(plan: Plan, *, fresh: bool = False, shared: Collection[Any] = ()) -> tuple[str, dict[str, Any]]:
    """Write the source of ``plan``'s compiled function and the namespace it runs in.

    With ``fresh``, request-scoped steps do not look their value up in the scope's cache, only fill it: the form
    for a scope made for this one call, whose cache is empty when it starts (within the plan, shared steps are
    already one), and fills it only with the dependencies in ``shared``: those an injected function of the container
    also asks for (it resolves in the same scope, and must get the same value). Nothing else can read a scope made
    for one call, and a store per step is a fifth of a small resolution's cost.

    Returns:
        ``(source, namespace)``; the source defines ``async def run(scope, args, values, root_thread)``.
    """
    code = Code()
    steps = plan.steps
    last = len(steps) - 1
    with code.block("async def run(scope, args, values, root_thread):"):
        variant = ", for a fresh scope" if fresh else ""
        code.line(f'"""Compiled plan of {steps[-1].name}: {len(steps)} step(s){variant}."""')
        stores = not fresh or any(_shared(plan, step, shared) for step in steps if step.request_cached)
        _prologue(code, plan, stores=stores)
        if any(s.generator and s.lifetime is Lifetime.CALL for s in steps):
            code.line("call_stack = []")
            with code.block("try:"):
                _body(code, plan, fresh=fresh, shared=shared)
            with code.block("except BaseException as exc:"):
                code.line("await end_call(call_stack, exc)")
                code.line("raise")
            with code.block("if (ending := start_end_call(call_stack)) is not None:"):
                code.line("await ending")
        else:
            _body(code, plan, fresh=fresh, shared=shared)
        code.line(f"return v{last}")
    return code.source(), code.namespace


def _body(code: Code, plan: Plan, *, fresh: bool, shared: Collection[Any]) -> None:
    # Every value lookup first, so a missing value fails before any step runs (as ``_run.check_values`` does).
    for step in plan.steps:
        _value_lookups(code, step)
    last = len(plan.steps) - 1
    for step in plan.steps:
        store = not fresh or _shared(plan, step, shared)
        _step(code, step, plan.nargs if step.slot == last else None, fresh=fresh, store=store)


def _arguments(step: Step, nargs: int | None) -> list[tuple[str | None, str]]:
    """``(keyword or None, expression)`` of each argument of ``step``, in call order (``nargs`` for the root)."""
    out: list[tuple[str | None, str]] = [(None, "*args")] if nargs else []
    # leading keyword parameters that may go positionally do (see ``Step.kwpos``)
    named: list[tuple[str | None, Source]] = [(None, src) for src in step.pos]
    named += [(None, src) for _, src in step.kw[: step.kwpos]]
    named += list(step.kw[step.kwpos :])
    for j, (name, src) in enumerate(named):
        if type(src) is FromStep:
            out.append((name, f"v{src.slot}"))
        elif type(src) is FromScope:
            out.append((name, _SPECIAL_NAMES[src.what]))
        else:
            out.append((name, f"a{step.slot}_{j}"))
    return out


def _value_lookups(code: Code, step: Step) -> None:
    """The lookups of ``step``'s values by name (then by type, then default: ``_run.fallback``)."""
    named = [*step.pos, *(src for _, src in step.kw[: step.kwpos]), *(src for _, src in step.kw[step.kwpos :])]
    for j, src in enumerate(named):
        if type(src) is FromValue:
            var = f"a{step.slot}_{j}"
            # a value missing by name is looked up by type in the scope (read then: rarely) or, for an app-scoped
            # dependency, in nothing
            lookup, bound = ("app_values", "{}") if src.app_only else ("values", "scope.types")
            if src.bound is None and src.default is not EMPTY:  # what fallback gives: never bound by type, a default
                code.line(f"{var} = {lookup}.get({src.name!r}, {code.ref(f'd{step.slot}_{j}', src.default)})")
                continue
            code.line(f"{var} = {lookup}.get({src.name!r}, MISSING)")
            with code.block(f"if {var} is MISSING:"):
                code.line(f"{var} = fallback({code.ref(f'src{step.slot}_{j}', src)}, {bound})")


def _call(arguments: list[tuple[str | None, str]]) -> str:
    return ", ".join(expr if name is None else f"{name}={expr}" for name, expr in arguments)


def _prepared(arguments: list[tuple[str | None, str]]) -> str:
    """The ``[positional], {keyword: value}`` pair handed to helpers that take a prepared call."""
    pos = ", ".join(expr for name, expr in arguments if name is None)
    kw = ", ".join(f"{name!r}: {expr}" for name, expr in arguments if name is not None)
    return f"[{pos}], {{{kw}}}"


def _shared(plan: Plan, step: Step, shared: Collection[Any]) -> bool:
    """Whether an injected function may ask for ``step``'s value (by its callable, or the one it overrides)."""
    overridden = plan.graph.nodes[step.slot].overridden
    return step.key in shared or (overridden is not None and overridden in shared)


def _step(code: Code, step: Step, nargs: int | None, *, fresh: bool, store: bool) -> None:
    i = step.slot
    call = code.ref(f"c{i}", step.call)
    key = call if step.key is step.call else code.ref(f"k{i}", step.key)
    ref = code.ref(f"s{i}", step)
    v = f"v{i}"
    arguments = _arguments(step, nargs)
    request_cached = step.request_cached and store
    cached = "request-cached" if request_cached else "app-cached" if step.app_cached else "not cached"
    code.line(f"# step {i}: {step.name} ({step.kind.value}, {cached}{', in a thread' if step.to_thread else ''})")
    if step.app_cached:
        with code.block(f"if {key} in app_cache:"):
            code.line(f"{v} = app_cache[{key}]")
        with code.block("else:"):
            code.line(f"{v} = await app.value({ref}, {_prepared(arguments)})")
        return
    if request_cached and not fresh:
        # ``key in cache`` first: a miss (the common case, a fresh scope) costs less than ``cache.get``
        with code.block(f"if {key} in cache:"):
            code.line(f"{v} = cache[{key}]")
        with code.block("else:"):
            _produce(code, step, call, ref, arguments, root=nargs is not None)
            code.line(f"cache[{key}] = {v}")
        return
    _produce(code, step, call, ref, arguments, root=nargs is not None)
    if request_cached:
        code.line(f"cache[{key}] = {v}")


def _produce(
    code: Code, step: Step, call: str, ref: str, arguments: list[tuple[str | None, str]], *, root: bool
) -> None:
    """The inline form of ``_run.produce`` for one step (its branches, in its order)."""
    v = f"v{step.slot}"
    args = _call(arguments)
    if step.kind is Kind.ASYNC:
        code.line(f"{v} = await {call}({args})")
        return
    if step.generator:
        stack = _STACKS[step.lifetime]
        if step.to_thread:
            code.line(f"{v} = await enter_generator({ref}, {_prepared(arguments)}, {stack})")
            return
        is_async = step.kind is Kind.ASYNC_GENERATOR
        code.line(f"g{step.slot} = {call}({args})")
        with code.block("try:"):
            code.line(f"{v} = await g{step.slot}.__anext__()" if is_async else f"{v} = next(g{step.slot})")
        with code.block(f"except {'StopAsyncIteration' if is_async else 'StopIteration'}:"):
            code.line(f"raise no_yield({ref}) from None")
        code.line(f"{stack}.append(new_tuple(Teardown, (g{step.slot}, {is_async}, False, {ref}.name)))")
        return
    if step.to_thread:
        code.line(f"{v} = await run_sync(partial({call}, {args}))")
    elif root:
        with code.block("if root_thread is None:"):
            code.line(f"{v} = {call}({args})")
        with code.block("else:"):
            code.line(f"{v} = await root_thread(partial({call}, {args}))")
    else:
        code.line(f"{v} = {call}({args})")
    if step.check:
        with code.block(f"if type({v}) is CoroutineType:"):
            code.line(f"returned_coroutine({v}, {ref})")


def forget(plans: Iterable[Plan]) -> None:
    """Drop the linecache entries of compiled plans that are thrown away (e.g. when an override ends)."""
    for plan in plans:
        _forget(plan.filenames)


def _forget(filenames: list[str]) -> None:
    for filename in filenames:
        linecache.cache.pop(filename, None)


def compile_plan(plan: Plan, *, fresh: bool = False, shared: Collection[Any] = ()) -> CompiledPlan:
    """Compile ``plan`` into an async function ``run(scope, args, values, root_thread)``.

    Its source is stored on ``plan.source`` and registered with :mod:`linecache` for tracebacks until the plan is
    garbage-collected. With ``fresh``, the form for a scope made for this call alone (see :func:`generate`).
    """
    source, namespace = generate(plan, fresh=fresh, shared=shared)
    filename = f"<di_tasks plan {plan.steps[-1].name} #{next(_counter)}>"
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102  # our own generated source, no user text
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    if not plan.filenames:  # the plan's linecache entries go with it (a container's plans die with the container)
        weakref.finalize(plan, _forget, plan.filenames)
    plan.filenames.append(filename)
    plan.source = source
    run: CompiledPlan = namespace["run"]
    return run
