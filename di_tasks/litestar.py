"""Litestar integration: ``Litestar(..., plugins=[DITasksPlugin(container)])``.

``pip install 'di_tasks[litestar]'``. The plugin injects every route handler function that has di_tasks parameters
before Litestar reads its signature, adds ``ScopeMiddleware`` to every route, enters the container for the app's
lifespan, and at startup refuses an app with a handler that has di_tasks parameters and is not injected, and solves
every injected handler's graph, listing every error at once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.middleware import DefineMiddleware
from litestar.plugins import InitPluginProtocol

from ._container import Container
from ._inject import inject
from ._integrate import Endpoint, check_endpoints, is_injected, markers_of
from .asgi import ScopeMiddleware

__all__ = ("DITasksPlugin",)

FIX = (
    "list the handler in the app or a Router given to Litestar(plugins=[DITasksPlugin(container)]), or put "
    "@container.inject below the route decorator"
)


class DITasksPlugin(InitPluginProtocol):
    """Resolve every route handler of a Litestar app in ``container``, one request scope per request.

    Litestar's middleware runs per route, so each route gets a ``ScopeMiddleware`` whose scope exits after the
    route's response was sent (inline, as without lifespan: the client has its response, the connection's ASGI call
    ends after the tasks). The container is entered for the app's lifespan.
    """

    def __init__(self, container: Container, *, dependencies: Sequence[object] = ()) -> None:
        """Make the plugin.

        Args:
            container: the container whose scopes the requests use.
            dependencies: effect-only dependencies (``Depends(f)`` markers or callables) run before every handler,
                as Litestar's app-level ``dependencies`` would be if it had effect-only ones.
        """
        self.container: Container = container
        self.dependencies: tuple[object, ...] = tuple(dependencies)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Inject the handlers, add the middleware, the lifespan and the startup check."""
        done: dict[int, Callable[..., Any]] = {}
        for handler in _handlers(app_config.route_handlers):
            fn = handler.fn
            if not (self.dependencies or (not is_injected(fn) and markers_of(fn))):
                continue
            if id(fn) not in done:
                done[id(fn)] = inject(None, fn, self.dependencies)
            handler(done[id(fn)])  # a route handler's public way to set its function (what @get(...) does)
        middleware: Any = ScopeMiddleware  # plain ASGI, typed loosely: Litestar's own scope types are narrower
        app_config.middleware.append(DefineMiddleware(middleware, container=self.container))
        lifespans: Any = app_config.lifespan  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]  # Litestar leaves it Unknown
        lifespans.append(self._lifespan)
        app_config.on_startup.append(self._check)
        return app_config

    @asynccontextmanager
    async def _lifespan(self, app: Litestar) -> AsyncGenerator[None]:
        async with self.container:
            yield

    def _check(self, app: Litestar) -> None:
        check_endpoints(self.container, _endpoints(app))


def _handlers(items: Iterable[Any]) -> Iterator[Any]:
    """Route handler objects (``@get``...) listed directly or in a ``Router``; controllers are left to the check."""
    for item in items:
        if hasattr(item, "paths") and not isinstance(item, type) and callable(item):
            routes = getattr(item, "routes", None)
            if routes is None:
                yield item
                continue
        for route in getattr(item, "routes", None) or ():
            yield from getattr(route, "route_handlers", None) or [getattr(route, "route_handler", None)]


def _endpoints(app: Litestar) -> Iterator[Endpoint]:
    for route in app.routes:
        for handler in getattr(route, "route_handlers", None) or [getattr(route, "route_handler", None)]:
            if handler is None:
                continue
            methods = ",".join(sorted(m for m in getattr(handler, "http_methods", ()) if m != "HEAD")) or "WEBSOCKET"
            yield Endpoint(f"{methods} {route.path}", handler.fn, FIX)
