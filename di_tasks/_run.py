"""How one step of a plan runs: the one definition every executor uses.

A step's value comes from its cache (request or app), else from calling it with its arguments: a plain call, an
await, a hop to a worker thread, or a generator started now and finished when its lifetime ends. The interpreter
below (:func:`interpret`), the concurrent executor (``_concurrent``) and the app lifetime (``_app``) run steps
through :func:`resolve` and :func:`produce`; the compiled form (``_compile``) writes the plain call and the
generator start inline and calls the helpers here for everything else (teardown, errors, value fallbacks), and the
tests run every executor on the same plans and compare.
"""

from __future__ import annotations

import functools
import logging
import types
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn

import anyio

from ._errors import DITasksError, MissingValueError
from ._graph import ValueNeed
from ._inspect import EMPTY, Kind
from ._markers import Lifetime
from ._plan import FromScope, FromStep, FromValue, Plan, Source, Special, Step, Teardown
from ._util import MISSING, cancelled_from_outside, raise_later, resume

if TYPE_CHECKING:  # executors are handed a scope; they read its public state only
    from ._scope import Scope

logger = logging.getLogger("di_tasks")

RootThread = Callable[[Callable[[], Any]], Any] | None
"""How the root step's sync function is called when it must not run on the loop (a sync task's body): an async
callable taking a no-argument function, or ``None`` to call it inline."""


# -- errors ----------------------------------------------------------------------------------------------------


def missing_value(need: ValueNeed, *, app_only: bool = False) -> MissingValueError:
    """The error for a value found by no name, no bound type and no default.

    ``app_only``: the parameter belongs to an app-scoped dependency, which sees only the container's values (a
    value given to one request must not outlive it), so a value passed to the request was not looked at.
    """
    if app_only:
        return MissingValueError(
            f"no value for parameter {need.name!r} of {need.function}: {need.function} is app-scoped (created once "
            "and shared by every request), so it sees only the values given to Container(...), never the values "
            f"of a request or call, even if {need.name}=... was passed there. Give "
            f"Container(values={{{need.name!r}: ...}}), or make {need.function} request-scoped (Depends(...) "
            "without scope='app') to use the request's value",
            parameter=need.name,
            function=need.function,
            path=need.path,
        )
    bindable = (
        isinstance(need.annotation, type) and need.annotation.__module__ != "builtins" and need.annotation is not EMPTY
    )
    hint = f"{need.annotation.__name__} " if bindable else ""
    return MissingValueError(
        f"no value for parameter {need.name!r} of {need.function}: it has no Depends marker, no default, and no "
        f"{hint}value was given by name{' or bound by type' if hint else ''}. Pass {need.name}=... to "
        "call()/run()/scope(), give the parameter a default, or declare it with Depends(...)",
        parameter=need.name,
        function=need.function,
        path=need.path,
    )


def returned_coroutine(value: Any, step: Step) -> NoReturn:
    """Close the coroutine a plain function returned (it would be injected unawaited) and say how to fix it."""
    value.close()
    raise DITasksError(
        f"{step.name} is a plain function but returned a coroutine; declare it with 'async def' so it is awaited",
        path=step.path,
    )


def no_yield(step: Step) -> DITasksError:
    """The error for a generator dependency that returned without yielding."""
    return DITasksError(
        f"generator dependency {step.name} returned without yielding; it must yield exactly one value", path=step.path
    )


# -- arguments -------------------------------------------------------------------------------------------------


def fallback(src: FromValue, bound_values: dict[type, Any]) -> Any:
    """A value not given by name: bound by type, else the default, else ``MissingValueError``."""
    if src.bound is not None:
        value = bound_values.get(src.bound, MISSING)
        if value is not MISSING:
            return value
    if src.default is EMPTY:
        raise missing_value(src.need, app_only=src.app_only)
    return src.default


def special(scope: Scope, what: Special) -> Any:
    """The scope's own object a special parameter asks for."""
    if what is Special.TASKS:
        return scope.tasks
    if what is Special.SCOPE:
        return scope
    return scope.container


