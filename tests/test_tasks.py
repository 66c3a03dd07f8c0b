"""The collector and task handles: argument checks, outcomes, threads, context, timeouts, dependencies."""

import contextvars
import functools
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from di_tasks import BackgroundTaskError, BackgroundTasks, Container, Depends, ScopeError, Task, TaskState
from di_tasks._tasks import run_in_context

pytestmark = pytest.mark.anyio

EVENTS: list[Any] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    EVENTS.clear()


def note(what: object) -> None:
    EVENTS.append(what)


async def anote(what: object) -> str:
    EVENTS.append(what)
    return f"noted {what}"


def unchecked(tasks: BackgroundTasks) -> Any:
    """The collector typed Any: the mistakes under test must reach the runtime checks."""
    return tasks


def two_args(a: int, b: int, *, c: int = 0) -> int:
    return a + b + c


def test_add_task_checks_arguments_at_the_call_site() -> None:
    """Wrong arguments raise TypeError naming the function now, not in the background."""
    tasks = BackgroundTasks()
    with pytest.raises(TypeError, match=r"add_task\(.*two_args, \.\.\.\): missing a required argument: 'b'"):
        unchecked(tasks).add_task(two_args, 1)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'd'"):
        unchecked(tasks).add_task(two_args, 1, 2, d=3)
    with pytest.raises(TypeError, match="too many positional arguments"):
        unchecked(tasks).add_task(note, 1, 2)
    assert len(tasks) == 0
    tasks.add_task(two_args, 1, 2, c=3)
    tasks.add_task(two_args, a=1, b=2)
    assert len(tasks) == 2


def test_add_task_rejects_awaitables_generators_and_non_callables() -> None:
    """`add_task(f())` and other non-functions fail at once with the fix in the message."""
    tasks = BackgroundTasks()
    coro = anote("x")
    with pytest.raises(TypeError, match=r"add_task\(f, arg\) instead of add_task\(f\(arg\)\)"):
        unchecked(tasks).add_task(coro)
    coro.close()
    with pytest.raises(TypeError, match="not callable"):
        unchecked(tasks).add_task(42)

    def gen() -> Any:
        yield 1

    with pytest.raises(TypeError, match="a generator function cannot be a background task"):
        tasks.add_task(gen)


def test_collector_shows_pending_tasks_with_their_arguments() -> None:
    """Iteration and len show pending tasks; each handle keeps func, args and kwargs."""
    tasks = BackgroundTasks()
    task = tasks.add_task(two_args, 1, 2, c=3)
    assert list(tasks) == [task]
    assert (task.func, task.args, task.kwargs) == (two_args, (1, 2), {"c": 3})
    assert task.state is TaskState.PENDING
    assert task.name.endswith("two_args")
    assert "two_args pending" in repr(task)
    assert "two_args" in repr(tasks)
    assert tasks.all == (task,)


async def test_task_handle_outcome_can_be_awaited() -> None:
    """`await task.wait()` returns the result after the flush, or raises the task's exception."""
    container = Container()
    scope = container.scope()
    ok = scope.tasks.add_task(anote, "x")
    bad = scope.tasks.add_task(failing)
    results: list[Any] = []
    async with anyio.create_task_group() as tg:

        async def waiter() -> None:
            results.append(await ok.wait())
            with pytest.raises(ValueError, match="task failed"):
                await bad.wait()
            results.append("bad raised")

        tg.start_soon(waiter)
        await anyio.lowlevel.checkpoint()
        await scope.close(raise_task_errors=False)
    assert results == ["noted x", "bad raised"]
    assert ok.state is TaskState.SUCCEEDED
    assert ok.result == "noted x"
    assert ok.done
    assert bad.state is TaskState.FAILED
    assert isinstance(bad.exception, ValueError)
    assert await ok.wait() == "noted x"  # already done: returns at once


async def test_wait_on_a_skipped_task_says_it_has_no_outcome() -> None:
    """A task that was skipped cannot produce a result; wait() says why."""
    scope = Container().scope()
    task = scope.tasks.add_task(note, 1)
    await scope.close(ValueError("body"))
    with pytest.raises(ScopeError, match="has no outcome: it was skipped"):
        await task.wait()


def failing() -> None:
    raise ValueError("task failed")


