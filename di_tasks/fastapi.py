"""FastAPI integration: a route class that injects every endpoint, and ``setup(app, container)``.

``pip install 'di_tasks[fastapi]'``. With ``setup``, no endpoint needs ``@container.inject``: the app's route class
injects each endpoint that has di_tasks parameters before FastAPI reads its signature, so a dependency can never
become a query parameter. Lifespan startup (or the first request, for an app served without lifespan) refuses an
app with an endpoint that has di_tasks parameters and is not injected, and solves every injected endpoint's graph,
listing every error at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from fastapi import FastAPI
from fastapi.routing import APIRoute

from ._container import Container
from ._inject import inject
from ._integrate import StartupCheck, check_endpoints, is_injected, markers_of, starlette_endpoints
from .asgi import ScopeMiddleware

__all__ = ("DITasksRoute", "setup")

FIX = (
    "call di_tasks.fastapi.setup(app, container) before adding routes, create its APIRouter with "
    "route_class=di_tasks.fastapi.DITasksRoute, or put @container.inject below the route decorator"
)


class DITasksRoute(APIRoute):
    """An ``APIRoute`` that injects its endpoint: ``APIRouter(route_class=DITasksRoute)``.

    An endpoint with di_tasks parameters (a ``Depends`` marker, ``BackgroundTasks``, ``Scope``, ``Container``) is
    wrapped as ``Container.inject`` would before FastAPI reads its signature, so FastAPI sees only its own
    parameters. The wrapper resolves in the request scope that :func:`setup`'s middleware opens, in that scope's
    container; an endpoint already decorated with ``container.inject`` is left as it is. The class attribute
    ``di_tasks_dependencies`` holds effect-only dependencies run for every endpoint of the route class (see
    :meth:`with_dependencies`).
    """

    di_tasks_dependencies: ClassVar[tuple[object, ...]] = ()

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        """Inject ``endpoint`` if it needs it, then build the route as ``APIRoute`` does."""
        if not getattr(endpoint, "__di_tasks_route__", False):  # a route copied by include_router is done
            extra = self.di_tasks_dependencies
            if extra or (not is_injected(endpoint) and markers_of(endpoint)):
                endpoint = inject(None, endpoint, extra)
                endpoint.__di_tasks_route__ = True  # type: ignore[attr-defined]  # read above
        super().__init__(path, endpoint, **kwargs)

    @classmethod
    def with_dependencies(cls, *dependencies: object) -> type[DITasksRoute]:
        """A route class whose endpoints also resolve ``dependencies`` for their effect, as FastAPI's
        ``APIRouter(dependencies=[...])``: ``APIRouter(route_class=DITasksRoute.with_dependencies(Depends(f)))``.

        Args:
            *dependencies: ``Depends(f)`` markers or callables, resolved in order before each endpoint's own
                parameters; their values are not passed.

        Returns:
            A subclass of this class.
        """
        extra = (*cls.di_tasks_dependencies, *dependencies)
        return type(cls.__name__, (cls,), {"di_tasks_dependencies": extra, "__module__": cls.__module__})


def setup(app: FastAPI, container: Container, *, dependencies: Sequence[object] = ()) -> None:
    """Make ``app`` resolve its endpoints in ``container``, one request scope per request.

    Routes added to ``app`` after this call (``@app.get``...) use :class:`DITasksRoute`; an ``APIRouter`` takes
    ``route_class=DITasksRoute``. ``ScopeMiddleware`` is added (the tasks run after the response; lifespan enters
    the container). At lifespan startup, or before the first request when the app is served without lifespan, every
    route, through included routers and mounted apps, is checked: an endpoint with di_tasks parameters that is not
    injected (added before ``setup``, on a router without the route class) stops the app, as does an injected
    endpoint whose graph does not solve; one :class:`~di_tasks.WiringError` lists them all with the fix.

    Args:
        app: the FastAPI application, before it starts.
        container: the container whose scopes the requests use.
        dependencies: effect-only dependencies (``Depends(f)`` markers or callables) for every route added to
            ``app`` itself, as ``FastAPI(dependencies=[...])``; a router's own go on its route class
            (:meth:`DITasksRoute.with_dependencies`).
    """
    app.router.route_class = DITasksRoute.with_dependencies(*dependencies) if dependencies else DITasksRoute

    def check() -> None:
        check_endpoints(container, starlette_endpoints(app.routes, FIX))

    app.add_middleware(ScopeMiddleware, container=container)
    app.add_middleware(StartupCheck, check=check)  # outermost: a refused app never enters the container
