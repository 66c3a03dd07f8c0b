"""A griffe extension for the Reference pages: the reStructuredText habits of di_tasks' docstrings become Markdown.

The docstrings use Sphinx cross-reference roles (``:class:`~di_tasks.Task```) and end a line with ``::`` before an
indented example, which Markdown would both show literally. The ``::`` becomes ``:`` (the indented block is already
a code block in Markdown). A role whose target is a full ``di_tasks...`` path becomes a link to that object's entry;
any other role (a name relative to its module, a standard-library module) becomes inline code, since guessing its
target could point a link at the wrong object.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|attr|exc|data|mod|obj):`(~?)([\w.]+)`")
LITERAL_BLOCK = re.compile(r"(?<=\S)::$", flags=re.MULTILINE)


def to_markdown(match: re.Match[str]) -> str:
    """One role as Markdown: a link for a full ``di_tasks`` path, inline code otherwise."""
    short, target = match.group(1) == "~", match.group(2)
    shown = target.rsplit(".", 1)[-1] if short else target
    if target.startswith("di_tasks."):
        return f"[`{shown}`][{target}]"
    return f"`{shown}`"


class SphinxRoles(griffe.Extension):
    """Rewrite the roles and literal-block markers of every docstring griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite ``obj``'s docstring in place, if it has one."""
        if obj.docstring is not None:
            obj.docstring.value = LITERAL_BLOCK.sub(":", ROLE.sub(to_markdown, obj.docstring.value))
