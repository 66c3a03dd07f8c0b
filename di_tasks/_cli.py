"""The command line: ``python -m di_tasks demo`` and ``python -m di_tasks graph module:function``."""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from ._container import Container
from ._render import FORMATS
from .testing import wiring_errors

PROG = "python -m di_tasks"


class TargetError(Exception):
    """A ``module:attribute`` target that cannot be loaded; the message says why and how to fix it."""


def load(target: str) -> Any:
    """Import ``module:attribute`` (the attribute may be dotted, ``module:Class.method``).

    Raises:
        TargetError: the target is malformed, its module is not found, or it lacks the attribute.
        BaseException: the module itself raised while being imported.
    """
    module_name, colon, attribute = target.partition(":")
    if not colon or not module_name or not attribute:
        raise TargetError(f"{target!r} is not a target; write module:function, for example myapp.api:signup")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name != missing and not module_name.startswith(f"{missing}."):
            raise  # the module exists but imports something missing: the traceback shows where
        raise TargetError(
            f"cannot import module {module_name!r}: no module named {missing!r}. Check the spelling, and run "
            "the command from the directory that contains it (or add that directory to PYTHONPATH)"
        ) from None
    obj: Any = module
    for depth, part in enumerate(attribute.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            owner = ".".join([module_name, *attribute.split(".")[:depth]])
            raise TargetError(
                f"{owner!r} has no attribute {part!r}; check the name after the colon in {target!r}"
            ) from None
    return obj


def _graph(args: argparse.Namespace) -> int:
    if os.getcwd() not in sys.path:  # like `python -m`: modules in the current directory are importable
        sys.path.insert(0, os.getcwd())
    try:
        func = load(args.target)
        container = load(args.container) if args.container else Container()
    except TargetError as exc:
        print(f"{PROG} graph: error: {exc}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001  # the user's module raised: show its traceback, not ours
        print(f"{PROG} graph: error: importing the module of {args.target!r} raised:", file=sys.stderr)
        traceback.print_exc()
        return 2
    if not callable(func):
        print(
            f"{PROG} graph: error: {args.target!r} is not a function or class but a value of type "
            f"{type(func).__name__}; point at the function whose dependencies you want to see",
            file=sys.stderr,
        )
        return 2
    if not isinstance(container, Container):
        print(
            f"{PROG} graph: error: --container {args.container!r} is not a Container but a value of type "
            f"{type(container).__name__}",
            file=sys.stderr,
        )
        return 2
    errors = wiring_errors(container, func)
    if errors:
        print(f"{PROG} graph: {len(errors)} wiring error(s) in {args.target}:", file=sys.stderr)
        for error in errors:
            text = str(error).replace("\n", "\n    ")
            print(f"  {type(error).__name__}: {text}", file=sys.stderr)
        return 1
    sys.stdout.write(container.solve(inspect.unwrap(func)).render(args.format))
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m di_tasks``."""
    main_parser = argparse.ArgumentParser(
        prog=PROG, description="di_tasks: dependency injection with background tasks."
    )
    commands = main_parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("demo", help="run FastAPI's background-tasks example and show what happens, in order")
    graph = commands.add_parser(
        "graph",
        help="validate a function's dependency graph and draw it",
        description="Solve a function's dependency graph without calling anything; print it, or its wiring errors.",
    )
    graph.add_argument("target", help="the function, as module:function (e.g. myapp.api:signup)")
    graph.add_argument("--format", choices=FORMATS, default="text", help="text tree (default), Mermaid or Graphviz DOT")
    graph.add_argument("--container", metavar="MODULE:NAME", help="the app's Container, so its overrides apply")
    return main_parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: the arguments after ``python -m di_tasks`` (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 1 for wiring errors, 2 for a bad command line or target.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:  # the demo parses its own options
        from . import _demo  # loaded only when asked for: the graph command does not need it

        return _demo.main(argv[1:])
    args = parser().parse_args(argv)
    return _graph(args)
