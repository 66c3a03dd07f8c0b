"""Signature analysis: the only place that calls ``inspect``. Runs at solve time, never per resolution."""

from __future__ import annotations

import enum
import functools
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final, Union, get_args, get_origin

import typing_extensions

from ._errors import WiringError
from ._markers import Dependency, Depends

EMPTY: Final[Any] = inspect.Parameter.empty

# `type X = ...` (3.12+) makes typing.TypeAliasType instances; typing_extensions has its own class before 3.14.
_ALIAS_TYPES: Final[tuple[type[typing_extensions.TypeAliasType], ...]] = tuple(
    {typing_extensions.TypeAliasType, getattr(typing, "TypeAliasType", typing_extensions.TypeAliasType)}
)


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
    foreign: tuple[str, str] | None = None  # another library's marker on it (FastAPI's Depends): it, and the fix


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


def _own_kind(target: Any) -> Kind:
    if inspect.isasyncgenfunction(target):
        return Kind.ASYNC_GENERATOR
    if inspect.isgeneratorfunction(target):
        return Kind.GENERATOR
    if inspect.iscoroutinefunction(target):
        return Kind.ASYNC
    return Kind.SYNC


def kind_of(call: Callable[..., Any]) -> Kind:
    """Classify a callable; partials, callable instances and ``functools.wraps`` wrappers are looked through.

    A plain (non-async, non-generator) function or method with ``__wrapped__`` returns whatever the function it
    wraps returns, so it takes that function's kind, as FastAPI decides it: a sync ``wraps`` wrapper around an
    ``async def`` is awaited, around a generator is set up and torn down, around a class is a plain call. A wrapper
    that is itself ``async def`` or a generator keeps its own kind, and a callable instance is classified by its
    ``__call__`` (an instance's own ``__wrapped__`` is not followed: ``asgiref.sync.async_to_sync`` is one).
    """
    target: Any = call
    wrapped = False
    seen: set[int] = set()
    while True:
        while isinstance(target, functools.partial):
            target = target.func
        if inspect.isclass(target):
            return Kind.SYNC if wrapped else Kind.CLASS  # a wrapper around a class is a function returning one
        if not (inspect.isfunction(target) or inspect.ismethod(target) or inspect.isbuiltin(target)):
            target = getattr(target, "__call__", target)  # noqa: B004  # a callable instance: look at __call__
        kind = _own_kind(target)
        if kind is not Kind.SYNC or not (inspect.isfunction(target) or inspect.ismethod(target)):
            return kind
        inner = getattr(target, "__wrapped__", None)  # a bound method reads its function's attribute
        if inner is None or id(inner) in seen:  # not a wrapper, or a __wrapped__ cycle
            return kind
        seen.add(id(target))
        target, wrapped = inner, True


def _has_signature(obj: Any) -> bool:
    return hasattr(obj, "__signature__")  # where inspect.signature stops following __wrapped__


def _class_call(obj: object) -> Any:
    return getattr(type(obj), "__call__", obj)  # noqa: B004  # a callable instance: its class's __call__


def _annotated_by(call: Callable[..., Any]) -> Any:
    """The callable whose return annotation ``inspect.signature(call)`` reports (it follows ``__wrapped__``)."""
    target: Any = call
    for _ in range(2):  # the callable, then a callable instance's __call__
        while isinstance(target, functools.partial):
            target = target.func
        target = inspect.unwrap(target, stop=_has_signature)  # no cycle: inspect.signature has refused those
        if inspect.isclass(target) or inspect.isfunction(target) or inspect.ismethod(target):
            break
        target = _class_call(target)
    return target


def _alias_value(annotation: Any) -> Any:
    """What a PEP 695 type alias stands for (``type X = Annotated[int, Depends(f)]``), type arguments applied."""
    for _ in range(100):  # an alias of an alias ...; a bound, since `type A = A` is its own value on 3.12+
        if isinstance(annotation, _ALIAS_TYPES):
            annotation = annotation.__value__
        elif isinstance(origin := get_origin(annotation), _ALIAS_TYPES):  # a generic alias with arguments: X[int]
            value: Any = origin.__value__
            try:
                annotation = value[get_args(annotation)]
            except TypeError:  # not generic after all: the arguments cannot change its metadata
                annotation = value
        else:
            return annotation
    return annotation


def _foreign(obj: object) -> tuple[str, str] | None:
    """Another library's ``Depends`` (FastAPI's, FastDepends') where di_tasks looks for its own: what it is, and the
    di_tasks marker to write instead."""
    if isinstance(obj, Dependency) or obj is Depends:
        return None
    cls = type(obj)
    if cls.__name__ in _REQUEST_MARKERS and (cls.__module__ or "").split(".")[0] in _FRAMEWORKS:
        return f"{cls.__module__}.{cls.__qualname__}()", ""  # no di_tasks marker replaces it: see the error
    if cls.__name__ in ("Depends", "Security") and hasattr(obj, "dependency"):  # a marker instance
        target = getattr(obj, "dependency", None)
        name = "" if target is None else getattr(target, "__name__", None) or "some_function"
        return f"{cls.__module__}.{cls.__qualname__}({name})", f"Depends({name})"
    return _foreign_factory(obj)


def _foreign_factory(obj: object) -> tuple[str, str] | None:
    """Another library's marker factory itself, not called (``= fastapi.Depends``)."""
    if not (inspect.isfunction(obj) or inspect.isclass(obj)):  # a plain default value: never a marker factory
        return None
    module = obj.__module__ or ""
    if obj.__name__ in ("Depends", "Security") and not module.startswith("di_tasks"):
        return f"{module}.{obj.__name__}, not called,", "Depends(some_function)"
    return None


