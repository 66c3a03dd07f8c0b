"""The load scenario of benchmarks/load.py at a reduced size: exact task counts and memory back to its baseline."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

LOAD = Path(__file__).resolve().parent.parent / "benchmarks" / "load.py"
REQUESTS = 2000
TIMEOUT = 150  # seconds for both servers, warm-up included; a normal run takes about ten


@pytest.fixture(scope="module")
def figures() -> dict[str, dict[str, Any]]:
    """Run the load script once (di_tasks, then the same app without it) and parse its JSON figures."""
    command = [
        sys.executable,
        str(LOAD),
        "--requests",
        str(REQUESTS),
        "--concurrency",
        "32",
        "--json",
        "--time-limit",
        "60",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)  # our own script
    assert done.returncode == 0, done.stderr[-3000:]
    return {r["mode"]: r for r in json.loads(done.stdout)}


@pytest.mark.slow
def test_every_task_runs_exactly_once_and_never_before_its_response(figures: dict[str, dict[str, Any]]) -> None:
    """Every request got its answer and each of its three tasks ran exactly once, after the response was sent."""
    for mode in ("di_tasks", "plain"):
        result = figures[mode]
        assert result["errors"] == 0, mode
        assert result["server_errors"] == [], mode
        server = result["server"]
        assert server["tasks_per_depth"] == [REQUESTS] * 3, mode
        assert server["exactly_once"] is True, mode
        assert server["early_tasks"] == 0, mode


@pytest.mark.slow
def test_memory_returns_to_its_baseline(figures: dict[str, dict[str, Any]]) -> None:
    """After the load, no scope, task, collector or context is left alive, and no allocated blocks piled up."""
    server = figures["di_tasks"]["server"]
    before, after = server["before"], server["after"]
    for kind in ("Scope", "Task", "BackgroundTasks"):
        assert after["objects"][kind] <= before["objects"][kind], (kind, before, after)
    assert after["objects"]["Context"] <= before["objects"]["Context"] + 5, (before, after)
    # one leaked object per request would add at least REQUESTS blocks
    assert after["blocks"] - before["blocks"] < REQUESTS // 4, (before["blocks"], after["blocks"], after["top"])


@pytest.mark.slow
def test_latencies_are_reported_for_both_apps(figures: dict[str, dict[str, Any]]) -> None:
    """Both runs report p50 and p99 latencies (compared in the notes, not asserted: the machine varies)."""
    for mode in ("di_tasks", "plain"):
        assert 0 < figures[mode]["p50_ms"] <= figures[mode]["p99_ms"] <= figures[mode]["max_ms"]
