"""The public namespace: complete, sorted, and every name documented."""

from __future__ import annotations

import types
import typing

import di_tasks


def test_all_is_sorted_and_complete() -> None:
    """`__all__` is sorted and lists exactly the public names the package defines."""
    assert list(di_tasks.__all__) == sorted(di_tasks.__all__)
    # submodules (pytest_plugin, loaded by pytest; testing, asgi) and the names pytest's assertion rewriter adds to
    # a plugin's package ("@py_builtins") are not re-exports
    public = {
        name
        for name, obj in vars(di_tasks).items()
        if not name.startswith("_") and name.isidentifier() and not isinstance(obj, types.ModuleType)
    }
    assert public == set(di_tasks.__all__)


def test_every_public_name_has_a_docstring() -> None:
    """Every exported class and function carries its own docstring (type aliases are documented in the README)."""
    for name in di_tasks.__all__:
        obj = getattr(di_tasks, name)
        if typing.get_origin(obj) is not None:
            continue
        assert (obj.__doc__ or "").strip(), name


def test_the_contract_names_are_exported() -> None:
    """The names DESIGN.md promises are importable from the top level."""
    promised = {
        "Depends",
        "BackgroundTasks",
        "Task",
        "Container",
        "Scope",
        "DITasksError",
        "DependencyCycleError",
        "MissingValueError",
        "ScopeError",
        "BackgroundTaskError",
    }
    assert promised <= set(di_tasks.__all__)