def lookup(src: Source, results: list[Any], scope: Scope, values: dict[str, Any]) -> Any:
    """The value of one argument source: an earlier step's value, the scope's own object, or a value."""
    if type(src) is FromStep:
        return results[src.slot]
    if type(src) is FromScope:
        return special(scope, src.what)
    assert type(src) is FromValue  # the three kinds of source, not user input
    if src.app_only:  # an app-scoped dependency outlives the request: the container's values only
        value = scope.container.values.get(src.name, MISSING)
        return fallback(src, {}) if value is MISSING else value
    value = values.get(src.name, MISSING)
    return fallback(src, scope.types) if value is MISSING else value


def check_values(plan: Plan, scope: Scope, values: dict[str, Any]) -> None:
    """Raise ``MissingValueError`` for the first value the plan cannot find, before any step runs."""
    for src in plan.value_sources:
        lookup(src, [], scope, values)


# -- generators ------------------------------------------------------------------------------------------------


def next_or_done(gen: Any) -> Any:
    """``next(gen)`` for worker threads: StopIteration cannot cross into a coroutine, so return ``MISSING``."""
    try:
        return next(gen)
    except StopIteration:
        return MISSING


def throw_or_done(gen: Any, exc: BaseException) -> Any:
    """``gen.throw(exc)`` for worker threads: a generator that handles the error and returns gives ``MISSING``."""
    try:
        return gen.throw(exc)
    except StopIteration:
        return MISSING


async def enter_generator(step: Step, pos: list[Any], kw: dict[str, Any], stack: list[Teardown]) -> Any:
    """Start a generator dependency, push its teardown on ``stack``, and return the value it yields."""
    gen = step.call(*pos, **kw)
    is_async = step.kind is Kind.ASYNC_GENERATOR
    try:
        if is_async:
            value = await gen.__anext__()
        elif step.to_thread:
            value = await anyio.to_thread.run_sync(next_or_done, gen)
            if value is MISSING:
                raise StopIteration
        else:
            value = next(gen)
    except (StopIteration, StopAsyncIteration):
        raise no_yield(step) from None
    stack.append(Teardown(gen, is_async, step.to_thread, step.name))
    return value


async def _finish(entry: Teardown, exc: BaseException | None) -> BaseException | None:
    """Run one generator past its ``yield`` (throwing ``exc`` in); return the error to go on with: ``exc``, or one
    saying it yielded again. An async one with no exception to throw in is finished by :func:`unwind` itself."""
    gen = entry.gen
    try:
        if entry.is_async:
            assert exc is not None  # unwind's own branch takes the other case
            await gen.athrow(exc)
        elif entry.to_thread:
            if exc is None:
                done = await anyio.to_thread.run_sync(next_or_done, gen)
            else:
                done = await anyio.to_thread.run_sync(throw_or_done, gen, exc)
            if done is MISSING:
                return exc
        elif exc is None:
            next(gen)
        else:
            gen.throw(exc)
    except (StopIteration, StopAsyncIteration):
        return exc
    if entry.is_async:
        await gen.aclose()
    else:
        gen.close()
    return _yielded_again(entry, exc)


def _yielded_again(entry: Teardown, exc: BaseException | None) -> BaseException:
    """The error for a generator that yielded a second value (it was closed), chained to the current one."""
    error = DITasksError(
        f"generator dependency {entry.name} yielded more than once; a dependency must yield exactly one value"
    )
    error.__context__ = exc
    return error


