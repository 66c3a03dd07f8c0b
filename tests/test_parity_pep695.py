"""FastAPI parity: ``Depends`` inside a PEP 695 type alias (upstream ``test_dependency_pep695``).

Python 3.11 has no ``type X = ...`` statement; ``typing_extensions.TypeAliasType`` builds the same object (and is
``typing.TypeAliasType``'s stand-in), so these aliases are what the statement makes on 3.12+.
"""

from typing import Annotated, Any, TypeVar

import fastapi
import httpx
import pytest
from typing_extensions import TypeAliasType

from di_tasks import Container, Depends, WiringError
from di_tasks.asgi import ScopeMiddleware

pytestmark = pytest.mark.anyio

T = TypeVar("T")


async def some_value() -> int:
    return 123


def listed() -> list[int]:
    return [1, 2]


class Database:
    """A class dependency named by the alias's own type (``Depends()`` with no callable)."""

    def __init__(self) -> None:
        self.url = "sqlite://"


DependedValue = TypeAliasType("DependedValue", Annotated[int, Depends(some_value)])
Listed = TypeAliasType("Listed", Annotated[list[T], Depends(listed)], type_params=(T,))
AliasOfAlias = TypeAliasType("AliasOfAlias", DependedValue)
CallDatabase = TypeAliasType("CallDatabase", Annotated[Database, Depends(scope="call")])
PlainNumber = TypeAliasType("PlainNumber", int)
Unused = TypeAliasType("Unused", Annotated[int, Depends(some_value)], type_params=(T,))  # T appears nowhere


async def use_value(value: DependedValue) -> str:
    return f"value: {value}"


async def test_depends_in_a_type_alias_is_resolved() -> None:
    """A parameter annotated with an alias of ``Annotated[int, Depends(f)]`` gets ``f``'s value."""
    assert await Container().call(use_value) == "value: 123"


async def test_depends_in_a_type_alias_over_http() -> None:
    """Under FastAPI with ``inject`` the alias's dependency is resolved, not read from the query (no 422)."""
    container = Container()
    app = fastapi.FastAPI()
    app.get("/")(container.inject(use_value))
    transport = httpx.ASGITransport(app=ScopeMiddleware(app, container=container))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/")
    assert (response.status_code, response.json()) == (200, "value: 123")


async def test_generic_nested_and_annotated_aliases() -> None:
    """A generic alias with arguments, an alias of an alias and ``Annotated[Alias, ...]`` all keep the marker."""

    async def endpoint(
        numbers: Listed[int],
        again: AliasOfAlias,
        documented: Annotated[DependedValue, "documentation"],
        db: CallDatabase,
        given: PlainNumber,
    ) -> tuple[list[int], int, int, str, int]:
        return numbers, again, documented, db.url, given

    assert await Container().call(endpoint, given=7) == ([1, 2], 123, 123, "sqlite://", 7)


def test_solve_shows_the_alias_dependencies() -> None:
    """``Container.solve`` finds the dependencies behind aliases, with the scope the alias's marker gives."""

    async def endpoint(value: DependedValue, db: CallDatabase) -> None:
        pass

    graph = Container().solve(endpoint)
    assert [(name, node.name.rsplit(".", 1)[-1], node.scope) for name, node in graph.root.dependencies] == [
        ("value", "some_value", "request"),
        ("db", "Database", "call"),
    ]


def test_string_annotation_naming_an_alias() -> None:
    """A string annotation (``from __future__ import annotations`` style) that names an alias is resolved too."""

    async def endpoint(value: "DependedValue") -> int:
        return value

    assert Container().run(endpoint) == 123
    assert Container().run(endpoint, backend="trio") == 123


def test_alias_marker_and_default_marker_together_are_refused() -> None:
    """A marker in the alias and another as the default is ambiguous, as with a plain ``Annotated``."""

    async def endpoint(value: DependedValue = Depends(some_value)) -> None:
        pass

    with pytest.raises(WiringError, match="has a Depends marker both in Annotated"):
        Container().solve(endpoint)


def test_alias_arguments_that_do_not_apply_keep_the_marker() -> None:
    """An alias declared generic whose value uses no type variable still gives its marker when subscripted."""

    async def endpoint(value: Unused[str]) -> int:
        return value

    assert Container().run(endpoint) == 123


def test_an_endless_alias_chain_is_cut_off() -> None:
    """Alias resolution is bounded (``type A = A`` is its own value on 3.12+): a chain past the bound is a value."""
    make: Any = TypeAliasType  # names built at run time, which type checkers cannot follow
    alias: object = int
    for number in range(150):
        alias = make(f"A{number}", alias)

    async def endpoint(value: Any) -> object:
        return value

    endpoint.__annotations__["value"] = alias
    assert Container().run(endpoint, value=5) == 5
