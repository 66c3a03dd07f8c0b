"""FastAPI parity: equal ``Depends`` markers are equal and hash alike (upstream ``test_depends_hashable``).

Tools built on FastAPI keep markers in sets and dicts; the same must work with di_tasks' markers.
"""

import copy
import pickle

import pytest

from di_tasks import Depends


def dep() -> None:
    """A dependency to mark."""


class Unhashable:
    """A callable instance without a hash (it defines ``__eq__`` only)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unhashable)

    def __call__(self) -> int:
        return 1


def test_equal_markers_are_equal_and_hash_alike() -> None:
    """Two ``Depends(dep)`` are equal with one hash; the same holds with the same options."""
    assert Depends(dep) == Depends(dep)
    assert hash(Depends(dep)) == hash(Depends(dep))
    assert Depends(dep, scope="call") == Depends(dep, scope="call")
    assert hash(Depends(dep, scope="call")) == hash(Depends(dep, scope="call"))
    assert Depends() == Depends()
    assert len({Depends(dep), Depends(dep), Depends(dep, use_cache=False)}) == 2


def test_markers_that_differ_are_not_equal() -> None:
    """A different callable or any different option makes a different marker (and, here, a different hash)."""
    base = Depends(dep)
    others = [
        Depends(dep, scope="call"),
        Depends(dep, scope="app"),
        Depends(dep, use_cache=False),
        Depends(dep, sync_to_thread=True),
        Depends(len),
        Depends(),
    ]
    assert all(base != other for other in others)
    assert hash(base) != hash(Depends(dep, scope="call"))
    assert base != dep
    assert base != "Depends(dep)"


def test_a_marker_of_an_unhashable_callable_still_hashes() -> None:
    """An unhashable callable instance does not make its marker unhashable; equal markers still hash alike."""
    assert Depends(Unhashable()) == Depends(Unhashable())
    assert hash(Depends(Unhashable())) == hash(Depends(Unhashable()))


def test_markers_are_immutable_values() -> None:
    """Assignment is refused (the hash must not change), and copies and pickles are equal to the original."""
    marker = Depends(dep, scope="app")
    with pytest.raises(AttributeError, match="markers are immutable; write a new Depends"):
        marker.scope = "call"
    with pytest.raises(AttributeError, match="markers are immutable; scope cannot be deleted"):
        del marker.scope
    assert copy.copy(marker) == marker
    assert copy.deepcopy(marker) == marker
    assert pickle.loads(pickle.dumps(marker)) == marker
