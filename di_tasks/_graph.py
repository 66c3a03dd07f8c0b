"""The solved graph users see (``Container.solve``): nodes, the values it needs from outside, renderings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ._inspect import Kind
from ._markers import Lifetime
from ._render import render


@dataclass(frozen=True, slots=True)
class ValueNeed:
    """A value the graph needs from outside: given by name to the scope or call, bound by type, or a default.

    Attributes:
        name: the parameter name the value is looked up by.
        annotation: the parameter's annotation (``inspect.Parameter.empty`` when none).
        has_default: whether the parameter falls back to a default.
        function: qualified name of the function that declares the parameter.
        path: dependency path from the root to that function.
    """

    name: str
    annotation: Any
    has_default: bool
    function: str
    path: tuple[str, ...]


@dataclass(eq=False, slots=True)
class Node:
    """One dependency in a solved graph.

    Attributes:
        call: the callable that produces the value (after overrides).
        name: its qualified name.
        kind: sync, async, generator, async generator or class.
        scope: its :class:`Lifetime` (a ``str``: ``"app"``, ``"request"`` or ``"call"``; the root is ``"call"``).
        use_cache: whether its value is shared within its scope.
        sync_to_thread: whether this sync dependency runs in a worker thread (its ``Depends(sync_to_thread=...)``,
            else the container's policy); always ``False`` for an async one.
        dependencies: the parameter name and node of each ``Depends`` parameter.
        wants_tasks: whether it asks for ``BackgroundTasks``.
        values: the outside values it reads.
        overridden: the original target when an override replaced it.
        path: dependency path from the root to this node.
        injected: names of its parameters filled by injection (Depends markers and special types).
    """

    call: Callable[..., Any]
    name: str
    kind: Kind
    scope: Lifetime
    use_cache: bool
    sync_to_thread: bool
    path: tuple[str, ...]
    dependencies: list[tuple[str, Node]] = field(default_factory=list[tuple[str, "Node"]])
    wants_tasks: bool = False
    values: list[ValueNeed] = field(default_factory=list[ValueNeed])
    overridden: Callable[..., Any] | None = None
    injected: list[str] = field(default_factory=list[str])


@dataclass(frozen=True, slots=True)
class Graph:
    """The solved graph of a function, as returned by ``Container.solve``.

    Attributes:
        root: the node of the function itself.
        nodes: every distinct node, dependencies before their dependents (the root is last).
        values: every value needed from outside, in the order first met.
    """

    root: Node
    nodes: tuple[Node, ...]
    values: tuple[ValueNeed, ...]

    @property
    def required_values(self) -> tuple[ValueNeed, ...]:
        """The outside values with no default: a resolution fails without them."""
        return tuple(v for v in self.values if not v.has_default)

    @property
    def task_users(self) -> tuple[Node, ...]:
        """The nodes that ask for ``BackgroundTasks``."""
        return tuple(n for n in self.nodes if n.wants_tasks)

    def render(self, format: Literal["text", "mermaid", "dot"] = "text") -> str:
        """Draw the graph: ``"text"`` (a tree), ``"mermaid"`` (renders on GitHub) or ``"dot"`` (Graphviz).

        Returns:
            The rendering, ending with a newline.

        Raises:
            ValueError: an unknown format.
        """
        return render(self, format)
