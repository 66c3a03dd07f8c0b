"""Starlette integration: ``setup(app, container)`` injects every listed endpoint and checks the app at startup.

``pip install 'di_tasks[starlette]'``. Starlette calls an endpoint with the request only, so a function endpoint
with di_tasks parameters can be injected after its route was made; ``setup`` does it for every ``Route`` of the app
(through mounts), adds ``ScopeMiddleware``, and at lifespan startup (or before the first request, for an app served
without lifespan) refuses an app with an endpoint that has di_tasks parameters and is not injected, and solves
every injected endpoint's graph, listing every error at once.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.routing import Route, request_response

from ._container import Container
from ._errors import WiringError
from ._inject import inject
from ._integrate import StartupCheck, check_endpoints, is_injected, markers_of, starlette_endpoints
from .asgi import ScopeMiddleware

__all__ = ("setup",)

FIX = "call di_tasks.starlette.setup(app, container) after adding it, or decorate the endpoint with @container.inject"


def setup(app: Starlette, container: Container) -> None:
    """Make ``app`` resolve its endpoints in ``container``, one request scope per request.

    Every ``Route`` whose endpoint is a function with di_tasks parameters (a ``Depends`` marker, ``BackgroundTasks``,
    ``Scope``, ``Container``) and is not yet injected gets the injected endpoint, as ``@container.inject`` would
    make it; ``ScopeMiddleware`` is added. Routes added after ``setup`` are not injected: the startup check names
    them. At lifespan startup, or before the first request, every endpoint is checked and every injected one's
    graph solved; one :class:`~di_tasks.WiringError` lists every problem with the fix.

    Args:
        app: the Starlette application, before it starts.
        container: the container whose scopes the requests use.

    Raises:
        WiringError: a route with route-level ``middleware=`` (or a body size limit) has an endpoint that needs
            injection: its endpoint cannot be swapped under the middleware; decorate it with ``container.inject``.
    """
    for route in _routes(app.routes):
        _inject_route(route, container)

    def check() -> None:
        check_endpoints(container, starlette_endpoints(app.routes, FIX))

    app.add_middleware(ScopeMiddleware, container=container)
    app.add_middleware(StartupCheck, check=check)  # outermost: a refused app never enters the container


def _routes(routes: list[Any]) -> list[Route]:
    found: list[Route] = []
    for route in routes:
        if isinstance(route, Route):
            found.append(route)
        inner = getattr(route, "routes", None)
        if inner:
            found.extend(_routes(list(inner)))
    return found


def _inject_route(route: Route, container: Container) -> None:
    endpoint = route.endpoint
    if is_injected(endpoint) or not markers_of(endpoint):
        return
    # Starlette wraps a function endpoint as request_response(endpoint), then in the route's middleware, if any:
    # only the plain form can be rebuilt without losing what was around it.
    if getattr(route.app, "__qualname__", "") != "request_response.<locals>.app":
        raise WiringError(
            f"{route.path}: the endpoint {endpoint.__qualname__} has di_tasks parameters and its route has its own "
            "middleware, under which setup() cannot swap it; decorate the endpoint with @container.inject",
            path=(endpoint.__qualname__,),
        )
    injected = inject(None, endpoint)  # solved with the others at startup, so every error is listed at once
    route.endpoint = injected
    route.app = request_response(injected)
