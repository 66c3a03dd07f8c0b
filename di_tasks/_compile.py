"""Plan compilation: turn a solved plan into one straight-line async function, generated as Python source.

Interpreting a plan costs a loop iteration, a list of results and a dispatch on every argument source per
step. A compiled plan is the code one would write by hand: each step's value is a local variable, each
argument is written out in the call, and only the checks a step needs (its cache, a coroutine returned by a
sync function, a generator that does not yield) are emitted. The semantics are those of
``_scope.interpret``, which stays the reference: tests run both on the same plans.

The source is kept on ``Plan.source`` and registered with :mod:`linecache`, so tracebacks through a
compiled plan show its lines.
"""

from __future__ import annotations

import functools
import itertools
import linecache
import types
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Final

import anyio.to_thread

from ._errors import DITasksError
from ._inspect import EMPTY, Kind
from ._solve import (
    APP_VALUE,
    CACHE_APP,
    CACHE_REQUEST,
    CONTAINER,
    SCOPE,
    SLOT,
    TASKS,
    TEARDOWN_APP,
    TEARDOWN_CALL,
    TEARDOWN_REQUEST,
    VALUE,
    Plan,
    Step,
)

if TYPE_CHECKING:
    from ._scope import Scope

CompiledPlan = Callable[["Scope", tuple[Any, ...], dict[str, Any], Any], Coroutine[Any, Any, Any]]
"""``run(scope, args, values, root_thread)``: the signature shared by every compiled plan."""

MISSING: Final[Any] = object()
_counter = itertools.count()


def returned_coroutine(value: Any, step: Step) -> None:
    """Close the coroutine a sync dependency returned and raise the error that says how to fix it."""
    from ._scope import returned_coroutine_error

    value.close()
    raise returned_coroutine_error(step)


def no_yield(step: Step) -> DITasksError:
    """The error for a generator dependency that returned without yielding."""
    from ._scope import no_yield_error

    return no_yield_error(step)


def fallback(src: tuple[Any, ...], types_: dict[type, Any]) -> Any:
    """A value not given by name: bound by type, else the default, else ``MissingValueError``."""
    from ._scope import _missing

    bound = src[2]
    if bound is not None:
        value = types_.get(bound, MISSING)
        if value is not MISSING:
            return value
    if src[3] is EMPTY:
        raise _missing(src[4])
    return src[3]


