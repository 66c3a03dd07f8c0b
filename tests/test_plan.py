"""Plans: what a solved function knows about itself before it runs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from di_tasks import BackgroundTasks, Container, Depends, Lifetime, Scope
from di_tasks._plan import FromScope, FromStep, FromValue, Special


def plain(a: int = 1) -> int:
    return a


def gen() -> Iterator[int]:
    yield 1


def plain_call(a: int = 1) -> int:
    return a


def plain_uncached(a: int = 1) -> int:
    return a


def test_lifetimes_nest_and_compare_as_the_names_users_write() -> None:
    """app outlives request outlives call, and each equals its string."""
    assert Lifetime.APP.outlives(Lifetime.REQUEST)
    assert Lifetime.REQUEST.outlives(Lifetime.CALL)
    assert not Lifetime.CALL.outlives(Lifetime.APP)
    assert not Lifetime.REQUEST.outlives(Lifetime.REQUEST)
    assert Lifetime("app") is Lifetime.APP
    assert f"{Lifetime.CALL}-scoped" == "call-scoped"


def test_argument_sources_are_named() -> None:
    """Each argument's source says what it is: an earlier step, the scope's own object, or a value."""

    def root(x: Annotated[int, Depends(plain)], tasks: BackgroundTasks, region: str = "eu") -> None: ...

    plan = Container().plan(root)
    (_, x), (_, tasks), (_, region) = plan.steps[-1].kw
    assert x == FromStep(0)
    assert tasks == FromScope(Special.TASKS)
    assert isinstance(region, FromValue)
    assert (region.name, region.default, region.app_only) == ("region", "eu", False)
    assert plan.value_sources == (plan.steps[0].kw[0][1], region)


def test_a_plan_that_hands_out_the_scope_always_reads_the_cache() -> None:
    """fresh_ok: the form without request-cache lookups may run, unless a dependency is handed the Scope."""

    def simple(x: Annotated[int, Depends(plain)]) -> int:
        return x

    def with_scope(scope: Scope) -> None: ...

    container = Container()
    assert container.plan(simple).fresh_ok
    assert not container.plan(with_scope).fresh_ok


def test_steps_know_where_their_value_lives() -> None:
    """A step is request-cached, app-cached, or not cached (call-scoped or use_cache=False)."""

    def root(
        a: Annotated[int, Depends(plain)],
        b: Annotated[int, Depends(gen, scope="app")],
        c: Annotated[int, Depends(plain_call, scope="call")],
        d: Annotated[int, Depends(plain_uncached, use_cache=False)],
    ) -> None: ...

    steps = {step.slot: step for step in Container().plan(root).steps}
    assert (steps[0].request_cached, steps[0].app_cached, steps[0].lifetime) == (True, False, Lifetime.REQUEST)
    assert (steps[1].app_cached, steps[1].generator, steps[1].lifetime) == (True, True, Lifetime.APP)
    assert (steps[2].request_cached, steps[2].lifetime) == (False, Lifetime.CALL)
    assert (steps[3].request_cached, steps[3].lifetime) == (False, Lifetime.REQUEST)
