"""The README's examples run as written: every ```python block is executed as a script."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", README.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)


def test_the_readme_has_examples_and_the_two_commands() -> None:
    """The README opens with the demo and test commands and carries runnable examples."""
    text = README.read_text(encoding="utf-8")
    assert ".venv/bin/python -m di_tasks demo" in text
    assert (
        "bash .ci/redis && python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"
        in text
    )
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_readme_example_runs(number: int, tmp_path: Path) -> None:
    """Each example exits cleanly in a fresh interpreter and an empty directory."""
    script = tmp_path / f"example_{number}.py"
    script.write_text(BLOCKS[number], encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"README example {number} failed:\n{BLOCKS[number]}\n{done.stderr}"
