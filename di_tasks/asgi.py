"""ASGI integration: one request scope per HTTP request or WebSocket connection, exited after the response.

``ScopeMiddleware`` is plain ASGI and imports no framework, so it wraps a Starlette, FastAPI, Litestar or hand-written
ASGI app alike. Functions decorated with :meth:`Container.inject` resolve their dependencies in the scope it opens.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import anyio
from anyio.abc import TaskGroup

from ._container import Container
from ._scope import Scope, current_scope
from ._tasks import TaskState

__all__ = ("ScopeMiddleware",)

logger: Final = logging.getLogger("di_tasks")

ASGIScope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]
"""Any ASGI application (typed loosely so every framework's own ``Scope`` types are accepted)."""


class ScopeMiddleware:
    """Open a request scope for each HTTP request and WebSocket connection; exit it after the response.

    The scope is current (``current_scope``) while the app handles the request, so endpoints decorated with
    :meth:`Container.inject` and every dependency they resolve share it, and tasks added at any depth go into its
    one collector. Each task's log lines name the request (``GET /path``).

    When the app has returned (for HTTP: the last body chunk has gone through ``send``), the scope exits in the
    documented order: flush the tasks, tear down request-scoped dependencies, flush tasks added during teardown.
    With lifespan support from the server, that exit runs in a task group owned by the lifespan, so the request's
    ASGI call returns at once and the client never waits for a task. Without it, the exit runs inline after the app
    returns. If the app raises, the scope exits with the error: pending tasks are not run (and are logged) unless the
    container says ``run_tasks_on_error``, and the error propagates to the server.

    Lifespan: on startup the container is entered (``async with container``: app-scoped dependencies live until
    shutdown). On shutdown, running exits are awaited for up to ``shutdown_timeout`` seconds, then cancelled; each
    task cancelled is logged by name; then the container is closed. Other scope types pass through untouched.

    A failing task never reaches the server: it is logged on the ``di_tasks`` logger with its name, the request and
    the traceback, and passed to the container's ``on_task_error`` hook; the other tasks still run.
    """

    def __init__(
        self, app: ASGIApp, *, container: Container, shutdown_timeout: float = 10.0, max_pending_exits: int = 256
    ) -> None:
        """Wrap ``app``.

        Args:
            app: the ASGI application.
            container: the container whose scopes are opened.
            shutdown_timeout: seconds lifespan shutdown waits for running flushes before cancelling them. A sync
                task in a worker thread cannot be interrupted: at the timeout each one is logged at WARNING (name and
                request) and shutdown waits until it returns, because request-scoped dependencies it may use are
                torn down after it. Give the container a ``task_timeout`` to bound it (the thread is then left to
                finish on its own, and its return is logged).

            max_pending_exits: how many request scopes may wait in the lifespan's task group for their tasks at once.
                Past that, a request's scope exits inline after its response was sent, as without lifespan: the
                client already has its response, but that connection's ASGI call ends only after the tasks ran.
                This is the backpressure that keeps background work from piling up under a saturating load.

        Raises:
            ValueError: ``shutdown_timeout`` is negative, or ``max_pending_exits`` is less than 1.
        """
        if shutdown_timeout < 0:
            raise ValueError(
                f"ScopeMiddleware(shutdown_timeout=...) must be 0 or more seconds, got {shutdown_timeout!r}"
            )
        if max_pending_exits < 1:
            raise ValueError(f"ScopeMiddleware(max_pending_exits=...) must be at least 1, got {max_pending_exits!r}")
        self.max_pending_exits = max_pending_exits
        self.app = app
        self.container = container
        self.shutdown_timeout = shutdown_timeout
        self._task_group: TaskGroup | None = None
        self._exiting: dict[anyio.CancelScope, Scope] = {}
        self._idle: anyio.Event | None = None
        self._cancelled_at_shutdown = 0
        # An observer that reports the backlog (``di_tasks.otel.TaskTelemetry``) is told of each middleware of its
        # container: frameworks construct the middleware themselves, so the user never holds it.
        watch = getattr(container.task_observer, "watch_middleware", None)
        if watch is not None:
            watch(self)

    @property
    def pending_exits(self) -> int:
        """How many request scopes wait in the lifespan's task group for their tasks now (the backlog that
        ``max_pending_exits`` bounds)."""
        return len(self._exiting)

    @property
    def cancelled_at_shutdown(self) -> int:
        """How many background tasks lifespan shutdown has cancelled so far (running, or before they started)."""
        return self._cancelled_at_shutdown

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection (see the class docstring)."""
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            await self._request(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _request(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        # closed on every path below (or abandoned and logged at shutdown): no garbage-collection guard needed
        request_scope = Scope(self.container, {**self.container.values})
        method = scope["method"] if scope["type"] == "http" else "WEBSOCKET"
        request_scope.label = f"{method} {scope.get('path', '')}"
        status: list[int] = []

        async def send_and_watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        token = current_scope.set(request_scope)
        try:
            await self.app(scope, receive, send_and_watch if scope["type"] == "http" else send)
        except BaseException as exc:
            current_scope.reset(token)
            await _close(request_scope, exc)
            raise
        current_scope.reset(token)
        # An injected call failed and the framework turned its error into a response: the body raised. If the app
        # answered with a success status anyway, the endpoint caught its helper's error: the body did not raise.
        error = request_scope.body_error
        if error is not None and status and status[0] < 400:
            error = None
        task_group = self._task_group
        if task_group is None or len(self._exiting) >= self.max_pending_exits:  # no lifespan, or backpressure
            await _close(request_scope, error)
        else:
            # registered before the task starts, so a shutdown right now still waits for (or cancels) it
            cancel_scope = anyio.CancelScope()
            self._exiting[cancel_scope] = request_scope
            name = f"di_tasks exit of {request_scope.label}"
            task_group.start_soon(self._exit, cancel_scope, request_scope, error, name=name)

    async def _exit(self, cancel_scope: anyio.CancelScope, request_scope: Scope, error: BaseException | None) -> None:
        """Exit a request scope in the lifespan's task group; shutdown may cancel it (see ``_drain``)."""
        with cancel_scope:
            try:
                await _close(request_scope, error)
            finally:
                del self._exiting[cancel_scope]
                if not self._exiting and self._idle is not None:
                    self._idle.set()
        if cancel_scope.cancelled_caught:
            for task in request_scope.tasks.all:
                if task.state is TaskState.CANCELLED:
                    self._cancelled_at_shutdown += 1
                    logger.warning(
                        "shutdown: background task %s was cancelled %s",
                        task.display_name,
                        f"after waiting {self.shutdown_timeout}s for it to finish"
                        if task.exception is not None
                        else "before it started",
                        extra={"task_name": task.name, "task_label": task.label, "task_state": "cancelled"},
                    )

    async def _drain(self) -> None:
        """Wait up to ``shutdown_timeout`` for running exits, then cancel what is left and wait for that."""
        task_group, self._task_group = self._task_group, None  # later exits run inline
        if task_group is None or not self._exiting:
            return
        self._idle = anyio.Event()
        with anyio.move_on_after(self.shutdown_timeout):
            await self._idle.wait()
        if self._exiting:
            self._warn_uninterruptible()
            for cancel_scope in list(self._exiting):
                cancel_scope.cancel()
            await self._idle.wait()

    def _warn_uninterruptible(self) -> None:
        """At the shutdown timeout, name each task that cancelling will not stop: a sync function in a worker thread
        with no ``timeout`` (a task with one stops being waited for, and its thread's return is logged). Shutdown
        still waits for it, since the request's resources it uses are torn down after it returns."""
        for request_scope in list(self._exiting.values()):
            for task in request_scope.tasks.all:
                if task.in_thread and task.timeout is None:
                    logger.warning(
                        "shutdown: background task %s still runs in a worker thread after %ss, and a thread cannot be "
                        "interrupted: shutdown waits until it returns; give the container a task_timeout to bound it",
                        task.display_name,
                        self.shutdown_timeout,
                        extra={"task_name": task.name, "task_label": task.label, "task_state": "running"},
                    )

    async def _lifespan(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        entered = False

        async def close_container() -> str | None:
            nonlocal entered
            if not entered:
                return None
            entered = False
            try:
                await self.container.__aexit__(None, None, None)
            except Exception as exc:
                logger.exception("shutdown: closing the di_tasks container failed")
                return f"di_tasks: closing the container failed: {exc!r}"
            return None

        async def lifespan_receive() -> Message:
            nonlocal entered
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.container.__aenter__()
                entered = True
            else:  # "lifespan.shutdown", the protocol's only other message
                await self._drain()
            return message

        async def lifespan_send(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed", "lifespan.startup.failed"):
                failure = await close_container()
                if failure is not None and message["type"] == "lifespan.shutdown.complete":
                    message = {"type": "lifespan.shutdown.failed", "message": failure}
            await send(message)

        app_error: Exception | None = None
        try:
            async with anyio.create_task_group() as task_group:
                self._task_group = task_group
                try:
                    await self.app(scope, lifespan_receive, lifespan_send)
                except Exception as exc:  # noqa: BLE001  # re-raised below as itself, not inside an ExceptionGroup
                    app_error = exc
                finally:
                    await self._drain()
        finally:
            self._task_group = None
            await close_container()
        if app_error is not None:
            raise app_error


async def _close(request_scope: Scope, exc: BaseException | None) -> None:
    """Exit a request scope without raising what the client cannot be told any more (task or teardown errors)."""
    try:
        await request_scope.close(exc, raise_task_errors=False)
    except anyio.get_cancelled_exc_class():
        raise
    except BaseException as error:  # the response is out: log, never crash the server's task
        logger.error("tearing down the request scope of %s failed", request_scope.label, exc_info=error)
