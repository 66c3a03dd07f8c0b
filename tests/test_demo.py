"""The demo plays the seed scenario: result first, then one flush of tasks from three depths."""

import subprocess
import sys
from pathlib import Path

import pytest

from di_tasks._demo import main


def test_demo_prints_the_result_before_the_tasks(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The call returns first; the three tasks then run in the order added; the log file holds them."""
    log = tmp_path / "log.txt"
    assert main(["--log", str(log), "--email", "x@example.com", "--q", "invoices"]) == 0
    out = capsys.readouterr().out
    returned = out.index("send_notification returned")
    ran = [
        out.index(f"task ran: write_log('{line}')")
        for line in (
            "audit: notification requested for x@example.com",
            "found query: invoices",
            "message to x@example.com",
        )
    ]
    assert returned < ran[0] < ran[1] < ran[2]
    assert log.read_text().splitlines() == [
        "audit: notification requested for x@example.com",
        "found query: invoices",
        "message to x@example.com",
    ]


def test_demo_runs_on_trio_with_a_temporary_log(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --log the demo writes to a temporary file and shows it."""
    assert main(["--backend", "trio"]) == 0
    out = capsys.readouterr().out
    assert "(a temporary file, deleted now; pass --log PATH to keep one) now contains:" in out
    shown = next(line for line in out.splitlines() if "now contains:" in line).split(" (a temporary")[0]
    assert Path(shown).is_absolute()
    assert Path(shown).name == "log.txt"


def test_demo_prints_where_the_log_is(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """With --log the demo prints the file's absolute path, so the reader can open it."""
    log = tmp_path / "log.txt"
    assert main(["--log", str(log)]) == 0
    assert f"{log} now contains:" in capsys.readouterr().out


def test_demo_runs_as_a_module() -> None:
    """`python -m di_tasks demo` works as the README says."""
    done = subprocess.run(
        [sys.executable, "-m", "di_tasks", "demo"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "What happened, in order:" in done.stdout