async def test_one_failure_never_stops_the_others_and_call_raises_afterwards(caplog: pytest.LogCaptureFixture) -> None:
    """Every task runs; each failure is logged with the name and traceback; call raises the group."""
    seen: list[tuple[Task, BaseException]] = []

    async def endpoint(tasks: BackgroundTasks) -> str:
        tasks.add_task(failing)
        tasks.add_task(note, "second")
        tasks.add_task(failing)
        return "done"

    container = Container(on_task_error=lambda task, exc: seen.append((task, exc)))
    with (
        caplog.at_level(logging.ERROR, logger="di_tasks"),
        pytest.raises(BackgroundTaskError, match="2 background task") as info,
    ):
        await container.call(endpoint)
    assert EVENTS == ["second"]
    assert len(info.value.exceptions) == 2
    assert all(isinstance(e, ValueError) for e in info.value.exceptions)
    assert [t.name for t in info.value.tasks] == [seen[0][0].name, seen[1][0].name]
    assert "2 background task(s) failed" in str(info.value)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert all("failing failed" in r.getMessage() and r.exc_info for r in errors)


def test_run_raises_background_task_error_from_a_script() -> None:
    """Container.run raises the group after all tasks ran, and it works with except*."""

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(failing)
        tasks.add_task(note, "ran")

    caught: list[BaseException] = []
    try:
        Container().run(endpoint)
    except* ValueError as group:
        caught.extend(group.exceptions)
    assert EVENTS == ["ran"]
    assert len(caught) == 1


async def test_a_raising_error_hook_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    """The error hook's own failure does not hide the task failure."""

    def bad_hook(task: Task, exc: BaseException) -> None:
        raise RuntimeError("hook broke")

    container = Container(on_task_error=bad_hook)
    scope = container.scope()
    scope.tasks.add_task(failing)
    with caplog.at_level(logging.ERROR, logger="di_tasks"):
        await scope.close(raise_task_errors=False)
    assert any("on_task_error hook raised" in r.getMessage() for r in caplog.records)


async def test_sync_tasks_run_in_a_worker_thread_and_async_tasks_on_the_loop() -> None:
    """Sync tasks never block the event loop thread; async tasks run on it."""
    loop_thread = threading.get_ident()

    def sync_task() -> None:
        note(("sync", threading.get_ident() != loop_thread))

    async def async_task() -> None:
        note(("async", threading.get_ident() == loop_thread))

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(sync_task)
        tasks.add_task(async_task)

    await Container().call(endpoint)
    assert EVENTS == [("sync", True), ("async", True)]


REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("REQUEST_ID", default="unset")


async def test_tasks_run_in_a_copy_of_the_context_they_were_added_in() -> None:
    """Both kinds see context variables set before add_task; their own changes do not leak back."""

    def sync_task() -> None:
        note(("sync", REQUEST_ID.get()))
        REQUEST_ID.set("changed by sync task")

    async def async_task() -> None:
        await anyio.lowlevel.checkpoint()
        note(("async", REQUEST_ID.get()))
        REQUEST_ID.set("changed by async task")

    async def endpoint(tasks: BackgroundTasks) -> None:
        REQUEST_ID.set("req-1")
        tasks.add_task(sync_task)
        tasks.add_task(async_task)

    await Container().call(endpoint)
    assert EVENTS == [("sync", "req-1"), ("async", "req-1")]
    assert REQUEST_ID.get() == "req-1"  # the endpoint's own change, not the tasks'


async def test_run_in_context_forwards_exceptions_into_the_coroutine() -> None:
    """Cancellation and errors thrown at a suspension point reach the coroutine, which may handle them."""
    ctx = contextvars.copy_context()

    async def waits() -> str:
        try:
            await anyio.sleep(10)
        except anyio.get_cancelled_exc_class():
            note("cancelled inside")
            raise
        return "unreachable"

    with anyio.move_on_after(0.01):
        await run_in_context(ctx, waits())
    assert EVENTS == ["cancelled inside"]


async def test_per_task_timeout_fails_the_task_and_the_others_continue(caplog: pytest.LogCaptureFixture) -> None:
    """A task past its timeout fails with TimeoutError (logged); the next task still runs."""

    async def hangs() -> None:
        await anyio.sleep(10)

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(hangs).timeout = 0.05
        tasks.add_task(note, "after")

    with caplog.at_level(logging.ERROR, logger="di_tasks"), pytest.raises(BackgroundTaskError, match="hangs") as info:
        await Container().call(endpoint)
    assert EVENTS == ["after"]
    assert isinstance(info.value.exceptions[0], TimeoutError)
    assert any("timed out after 0.05s" in r.getMessage() for r in caplog.records)


