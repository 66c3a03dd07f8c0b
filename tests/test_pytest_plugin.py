"""The pytest plugin (di_tasks/pytest_plugin.py): its fixtures, its registration, and test isolation."""

from __future__ import annotations

import pytest

import di_tasks.pytest_plugin
from di_tasks import Container
from di_tasks.testing import CapturedTasks

pytest_plugins = ["pytester"]

APP = """
from typing import Annotated
from di_tasks import BackgroundTasks, Container, Depends

app_container = Container()

def get_db() -> str:
    return "real"

def note(message: str) -> None:
    raise RuntimeError("the real task must not run in tests")

async def endpoint(db: Annotated[str, Depends(get_db)], tasks: BackgroundTasks) -> str:
    tasks.add_task(note, f"saw {db}")
    return db
"""

BOTH_BACKENDS = """
import pytest

@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A user's project: an app module and a conftest that runs async tests on both backends."""
    pytester.makepyfile(plugin_app=APP)
    pytester.makeconftest(BOTH_BACKENDS)
    pytester.syspathinsert()
    return pytester


def test_the_plugin_is_registered_through_its_entry_point(request: pytest.FixtureRequest) -> None:
    """pytest loaded the module under the name ``di_tasks`` (the pytest11 entry point)."""
    assert request.config.pluginmanager.get_plugin("di_tasks") is di_tasks.pytest_plugin


def test_the_fixtures_in_this_session(di_container: Container, di_captured: CapturedTasks) -> None:
    """The fixtures work here too: a fresh container, its capture installed as its flusher."""
    assert isinstance(di_container, Container)
    assert di_container.flusher is di_captured
    assert len(di_captured) == 0


def test_fixtures_capture_and_run_on_asyncio_and_trio(project: pytest.Pytester) -> None:
    """A user's async test with di_container, di_override and di_captured passes on both backends."""
    project.makepyfile(
        test_user="""
        import pytest
        from plugin_app import endpoint, get_db, note

        pytestmark = pytest.mark.anyio

        async def test_endpoint(di_container, di_override, di_captured):
            di_override(get_db, lambda: "fake")
            assert await di_container.call(endpoint) == "fake"
            assert [(t.func, t.args) for t in di_captured] == [(note, ("saw fake",))]
            with pytest.raises(Exception, match="plugin_app.note") as caught:
                await di_captured.run()
            assert "must not run" in str(caught.value.exceptions[0])

        SEEN = []

        @pytest.mark.parametrize("n", [1, 2])
        def test_fresh_container_each_time(di_container, n):
            SEEN.append(di_container)
            assert len({id(c) for c in SEEN}) == n
        """
    )
    project.runpytest("-W", "error").assert_outcomes(passed=4)


def test_di_captured_held_runs_a_task_with_the_request_session_open(project: pytest.Pytester) -> None:
    """A user's async test with di_captured_held runs the task before the session's teardown, on both backends."""
    project.makepyfile(
        test_held="""
        from collections.abc import Iterator
        from typing import Annotated

        import anyio
        import pytest
        from di_tasks import BackgroundTasks, Depends

        pytestmark = pytest.mark.anyio
        LOG = []

        class Connection:
            open = True

            def execute(self, statement):
                if not self.open:
                    raise ValueError("no active connection")
                LOG.append(statement)

        def db_session() -> Iterator[Connection]:
            connection = Connection()
            yield connection
            connection.open = False
            LOG.append("closed")

        def save(db, name):
            db.execute(f"insert {name}")

        async def endpoint(tasks: BackgroundTasks, db: Annotated[Connection, Depends(db_session)]):
            tasks.add_task(save, db, "ada")

        async def test_save(di_container, di_captured_held):
            LOG.clear()
            async with anyio.create_task_group() as tg:
                tg.start_soon(di_container.call, endpoint)
                await di_captured_held.wait_for(1)
                await di_captured_held.run()
            assert LOG == ["insert ada", "closed"]
        """
    )
    project.runpytest("-W", "error").assert_outcomes(passed=2)


