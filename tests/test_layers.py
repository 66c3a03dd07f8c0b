"""The package's layers: each module imports only modules below it, so there is no import cycle to hide."""

from __future__ import annotations

import ast
from pathlib import Path

import di_tasks

PACKAGE = Path(di_tasks.__file__).parent

LAYERS: tuple[str, ...] = (
    "_errors",
    "_markers",
    "_util",
    "_inspect",
    "_render",
    "_graph",
    "_plan",
    "_solver",
    "_flush",
    "_tasks",
    "_run",
    "_compile",
    "_concurrent",
    "_execute",
    "_app",
    "_scope",
    "_inject",
    "_container",
    "testing",
    "asgi",
    "_integrate",
    "starlette",
    "fastapi",
    "litestar",
    "celery",
    "otel",
    "_demo",
    "_cli",
    "__main__",
    "__init__",
    "pytest_plugin",
)
"""Bottom to top; a module may import any module listed before it and none after it."""

LAZY: frozenset[tuple[str, str]] = frozenset(
    {("_cli", "_demo"), ("pytest_plugin", "__init__"), ("pytest_plugin", "testing")}
)
"""Function-local imports allowed, each with a comment in the code saying why (an entry point's lazy load)."""


def _imports(module: str) -> list[tuple[str, bool]]:
    """The package modules ``module`` imports at run time, and whether each import is function-local.

    Imports under ``if TYPE_CHECKING:`` are for annotations only and never run, so they are left out.
    """
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: list[tuple[str, bool]] = []

    def walk(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            inner = local or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.ImportFrom):
                name = child.module or ""
                if child.level == 1 or name == "di_tasks" or name.startswith("di_tasks."):
                    target = name.removeprefix("di_tasks").lstrip(".")
                    if target:
                        found.append((target, inner))
                    else:  # "from . import x" or "from di_tasks import Name"
                        found.extend(
                            (alias.name if (PACKAGE / f"{alias.name}.py").exists() else "__init__", inner)
                            for alias in child.names
                        )
            walk(child, inner)

    walk(tree, False)
    return found


def test_every_module_has_a_layer() -> None:
    """Every module of the package is placed in the layer list (a new module must be placed on purpose)."""
    assert {p.stem for p in PACKAGE.glob("*.py")} == set(LAYERS)


def test_each_module_imports_only_modules_below_it() -> None:
    """No module imports one above it (function-local imports included), so the import graph has no cycle."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = [
        f"{module} imports {target}"
        for module in LAYERS
        for target, _ in _imports(module)
        if rank[target] >= rank[module] and (module, target) not in LAZY
    ]
    assert upward == []


def test_function_local_imports_are_only_the_documented_lazy_ones() -> None:
    """A function-local import of the package's own modules is an entry point's lazy load, nothing else."""
    local = {(module, target) for module in LAYERS for target, inner in _imports(module) if inner}
    assert local == LAZY


def test_the_walk_sees_function_local_imports() -> None:
    """The checker itself finds imports inside functions (so the tests above can fail)."""
    assert ("_demo", True) in _imports("_cli")
