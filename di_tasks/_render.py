"""Rendering a solved graph: a text tree, Mermaid (renders on GitHub) and Graphviz DOT."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Literal

from ._inspect import EMPTY, qualname

if TYPE_CHECKING:  # the graph's types, for annotations only: _graph imports this module to draw itself
    from ._graph import Graph, Node, ValueNeed

Format = Literal["text", "mermaid", "dot"]
FORMATS: Final[tuple[Format, ...]] = ("text", "mermaid", "dot")


def render(graph: Graph, format: Format = "text") -> str:
    """Render ``graph`` as ``"text"``, ``"mermaid"`` or ``"dot"``.

    Raises:
        ValueError: an unknown format.
    """
    if format == "text":
        return render_text(graph)
    if format == "mermaid":
        return render_mermaid(graph)
    if format == "dot":
        return render_dot(graph)
    raise ValueError(f"unknown graph format {format!r}; use one of {', '.join(map(repr, FORMATS))}")


# -- shared descriptions -----------------------------------------------------------------------------------


def _short(call: Callable[..., Any]) -> str:
    """A qualified name without its module (the text header keeps the full name)."""
    name = qualname(call)
    module = getattr(call, "__module__", None)
    return name[len(module) + 1 :] if module and name.startswith(f"{module}.") else name


def describe(node: Node) -> str:
    """Kind, scope and cache policy of a node, e.g. ``async generator, request scope``."""
    parts = [node.kind.value, f"{node.scope} scope"]
    if node.scope != "call":  # call-scoped nodes (the root) are never cached
        parts.append("cached" if node.use_cache else "not cached")
    if node.sync_to_thread:
        parts.append("in a thread")
    if node.overridden is not None:
        parts.append(f"overrides {_short(node.overridden)}")
    return ", ".join(parts)


def type_name(annotation: Any) -> str:
    """A short readable spelling of an annotation (empty when there is none)."""
    if annotation is EMPTY:
        return ""
    if isinstance(annotation, type):
        return annotation.__qualname__
    return repr(annotation).replace("typing.", "")


def _value_text(need: ValueNeed) -> str:
    spelled = type_name(need.annotation)
    return f"{need.name}: {spelled}" if spelled else need.name


def _preorder(graph: Graph) -> list[Node]:
    """Nodes from the root down, each once: the order ids are given in, so output is stable."""
    order: list[Node] = []
    seen: set[int] = set()

    def visit(node: Node) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        order.append(node)
        for _, child in node.dependencies:
            visit(child)

    visit(graph.root)
    return order


def _merged_values(graph: Graph) -> dict[str, list[ValueNeed]]:
    """Values by name: one name is one value at every depth, however many functions read it."""
    merged: dict[str, list[ValueNeed]] = {}
    for need in graph.values:
        merged.setdefault(need.name, []).append(need)
    return merged


# -- text ----------------------------------------------------------------------------------------------------


def render_text(graph: Graph) -> str:
    """A tree from the root, then the values needed, the users of ``BackgroundTasks`` and the overrides.

    A cached dependency reached a second time is shown once and then referred to as ``(shown above)``.
    """
    root = graph.root
    lines = [f"{root.name}  [{describe(root)}]"]
    shown: set[int] = {id(root)}

    def walk(node: Node, prefix: str) -> None:
        children: list[tuple[str, Node | None]] = [
            (f"{param}: {_short(dep.call)}", dep) for param, dep in node.dependencies
        ]
        children += [
            (f"{_value_text(need)}  [value, {'optional' if need.has_default else 'required'}]", None)
            for need in node.values
        ]
        if node.wants_tasks:
            children.append(("BackgroundTasks  [the scope's collector]", None))
        for index, (label, child) in enumerate(children):
            last = index == len(children) - 1
            branch, extend = ("└── ", "    ") if last else ("├── ", "│   ")
            if child is None:
                lines.append(f"{prefix}{branch}{label}")
            elif id(child) in shown:
                lines.append(f"{prefix}{branch}{label}  (shown above)")
            else:
                shown.add(id(child))
                lines.append(f"{prefix}{branch}{label}  [{describe(child)}]")
                walk(child, prefix + extend)

    walk(root, "")
    merged = _merged_values(graph)
    if merged:
        needed = [
            f"{name} ({'optional' if all(n.has_default for n in needs) else 'required'})"
            for name, needs in merged.items()
        ]
        lines.append(f"values: {', '.join(needed)}")
    if graph.task_users:
        lines.append(f"BackgroundTasks: {', '.join(_short(n.call) for n in graph.task_users)}")
    for node in _preorder(graph):
        for param, dep in node.dependencies:
            if dep.overridden is not None:
                lines.append(
                    f"override: parameter {param!r} of {_short(node.call)} gets {_short(dep.call)} "
                    f"instead of {_short(dep.overridden)}"
                )
    return "\n".join(lines) + "\n"


# -- Mermaid -------------------------------------------------------------------------------------------------


def _mermaid_text(text: str) -> str:
    return (
        text.replace("&", "#amp;")
        .replace('"', "#quot;")
        .replace("<", "#lt;")
        .replace(">", "#gt;")
        .replace("|", "#124;")
    )


def _values(graph: Graph) -> list[tuple[str, str, str]]:
    """The outside values the graph needs, merged by name: ``(id, how it is spelled, "optional" or "required")``."""
    return [
        (f"v{index}", _value_text(needs[0]), "optional" if all(n.has_default for n in needs) else "required")
        for index, needs in enumerate(_merged_values(graph).values())
    ]


def _edges(graph: Graph, nodes: list[Node], ids: dict[int, str]) -> list[tuple[str, str, str | None]]:
    """Every edge, ``(from, to, parameter)``: to a dependency (labelled with the parameter), to a value and to the
    collector (``None``: drawn dashed)."""
    value_ids = {name: f"v{index}" for index, name in enumerate(_merged_values(graph))}
    edges: list[tuple[str, str, str | None]] = []
    for node in nodes:
        edges.extend((ids[id(node)], ids[id(dep)], param) for param, dep in node.dependencies)
        edges.extend((ids[id(node)], value_ids[need], None) for need in dict.fromkeys(n.name for n in node.values))
        if node.wants_tasks:
            edges.append((ids[id(node)], "tasks", None))
    return edges


def render_mermaid(graph: Graph) -> str:
    """A Mermaid ``flowchart``: dependencies as boxes (edges labelled with the parameter), outside values as
    parallelograms, one shared ``BackgroundTasks`` node, overridden nodes dashed."""
    nodes = _preorder(graph)
    ids = {id(node): f"n{index}" for index, node in enumerate(nodes)}
    lines = ["flowchart TD"]
    for node in nodes:
        lines.append(f'    {ids[id(node)]}["{_mermaid_text(_short(node.call))}<br/>{_mermaid_text(describe(node))}"]')
    for value_id, spelled, policy in _values(graph):
        lines.append(f'    {value_id}[/"{_mermaid_text(spelled)}<br/>value, {policy}"/]')
    if graph.task_users:
        lines.append('    tasks(["BackgroundTasks<br/>one per request scope"])')
    for start, end, param in _edges(graph, nodes, ids):
        lines.append(f"    {start} -.-> {end}" if param is None else f"    {start} -->|{param}| {end}")
    overridden = [ids[id(node)] for node in nodes if node.overridden is not None]
    if overridden:
        lines.append("    classDef override stroke-dasharray: 5 5")
        lines.append(f"    class {','.join(overridden)} override")
    return "\n".join(lines) + "\n"


# -- Graphviz DOT --------------------------------------------------------------------------------------------


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def render_dot(graph: Graph) -> str:
    """A Graphviz ``digraph`` with the same shapes as the Mermaid rendering (``dot -Tsvg`` draws it)."""
    nodes = _preorder(graph)
    ids = {id(node): f"n{index}" for index, node in enumerate(nodes)}
    lines = [
        f'digraph "{_dot_text(graph.root.name)}" {{',
        "    rankdir=TB;",
        '    node [shape=box, fontname="Helvetica"];',
    ]
    for node in nodes:
        style = ", style=dashed" if node.overridden is not None else ""
        lines.append(
            f'    {ids[id(node)]} [label="{_dot_text(_short(node.call))}\\n{_dot_text(describe(node))}"{style}];'
        )
    for value_id, spelled, policy in _values(graph):
        lines.append(f'    {value_id} [label="{_dot_text(spelled)}\\nvalue, {policy}", shape=parallelogram];')
    if graph.task_users:
        lines.append('    tasks [label="BackgroundTasks\\none per request scope", shape=ellipse];')
    for start, end, param in _edges(graph, nodes, ids):
        edge = "[style=dashed]" if param is None else f'[label="{param}"]'
        lines.append(f"    {start} -> {end} {edge};")
    lines.append("}")
    return "\n".join(lines) + "\n"
