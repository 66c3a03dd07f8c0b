"""The Depends marker: both forms, bad input caught where it is written."""

from typing import Annotated, Any

import pytest

from di_tasks import Container, Depends
from di_tasks._markers import Dependency

pytestmark = pytest.mark.anyio


def five() -> int:
    return 5


async def both_forms(a: Annotated[int, Depends(five)], b: int = Depends(five)) -> int:
    return a + b


async def test_annotated_and_default_forms_resolve_alike() -> None:
    """`Annotated[T, Depends(f)]` and `x: T = Depends(f)` mean the same."""
    assert await Container().call(both_forms) == 10


def test_marker_keeps_its_options_and_prints_them() -> None:
    """The marker records the callable, cache policy, scope and thread offload."""
    marker = Depends(five, use_cache=False, scope="app", sync_to_thread=True)
    assert isinstance(marker, Dependency)
    assert (marker.dependency, marker.use_cache, marker.scope, marker.sync_to_thread) == (five, False, "app", True)
    assert repr(marker) == "Depends(five, use_cache=False, scope='app')"
    assert "None" in repr(Depends())


def test_bad_markers_fail_where_they_are_written() -> None:
    """A non-callable dependency or an unknown scope is a TypeError at the Depends(...) call."""
    bad: Any = five()
    with pytest.raises(TypeError, match="pass the function itself, not the result of calling it"):
        Depends(bad)
    wrong_scope: Any = "session"
    with pytest.raises(TypeError, match="must be 'app', 'request' or 'call', got 'session'"):
        Depends(five, scope=wrong_scope)
