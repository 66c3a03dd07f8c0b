"""The example app tested the way its author would: fixtures from the di_tasks pytest plugin, the database
overridden, the queued email asserted on and then run."""

from __future__ import annotations

from dataclasses import dataclass, field

import example_app
import pytest
from example_app import Database, Mailer, count_users, get_db, get_mailer, health, send_welcome, signup

from di_tasks import BackgroundTaskError, Container
from di_tasks.pytest_plugin import Override
from di_tasks.testing import CapturedTasks, call, run, validate

pytestmark = pytest.mark.anyio


@pytest.fixture
def di_container() -> Container:
    """Test the app's own container (the plugin's fixtures then act on it)."""
    return example_app.container


@dataclass
class RecordingMailer(Mailer):
    """A mailer that records instead of sending."""

    sent: list[tuple[str, str]] = field(default_factory=list[tuple[str, str]])

    def send(self, to: str, subject: str) -> None:
        self.sent.append((to, subject))


@pytest.fixture
def test_db(di_override: Override) -> Database:
    """An in-memory database in place of the real one, for this test only."""
    db = Database("memory://")
    di_override(get_db, lambda: db)
    return db


@pytest.fixture
def mailer(di_override: Override) -> RecordingMailer:
    """A recording mailer in place of the SMTP one, for this test only."""
    recorder = RecordingMailer("test")
    di_override(get_mailer, lambda: recorder)
    return recorder


async def test_signup_queues_exactly_one_welcome_email(
    di_container: Container, di_captured: CapturedTasks, test_db: Database, mailer: RecordingMailer
) -> None:
    """Signing up stores the user and queues one welcome email with the right arguments; running it sends it."""
    async with di_container:
        result = await di_container.call(signup, email="ada@example.com")
    assert result == {"id": 1}
    assert test_db.users == {1: "ada@example.com"}
    assert len(di_captured) == 1
    (task,) = di_captured
    assert (task.func, task.args, task.kwargs) == (send_welcome, ("ada@example.com",), {"subject": "Welcome, user 1!"})
    assert mailer.sent == []  # captured, not run
    await di_captured.run()
    assert mailer.sent == [("ada@example.com", "Welcome, user 1!")]


async def test_the_email_task_failure_is_raised_when_run(test_db: Database) -> None:
    """Without a test mailer the captured task reaches the real one, and running it raises its failure."""
    outcome = await call(signup, container=example_app.container, email="bob@example.com")
    assert [t.func for t in outcome.tasks] == [send_welcome]
    with pytest.raises(BackgroundTaskError, match="send_welcome") as caught:
        await outcome.tasks.run()
    assert isinstance(caught.value.exceptions[0], ConnectionError)


async def test_call_with_overrides_returns_the_result_and_the_tasks() -> None:
    """testing.call overrides for one call only: result and captured tasks, nothing left on the container."""
    db = Database("memory://")
    outcome = await call(
        signup, container=example_app.container, overrides={get_db: lambda: db}, email="cy@example.com"
    )
    assert outcome.result == {"id": 1}
    assert [(t.func, t.args) for t in outcome.tasks] == [(send_welcome, ("cy@example.com",))]
    assert "overrides" not in example_app.container.solve(signup).render()


def test_from_sync_code(mailer: RecordingMailer) -> None:
    """The same from a plain (sync) test: testing.run, then run_sync on the captured tasks."""
    db = Database("memory://")
    outcome = run(signup, container=example_app.container, overrides={get_db: lambda: db}, email="di@example.com")
    outcome.tasks.run_sync()
    assert mailer.sent == [("di@example.com", "Welcome, user 1!")]


async def test_the_real_database_is_closed_after_the_request(test_db: Database) -> None:
    """Calling the dependency itself (even while it is overridden): testing.call sets it up and tears it down."""
    outcome = await call(get_db, container=example_app.container)
    assert outcome.result.url == "postgresql://prod/app"
    assert outcome.result.closed


def test_every_endpoint_is_wired() -> None:
    """One call checks every endpoint of the app."""
    validate(example_app.container, *example_app.ENDPOINTS)


@pytest.mark.parametrize("url", ["memory://first", "memory://second"])
async def test_two_tests_override_the_same_dependency_differently(di_override: Override, url: str) -> None:
    """Each test sees its own override of get_db, never the other test's."""
    di_override(get_db, lambda: Database(url))
    outcome = await call(health, container=example_app.container)
    assert outcome.result == {"database": url}
    assert (await call(count_users, container=example_app.container)).result == 0
