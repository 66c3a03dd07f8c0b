"""Small helpers every layer uses: the missing-value marker and the event-loop check."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Final, Generic, TypeVar

import anyio
import anyio.lowlevel

_library_var: contextvars.ContextVar[str | None] | None
try:  # anyio names the running event loop library here when sniffio is installed (trio needs it)
    from sniffio import current_async_library_cvar as _library_var
except ImportError:  # pragma: no cover  # the test extra installs trio, which depends on sniffio
    _library_var = None

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

MISSING: Final[Any] = object()
"""Marks "no value" where ``None`` is a value (cache lookups, a worker thread's finished generator)."""


def in_event_loop() -> bool:
    """Whether this thread is running an AnyIO-supported event loop right now."""
    try:
        anyio.get_current_task()
    except RuntimeError:
        return False
    return True


async def cancelled_from_outside() -> bool:
    """Whether the running task is being cancelled from outside (a cancel scope around it, a shutdown, a deadline),
    as opposed to a cancellation error some awaited thing raised on its own (a future another task cancelled).

    On asyncio a cancellation of the task itself is counted by ``Task.cancelling()``; on both backends a cancelled
    enclosing cancel scope makes the next checkpoint raise.
    """
    if anyio.get_cancelled_exc_class() is asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            return True
    try:
        await anyio.lowlevel.checkpoint_if_cancelled()
    except anyio.get_cancelled_exc_class():
        return True
    return False


def go_on(
    step: Coroutine[Any, Any, T] | Generator[Any, Any, T], yielded: Any, context: contextvars.Context | None = None
) -> Generator[Any, Any, T]:
    """Drive ``step`` (a coroutine, or an awaitable's iterator) on after its first step, taken by hand, suspended with
    ``yielded``: each later step inside ``context`` when one is given (a task's own), else in the current context.

    Taking the first step by hand lets what finishes without suspending (a task, a teardown) cost no coroutine.
    """
    while True:
        try:
            value = yield yielded
        except BaseException as exc:  # noqa: BLE001  # forwarded into the coroutine, which decides
            try:
                yielded = step.throw(exc) if context is None else context.run(step.throw, exc)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]  # StopIteration.value is Any
        else:
            try:
                yielded = step.send(value) if context is None else context.run(step.send, value)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]  # StopIteration.value is Any


resume = types.coroutine(go_on)
"""The awaitable form of :func:`go_on`."""


async def raise_later(exc: BaseException) -> None:
    """Raise ``exc`` when awaited: an error met in the synchronous first part of a two-part operation (``Task.start``,
    a scope's flush) goes to the handlers of the awaited rest."""
    raise exc


def leave_event_loop(context: contextvars.Context) -> None:
    """Make ``context``, copied on an event loop, say that no event loop runs, for code run in it in a worker
    thread: AnyIO does the same for its own worker threads, so ``anyio.run`` works there."""
    if _library_var is not None:
        context.run(_library_var.set, None)


def is_fixed(func: object) -> bool:
    """Whether a callable is one a program defines with ``def`` or ``class`` (once, at import or in an app factory),
    as opposed to one it may make per request: a lambda, a partial, a bound method, a callable instance."""
    if inspect.isclass(func):
        return True
    return inspect.isfunction(func) and func.__name__ != "<lambda>"


class CallableCache(Generic[K, V]):
    """A cache keyed by callables that cannot grow without bound.

    Fixed callables (see :func:`is_fixed`) stay for the cache's life: a program has a bounded number of them. Others
    (per-request lambdas, partials, bound methods) go into a small first-in first-out part, so they neither pile up
    nor keep their objects (a request behind a bound method) alive for long. Unhashable callables are not kept.
    """

    __slots__ = ("fixed", "limit", "transient")

    def __init__(self, limit: int = 256) -> None:
        self.fixed: dict[K, V] = {}
        self.transient: dict[K, V] = {}
        self.limit = limit

    def get(self, key: K, make: Callable[[], V], func: object) -> V:
        """The value for ``key`` (made from ``func``), made with ``make`` on a miss and kept as ``func`` allows."""
        try:
            return self.fixed[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable callable: made every time, correct but slower
            return make()
        value = self.transient.get(key)
        if value is not None:
            return value
        value = make()
        if is_fixed(func):
            self.fixed[key] = value
        else:
            if len(self.transient) >= self.limit:
                del self.transient[next(iter(self.transient))]
            self.transient[key] = value
        return value

    def values(self) -> list[V]:
        """Every value kept."""
        return [*self.fixed.values(), *self.transient.values()]

    def __len__(self) -> int:
        return len(self.fixed) + len(self.transient)


class Same:
    """A key part that is equal only to the very same object, and keeps it alive while the key lives, so its
    ``id()`` cannot be reused by another object (as a bare ``id()`` in a long-lived key can)."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Same) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


thread_watch: contextvars.ContextVar[list[ThreadCall] | None] = contextvars.ContextVar(
    "di_tasks_thread_watch", default=None
)
"""Where a background task with dependencies collects the thread calls of its sync body (``Task.in_thread``)."""


class ThreadCall:
    """A call to run in a worker thread that can say, thread-safely, when it has returned: a caller that stopped
    waiting for it (a timeout abandoned the thread) registers what must wait until then (a teardown, a log line)."""

    __slots__ = ("_after", "_args", "_done", "_func", "_lock")

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self._func = func
        self._args = args
        self._lock = threading.Lock()
        self._done = False
        self._after: list[Callable[[], object]] = []

    def __call__(self) -> Any:
        """Run the call (in the worker thread), then what was registered with :meth:`after`."""
        try:
            return self._func(*self._args)
        finally:
            with self._lock:
                self._done = True
                after, self._after = self._after, []
            for callback in after:
                callback()

    @property
    def returned(self) -> bool:
        """Whether the call has returned (or raised)."""
        return self._done

    def after(self, callback: Callable[[], object]) -> bool:
        """Run ``callback`` in the worker thread once the call has returned; ``False`` (and nothing registered)
        if it has returned already."""
        with self._lock:
            if self._done:
                return False
            self._after.append(callback)
            return True