class _Writer:
    """Collects source lines and the objects they refer to."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {
            "MISSING": MISSING,
            "CoroutineType": types.CoroutineType,
            "returned_coroutine": returned_coroutine,
            "no_yield": no_yield,
            "fallback": fallback,
            "partial": functools.partial,
            "run_sync": anyio.to_thread.run_sync,
            "unwind": _unwind,
            "setup_generator": _setup_generator,
        }

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def ref(self, name: str, obj: Any) -> str:
        self.namespace[name] = obj
        return name


def _unwind(stack: list[Any], exc: BaseException | None) -> Any:
    from ._scope import unwind

    return unwind(stack, exc)


def _setup_generator(step: Step, call: Callable[..., Any], pos: list[Any], kw: dict[str, Any], stack: list[Any]) -> Any:
    from ._scope import setup_generator

    return setup_generator(step, call, pos, kw, stack)


def _uses_call_stack(step: Step) -> bool:
    return (
        step.cache != CACHE_APP
        and step.teardown == TEARDOWN_CALL
        and step.kind in (Kind.GENERATOR, Kind.ASYNC_GENERATOR)
    )


def generate(plan: Plan, *, fresh: bool = False) -> tuple[str, dict[str, Any]]:
    """Write the source of ``plan``'s compiled function and the namespace it runs in.

    With ``fresh``, request-scoped steps do not look their value up in the scope's cache, only fill it: the form
    for a scope made for this one call, whose cache is empty when it starts (within the plan, shared steps are
    already one). Filling it still matters: an injected helper the function calls resolves in the same scope. A
    pure plan (see ``Plan.pure``) run fresh neither reads nor fills it: it runs without a scope of its own.

    Returns:
        ``(source, namespace)``; the source defines ``async def run(scope, args, values, root_thread)``.
    """
    w = _Writer()
    steps = plan.steps
    last = len(steps) - 1
    call_stack = any(_uses_call_stack(s) for s in steps)
    sources = [src for s in steps for src in (*s.pos, *(src for _, src in s.kw))]
    codes = {src[0] for src in sources}

    w.emit(0, "async def run(scope, args, values, root_thread):")
    variant = ", for a fresh scope" if fresh else ""
    w.emit(1, f'"""Compiled plan of {steps[-1].name}: {len(steps)} step(s){variant}."""')
    if CACHE_APP in {s.cache for s in steps} or CONTAINER in codes or APP_VALUE in codes:
        w.emit(1, "container = scope.container")
    # a pure plan run fresh gets no scope of its own (Container.call), so nothing could read what it stored
    store = not (fresh and plan.pure)
    if CACHE_REQUEST in {s.cache for s in steps} and store:
        w.emit(1, "cache = scope.cache")
    if VALUE in codes:
        w.emit(1, "types_ = scope.types")
    if TASKS in codes:
        w.emit(1, "tasks = scope.tasks")
    generators = [s for s in steps if s.kind in (Kind.GENERATOR, Kind.ASYNC_GENERATOR) and s.cache != CACHE_APP]
    if any(s.teardown == TEARDOWN_REQUEST for s in generators):
        w.emit(1, "teardown = scope._teardown")
    for s in generators:
        if s.teardown == TEARDOWN_APP:  # an uncached app-scoped generator: torn down at app exit
            w.emit(1, f"app_stack = scope.container._app_stack({w.ref(f's{s.slot}', s)})")
            break
    depth = 1
    if call_stack:
        w.emit(1, "call_stack = []")
        w.emit(1, "try:")
        depth = 2
    # Every value lookup first, so a missing value fails before any step runs (as ``interpret`` checks).
    for step in steps:
        _args(w, depth, step, step.slot == last, plan.nargs)
    for step in steps:
        _step(w, depth, step, step.slot == last, plan.nargs, fresh, store)
    if call_stack:
        w.emit(1, "except BaseException as exc:")
        w.emit(2, "if call_stack:")
        w.emit(3, "error = await unwind(call_stack, exc)")
        w.emit(3, "if error is not exc and error is not None:")
        w.emit(4, "raise error from None")
        w.emit(2, "raise")
        w.emit(1, "if call_stack:")
        w.emit(2, "error = await unwind(call_stack, None)")
        w.emit(2, "if error is not None:")
        w.emit(3, "raise error")
    w.emit(1, f"return v{last}")
    return "\n".join(w.lines) + "\n", w.namespace


def _args(
    w: _Writer, depth: int, step: Step, root: bool, nargs: int, *, emit: bool = True
) -> list[tuple[str | None, str]]:
    """Emit the lookups of ``step``'s value arguments (unless ``emit`` is false: they were emitted already);
    return ``(keyword or None, expression)`` in call order."""
    out: list[tuple[str | None, str]] = [(None, "*args")] if root and nargs else []
    i = step.slot
    # leading keyword parameters that may go positionally do (see ``Step.kwpos``)
    named = (
        [(None, src) for src in step.pos]
        + [(None, src) for _, src in step.kw[: step.kwpos]]
        + list(step.kw[step.kwpos :])
    )
    for j, (name, src) in enumerate(named):
        code = src[0]
        if code == SLOT:
            expr = f"v{src[1]}"
        elif code == TASKS:
            expr = "tasks"
        elif code == SCOPE:
            expr = "scope"
        elif code == CONTAINER:
            expr = "container"
        else:
            ref = w.ref(f"src{i}_{j}", src)
            expr = f"a{i}_{j}"
            if not emit:
                out.append((name, expr))
                continue
            lookup = "values" if code == VALUE else "container._values"
            w.emit(depth, f"{expr} = {lookup}.get({src[1]!r}, MISSING)")
            w.emit(depth, f"if {expr} is MISSING:")
            w.emit(depth + 1, f"{expr} = fallback({ref}, {'types_' if code == VALUE else '{}'})")
        out.append((name, expr))
    return out


def _call_args(args: list[tuple[str | None, str]]) -> str:
    return ", ".join(expr if name is None else f"{name}={expr}" for name, expr in args)


def _list_dict(args: list[tuple[str | None, str]]) -> str:
    """The ``[positional], {keyword: value}`` pair handed to helpers that take a prepared call."""
    pos = ", ".join(expr for name, expr in args if name is None)
    kw = ", ".join(f"{name!r}: {expr}" for name, expr in args if name is not None)
    return f"[{pos}], {{{kw}}}"


def _step(w: _Writer, depth: int, step: Step, root: bool, nargs: int, fresh: bool = False, store: bool = True) -> None:
    i = step.slot
    request_cached = step.cache == CACHE_REQUEST and store
    look_up = request_cached and not fresh
    call = w.ref(f"c{i}", step.call)
    key = call if step.key is step.call else w.ref(f"k{i}", step.key)
    ref = w.ref(f"s{i}", step)
    v = f"v{i}"
    cache = "request-cached" if request_cached else "app-cached" if step.cache == CACHE_APP else "not cached"
    w.emit(depth, f"# step {i}: {step.name} ({step.kind.value}, {cache}{', in a thread' if step.to_thread else ''})")
    # ``key in cache`` first: a miss (the common case, a fresh scope) costs less than ``cache.get``
    if look_up:
        w.emit(depth, f"if {key} in cache:")
        w.emit(depth + 1, f"{v} = cache[{key}]")
        w.emit(depth, "else:")
        depth += 1
    elif step.cache == CACHE_APP:
        w.emit(depth, f"if {key} in container._app_cache:")
        w.emit(depth + 1, f"{v} = container._app_cache[{key}]")
        w.emit(depth, "else:")
        prepared = _list_dict(_args(w, depth + 1, step, root, nargs, emit=False))
        w.emit(depth + 1, f"{v} = await container._app_value({ref}, {prepared})")
        return
    arglist = _args(w, depth, step, root, nargs, emit=False)
    args = _call_args(arglist)
    kind = step.kind
    if kind is Kind.ASYNC:
        w.emit(depth, f"{v} = await {call}({args})")
    elif kind is Kind.SYNC or kind is Kind.CLASS:
        if step.to_thread:
            w.emit(depth, f"{v} = await run_sync(partial({call}, {args}))")
        elif root:
            w.emit(depth, "if root_thread is None:")
            w.emit(depth + 1, f"{v} = {call}({args})")
            w.emit(depth, "else:")
            w.emit(depth + 1, f"{v} = await root_thread(partial({call}, {args}))")
        else:
            w.emit(depth, f"{v} = {call}({args})")
        if step.check:
            w.emit(depth, f"if type({v}) is CoroutineType:")
            w.emit(depth + 1, f"returned_coroutine({v}, {ref})")
    else:
        stack = (
            "call_stack" if _uses_call_stack(step) else "teardown" if step.teardown == TEARDOWN_REQUEST else "app_stack"
        )
        is_async = kind is Kind.ASYNC_GENERATOR
        if step.to_thread:
            w.emit(depth, f"{v} = await setup_generator({ref}, {call}, {_list_dict(arglist)}, {stack})")
        else:
            w.emit(depth, f"g{i} = {call}({args})")
            w.emit(depth, "try:")
            w.emit(depth + 1, f"{v} = await g{i}.__anext__()" if is_async else f"{v} = next(g{i})")
            w.emit(depth, f"except {'StopAsyncIteration' if is_async else 'StopIteration'}:")
            w.emit(depth + 1, f"raise no_yield({ref}) from None")
            w.emit(depth, f"{stack}.append((g{i}, {is_async}, False, {ref}.name))")
    if request_cached:
        w.emit(depth, f"cache[{key}] = {v}")


def forget(plans: Iterable[Plan]) -> None:
    """Drop the linecache entries of compiled plans that are thrown away (e.g. when an override ends)."""
    for plan in plans:
        for filename in plan.filenames:
            linecache.cache.pop(filename, None)


def compile_plan(plan: Plan, *, fresh: bool = False) -> CompiledPlan:
    """Compile ``plan`` into an async function ``run(scope, args, values, root_thread)``.

    Its source is stored on ``plan.source`` and registered with :mod:`linecache` for tracebacks.
    With ``fresh``, the form for a scope made for this call alone (see :func:`generate`).
    """
    source, namespace = generate(plan, fresh=fresh)
    filename = f"<di_tasks plan {plan.steps[-1].name} #{next(_counter)}>"
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102  # our own generated source, no user text
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    plan.filenames.append(filename)
    plan.source = source
    run: CompiledPlan = namespace["run"]
    return run