async def unwind(
    stack: list[Teardown], exc: BaseException | None, started: tuple[Teardown, Awaitable[object]] | None = None
) -> BaseException | None:
    """Tear generators down last-in first-out; return the exception to raise afterwards (if any).

    The body's exception is thrown into each generator so it can react, but a generator cannot swallow it:
    suppressing an error in teardown would hide it from the caller. An exception raised by a teardown replaces the
    current one (chained) and is passed on to the next teardowns. ``started``: a teardown :func:`start_unwind` began
    (already off the stack) and what to await for the rest of its step.
    """
    while stack or started is not None:
        (entry, step), started = started or _next_teardown(stack, exc), None
        try:
            if step is not None:  # the common teardown, awaited here and not in a coroutine of its own
                await step
                await entry.gen.aclose()  # it yielded again
                exc = _yielded_again(entry, exc)
            else:
                exc = await _finish(entry, exc)
        except StopAsyncIteration:  # the async generator finished, as it should (_finish catches its own)
            pass
        except anyio.get_cancelled_exc_class() as cancelled:
            if cancelled is not exc and await cancelled_from_outside():
                return await _unwind_shielded(stack, exc, cancelled, entry)
            exc = cancelled
        except BaseException as new:  # noqa: BLE001  # the teardown's own error replaces the current one
            exc = new
    return exc


def _next_teardown(stack: list[Teardown], exc: BaseException | None) -> tuple[Teardown, Awaitable[object] | None]:
    """The next generator to tear down, and its step when it is an async one with no exception to throw in."""
    entry = stack.pop()
    return entry, (entry.gen.__anext__() if exc is None and entry.is_async else None)


def start_unwind(stack: list[Teardown]) -> Coroutine[Any, Any, BaseException | None] | None:
    """Begin ``unwind(stack, None)`` without a coroutine: tear down, last-in first-out, each generator whose teardown
    ends at once, as it should (an async one that does not suspend, a sync one not run in a thread). At the first that
    does anything else, return what goes on with it and the rest (await it for the error to raise); ``None`` when the
    stack is empty, with nothing to raise."""
    while stack:
        if stack[-1].to_thread:  # a worker thread is waited for
            return unwind(stack, None)
        started = _start_teardown(stack.pop())
        if started is not None:
            return unwind(stack, None, started)
    return None


def _start_teardown(entry: Teardown) -> tuple[Teardown, Awaitable[object]] | None:
    """Take a teardown's first step by hand: ``None`` if the generator ended there, as it should; else the entry and
    what :func:`unwind` awaits in place of its step (the rest of a step that suspended, or what it raised)."""
    gen = entry.gen
    try:
        if not entry.is_async:
            next(gen)
        else:
            step = gen.__anext__()
            return entry, resume(step, step.send(None))  # it suspended: unwind goes on with it
    except StopAsyncIteration:
        return None
    except StopIteration:  # a sync generator ended; an async one yielded again, which unwind reports
        return None if not entry.is_async else (entry, _yielded_value())
    except BaseException as exc:  # noqa: BLE001  # the teardown's own error: unwind handles it as an awaited one's
        return entry, raise_later(exc)
    gen.close()  # the sync generator yielded again
    return entry, raise_later(_yielded_again(entry, None))


async def _yielded_value() -> None:
    """What an async generator's step that yielded a value (instead of ending) gives when awaited: nothing."""


async def _unwind_shielded(
    stack: list[Teardown], exc: BaseException | None, cancelled: BaseException, interrupted: Teardown
) -> BaseException:
    """A cancellation from outside interrupted a teardown: every teardown after it still starts, shielded, as if
    nothing happened (a connection still goes back to its pool); then the cancellation propagates."""
    logger.warning(
        "the teardown of %s was cancelled; %d teardown(s) after it ran shielded from the cancellation",
        interrupted.name,
        len(stack),
    )
    error: BaseException | None = None  # bound on every path (a CancelScope may, to a checker, swallow)
    with anyio.CancelScope(shield=True):
        error = await unwind(stack, exc)
    if error is not None and error is not exc:
        logger.error("a teardown failed after a cancelled one", exc_info=error)
    return cancelled


async def end_call(call_stack: list[Teardown], exc: BaseException) -> None:
    """Tear the call-scoped generators down when the call raised ``exc`` (:func:`start_end_call` when it returned);
    raise what a teardown raised instead of ``exc`` (which the caller re-raises otherwise)."""
    if call_stack:
        error = await unwind(call_stack, exc)
        if error is not None and error is not exc:
            raise error from None  # chained to the body's error through __context__


