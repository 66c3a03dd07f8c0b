"""The README and the documentation site run as written: every ```python block is executed.

Conventions for a block's info string (the rest of its opening line):

- ```python               a script: run in a fresh interpreter, in an empty temporary directory.
- ```python title="x.py"  a file of the page (an app module, a conftest.py): written into that directory before each
                          of the page's scripts runs, so they can import it. Each file is also checked on its own: a
                          ``test_*.py`` file is run with pytest, any other is imported.
- ```python { .skip }     shown, not run: only for code that cannot end by itself (a server that serves until
                          stopped). The page says so next to the block.

Any other info string fails, since the site's Markdown would not render it as code.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import di_tasks
import di_tasks.asgi
import di_tasks.celery
import di_tasks.fastapi
import di_tasks.litestar
import di_tasks.starlette
import di_tasks.testing

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = (README, *sorted(DOCS.rglob("*.md")))
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```$", flags=re.MULTILINE | re.DOTALL)
TITLE = re.compile(r'^ title="([\w/]+\.py)"$')
SKIP = " { .skip }"
MAX_SKIPPED = 2  # blocks that are shown but not run; each one is a server that never returns


@dataclass(frozen=True)
class Block:
    """One ```python block of a page."""

    page: Path
    number: int
    info: str
    code: str

    @property
    def title(self) -> str | None:
        """The file name the block is saved as, for a ``title="x.py"`` block."""
        match = TITLE.match(self.info)
        return match.group(1) if match else None

    @property
    def id(self) -> str:
        """``docs/tutorial/index.md:2``: the page and the block's rank on it, counted from 0."""
        return f"{self.page.relative_to(ROOT)}:{self.number}"


def blocks_of(page: Path) -> list[Block]:
    """Every ```python block of one page, in order."""
    found = FENCE.findall(page.read_text(encoding="utf-8"))
    return [Block(page, number, info, code) for number, (info, code) in enumerate(found)]


BLOCKS = [block for page in PAGES for block in blocks_of(page)]
SCRIPTS = [block for block in BLOCKS if block.info == ""]
FILES = [block for block in BLOCKS if block.title is not None]


def write_files(page: Path, directory: Path) -> None:
    """Write the page's ``title="x.py"`` blocks into ``directory``."""
    for block in blocks_of(page):
        if block.title is not None:
            target = directory / block.title
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code, encoding="utf-8")


def run_python(args: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the test's own interpreter in ``cwd``."""
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_the_readme_has_the_three_commands() -> None:
    """The README gives the demo, the test command (the one .ci/run runs) and the docs server."""
    text = README.read_text(encoding="utf-8")
    assert "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/python -m di_tasks demo" in text
    assert (
        "bash .ci/redis && python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"
        in text
    )
    assert ".venv/bin/python -m mkdocs serve" in text


def test_the_readme_is_short_and_links_into_the_docs() -> None:
    """The README stays under 250 lines, and every relative link in it points at a file that exists."""
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) < 250
    links = re.findall(r"\]\(((?!https?:|#)[^)#]+)(?:#[^)]*)?\)", text)
    assert sum(link.startswith("docs/") for link in links) >= 10
    missing = [link for link in links if not (ROOT / link).exists()]
    assert missing == []


def test_every_public_name_has_a_reference_entry() -> None:
    """Each name in the public modules' ``__all__`` and each pytest fixture is rendered on a Reference page."""
    reference = "".join(page.read_text(encoding="utf-8") for page in sorted((DOCS / "reference").glob("*.md")))
    entries = set(re.findall(r"^::: ([\w.]+)$", reference, flags=re.MULTILINE))
    public = {
        f"{module.__name__}.{name}"
        for module in (
            di_tasks,
            di_tasks.asgi,
            di_tasks.testing,
            di_tasks.celery,
            di_tasks.fastapi,
            di_tasks.starlette,
            di_tasks.litestar,
        )
        for name in module.__all__
    }
    fixtures = {f"di_tasks.pytest_plugin.{name}" for name in ("di_container", "di_captured", "di_override")}
    assert public | fixtures <= entries


def test_every_block_has_a_known_kind() -> None:
    """Every ```python block is a script, a titled file or a skipped block; few are skipped."""
    unknown = [block.id for block in BLOCKS if block.info not in ("", SKIP) and block.title is None]
    assert unknown == []
    assert len(SCRIPTS) >= 25  # a fence pattern that stopped matching would find none
    assert len([block for block in BLOCKS if block.info == SKIP]) <= MAX_SKIPPED


@pytest.mark.parametrize("block", SCRIPTS, ids=[block.id for block in SCRIPTS])
def test_example_runs(block: Block, tmp_path: Path) -> None:
    """Each script exits cleanly in a fresh interpreter, next to its page's files only."""
    write_files(block.page, tmp_path)
    script = tmp_path / f"example_{block.number}.py"
    script.write_text(block.code, encoding="utf-8")
    done = run_python([script.name], tmp_path)
    assert done.returncode == 0, f"{block.id} failed:\n{block.code}\n{done.stderr}"


@pytest.mark.parametrize("block", FILES, ids=[f"{block.id}:{block.title}" for block in FILES])
def test_example_file_works(block: Block, tmp_path: Path) -> None:
    """A page's test file passes under pytest; any other file of the page imports cleanly."""
    assert block.title is not None
    write_files(block.page, tmp_path)
    name = Path(block.title)
    if name.name.startswith("test_"):
        done = run_python(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", block.title], tmp_path, 120)
        assert done.returncode == 0, f"{block.id} failed:\n{done.stdout}\n{done.stderr}"
        assert " passed" in done.stdout
    else:
        module = ".".join(name.with_suffix("").parts)
        done = run_python(["-c", f"import {module}"], tmp_path)
        assert done.returncode == 0, f"{block.id} ({block.title}) does not import:\n{done.stderr}"
