"""Solving: every wiring error at solve time, with its path; optionally all of them in one walk."""

from typing import Annotated

import pytest

from di_tasks import Container, Depends, DITasksError, ScopeError, WiringError
from di_tasks._solver import Solver, solve


def request_value() -> int:
    return 1


def app_value(r: Annotated[int, Depends(request_value)]) -> int:
    return r


def broken(*args: int) -> int:
    return 0


def root(
    a: Annotated[int, Depends(app_value, scope="app")],
    b: Annotated[int, Depends(broken)],
) -> int:
    return a + b


def test_the_first_error_is_raised_with_its_path() -> None:
    """Without an error list, solving stops at the first wiring error, with the fix and the path."""
    with pytest.raises(ScopeError, match=r"write Depends\(request_value, scope='app'\)") as info:
        solve({}, root, 0)
    assert [name.rsplit(".", 1)[-1] for name in info.value.path] == ["root", "app_value", "request_value"]


def test_an_error_list_collects_every_error_and_goes_on() -> None:
    """With an error list, each broken parameter is recorded and the walk goes on to the next."""
    errors: list[DITasksError] = []
    Solver({}, errors=errors).solve(root, 0)
    assert [type(e) for e in errors] == [ScopeError, WiringError]
    assert "parameter *args of" in str(errors[1])


def test_a_graph_deeper_than_the_recursion_limit_is_a_wiring_error() -> None:
    """A chain too deep to walk fails with a WiringError that says how to raise the limit."""
    import sys

    funcs = [request_value]
    for _ in range(sys.getrecursionlimit()):
        prev = funcs[-1]

        def nxt(x: int = Depends(prev)) -> int:
            return x

        funcs.append(nxt)
    with pytest.raises(WiringError, match=r"deeper than Python's recursion limit.*sys\.setrecursionlimit"):
        Container().solve(funcs[-1])
