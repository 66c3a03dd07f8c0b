"""pytest fixtures for testing apps built on di_tasks.

pytest loads this plugin on its own (entry point ``di_tasks`` in the ``pytest11`` group) wherever di_tasks is
installed with pytest (the ``test`` extra). It only defines fixtures: no hooks, no options, no autouse fixture, so
a test that does not ask for one is untouched; loading it imports di_tasks' small core (which pytest then
rewrites for assertions, as for every plugin's package), never the testing helpers or a framework. Disable it
with ``-p no:di_tasks``. It defines no ``anyio_backend``: async tests use AnyIO's own pytest
plugin (``@pytest.mark.anyio``) with your ``anyio_backend`` fixture, on asyncio or trio.

Fixtures:
    di_container: a fresh :class:`~di_tasks.Container` per test. Override this fixture in your ``conftest.py``
        to test your app's container (``return app_container``); the other fixtures then act on it.
    di_captured: the :class:`~di_tasks.testing.CapturedTasks` of ``di_container`` for the whole test: tasks are
        recorded instead of run; ``await di_captured.run()`` (or ``di_captured.run_sync()``) runs them, after
        their scope's teardown.
    di_captured_held: the same, captured with ``hold=True``: a scope with request-scoped dependencies left to
        tear down waits in its exit until ``await di_captured_held.run()`` runs its tasks there (the request's DB
        session still open), for an async test that drives the request concurrently.
    di_override: ``di_override(target, replacement)`` overrides a dependency of ``di_container`` for the rest of
        the test; overrides stack, and all are undone when the test ends, so none leaks into the next test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from di_tasks import Container
    from di_tasks.testing import CapturedTasks

Override = Callable[[Callable[..., Any], Callable[..., Any]], None]


@pytest.fixture
def di_container() -> Container:
    """A fresh container for each test (override this fixture to use your app's container)."""
    from di_tasks import Container  # lazy: pytest loads this plugin before any test asks for a fixture

    return Container()


@pytest.fixture
def di_captured(di_container: Container) -> Iterator[CapturedTasks]:
    """The tasks queued under ``di_container`` during the test, captured instead of run."""
    from di_tasks.testing import capture_tasks  # lazy: only the tests that ask for the fixture load the helpers

    with capture_tasks(di_container) as captured:
        yield captured


@pytest.fixture
def di_captured_held(di_container: Container) -> Iterator[CapturedTasks]:
    """The tasks queued under ``di_container`` during the test, captured and held in their scope's exit until
    ``await di_captured_held.run()`` runs them there (``capture_tasks(di_container, hold=True)``)."""
    from di_tasks.testing import capture_tasks  # lazy: only the tests that ask for the fixture load the helpers

    with capture_tasks(di_container, hold=True) as captured:
        yield captured


@pytest.fixture
def di_override(di_container: Container) -> Iterator[Override]:
    """``di_override(target, replacement)``: override a dependency of ``di_container`` until the test ends."""
    with ExitStack() as stack:

        def override(target: Callable[..., Any], replacement: Callable[..., Any]) -> None:
            stack.enter_context(di_container.override(target, replacement))

        yield override
