"""The app lifetime: app-scoped values, created once while the container is entered and torn down at its exit."""

from __future__ import annotations

import threading
from contextvars import ContextVar
from typing import Any

import anyio
import anyio.lowlevel

from ._errors import DependencyCycleError, ScopeError
from ._inspect import Kind
from ._plan import Step, Teardown
from ._run import produce, unwind

_creating: ContextVar[frozenset[Any]] = ContextVar("di_tasks.creating", default=frozenset())
"""The app values the running code is creating: creation calls that reach one of them again are a cycle."""


class AppLifetime:
    """A container's app lifetime (``async with container``), shared by every thread and event loop using it.

    Entries are counted: the lifetime opens at the first entry and closes, tearing app-scoped generators down
    last-in first-out, at the last exit. A container may be shared by several threads, each running its own event
    loop (``Container.run`` in threads), so a thread lock guards it: no loop-bound lock fits.

    Attributes:
        cache: app-scoped values created so far, by step key.
    """

    __slots__ = ("_agen_loop", "_entered", "_exit_stack", "_guard", "_loops", "_pending", "cache")

    def __init__(self) -> None:
        self.cache: dict[Any, Any] = {}
        self._exit_stack: list[Teardown] = []
        self._guard = threading.Lock()
        self._pending: dict[Any, threading.Event] = {}
        self._entered = 0
        self._loops: dict[object, int] = {}  # the event loops holding the lifetime, with their entry counts
        self._agen_loop: object | None = None  # the loop that runs an app-scoped async generator, if any

    @property
    def is_open(self) -> bool:
        """Whether the lifetime is entered at least once."""
        return self._entered > 0

    def enter(self) -> None:
        """Count one entry from the running event loop.

        Raises:
            ScopeError: an app-scoped async generator of another event loop lives in it.
        """
        loop = anyio.lowlevel.current_token()
        with self._guard:
            owner = self._agen_loop
            if owner is not None and owner != loop:
                raise ScopeError(
                    "the container's app lifetime holds an async generator dependency run by another event loop, "
                    "which closes it when that loop ends; a second loop cannot share it. Give each thread's event "
                    "loop a container of its own, or make that dependency a sync generator"
                )
            self._entered += 1
            self._loops[loop] = self._loops.get(loop, 0) + 1

    async def exit(self, exc: BaseException | None) -> None:
        """Count one exit; the last one tears the app-scoped generators down and forgets the values.

        Raises:
            ScopeError: more exits than entries.
            BaseException: what a teardown raised.
        """
        loop = anyio.lowlevel.current_token()
        with self._guard:
            if not self._entered:
                raise ScopeError("the container's app lifetime was exited more often than it was entered")
            self._entered -= 1
            if self._loops.get(loop, 0) > 1:
                self._loops[loop] -= 1
            else:
                self._loops.pop(loop, None)
            if self._entered:
                return
            stack, self._exit_stack = self._exit_stack, []
            self.cache.clear()
            self._agen_loop = None
        error = await unwind(stack, exc)
        if error is not None and error is not exc:
            raise error

    def _require_open(self, step: Step) -> None:
        if not self._entered:
            raise ScopeError(
                f"{step.name} is app-scoped, but the container's app lifetime is not open; wrap the app in "
                "'async with container:' (the ASGI middleware does this on lifespan startup, Container.run does "
                "it for you)",
                path=step.path,
            )

    def exit_stack(self, step: Step) -> list[Teardown]:
        """The teardown stack of the app's exit, for a generator step that lives until then.

        Raises:
            ScopeError: the lifetime is not open.
        """
        self._require_open(step)
        return self._exit_stack

    def _claim_for_async_generator(self, step: Step) -> None:
        """An async generator is closed by the event loop that first ran it when that loop ends, so an app-scoped
        one may only live in a lifetime that a single loop holds."""
        loop = anyio.lowlevel.current_token()
        with self._guard:
            if any(other != loop for other in self._loops):
                raise ScopeError(
                    f"{step.name} is an app-scoped async generator, but several event loops (threads) hold the "
                    "container's app lifetime, and the loop that runs it would close it when it ends; give each "
                    "thread's event loop a container of its own, or make it a sync generator",
                    path=step.path,
                )
            self._agen_loop = loop

    async def value(self, step: Step, pos: list[Any], kw: dict[str, Any]) -> Any:
        """The app-cached value of ``step``, made from ``pos`` and ``kw`` by its first user.

        Concurrent first uses create it once: the first caller (in any thread or loop) makes it, the others poll
        until it is there (first use only, so polling costs nothing later).

        Raises:
            ScopeError: the lifetime is not open.
        """
        self._require_open(step)
        while True:
            with self._guard:
                try:
                    return self.cache[step.key]
                except KeyError:
                    pass
                pending = self._pending.get(step.key)
                if pending is None:
                    pending = self._pending[step.key] = threading.Event()
                    break
            if step.key in _creating.get():  # asked for again by its own creation: waiting would never end
                raise _reentered(step)
            while not pending.is_set():  # noqa: ASYNC110  # the creator may run on another loop: no anyio.Event
                await anyio.sleep(0.001)
        token = _creating.set(_creating.get() | {step.key})
        try:
            if step.kind is Kind.ASYNC_GENERATOR:
                self._claim_for_async_generator(step)
            value = await produce(step, pos, kw, self._exit_stack, None)
            with self._guard:
                self.cache[step.key] = value
            return value
        finally:
            _creating.reset(token)
            with self._guard:
                del self._pending[step.key]
            pending.set()


def _reentered(step: Step) -> DependencyCycleError:
    return DependencyCycleError(
        f"{step.name} is app-scoped and is needed again while it is being created: creating it calls into the "
        "container (container.call, an injected function) and reaches it again, which would wait forever. Break "
        "the loop: pass what the creation needs as a parameter, or create the other value lazily, after startup",
        path=(*step.path, step.name) if step.path[-1:] != (step.name,) else step.path,
    )
