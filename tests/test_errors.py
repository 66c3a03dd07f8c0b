"""The error hierarchy: one base, paths printed as a -> b -> c, BackgroundTaskError as a group."""

import pytest

from di_tasks import (
    BackgroundTaskError,
    DependencyCycleError,
    DITasksError,
    MissingValueError,
    ScopeError,
    WiringError,
)


def test_every_error_is_a_di_tasks_error_with_a_path() -> None:
    """Each class derives from DITasksError and prints its path."""
    for cls in (WiringError, DependencyCycleError, ScopeError):
        error = cls("broken", path=("a", "b", "c"))
        assert isinstance(error, DITasksError)
        assert error.path == ("a", "b", "c")
        assert "dependency path: a -> b -> c" in str(error)
    missing = MissingValueError("no value", parameter="x", function="f", path=("f",))
    assert (missing.parameter, missing.function, missing.path) == ("x", "f", ("f",))
    assert DITasksError("plain").path == ()
    assert str(DITasksError("plain")) == "plain"


def test_background_task_error_is_an_exception_group_that_splits_by_type() -> None:
    """`except*` splits it and each part keeps the class."""
    group = BackgroundTaskError("2 failed", [ValueError("a"), KeyError("b")])
    assert isinstance(group, ExceptionGroup)
    assert isinstance(group, DITasksError)
    assert group.path == ()
    assert group.tasks == ()
    parts: list[BaseException] = []
    with pytest.raises(BackgroundTaskError, match="2 failed") as info:
        try:
            raise group
        except* ValueError as values:
            parts.append(values)
            raise
    assert len(info.value.exceptions) == 2
    assert isinstance(parts[0], BackgroundTaskError)
    assert len(parts[0].exceptions) == 1
