"""The error hierarchy: one base class, structured attributes, messages that say how to fix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._tasks import Task


def format_path(path: Sequence[str]) -> str:
    """Render a dependency path as ``a -> b -> c``."""
    return " -> ".join(path)


class DITasksError(Exception):
    """Base class of every error raised by di_tasks.

    Attributes:
        path: the dependency path from the root function to the place of the error,
            as qualified names (empty where no path applies).
    """

    def __init__(self, message: str, *, path: Sequence[str] = ()) -> None:
        self.path: tuple[str, ...] = tuple(path)
        if self.path:
            message = f"{message}\n  dependency path: {format_path(self.path)}"
        super().__init__(message)


class WiringError(DITasksError):
    """A function's signature cannot be used for injection (raised at solve time)."""


class DependencyCycleError(DITasksError):
    """The dependency graph has a cycle; ``.path`` starts and ends at the repeated node."""


class MissingValueError(DITasksError):
    """A parameter has no marker, special type, given value, bound type or default.

    Attributes:
        parameter: the name of the parameter that could not be filled.
        function: the qualified name of the function that declares it.
    """

    def __init__(self, message: str, *, parameter: str, function: str, path: Sequence[str] = ()) -> None:
        self.parameter = parameter
        self.function = function
        super().__init__(message, path=path)


class ScopeError(DITasksError):
    """A lifetime rule is broken: a longer-lived dependency needs a shorter-lived one, or a scope is used
    outside its lifetime."""


class BackgroundTaskError(DITasksError, ExceptionGroup):
    """One or more background tasks failed; ``.exceptions`` holds every failure, ``.tasks`` the tasks.

    It is both a :class:`DITasksError` and an :class:`ExceptionGroup`, so ``except*`` works on it.
    """

    tasks: tuple[Task, ...]

    def __new__(
        cls, message: str, exceptions: Sequence[Exception], *, tasks: Sequence[Task] = ()
    ) -> BackgroundTaskError:
        self = ExceptionGroup.__new__(cls, message, exceptions)
        self.tasks = tuple(tasks)
        self.path = ()
        return self

    def __init__(self, message: str, exceptions: Sequence[Exception], *, tasks: Sequence[Task] = ()) -> None:
        ExceptionGroup.__init__(self, message, exceptions)

    @classmethod
    def of(cls, message: str, failed: Sequence[Task]) -> BackgroundTaskError:
        """The error for ``failed`` tasks: each task's exception, or, for one that ended in a ``BaseException`` that
        is not an ``Exception`` (a cancellation error of its own), a :class:`DITasksError` caused by it."""
        exceptions: list[Exception] = []
        for task in failed:
            exc = task.exception
            if not isinstance(exc, Exception):
                wrapped = DITasksError(f"background task {task.name} raised {type(exc).__name__}")
                wrapped.__cause__ = exc
                exc = wrapped
            exceptions.append(exc)
        return cls(message, exceptions, tasks=failed)

    def derive(self, excs: Sequence[Exception]) -> BackgroundTaskError:  # type: ignore[override]  # narrower than the group's on purpose
        """Keep the class when ``except*`` splits the group."""
        kept = [t for t in self.tasks if t.exception in excs]
        return BackgroundTaskError(self.message, excs, tasks=kept)
