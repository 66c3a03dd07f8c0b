"""The command line (di_tasks/_cli.py, di_tasks/__main__.py): ``python -m di_tasks graph`` and ``demo``."""

from __future__ import annotations

import importlib
import runpy
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from di_tasks import _cli, _demo

APP = """
from typing import Annotated
from di_tasks import BackgroundTasks, Container, Depends

def get_db() -> str:
    return "db"

def fake_db() -> str:
    return "fake"

def send(email: str, db: Annotated[str, Depends(get_db)], tasks: BackgroundTasks) -> None:
    pass

def star(*args: int) -> int:
    return 0

def per_request(tasks: BackgroundTasks) -> int:
    return 0

def app_scoped(n: Annotated[int, Depends(per_request)]) -> int:
    return n

def broken(a: Annotated[int, Depends(star)], b: Annotated[int, Depends(app_scoped, scope="app")]) -> None:
    pass

class Api:
    @staticmethod
    def handler(db: Annotated[str, Depends(get_db)]) -> str:
        return db

container = Container()

@container.inject
async def injected(request_id: str, db: Annotated[str, Depends(get_db)]) -> str:
    return db

overridden = Container()
_active = overridden.override(get_db, fake_db)
_active.__enter__()
NOT_CALLABLE = 42
"""


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding a small app module, made the current directory (as a user runs the command)."""
    (tmp_path / "cli_app.py").write_text(APP)
    (tmp_path / "imports_missing.py").write_text("import no_such_dependency_module\n")
    (tmp_path / "raises_on_import.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    for name in ("cli_app", "imports_missing", "raises_on_import"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return tmp_path


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m di_tasks`` in a subprocess, as a user would."""
    return subprocess.run(  # our own interpreter and module
        [sys.executable, "-m", "di_tasks", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


# -- as a subprocess --------------------------------------------------------------------------------------------


def test_graph_prints_the_tree(app_dir: Path) -> None:
    """``graph module:function`` prints the text tree on stdout and exits 0."""
    done = run_cli("graph", "cli_app:send", cwd=app_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("cli_app.send  [sync, call scope]\n├── db: get_db  [sync, request scope, cached]\n")
    assert done.stderr == ""


@pytest.mark.parametrize(("fmt", "start"), [("mermaid", "flowchart TD\n"), ("dot", 'digraph "cli_app.send" {\n')])
def test_graph_formats(app_dir: Path, fmt: str, start: str) -> None:
    """``--format mermaid`` and ``--format dot`` print those renderings."""
    done = run_cli("graph", "cli_app:send", "--format", fmt, cwd=app_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(start)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module:send", "cannot import module 'no_such_module': no module named 'no_such_module'"),
        ("cli_app:missing", "'cli_app' has no attribute 'missing'; check the name after the colon"),
        ("cli_app:NOT_CALLABLE", "'cli_app:NOT_CALLABLE' is not a function or class but a value of type int"),
        ("cli_app", "'cli_app' is not a target; write module:function"),
    ],
)
def test_bad_targets_exit_2_with_a_message_and_no_traceback(app_dir: Path, target: str, message: str) -> None:
    """A user mistake in the target: exit code 2, one clear line on stderr, no traceback, nothing on stdout."""
    done = run_cli("graph", target, cwd=app_dir)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_wiring_errors_exit_1_listing_each_with_its_path(app_dir: Path) -> None:
    """Every wiring error of the graph is printed with its dependency path; exit code 1, no traceback."""
    done = run_cli("graph", "cli_app:broken", cwd=app_dir)
    assert done.returncode == 1
    assert done.stderr.startswith("python -m di_tasks graph: 2 wiring error(s) in cli_app:broken:\n")
    assert "WiringError: parameter *args of cli_app.star cannot be injected" in done.stderr
    assert "dependency path: cli_app.broken -> cli_app.star" in done.stderr
    assert "ScopeError: " in done.stderr
    assert "dependency path: cli_app.broken -> cli_app.app_scoped -> cli_app.per_request" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_help_and_usage_errors(app_dir: Path) -> None:
    """No command is a usage error (exit 2); ``--help`` lists the commands."""
    assert run_cli(cwd=app_dir).returncode == 2
    done = run_cli("--help", cwd=app_dir)
    assert done.returncode == 0
    assert "demo" in done.stdout
    assert "graph" in done.stdout


# -- in process (every branch) ----------------------------------------------------------------------------------


def test_container_option_applies_its_overrides(app_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--container module:name`` solves with that container, so its overrides show."""
    assert _cli.main(["graph", "cli_app:send", "--container", "cli_app:overridden"]) == 0
    assert "db: fake_db  [sync, request scope, cached, overrides get_db]" in capsys.readouterr().out
    assert _cli.main(["graph", "cli_app:send", "--container", "cli_app:container"]) == 0
    assert "overrides" not in capsys.readouterr().out


def test_container_option_must_name_a_container(app_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--container`` pointing at something else exits 2 saying what it is."""
    assert _cli.main(["graph", "cli_app:send", "--container", "cli_app:get_db"]) == 2
    assert "--container 'cli_app:get_db' is not a Container but a value of type function" in capsys.readouterr().err


def test_an_injected_endpoint_is_drawn_whole(app_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A Container.inject wrapper is drawn through to the function it wraps, injected parameters included."""
    assert _cli.main(["graph", "cli_app:injected"]) == 0
    out = capsys.readouterr().out
    assert "db: get_db  [sync, request scope, cached]" in out
    assert "request_id: str  [value, required]" in out


def test_dotted_attributes(app_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``module:Class.attr`` reaches a nested attribute; a missing one names the object it was looked up on."""
    assert _cli.main(["graph", "cli_app:Api.handler"]) == 0
    assert "db: get_db" in capsys.readouterr().out
    assert _cli.main(["graph", "cli_app:Api.nope"]) == 2
    assert "'cli_app.Api' has no attribute 'nope'" in capsys.readouterr().err


def test_a_missing_parent_package_is_named(app_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``pkg.mod:f`` with no ``pkg`` names the missing package."""
    assert _cli.main(["graph", "no_such_pkg.api:f"]) == 2
    assert "cannot import module 'no_such_pkg.api': no module named 'no_such_pkg'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("target", "detail"),
    [
        ("imports_missing:f", "ModuleNotFoundError: No module named 'no_such_dependency_module'"),
        ("raises_on_import:f", "RuntimeError: boom at import"),
    ],
)
def test_a_module_that_fails_to_import_shows_its_traceback(
    app_dir: Path, capsys: pytest.CaptureFixture[str], target: str, detail: str
) -> None:
    """An error inside the user's module is theirs to see: the message, then the traceback that points at it."""
    assert _cli.main(["graph", target]) == 2
    err = capsys.readouterr().err
    assert f"error: importing the module of {target!r} raised:" in err
    assert "Traceback" in err
    assert detail in err


def test_the_current_directory_is_importable(
    app_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like ``python -m``, the command finds modules in the current directory even when it is not on sys.path."""
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in (str(app_dir), "")])
    assert _cli.main(["graph", "cli_app:send"]) == 0
    assert str(app_dir) in sys.path


def test_demo_runs_the_demo_with_its_own_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """``demo`` hands the rest of the command line to the demo and returns its exit code."""
    seen: list[Sequence[str] | None] = []

    def fake_main(argv: Sequence[str] | None = None) -> int:
        seen.append(argv)
        return 3

    monkeypatch.setattr(_demo, "main", fake_main)
    assert _cli.main(["demo", "--email", "x@example.com"]) == 3
    assert seen == [["--email", "x@example.com"]]


def test_main_reads_sys_argv_and_dunder_main_exits_with_its_code(
    app_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m di_tasks`` runs main() on sys.argv and exits with its return code."""
    monkeypatch.setattr(sys, "argv", ["di_tasks", "graph", "cli_app:NOT_CALLABLE"])
    # pytest's assertion rewriter claims di_tasks (it ships a pytest plugin) but cannot hand code to runpy
    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path if type(f).__name__ != "AssertionRewritingHook"])
    monkeypatch.delitem(sys.modules, "di_tasks.__main__", raising=False)
    with pytest.raises(SystemExit, match="2"):
        runpy.run_module("di_tasks", run_name="__main__")
    assert "is not a function or class" in capsys.readouterr().err


def test_an_unknown_format_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """``--format svg`` is refused by the parser (exit 2), listing the three formats."""
    with pytest.raises(SystemExit, match="2"):
        _cli.main(["graph", "cli_app:send", "--format", "svg"])
    assert "invalid choice: 'svg' (choose from" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("target", "code", "message"),
    [
        ("cli_app", 2, "'cli_app' is not a target; write module:function"),
        (":send", 2, "':send' is not a target"),
        ("cli_app:broken", 1, "2 wiring error(s) in cli_app:broken:\n  WiringError: parameter *args"),
    ],
)
def test_errors_in_process(
    app_dir: Path, capsys: pytest.CaptureFixture[str], target: str, code: int, message: str
) -> None:
    """The same error exits as in a subprocess, checked in process (malformed targets, wiring errors)."""
    assert _cli.main(["graph", target]) == code
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""


def test_importing_dunder_main_runs_nothing() -> None:
    """Importing ``di_tasks.__main__`` (as tools that scan packages do) does not run the command line."""
    module = importlib.import_module("di_tasks.__main__")
    assert module.main is _cli.main