def start_end_call(call_stack: list[Teardown]) -> Coroutine[Any, Any, None] | None:
    """``end_call(call_stack, None)``, the end of a call that returned, begun without a coroutine (see
    :func:`start_unwind`): ``None`` when every call-scoped generator was torn down at once, as it should be; else what
    finishes the teardown (await it: it raises what a teardown raised)."""
    unwinding = start_unwind(call_stack)
    return None if unwinding is None else _raise_what(unwinding)


async def _raise_what(unwinding: Awaitable[BaseException | None]) -> None:
    error = await unwinding
    if error is not None:
        raise error


def exit_stack_of(step: Step, scope: Scope, call_stack: list[Teardown]) -> list[Teardown]:
    """Where a generator step's teardown goes: the call's, the request scope's or the app's exit."""
    if step.lifetime is Lifetime.CALL:
        return call_stack
    if step.lifetime is Lifetime.REQUEST:
        return scope.exit_stack
    return scope.container.app.exit_stack(step)  # an uncached app-scoped generator: torn down at app exit


# -- a step ----------------------------------------------------------------------------------------------------


async def produce(
    step: Step, pos: list[Any], kw: dict[str, Any], stack: list[Teardown], root_thread: RootThread
) -> Any:
    """Make a step's value from its arguments: the call, the await, the thread hop, the generator set-up and the
    coroutine check. ``root_thread`` is given for the root step only."""
    kind = step.kind
    if kind is Kind.ASYNC:
        return await step.call(*pos, **kw)
    if step.generator:
        return await enter_generator(step, pos, kw, stack)
    if step.to_thread:
        value = await anyio.to_thread.run_sync(functools.partial(step.call, *pos, **kw))
    elif root_thread is not None:
        value = await root_thread(functools.partial(step.call, *pos, **kw))
    else:
        value = step.call(*pos, **kw)
    if step.check and type(value) is types.CoroutineType:
        returned_coroutine(value, step)
    return value


def cached(step: Step, scope: Scope) -> Any:
    """The value cached for ``step`` in its lifetime (request or app), or ``MISSING``."""
    if step.request_cached:
        return scope.cache.get(step.key, MISSING)
    if step.app_cached:
        return scope.container.app.cache.get(step.key, MISSING)
    return MISSING


async def resolve(
    step: Step,
    results: list[Any],
    scope: Scope,
    values: dict[str, Any],
    args: tuple[Any, ...],
    root_thread: RootThread,
    last: int,
    call_stack: list[Teardown],
) -> Any:
    """A step's value from the earlier ``results``: its cache, its arguments, :func:`produce`, its cache again."""
    value = cached(step, scope)
    if value is not MISSING:
        return value
    pos = [lookup(src, results, scope, values) for src in step.pos]
    kw = {name: lookup(src, results, scope, values) for name, src in step.kw}
    root = step.slot == last
    if root and args:
        pos[:0] = args
    if step.app_cached:
        return await scope.container.app.value(step, pos, kw)
    value = await produce(step, pos, kw, exit_stack_of(step, scope, call_stack), root_thread if root else None)
    if step.request_cached:
        scope.cache[step.key] = value
    return value


async def interpret(
    plan: Plan, scope: Scope, args: tuple[Any, ...], values: dict[str, Any], root_thread: RootThread = None
) -> Any:
    """The reference executor: walk the plan's steps in a loop (what the compiled form does in straight lines)."""
    results: list[Any] = [None] * len(plan.steps)
    call_stack: list[Teardown] = []
    last = len(plan.steps) - 1
    check_values(plan, scope, values)
    try:
        for step in plan.steps:
            results[step.slot] = await resolve(step, results, scope, values, args, root_thread, last, call_stack)
    except BaseException as exc:
        await end_call(call_stack, exc)
        raise
    if (ending := start_end_call(call_stack)) is not None:
        await ending
    return results[last]
