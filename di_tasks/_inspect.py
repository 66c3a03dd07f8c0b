"""Signature analysis: the only place that calls ``inspect``. Runs at solve time, never per resolution."""

from __future__ import annotations

import enum
import functools
import inspect
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final, Union, get_args, get_origin

from ._errors import WiringError
from ._markers import Dependency

EMPTY: Final[Any] = inspect.Parameter.empty


class Kind(enum.Enum):
    """How a dependency produces its value."""

    SYNC = "sync"
    ASYNC = "async"
    GENERATOR = "generator"
    ASYNC_GENERATOR = "async generator"
    CLASS = "class"


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of an analysed callable."""

    name: str
    kind: inspect._ParameterKind
    annotation: Any  # the type with ``Annotated`` metadata stripped, or EMPTY
    marker: Dependency | None
    default: Any  # EMPTY when there is none


@dataclass(frozen=True, slots=True)
class CallableInfo:
    """What the solver needs to know about one callable."""

    call: Callable[..., Any]
    name: str
    kind: Kind
    params: tuple[Param, ...]
    returns: Any = EMPTY  # the return annotation


def surely_not_awaitable(annotation: Any) -> bool:
    """Whether a return annotation rules out an awaitable (``-> int``, ``-> list[str]``, ``-> None``).

    A sync dependency annotated this way needs no run-time check that it returned a coroutine: a type
    checker already catches that mistake. Unannotated, ``Any``, ``object`` and type variables still get it.
    """
    while hasattr(annotation, "__supertype__"):  # NewType
        annotation = annotation.__supertype__
    if annotation is None or annotation is type(None):
        return True
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        return all(surely_not_awaitable(arg) for arg in get_args(annotation))
    if origin is Annotated:
        return surely_not_awaitable(get_args(annotation)[0])
    target = origin if isinstance(origin, type) else annotation
    if not isinstance(target, type) or target is Any or target is EMPTY:  # Any and "no annotation" are classes
        return False
    try:  # a coroutine must not be an instance of the annotated class (object, Awaitable, Hashable all admit one)
        return not issubclass(types.CoroutineType, target)
    except TypeError:  # a Protocol that cannot be checked at run time
        return False


def qualname(obj: object) -> str:
    """A readable qualified name for a callable, used in every message."""
    target = obj
    while isinstance(target, functools.partial):
        target = target.func
    name = getattr(target, "__qualname__", None)
    if name is None:  # a callable instance
        name = f"{type(target).__qualname__} instance"
    module = getattr(target, "__module__", None) or type(target).__module__
    if module and module not in ("builtins", "__main__"):
        return f"{module}.{name}"
    return str(name)


def kind_of(call: Callable[..., Any]) -> Kind:
    """Classify a callable; partials and callable instances are looked through."""
    target: Any = call
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.isclass(target):
        return Kind.CLASS
    if not (inspect.isfunction(target) or inspect.ismethod(target) or inspect.isbuiltin(target)):
        target = getattr(target, "__call__", target)  # noqa: B004  # a callable instance: look at __call__
    if inspect.isasyncgenfunction(target):
        return Kind.ASYNC_GENERATOR
    if inspect.isgeneratorfunction(target):
        return Kind.GENERATOR
    if inspect.iscoroutinefunction(target):
        return Kind.ASYNC
    return Kind.SYNC


def _split_annotation(annotation: Any, name: str, owner: str) -> tuple[Any, Dependency | None]:
    if get_origin(annotation) is not Annotated:
        return annotation, None
    base, *metadata = get_args(annotation)
    markers = [m for m in metadata if isinstance(m, Dependency)]
    if len(markers) > 1:
        raise WiringError(
            f"parameter {name!r} of {owner} has {len(markers)} Depends markers in its Annotated[...]; keep one"
        )
    return base, (markers[0] if markers else None)


def analyse(call: Callable[..., Any]) -> CallableInfo:
    """Read a callable's kind and parameters, with string annotations evaluated.

    Raises:
        WiringError: not callable, no readable signature, an annotation that cannot be evaluated, or a
            marker used twice on one parameter.
    """
    if inspect.isawaitable(call):
        raise WiringError(f"{call!r} is an awaitable object, not a function; pass the function itself")
    if not callable(call):
        raise WiringError(f"{call!r} is not callable; pass a function, a class or a callable instance")
    owner = qualname(call)
    try:
        signature = inspect.signature(call, eval_str=True)
    except (NameError, SyntaxError) as exc:
        raise WiringError(
            f"cannot evaluate the annotations of {owner}: {exc}. Forward references must name something "
            "importable from the function's module (move locally defined classes to module level)"
        ) from exc
    except (TypeError, ValueError) as exc:
        raise WiringError(f"cannot read the signature of {owner}: {exc}") from exc
    params: list[Param] = []
    for p in signature.parameters.values():
        annotation, marker = _split_annotation(p.annotation, p.name, owner)
        default = p.default
        if isinstance(default, Dependency):
            if marker is not None:
                raise WiringError(
                    f"parameter {p.name!r} of {owner} has a Depends marker both in Annotated[...] and as its "
                    "default; keep the one in Annotated[...]"
                )
            marker, default = default, EMPTY
        params.append(Param(p.name, p.kind, annotation, marker, default))
    return CallableInfo(call, owner, kind_of(call), tuple(params), signature.return_annotation)