async def test_container_task_timeout_applies_to_sync_tasks_too() -> None:
    """A sync task past the container's timeout is abandoned: the flush moves on, the task fails."""
    release = threading.Event()

    def blocks() -> None:
        release.wait(5)

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(blocks)

    try:
        with pytest.raises(BackgroundTaskError, match="blocks"):
            await Container(task_timeout=0.05).call(endpoint)
    finally:
        release.set()


async def test_cancellation_from_outside_is_recorded_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A task cancelled while running is marked cancelled, logged by name, and the cancel propagates."""

    async def hangs() -> None:
        await anyio.sleep(10)

    scope = Container().scope()
    task = scope.tasks.add_task(hangs)
    with caplog.at_level(logging.WARNING, logger="di_tasks"), anyio.move_on_after(0.05):
        await task.run()
    assert task.state is TaskState.CANCELLED
    assert any("hangs was cancelled" in r.getMessage() for r in caplog.records)
    await task.run()  # not pending any more: a no-op
    assert task.state is TaskState.CANCELLED


class Mailer:
    def __init__(self) -> None:
        self.sent: list[str] = []


MAILERS: list[Mailer] = []


async def mailer() -> AsyncIterator[Mailer]:
    m = Mailer()
    MAILERS.append(m)
    yield m
    note("mailer closed")


def collector(tasks: BackgroundTasks) -> BackgroundTasks:
    return tasks


# Injected parameters of a task are declared in the default form so type checkers see them as optional
# at add_task.
async def send_email(
    to: str, subject: str = "hi", m: Mailer = Depends(mailer), tasks: BackgroundTasks = Depends(collector)
) -> str:
    m.sent.append(f"{to}:{subject}")
    tasks.add_task(note, f"follow-up for {to}")
    return "sent"


async def test_task_dependencies_resolve_in_a_fresh_scope_when_it_runs() -> None:
    """Injected task parameters are excluded from the check and resolved when the task runs, in its own scope."""
    MAILERS.clear()

    async def endpoint(tasks: BackgroundTasks, m: Annotated[Mailer, Depends(mailer)]) -> None:
        with pytest.raises(TypeError, match="injected parameters are filled when it runs"):
            unchecked(tasks).add_task(send_email, "a@example.com", m=m)
        tasks.add_task(send_email, "a@example.com", subject="welcome")

    await Container().call(endpoint)
    request_mailer, task_mailer = MAILERS
    assert request_mailer is not task_mailer
    assert task_mailer.sent == ["a@example.com:welcome"]
    assert EVENTS == ["follow-up for a@example.com", "mailer closed", "mailer closed"]


def sync_send(to: str, m: Mailer = Depends(mailer)) -> str:
    note(("sync_send in thread", threading.current_thread() is not threading.main_thread()))
    m.sent.append(to)
    return to


async def test_sync_task_with_dependencies_runs_its_body_in_a_thread() -> None:
    """The dependencies resolve on the loop; the sync body itself runs in a worker thread."""
    scope = Container().scope()
    task = scope.tasks.add_task(sync_send, "b@example.com")
    await scope.close()
    assert task.result == "b@example.com"
    assert EVENTS[0] == ("sync_send in thread", True)


async def failing_with_deps(m: Mailer = Depends(mailer)) -> None:
    raise ValueError("deps task failed")


async def test_a_failing_task_with_dependencies_tears_its_scope_down() -> None:
    """The task's own scope exits with the error; the task is recorded as failed."""
    scope = Container().scope()
    task = scope.tasks.add_task(failing_with_deps)
    await scope.close(raise_task_errors=False)
    assert task.state is TaskState.FAILED
    assert EVENTS == []  # the generator saw the error thrown in at its yield


def positional_only_task(a: int, /, m: Mailer = Depends(mailer)) -> None:
    """Positional-only parameters cannot be mixed with injection (arguments are passed by name)."""


def test_positional_only_parameters_with_injection_are_refused() -> None:
    """The mix is refused at add_task with the fix."""
    with pytest.raises(TypeError, match="cannot have positional-only parameters"):
        BackgroundTasks().add_task(positional_only_task, 1)


def test_partials_and_builtins_can_be_tasks() -> None:
    """Partials are checked through; builtins work when Python knows their signature, else fail at once."""
    tasks = BackgroundTasks()
    tasks.add_task(functools.partial(two_args, 1), 2)
    with pytest.raises(TypeError, match="missing a required argument"):
        unchecked(tasks).add_task(functools.partial(two_args, 1))
    tasks.add_task(print, "x", sep="")
    with pytest.raises(TypeError, match="cannot read the signature of vars"):
        tasks.add_task(vars, tasks)
    assert len(tasks) == 2


