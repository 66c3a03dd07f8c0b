"""Opt-in concurrent resolution: independent async dependencies of one call run at the same time.

Turned on with ``Container(concurrent_resolution=True)``; off by default, because dependencies then run in
child tasks (a context variable a dependency sets is not seen by the function called) and their order is
no longer the plan's.

The rules (those of dishka#45's discussion and ``di``'s concurrent executor):

- a step starts once every step it depends on has finished, so a dependency shared by several others (the
  diamond) is still computed once;
- plain sync dependencies run inline as soon as they are ready (a task would only add cost); async
  dependencies, async generators, app-scoped values and dependencies sent to a thread get a task each;
- the first failure cancels the steps still running, the error propagates as itself (not wrapped in an
  ``ExceptionGroup``), and whatever was set up is torn down: call-scoped generators here, request-scoped
  ones when the scope exits, as always;
- no task outlives the resolution: the function called runs after the task group has closed, in the
  caller's own task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from ._inspect import Kind
from ._plan import FromStep, Plan, Step, Teardown
from ._run import RootThread, check_values, end_call, interpret, resolve, start_end_call

if TYPE_CHECKING:
    from ._scope import Scope


def _inline(step: Step) -> bool:
    """Whether a step never waits (a sync call on the event loop), so it gains nothing from a task."""
    return not step.app_cached and not step.to_thread and step.kind in (Kind.SYNC, Kind.CLASS, Kind.GENERATOR)


def worth_it(plan: Plan) -> bool:
    """Whether at least two steps other than the root may wait, so running them concurrently can help."""
    return sum(1 for step in plan.steps[:-1] if not _inline(step)) >= 2


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to raise for a failed task group: the first failure that is not a cancellation.

    The task group wraps what its tasks raised, as they raised it (an ``ExceptionGroup`` a dependency raises
    stays one), so unwrapping one level gives the dependency's own error back.
    """
    cancelled = anyio.get_cancelled_exc_class()
    for exc in group.exceptions:
        if not isinstance(exc, cancelled):
            return exc
    return group.exceptions[0]


async def resolve_concurrently(
    plan: Plan, scope: Scope, args: tuple[Any, ...], values: dict[str, Any], root_thread: RootThread = None
) -> Any:
    """Execute ``plan`` like ``_run.interpret``, with independent waiting steps running concurrently; each step
    runs through ``_run.resolve``, as in the interpreter.

    Raises:
        BaseException: the first failure of a step, once the other steps are cancelled and call-scoped
            generators torn down.
    """
    if not worth_it(plan):
        return await interpret(plan, scope, args, values, root_thread)
    check_values(plan, scope, values)
    steps = plan.steps
    last = len(steps) - 1
    results: list[Any] = [None] * len(steps)
    call_stack: list[Teardown] = []
    waiting, dependents = _dependency_counts(steps)

    async def run(step: Step, tg: anyio.abc.TaskGroup) -> None:
        results[step.slot] = await resolve(step, results, scope, values, args, root_thread, last, call_stack)
        ready = [steps[j] for j in dependents[step.slot] if _done_waiting(waiting, j)]
        await start(ready, tg)

    async def start(ready: list[Step], tg: anyio.abc.TaskGroup) -> None:
        for step in ready:
            if _inline(step):
                await run(step, tg)  # never suspends: runs to completion before the next one starts
            else:
                tg.start_soon(run, step, tg, name=f"di_tasks: {step.name}")

    try:
        try:
            async with anyio.create_task_group() as tg:
                await start([s for s in steps[:-1] if waiting[s.slot] == 0], tg)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        results[last] = await resolve(steps[last], results, scope, values, args, root_thread, last, call_stack)
    except BaseException as exc:
        await end_call(call_stack, exc)
        raise
    if (ending := start_end_call(call_stack)) is not None:
        await ending
    return results[last]


def _dependency_counts(steps: tuple[Step, ...]) -> tuple[list[int], list[list[int]]]:
    """For each step but the root: how many steps it waits for, and which steps wait for it."""
    waiting = [0] * len(steps)
    dependents: list[list[int]] = [[] for _ in steps]
    for step in steps[:-1]:
        needs = {src.slot for src in step.sources() if type(src) is FromStep}
        waiting[step.slot] = len(needs)
        for slot in needs:
            dependents[slot].append(step.slot)
    return waiting, dependents


def _done_waiting(waiting: list[int], slot: int) -> bool:
    waiting[slot] -= 1
    return waiting[slot] == 0
