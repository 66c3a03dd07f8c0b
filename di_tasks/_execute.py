"""Choosing the executor of one resolution: interpreted, compiled or concurrent."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Final

from ._compile import compile_plan
from ._concurrent import resolve_concurrently
from ._plan import Plan
from ._run import RootThread, interpret

if TYPE_CHECKING:
    from ._scope import Scope

COMPILE_AFTER: Final = 2
"""A plan is compiled on its second execution: a plan solved for a single call (an unhashable callable is
solved at every call) never pays for compiling."""


def execute(
    plan: Plan,
    scope: Scope,
    args: tuple[Any, ...],
    values: dict[str, Any],
    root_thread: RootThread = None,
    *,
    fresh: bool = False,
) -> Coroutine[Any, Any, Any]:
    """Run a plan in ``scope``: compute every step in order, then call the root with the caller's ``args``.

    Returns the coroutine of the executor directly (no extra frame per resolution); await it. The first execution
    of a plan is interpreted, later ones run the compiled form (see ``_compile``). ``fresh`` says the scope was
    made for this call alone, so the form without request-cache lookups may run. Call-scoped generators are torn
    down before the coroutine returns.
    """
    if plan.concurrent:  # never compiled: see Plan
        return resolve_concurrently(plan, scope, args, values, root_thread)
    if args and not plan.nargs:  # extra positional arguments the plan was not solved for: prepend them
        return interpret(plan, scope, args, values, root_thread)
    fresh = fresh and plan.fresh_ok
    run = plan.run_fresh if fresh else plan.run
    if run is None:
        plan.uses += 1
        if plan.uses < COMPILE_AFTER:
            return interpret(plan, scope, args, values, root_thread)
        run = compile_plan(plan, fresh=fresh, shared=scope.container.shared)
        if fresh:
            plan.run_fresh = run
        else:
            plan.run = run
    return run(scope, args, values, root_thread)
