"""The package's functions stay simple enough to read: none ranks D or worse, at most five rank C (radon cc)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import di_tasks

# radon ships no type information: its two functions, typed here
_radon: Any = importlib.import_module("radon.complexity")
cc_visit = cast("Callable[[str], list[Any]]", _radon.cc_visit)
cc_rank = cast("Callable[[int], str]", _radon.cc_rank)

PACKAGE = Path(di_tasks.__file__).parent
MOST_C = 5


def _ranks() -> dict[str, str]:
    """Each function's and method's radon rank, by ``module:name``."""
    ranks: dict[str, str] = {}
    for path in sorted(PACKAGE.glob("*.py")):
        for block in cc_visit(path.read_text()):
            for item in getattr(block, "methods", [block]):  # a class block is ranked by its methods
                ranks[f"{path.stem}:{item.fullname}"] = cc_rank(item.complexity)
    return ranks


def test_no_function_ranks_d_or_worse() -> None:
    """No function or method of the package ranks D, E or F."""
    assert {name: rank for name, rank in _ranks().items() if rank > "C"} == {}


def test_at_most_five_functions_rank_c() -> None:
    """At most five functions or methods rank C; the rest are A or B."""
    ranked_c = sorted(name for name, rank in _ranks().items() if rank == "C")
    assert len(ranked_c) <= MOST_C, ranked_c


def test_ranks_are_read() -> None:
    """The walk sees the package's functions (so the tests above can fail)."""
    ranks = _ranks()
    assert "_scope:Scope.close" in ranks
    assert set(ranks.values()) <= set("ABCDEF")