def test_keyboard_interrupt_in_a_task_is_recorded_and_let_through() -> None:
    """Non-Exception failures are recorded on the task but not swallowed."""

    def interrupt() -> None:
        raise KeyboardInterrupt

    async def main() -> Task:
        scope = Container().scope()
        task = scope.tasks.add_task(interrupt)
        try:
            await task.run()
        except KeyboardInterrupt:
            note("propagated")
        return task

    task = anyio.run(main)
    assert task.state is TaskState.FAILED
    assert EVENTS == ["propagated"]


def slow_sync_with_deps(m: Mailer = Depends(mailer)) -> None:
    import time

    time.sleep(0.5)


async def test_timeout_applies_to_sync_tasks_with_dependencies() -> None:
    """The flush stops waiting for a sync task body past its timeout even when the task has dependencies."""
    scope = Container(task_timeout=0.05).scope()
    task = scope.tasks.add_task(slow_sync_with_deps)
    with anyio.fail_after(0.4):  # the body sleeps 0.5 s: the timeout must not wait for it
        await scope.close(raise_task_errors=False)
    assert task.state is TaskState.FAILED
    assert isinstance(task.exception, TimeoutError)


async def test_a_task_raising_its_own_timeout_error_is_a_plain_failure(caplog: pytest.LogCaptureFixture) -> None:
    """Only the task's deadline makes a 'timed out' log line; a TimeoutError the task raises is a failure."""

    async def own_timeout() -> None:
        raise TimeoutError("the SMTP server timed out")

    scope = Container(task_timeout=10).scope()
    scope.tasks.add_task(own_timeout)
    with caplog.at_level(logging.ERROR, logger="di_tasks"):
        await scope.close(raise_task_errors=False)
    messages = [r.getMessage() for r in caplog.records]
    assert any("own_timeout failed" in m for m in messages)
    assert not any("timed out after" in m for m in messages)


async def test_fail_records_logs_and_reports_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    """Task.fail marks the task failed, logs it with the reason and traceback, and calls on_task_error."""
    reported: list[tuple[str, str]] = []
    container = Container(on_task_error=lambda task, exc: reported.append((task.name, str(exc))))

    def send(to: str) -> None: ...

    async with container.scope() as scope:
        task = scope.tasks.add_task(send, "a@example.com")
        scope.tasks.take()  # a runner of one's own took it: the scope will not run it
        with caplog.at_level(logging.ERROR, logger="di_tasks"):
            task.fail(ConnectionError("broker down"), "could not be sent")
    assert task.state is TaskState.FAILED
    assert isinstance(task.exception, ConnectionError)
    assert task.container is container
    assert reported == [(task.name, "broker down")]
    record = next(r for r in caplog.records if "could not be sent" in r.getMessage())
    assert record.getMessage().endswith(f"{task.name} could not be sent")
    assert record.exc_info is not None


async def test_a_closed_collector_refuses_tasks() -> None:
    """BackgroundTasks.close() makes add_task raise ScopeError naming the function."""
    tasks = BackgroundTasks(Container(), label="GET /")

    def job() -> None: ...

    tasks.add_task(job)
    assert [t.label for t in tasks.take()] == ["GET /"]
    assert len(tasks) == 0
    tasks.close()
    with pytest.raises(ScopeError, match=r"cannot add .*job.* already exited"):
        tasks.add_task(job)


async def test_only_a_handed_off_task_can_be_reopened() -> None:
    """Task.reopen puts a handed-off task back to pending in the given context; any other state is refused."""
    import contextvars

    def job() -> None: ...

    async with Container().scope() as scope:
        task = scope.tasks.add_task(job)
        with pytest.raises(ScopeError, match=r"cannot be reopened: it is pending, not handed off"):
            task.reopen(contextvars.Context())
        context = task.context
        scope.tasks.take()
        task.mark(TaskState.HANDED_OFF)
        task.reopen(context)
        assert task.state is TaskState.PENDING
        assert task.context is context
        await task.run()
        assert task.done
        assert task.exception is None


async def test_a_task_observer_sees_each_task_start_and_finish() -> None:
    """Container(task_observer=...) is told when each task starts, and its callback runs once the state is final."""
    seen: list[tuple[str, str]] = []

    class Recorder:
        enabled = True

        def task_started(self, task: Task, /) -> Any:
            seen.append(("started", task.state.value))
            return lambda: seen.append(("finished", task.state.value))

    async def ok() -> None: ...

    async def fails() -> None:
        raise ValueError("boom")

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(ok)
        tasks.add_task(fails)

    with pytest.raises(BackgroundTaskError, match="1 background task"):
        await Container(task_observer=Recorder()).call(endpoint)
    assert seen == [("started", "running"), ("finished", "succeeded"), ("started", "running"), ("finished", "failed")]


