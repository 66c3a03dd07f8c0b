"""The ``Depends`` marker."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Literal, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

ScopeName = Literal["app", "request", "call"]
"""The lifetimes a dependency can have, longest first: ``app`` ⊃ ``request`` ⊃ ``call``."""


class Lifetime(enum.StrEnum):
    """A lifetime, end to end: the marker's ``scope=`` string, ``Node.scope`` and where a step is cached and torn
    down. A ``StrEnum``, so it compares equal to the names users write (``Lifetime.APP == "app"``).

    Lifetimes nest, longest first: ``APP`` ⊃ ``REQUEST`` ⊃ ``CALL``; ``a.outlives(b)`` compares them.
    """

    APP = "app"
    REQUEST = "request"
    CALL = "call"

    def outlives(self, other: Lifetime) -> bool:
        """Whether this lifetime is strictly longer than ``other``."""
        return _ORDER[self] < _ORDER[other]


_ORDER: dict[str, int] = {Lifetime.APP: 0, Lifetime.REQUEST: 1, Lifetime.CALL: 2}


class Dependency:
    """What ``Depends(...)`` returns: the callable to resolve and how to cache it.

    Users write ``Depends(...)``; this class is what the resolver finds in ``Annotated`` metadata or as a
    parameter default. Markers are immutable values: two with the same callable and options are equal and hash
    alike, as FastAPI's are, so they can be compared, deduplicated and used as keys.
    """

    __slots__ = ("dependency", "scope", "sync_to_thread", "use_cache")

    dependency: Callable[..., Any] | None
    use_cache: bool
    scope: ScopeName | None
    sync_to_thread: bool | None
    """``True``/``False`` as written in ``Depends(...)``; ``None``: the container's ``sync_to_thread`` policy."""

    def __init__(
        self,
        dependency: Callable[..., Any] | None,
        use_cache: bool,
        scope: ScopeName | None,
        sync_to_thread: bool | None,
    ) -> None:
        # object.__setattr__: this class refuses assignment once built (it is hashable)
        object.__setattr__(self, "dependency", dependency)
        object.__setattr__(self, "use_cache", use_cache)
        object.__setattr__(self, "scope", scope)
        object.__setattr__(self, "sync_to_thread", sync_to_thread)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Depends(...) markers are immutable; write a new Depends(...) instead of setting {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Depends(...) markers are immutable; {name} cannot be deleted")

    def _key(self) -> tuple[object, ...]:
        return (self.dependency, self.use_cache, self.scope, self.sync_to_thread)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Dependency):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        try:
            return hash(self._key())
        except TypeError:  # an unhashable callable instance: equal markers still hash alike
            return hash(self._key()[1:])

    def __reduce__(self) -> tuple[type[Dependency], tuple[object, ...]]:
        return (Dependency, self._key())  # copy and pickle rebuild through __init__, since assignment is refused

    def __repr__(self) -> str:
        name = getattr(self.dependency, "__qualname__", repr(self.dependency))
        return f"Depends({name}, use_cache={self.use_cache}, scope={self.scope!r})"


def Depends(  # noqa: N802  # a marker factory named like FastAPI's, on purpose
    dependency: Callable[..., Any] | None = None,
    *,
    use_cache: bool = True,
    scope: ScopeName | None = None,
    sync_to_thread: bool | None = None,
) -> Any:
    """Mark a parameter as filled by calling ``dependency``.

    Use it in ``Annotated[T, Depends(f)]`` (preferred) or as a default, ``x: T = Depends(f)``.

    Args:
        dependency: a function, async function, (async) generator function or class. ``None`` uses the
            parameter's annotated class, as in ``Annotated[Database, Depends()]``.
        use_cache: reuse the value already computed in the dependency's scope (the default); ``False``
            calls it again at every place it is asked for.
        scope: ``"app"``, ``"request"`` (the default) or ``"call"``. The value is cached in that scope and,
            for a generator, torn down when the scope exits.
        sync_to_thread: ``True`` runs a synchronous dependency (function, class, generator) in a worker thread,
            ``False`` inline on the event loop; ``None`` (the default) follows the container's policy,
            ``Container(sync_to_thread=...)``, which is inline unless set.

    Returns:
        The marker. Its static type is ``Any`` so the default-value form type-checks.

    Raises:
        TypeError: ``dependency`` is not callable, or ``scope`` is not one of the three names.
    """
    if dependency is not None and not callable(dependency):
        raise TypeError(
            f"Depends() takes a callable (a function or a class), got {dependency!r}; "
            "pass the function itself, not the result of calling it"
        )
    if scope is not None and scope not in _ORDER:
        raise TypeError(f"Depends(scope=...) must be 'app', 'request' or 'call', got {scope!r}")
    return Dependency(dependency, use_cache, scope, sync_to_thread)


_DECLARED = "__di_tasks_scope__"


def provider(*, scope: ScopeName) -> Callable[[F], F]:
    """Declare a dependency's lifetime once, on the dependency itself, as dishka and wireup do::

        @provider(scope="app")
        def http_client() -> Client: ...

        async def endpoint(client: Annotated[Client, Depends(http_client)]): ...  # app-scoped, everywhere

    ``Depends(http_client)`` without ``scope=`` then uses it; a ``Depends`` that names another scope is a
    ``WiringError`` when the graph is solved.

    Args:
        scope: ``"app"``, ``"request"`` or ``"call"``.

    Returns:
        A decorator that returns the function or class unchanged (it only records the scope on it).

    Raises:
        TypeError: ``scope`` is not one of the three names, or the decorated object cannot carry the declaration.
    """
    if scope not in _ORDER:
        raise TypeError(f"provider(scope=...) must be 'app', 'request' or 'call', got {scope!r}")

    def declare(func: F) -> F:
        try:
            setattr(func, _DECLARED, Lifetime(scope))
        except (AttributeError, TypeError):
            raise TypeError(
                f"@provider(scope={scope!r}) cannot record a scope on {func!r}; decorate a function or a class"
            ) from None
        return func

    return declare


def declared_lifetime(func: object) -> Lifetime | None:
    """The lifetime ``@provider`` declared on ``func``, if any."""
    declared = getattr(func, _DECLARED, None)
    return declared if isinstance(declared, Lifetime) else None