def test_overrides_stack_and_are_undone_at_teardown(project: pytest.Pytester) -> None:
    """Overrides given to di_override stack; after the test the container has none left."""
    project.makepyfile(
        test_stack="""
        import pytest
        import plugin_app
        from plugin_app import endpoint, get_db

        @pytest.fixture
        def di_container():
            return plugin_app.app_container

        def first():
            return "first"

        def second():
            return "second"

        def test_stacking(di_container, di_override, di_captured):
            di_override(get_db, first)
            di_override(get_db, second)
            assert "get_db" in di_container.solve(endpoint).render()
            assert "db: second" in di_container.solve(endpoint).render()

        def test_nothing_left_after(di_container):
            assert di_container.overrides == {}
            assert di_container.flusher.__class__.__name__ == "InProcessFlusher"
        """
    )
    project.runpytest("-p", "no:randomly").assert_outcomes(passed=2)


ISOLATION = """
import pytest
import plugin_app
from plugin_app import endpoint, get_db
from di_tasks.testing import call

pytestmark = pytest.mark.anyio

@pytest.fixture
def di_container():
    return plugin_app.app_container  # one container shared by every test of the process

def db_a():
    return "a"

def db_b():
    return "b"

async def test_a(di_override):
    di_override(get_db, db_a)
    assert (await call(endpoint, container=plugin_app.app_container)).result == "a"

async def test_b(di_override):
    di_override(get_db, db_b)
    assert (await call(endpoint, container=plugin_app.app_container)).result == "b"

async def test_none(di_container):
    assert (await call(endpoint, container=di_container)).result == "real"
"""


@pytest.mark.parametrize("order", ["forward", "reversed"])
def test_two_tests_overriding_the_same_dependency_in_one_process(project: pytest.Pytester, order: str) -> None:
    """In one process, in either order, each test sees its own override and the next test none of it."""
    source = ISOLATION
    if order == "reversed":
        project.makeconftest(
            BOTH_BACKENDS
            + """
def pytest_collection_modifyitems(items):
    items.reverse()
"""
        )
    project.makepyfile(test_isolation=source)
    project.runpytest("-p", "no:xdist").assert_outcomes(passed=6)


@pytest.mark.slow
def test_two_tests_overriding_the_same_dependency_under_xdist(project: pytest.Pytester) -> None:
    """Under pytest-xdist (two worker processes) the same tests pass, however they are distributed."""
    project.makepyfile(test_isolation=ISOLATION)
    result = project.runpytest_subprocess("-n", "2", "-p", "xdist")
    result.assert_outcomes(passed=6)


def test_the_plugin_can_be_disabled(project: pytest.Pytester) -> None:
    """``-p no:di_tasks`` removes the fixtures: a test asking for one errors with "fixture not found"."""
    project.makepyfile(test_off="def test_off(di_container):\n    pass\n")
    result = project.runpytest("-p", "no:di_tasks")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'di_container' not found*"])


def test_the_plugin_defines_no_anyio_backend(pytester: pytest.Pytester) -> None:
    """The plugin leaves ``anyio_backend`` to AnyIO and to the project's conftest (which picks the backends)."""
    assert not hasattr(di_tasks.pytest_plugin, "anyio_backend")
    pytester.makeconftest('import pytest\n\n@pytest.fixture\ndef anyio_backend():\n    return "trio"\n')
    pytester.makepyfile(
        test_default="""
        import pytest

        @pytest.mark.anyio
        async def test_backend(anyio_backend, di_captured):
            assert anyio_backend == "trio"
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_tests_that_use_no_fixture_are_untouched(pytester: pytest.Pytester) -> None:
    """A plain test in a project that never uses di_tasks' fixtures runs as if the plugin were absent."""
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    result = pytester.runpytest("-W", "error")
    result.assert_outcomes(passed=1)