async def test_a_task_observer_that_is_off_is_not_called_for_a_task() -> None:
    """An observer whose ``enabled`` is false gets no ``task_started`` call; it is read before each task, so one
    switched on by a task sees the tasks after it."""
    seen: list[str] = []

    class Switch:
        enabled = False

        def task_started(self, task: Task, /) -> Any:
            seen.append(task.func.__name__)
            return None

    observer = Switch()

    async def first() -> None:
        observer.enabled = True

    async def second() -> None: ...

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(first)
        tasks.add_task(second)

    await Container(task_observer=observer).call(endpoint)
    assert seen == ["second"]


async def test_a_sync_wrapper_around_an_async_task_runs_in_the_tasks_context() -> None:
    """A task function that is a plain wrapper returning a coroutine is called in the context add_task saw."""
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[str] = []

    async def inner() -> None:
        seen.append(var.get())

    @functools.wraps(inner)
    def wrapper() -> Any:
        seen.append(var.get())
        return inner()

    async def endpoint(tasks: BackgroundTasks) -> None:
        var.set("request")
        tasks.add_task(wrapper)

    await Container().call(endpoint)
    assert seen == ["request", "request"]


async def test_in_thread_is_true_only_while_a_sync_function_is_in_its_worker_thread() -> None:
    """Task.in_thread: a sync task (with or without dependencies) while its thread runs; never an async one."""
    seen: dict[str, bool] = {}
    entered = threading.Event()
    release = threading.Event()

    def blocking(name: str) -> None:
        entered.set()
        release.wait(5)

    def with_dependency(name: str, who: Annotated[str, Depends(lambda: "someone")]) -> None:
        blocking(name)

    async def on_the_loop() -> None:
        await anyio.lowlevel.checkpoint()

    container = Container()

    async def watch(func: Callable[..., None]) -> None:
        entered.clear()
        release.clear()
        async with container.scope() as scope:
            task = scope.tasks.add_task(func, "x")
            seen[f"{func.__name__} before"] = task.in_thread
            async with anyio.create_task_group() as group:
                group.start_soon(task.run)
                await anyio.to_thread.run_sync(entered.wait, 5)
                seen[f"{func.__name__} running"] = task.in_thread
                release.set()
            seen[f"{func.__name__} after"] = task.in_thread

    await watch(blocking)
    await watch(with_dependency)
    async with container.scope() as scope:
        task = scope.tasks.add_task(on_the_loop)
        await task.run()
        seen["async"] = task.in_thread
    assert seen == {
        "blocking before": False, "blocking running": True, "blocking after": False,
        "with_dependency before": False, "with_dependency running": True, "with_dependency after": False,
        "async": False,
    }  # fmt: skip


async def test_start_runs_a_task_up_to_its_first_suspension_and_the_rest_records_the_outcome() -> None:
    """Task.start runs a task now, in its context: one that never suspends is done (nothing to await); one that
    suspends is running, and awaiting what start returned finishes it; a first step that raises is recorded as the
    task's failure once awaited, like a later step's; a task that is not pending is not started again."""
    seen = contextvars.ContextVar("seen", default="")
    steps: list[str] = []

    async def quick() -> str:
        steps.append(f"quick {seen.get()}")
        return "done"

    async def slow() -> str:
        steps.append("slow: first step")
        await anyio.lowlevel.checkpoint()
        steps.append("slow: second step")
        return "late"

    async def broken() -> None:
        raise ValueError("at once")

    tasks = BackgroundTasks()
    seen.set("at add_task")
    first, second, third = tasks.add_task(quick), tasks.add_task(slow), tasks.add_task(broken)
    seen.set("later")

    assert first.start() is None
    assert (first.state, first.result, steps) == (TaskState.SUCCEEDED, "done", ["quick at add_task"])
    assert first.start() is None  # not pending any more: nothing runs twice

    rest = second.start()
    assert rest is not None
    assert (second.state, steps[-1]) == (TaskState.RUNNING, "slow: first step")
    await rest
    assert (second.state, second.result, steps[-1]) == (TaskState.SUCCEEDED, "late", "slow: second step")

    rest = third.start()
    assert rest is not None  # the error is decided where every outcome is: by awaiting the rest
    await rest
    assert third.state is TaskState.FAILED
    assert isinstance(third.exception, ValueError)
