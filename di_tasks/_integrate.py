"""What the framework integrations share: which endpoints need injection, and the startup check.

Framework-free: Starlette-family routes are read by duck typing (``endpoint``, ``routes``, ``path``, ``methods``), so
``di_tasks.starlette`` and ``di_tasks.fastapi`` walk their apps with one function.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any, NamedTuple

from ._container import Container
from ._errors import DITasksError, WiringError
from ._inspect import analyse
from ._plan import special_of
from .testing import wiring_errors

Message = MutableMapping[str, Any]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


class Endpoint(NamedTuple):
    """One endpoint of an app: where it is served (``GET /me``), the function, and how to inject it."""

    label: str
    func: Callable[..., Any]
    fix: str


def is_injected(func: object) -> bool:
    """Whether ``func`` is a ``Container.inject`` wrapper (or one made by a route class or plugin)."""
    return hasattr(func, "__di_tasks_injected__")


def markers_of(func: object) -> tuple[str, ...]:
    """The parameters of ``func`` that di_tasks would fill (a ``Depends`` marker, ``BackgroundTasks``, ``Scope``,
    ``Container``); empty for a wrapper, a non-function, or a signature di_tasks cannot read (not ours)."""
    if is_injected(func) or not callable(func):
        return ()
    try:
        info = analyse(func)
    except DITasksError:
        return ()
    return tuple(p.name for p in info.params if p.marker is not None or special_of(p.annotation) is not None)


def starlette_endpoints(routes: Iterable[Any], fix: str) -> Iterator[Endpoint]:
    """Every endpoint function of a Starlette-family route list, through mounts, sub-apps and included routers."""
    seen: set[int] = set()
    stack = [iter(routes)]
    while stack:
        route = next(stack[-1], None)
        if route is None:
            stack.pop()
            continue
        endpoint = getattr(route, "endpoint", None)
        if callable(endpoint):
            methods = ",".join(sorted(m for m in getattr(route, "methods", None) or ("WEBSOCKET",) if m != "HEAD"))
            yield Endpoint(f"{methods} {getattr(route, 'path', '?')}", endpoint, fix)
        # Mount and Router have ``routes``; FastAPI 0.165+ keeps an included router as a route of its own
        inner = getattr(route, "routes", None) or getattr(getattr(route, "original_router", None), "routes", None)
        if inner and id(inner) not in seen:
            seen.add(id(inner))
            stack.append(iter(list(inner)))


def check_endpoints(container: Container, endpoints: Iterable[Endpoint]) -> None:
    """Refuse an app whose endpoints are not all wired: list every problem, not the first.

    Each endpoint with di_tasks parameters must be injected (else the framework fills them from the request, or
    fails on them), and each injected endpoint's graph must solve in ``container``.

    Raises:
        WiringError: one error listing every endpoint that is not injected and every wiring error, each with
            the endpoint's route and the fix.
    """
    problems: list[str] = []
    for endpoint in endpoints:
        if is_injected(endpoint.func):
            problems.extend(f"{endpoint.label}: {exc}" for exc in _graph_errors(container, endpoint.func))
            continue
        names = markers_of(endpoint.func)
        if names:
            name = getattr(endpoint.func, "__qualname__", repr(endpoint.func))
            problems.append(
                f"{endpoint.label}: {name} has di_tasks parameters ({', '.join(names)}) but is not injected, so the "
                f"framework would read them from the request; {endpoint.fix}"
            )
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise WiringError(f"di_tasks: {len(problems)} wiring problem(s), the app cannot start:\n{listed}")


def _graph_errors(container: Container, func: Callable[..., Any]) -> list[DITasksError]:
    """Every wiring error of an injected endpoint's graph; when there is none, register it with the container
    (``Container.inject`` solves it and checks what a sync endpoint may use) as a decorated function would be."""
    errors = wiring_errors(container, func)
    if not errors:
        try:
            container.inject(func.__di_tasks_injected__)  # type: ignore[attr-defined]  # is_injected() said so
        except DITasksError as exc:
            errors.append(exc)
    return errors


class StartupCheck:
    """ASGI middleware running ``check`` once, at lifespan startup or else before the first request.

    A failure stops the lifespan startup (the server refuses to start) and, for an app served without lifespan
    (``httpx.ASGITransport``), fails every request with the same error rather than serving a miswired endpoint.
    """

    def __init__(self, app: ASGIApp, *, check: Callable[[], None]) -> None:
        """Wrap ``app``; ``check`` raises what is wrong."""
        self.app = app
        self.check = check
        self.done = False
        self.error: BaseException | None = None

    def run_check(self) -> None:
        """Run the check the first time; later calls raise its error again, or do nothing."""
        if self.error is not None:
            raise self.error
        if self.done:
            return
        try:
            self.check()
        except BaseException as exc:
            self.error = exc
            raise
        self.done = True

    async def __call__(self, scope: Message, receive: Callable[[], Awaitable[Message]], send: Any) -> None:
        """Check on ``lifespan.startup``, or before handling the first request."""
        if scope["type"] == "lifespan":

            async def checked_receive() -> Message:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.run_check()
                return message

            await self.app(scope, checked_receive, send)
            return
        self.run_check()
        await self.app(scope, receive, send)