# A framework's request-parameter markers (FastAPI's, FastDepends'): they are read on an endpoint's own parameters
# only, so on a dependency's parameter they would be ignored and the value reported missing at the first request.
_REQUEST_MARKERS = frozenset({"Body", "Cookie", "File", "Form", "Header", "Path", "Query"})
_FRAMEWORKS = frozenset({"fastapi", "fast_depends"})


def foreign_marker_error(param: Param, owner: str, path: tuple[str, ...]) -> WiringError:
    """The error for a dependency's parameter that carries another library's marker instead of di_tasks'."""
    found, fix = param.foreign or ("another library's marker", "Depends(some_function)")
    if not fix:  # a request-parameter marker (Header(), Query(), ...)
        annotation = getattr(param.annotation, "__name__", None) or "str"
        return WiringError(
            f"parameter {param.name!r} of {owner} has {found}, but only the endpoint's own parameters come from the "
            "framework: FastAPI reads Header(), Query(), Cookie() and the like on a path operation's parameters, "
            f"never on a dependency's, so {param.name!r} would be missing at every request. Declare it on the "
            f"endpoint ({param.name}: Annotated[{annotation}, {found.rsplit('.', 1)[-1]}]) and give {owner} a plain "
            f"parameter {param.name}: {annotation}; the endpoint's arguments reach every dependency by name",
            path=path,
        )
    return WiringError(
        f"parameter {param.name!r} of {owner} has {found} but no di_tasks Depends marker, and di_tasks does not "
        "resolve other libraries' markers (FastAPI reads its own only on a path operation's parameters); write "
        f"{fix} with Depends imported from di_tasks",
        path=path,
    )


def _uncalled(name: str, owner: str, where: str) -> WiringError:
    return WiringError(
        f"parameter {name!r} of {owner} has Depends itself {where}, not called, so it names no dependency; write "
        "Depends(some_function), or Depends() to call the annotated class"
    )


def _metadata(annotation: Any) -> tuple[Any, list[Any]] | None:
    """``(T, metadata)`` of ``Annotated[T, ...]`` seen through type aliases (nested ones flattened), else ``None``."""
    annotation = _alias_value(annotation)
    if get_origin(annotation) is not Annotated:
        return None
    base, *metadata = get_args(annotation)
    inner = _alias_value(base)
    if get_origin(inner) is Annotated:  # Annotated[Alias, ...] where the alias is Annotated itself: flatten
        base, *outer = get_args(inner)
        metadata = [*outer, *metadata]
    return base, metadata


def _split_annotation(annotation: Any, name: str, owner: str) -> tuple[Any, Dependency | None, tuple[str, str] | None]:
    """Split ``Annotated[T, ...]`` (also behind a type alias) into ``T``, its Depends marker and a foreign one."""
    split = _metadata(annotation)
    if split is None:
        return _alias_value(annotation), None, None
    base, metadata = split
    foreign = next((f for f in map(_foreign, metadata) if f is not None), None)
    return base, _marker_in(metadata, name, owner), foreign


def _marker_in(metadata: list[Any], name: str, owner: str) -> Dependency | None:
    """The one Depends marker among ``Annotated`` metadata, if any."""
    if any(m is Depends or m is Dependency for m in metadata):
        raise _uncalled(name, owner, "in its Annotated[...]")
    markers = [m for m in metadata if isinstance(m, Dependency)]
    if len(markers) > 1:
        raise WiringError(
            f"parameter {name!r} of {owner} has {len(markers)} Depends markers in its Annotated[...]; keep one"
        )
    return markers[0] if markers else None


def _signature(call: Callable[..., Any], owner: str) -> inspect.Signature:
    # A parametrised generic class (``Repo[int]``) is called as its class is: read the class's signature, not the
    # alias's ``(*args, **kwargs)``.
    origin = get_origin(call)
    try:
        return inspect.signature(origin if inspect.isclass(origin) else call, eval_str=True)
    except (NameError, SyntaxError) as exc:
        raise WiringError(
            f"cannot evaluate the annotations of {owner}: {exc}. Forward references must name something "
            "importable from the function's module (move locally defined classes to module level)"
        ) from exc
    except (TypeError, ValueError) as exc:
        raise WiringError(f"cannot read the signature of {owner}: {exc}") from exc


def _param(p: inspect.Parameter, owner: str) -> Param:
    """One parameter: its annotation without metadata, its marker (in ``Annotated`` or as the default), its default."""
    annotation, marker, foreign = _split_annotation(p.annotation, p.name, owner)
    default = p.default
    if default is Depends or default is Dependency:
        raise _uncalled(p.name, owner, "as its default")
    if isinstance(default, Dependency):
        if marker is not None:
            raise WiringError(
                f"parameter {p.name!r} of {owner} has a Depends marker both in Annotated[...] and as its "
                "default; keep the one in Annotated[...]"
            )
        marker, default = default, EMPTY
    if marker is None and foreign is None:
        foreign = _foreign(default)
    return Param(p.name, p.kind, annotation, marker, default, foreign if marker is None else None)


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
    signature = _signature(call, owner)
    params = [_param(p, owner) for p in signature.parameters.values()]
    kind = kind_of(call)
    returns = signature.return_annotation
    if returns is not EMPTY and kind_of(_annotated_by(call)) is not kind:
        # The annotation describes a function this one wraps, which is called differently (an instance's sync
        # __call__ over an async function, say): it says nothing about what this call returns.
        returns = EMPTY
    return CallableInfo(call, owner, kind, tuple(params), returns)
