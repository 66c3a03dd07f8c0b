"""Rendering a solved graph as a text tree, Mermaid and Graphviz DOT (di_tasks/_render.py, Graph.render)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Literal

import pytest

from di_tasks import BackgroundTasks, Container, Depends


class Settings:
    """App settings."""


def get_settings() -> Settings:
    return Settings()


async def get_db(settings: Annotated[Settings, Depends(get_settings, scope="app")]) -> AsyncIterator[str]:
    yield "db"


def fake_db() -> str:
    return "fake"


def get_query(background_tasks: BackgroundTasks, q: str | None = None) -> str | None:
    return q


def fresh_token(q: str) -> str:
    return q


async def send_notification(
    email: str,
    background_tasks: BackgroundTasks,
    q: Annotated[str | None, Depends(get_query)],
    db: Annotated[str, Depends(get_db)],
    settings: Annotated[Settings, Depends(get_settings, scope="app")],
    token: Annotated[str, Depends(fresh_token, use_cache=False, sync_to_thread=True)],
) -> dict[str, str]:
    return {}


def plain() -> int:
    return 1


def untyped(x: object, mode: Literal["a", "b"] = "a") -> object:
    return x


del untyped.__annotations__["x"]  # a parameter without annotation, as in untyped code


TEXT = """\
test_render.send_notification  [async, call scope]
├── q: get_query  [sync, request scope, cached]
│   ├── q: str | None  [value, optional]
│   └── BackgroundTasks  [the scope's collector]
├── db: get_db  [async generator, request scope, cached]
│   └── settings: get_settings  [sync, app scope, cached]
├── settings: get_settings  (shown above)
├── token: fresh_token  [sync, request scope, not cached, in a thread]
│   └── q: str  [value, required]
├── email: str  [value, required]
└── BackgroundTasks  [the scope's collector]
values: email (required), q (required)
BackgroundTasks: get_query, send_notification
"""

MERMAID = """\
flowchart TD
    n0["send_notification<br/>async, call scope"]
    n1["get_query<br/>sync, request scope, cached"]
    n2["get_db<br/>async generator, request scope, cached"]
    n3["get_settings<br/>sync, app scope, cached"]
    n4["fresh_token<br/>sync, request scope, not cached, in a thread"]
    v0[/"email: str<br/>value, required"/]
    v1[/"q: str #124; None<br/>value, required"/]
    tasks(["BackgroundTasks<br/>one per request scope"])
    n0 -->|q| n1
    n0 -->|db| n2
    n0 -->|settings| n3
    n0 -->|token| n4
    n0 -.-> v0
    n0 -.-> tasks
    n1 -.-> v1
    n1 -.-> tasks
    n2 -->|settings| n3
    n4 -.-> v1
"""

DOT = """\
digraph "test_render.send_notification" {
    rankdir=TB;
    node [shape=box, fontname="Helvetica"];
    n0 [label="send_notification\\nasync, call scope"];
    n1 [label="get_query\\nsync, request scope, cached"];
    n2 [label="get_db\\nasync generator, request scope, cached"];
    n3 [label="get_settings\\nsync, app scope, cached"];
    n4 [label="fresh_token\\nsync, request scope, not cached, in a thread"];
    v0 [label="email: str\\nvalue, required", shape=parallelogram];
    v1 [label="q: str | None\\nvalue, required", shape=parallelogram];
    tasks [label="BackgroundTasks\\none per request scope", shape=ellipse];
    n0 -> n1 [label="q"];
    n0 -> n2 [label="db"];
    n0 -> n3 [label="settings"];
    n0 -> n4 [label="token"];
    n0 -> v0 [style=dashed];
    n0 -> tasks [style=dashed];
    n1 -> v1 [style=dashed];
    n1 -> tasks [style=dashed];
    n2 -> n3 [label="settings"];
    n4 -> v1 [style=dashed];
}
"""


def test_text_tree() -> None:
    """The text tree shows kind, scope and cache policy, values, BackgroundTasks users, shared nodes once."""
    assert Container().solve(send_notification).render() == TEXT


def test_mermaid() -> None:
    """Mermaid: one box per node, parameter-labelled edges, one node per value name, one BackgroundTasks node."""
    assert Container().solve(send_notification).render("mermaid") == MERMAID


def test_dot() -> None:
    """DOT: the same picture for Graphviz."""
    assert Container().solve(send_notification).render("dot") == DOT


def test_a_value_read_at_two_depths_is_required_if_one_reader_has_no_default() -> None:
    """``q`` has a default in get_query but not in fresh_token: one value, required."""
    graph = Container().solve(send_notification)
    assert [(v.name, v.has_default) for v in graph.values] == [("email", False), ("q", True), ("q", False)]
    assert "values: email (required), q (required)" in graph.render()


@pytest.mark.parametrize("fmt", ["text", "mermaid", "dot"])
def test_overrides_are_shown_where_they_apply(fmt: Literal["text", "mermaid", "dot"]) -> None:
    """An override is marked on its node, and the text names the parameter it applies to."""
    container = Container()
    with container.override(get_db, fake_db):
        rendered = container.solve(send_notification).render(fmt)
    assert "fake_db" in rendered
    assert "overrides get_db" in rendered
    if fmt == "text":
        assert "override: parameter 'db' of send_notification gets fake_db instead of get_db" in rendered
    elif fmt == "mermaid":
        assert rendered.endswith("    classDef override stroke-dasharray: 5 5\n    class n2 override\n")
    else:
        assert 'n2 [label="fake_db\\nsync, request scope, cached, overrides get_db", style=dashed];' in rendered


def test_a_graph_with_one_node_has_no_footer() -> None:
    """No values, no tasks, no overrides: only the root line, in each format."""
    graph = Container().solve(plain)
    assert graph.render() == "test_render.plain  [sync, call scope]\n"
    assert graph.render("mermaid") == 'flowchart TD\n    n0["plain<br/>sync, call scope"]\n'
    assert "tasks" not in graph.render("dot")


def test_values_without_annotation_and_with_quotes() -> None:
    """An unannotated value shows its name only; quotes and brackets are escaped for Mermaid and DOT."""
    graph = Container().solve(untyped)
    assert "├── x  [value, required]" in graph.render()
    assert "mode: Literal['a', 'b']  [value, optional]" in graph.render()
    assert 'v0[/"x<br/>value, required"/]' in graph.render("mermaid")


def test_names_are_escaped() -> None:
    """``<locals>`` and double quotes in names are escaped in Mermaid and DOT, and kept in text."""

    def local() -> int:
        return 1

    local.__qualname__ = 'a "quoted" <name> & co'
    graph = Container().solve(local)
    assert 'n0["a #quot;quoted#quot; #lt;name#gt; #amp; co<br/>' in graph.render("mermaid")
    assert 'n0 [label="a \\"quoted\\" <name> & co\\n' in graph.render("dot")
    assert graph.render().startswith('test_render.a "quoted" <name> & co  [sync, call scope]')


def test_a_name_with_a_backslash_is_escaped_for_dot() -> None:
    """A backslash is doubled in DOT labels."""

    def local() -> int:
        return 1

    local.__qualname__ = "back\\slash"
    assert 'n0 [label="back\\\\slash\\n' in Container().solve(local).render("dot")


def test_a_callable_without_module_keeps_its_full_name() -> None:
    """A callable whose module is unknown is shown by its whole name."""

    def local() -> int:
        return 1

    local.__module__ = None  # type: ignore[assignment]  # as for some C or generated callables
    rendered = Container().solve(local).render()
    assert rendered.startswith("test_a_callable_without_module_keeps_its_full_name.<locals>.local  [sync")


def test_unknown_format() -> None:
    """An unknown format is a ValueError listing the three."""
    with pytest.raises(ValueError, match=r"unknown graph format 'svg'; use one of 'text', 'mermaid', 'dot'"):
        Container().solve(plain).render("svg")  # type: ignore[arg-type]  # the mistake under test
