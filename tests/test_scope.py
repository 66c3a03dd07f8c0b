"""Scopes: the exit order, caching per lifetime, teardown, and the body-raises policy."""

import gc
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import anyio
import pytest

from di_tasks import (
    BackgroundTaskError,
    BackgroundTasks,
    Container,
    Depends,
    DITasksError,
    MissingValueError,
    Scope,
    ScopeError,
    TaskState,
)
from di_tasks._scope import current_scope

pytestmark = pytest.mark.anyio

EVENTS: list[str] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    EVENTS.clear()


def note(what: str) -> None:
    EVENTS.append(what)


async def request_resource(tasks: BackgroundTasks) -> AsyncIterator[str]:
    note("request:setup")
    try:
        yield "session"
    finally:
        note("request:teardown")
        tasks.add_task(note, "task-added-in-teardown")


def call_resource() -> Iterator[str]:
    note("call:setup")
    yield "tmp"
    note("call:teardown")


async def endpoint(
    tasks: BackgroundTasks,
    session: Annotated[str, Depends(request_resource)],
    tmp: Annotated[str, Depends(call_resource, scope="call")],
) -> str:
    tasks.add_task(note, f"task-uses-{session}")
    note("endpoint:return")
    return "ok"


async def test_exit_order_is_the_documented_one() -> None:
    """Return, call teardown, tasks, request teardown LIFO, then tasks added during teardown."""
    assert await Container().call(endpoint) == "ok"
    assert EVENTS == [
        "request:setup",
        "call:setup",
        "endpoint:return",
        "call:teardown",
        "task-uses-session",
        "request:teardown",
        "task-added-in-teardown",
    ]


def first() -> Iterator[str]:
    note("first:setup")
    yield "1"
    note("first:teardown")


def second(a: Annotated[str, Depends(first)]) -> Iterator[str]:
    note("second:setup")
    yield a + "2"
    note("second:teardown")


async def uses_both(b: Annotated[str, Depends(second)]) -> str:
    return b


async def test_request_teardown_is_last_in_first_out() -> None:
    """Generators are torn down in reverse order of setup."""
    assert await Container().call(uses_both) == "12"
    assert EVENTS == ["first:setup", "second:setup", "second:teardown", "first:teardown"]


COUNT = {"n": 0}


def counted() -> int:
    COUNT["n"] += 1
    return COUNT["n"]


def left(c: Annotated[int, Depends(counted)]) -> int:
    return c


def right(c: Annotated[int, Depends(counted)]) -> int:
    return c


def uncached(c: Annotated[int, Depends(counted, use_cache=False)]) -> int:
    return c


async def diamond(
    a: Annotated[int, Depends(left)], b: Annotated[int, Depends(right)], c: Annotated[int, Depends(uncached)]
) -> tuple[int, int, int]:
    return a, b, c


async def test_a_shared_dependency_is_computed_once_unless_use_cache_is_false() -> None:
    """The diamond shares one value; `use_cache=False` computes its own."""
    COUNT["n"] = 0
    assert await Container().call(diamond) == (1, 1, 2)


async def plain(c: Annotated[int, Depends(counted)]) -> int:
    return c


async def test_request_cache_is_shared_by_calls_in_one_scope_only() -> None:
    """Two calls in one scope share request-scoped values; a new scope computes again."""
    COUNT["n"] = 0
    container = Container()
    async with container.scope() as scope:
        assert await scope.call(plain) == 1
        assert await scope.call(plain) == 1
    async with container.scope() as scope:
        assert await scope.call(plain) == 2


async def per_call(c: Annotated[int, Depends(counted, scope="call")]) -> int:
    return c


async def test_call_scope_values_are_fresh_for_every_call() -> None:
    """A call-scoped dependency is computed again for each call in the same scope."""
    COUNT["n"] = 0
    async with Container().scope() as scope:
        assert await scope.call(per_call) == 1
        assert await scope.call(per_call) == 2


async def boom_endpoint(tasks: BackgroundTasks, session: Annotated[str, Depends(request_resource)]) -> None:
    tasks.add_task(note, "never")
    raise ValueError("body failed")


async def test_body_raises_tasks_are_skipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """If the body raises, pending tasks do not run, are marked skipped, and are named at WARNING."""
    scope = Container().scope()
    with caplog.at_level(logging.WARNING, logger="di_tasks"), pytest.raises(ValueError, match="body failed"):
        async with scope:
            await scope.call(boom_endpoint)
    assert "never" not in EVENTS
    assert "task-added-in-teardown" not in EVENTS
    assert EVENTS == ["request:setup", "request:teardown"]
    assert all(t.state is TaskState.SKIPPED for t in scope.tasks.all)
    messages = [r.getMessage() for r in caplog.records]
    assert any("not run because the scope's body raised ValueError" in m and "note" in m for m in messages)


async def test_run_tasks_on_error_runs_them_anyway() -> None:
    """`run_tasks_on_error=True` flushes even when the body raised."""
    with pytest.raises(ValueError, match="body failed"):
        await Container(run_tasks_on_error=True).call(boom_endpoint)
    assert EVENTS == ["request:setup", "never", "request:teardown", "task-added-in-teardown"]


def sees_error() -> Iterator[str]:
    try:
        yield "x"
    except ValueError as exc:
        note(f"teardown saw {exc}")
        raise


async def raises_with_generator(x: Annotated[str, Depends(sees_error)]) -> None:
    raise ValueError("oops")


async def test_generators_see_the_body_exception() -> None:
    """The body's exception is thrown into generator teardown."""
    with pytest.raises(ValueError, match="oops"):
        await Container().call(raises_with_generator)
    assert EVENTS == ["teardown saw oops"]


def swallows() -> Iterator[str]:
    try:
        yield "x"
    except ValueError:
        note("swallowed")


async def raises_with_swallower(x: Annotated[str, Depends(swallows)]) -> None:
    raise ValueError("still raised")


async def test_a_generator_cannot_swallow_the_body_exception() -> None:
    """Suppressing in teardown does not hide the error from the caller."""
    with pytest.raises(ValueError, match="still raised"):
        await Container().call(raises_with_swallower)
    assert EVENTS == ["swallowed"]


def teardown_fails() -> Iterator[str]:
    yield "x"
    raise RuntimeError("teardown failed")


async def fine_with_failing_teardown(tasks: BackgroundTasks, x: Annotated[str, Depends(teardown_fails)]) -> str:
    tasks.add_task(note, "task ran")
    return "ok"


async def test_a_failing_teardown_raises_after_the_tasks_ran() -> None:
    """A teardown error propagates, but the tasks still ran before it."""
    with pytest.raises(RuntimeError, match="teardown failed"):
        await Container().call(fine_with_failing_teardown)
    assert EVENTS == ["task ran"]


def call_teardown_fails() -> Iterator[str]:
    try:
        yield "x"
    finally:
        raise RuntimeError("call teardown failed")  # a teardown that fails, on purpose


async def uses_failing_call_teardown(x: Annotated[str, Depends(call_teardown_fails, scope="call")]) -> str:
    return "ok"


async def failing_body_and_call_teardown(x: Annotated[str, Depends(call_teardown_fails, scope="call")]) -> str:
    raise ValueError("body")


async def test_call_scoped_teardown_errors_propagate() -> None:
    """A call-scoped teardown error propagates from the call, replacing a body error (chained)."""
    with pytest.raises(RuntimeError, match="call teardown failed"):
        await Container().call(uses_failing_call_teardown)
    with pytest.raises(RuntimeError, match="call teardown failed") as info:
        await Container().call(failing_body_and_call_teardown)
    assert isinstance(info.value.__context__, ValueError)


def yields_twice() -> Iterator[str]:
    yield "a"
    yield "b"


async def yields_twice_user(x: Annotated[str, Depends(yields_twice)]) -> str:
    return x


async def yields_twice_async() -> AsyncIterator[str]:
    yield "a"
    yield "b"


async def yields_twice_async_user(x: Annotated[str, Depends(yields_twice_async)]) -> str:
    return x


def never_yields() -> Iterator[str]:
    yield from ()


async def never_yields_user(x: Annotated[str, Depends(never_yields)]) -> str:
    return x


async def test_generators_must_yield_exactly_once() -> None:
    """Yielding twice or never is a DITasksError naming the generator."""
    with pytest.raises(DITasksError, match=r"yields_twice yielded more than once"):
        await Container().call(yields_twice_user)
    with pytest.raises(DITasksError, match=r"yields_twice_async yielded more than once"):
        await Container().call(yields_twice_async_user)
    with pytest.raises(DITasksError, match=r"never_yields returned without yielding"):
        await Container().call(never_yields_user)


async def test_yielding_twice_after_a_body_error_keeps_the_body_error_as_context() -> None:
    """A misbehaving generator after a failed body reports itself, chained to the body error."""

    def yields_again_on_error() -> Iterator[str]:
        try:
            yield "a"
        except ValueError:
            yield "b"

    async def body(x: Annotated[str, Depends(yields_again_on_error)]) -> None:
        raise ValueError("body")

    with pytest.raises(DITasksError, match="more than once") as info:
        await Container().call(body)
    assert isinstance(info.value.__context__, ValueError)


def needs_user(user: str) -> str:
    return user


async def reads_user(u: Annotated[str, Depends(needs_user)]) -> str:
    return u


async def test_scope_values_reach_every_depth_and_call_values_add_to_them() -> None:
    """Values given to the scope are visible to sub-dependencies; call values add to them."""
    async with Container().scope(user="ada") as scope:
        assert scope.values == {"user": "ada"}
        assert await scope.call(reads_user) == "ada"
    async with Container().scope() as scope:
        assert await scope.call(reads_user, user="bob") == "bob"


async def test_missing_value_names_the_parameter_function_and_path() -> None:
    """Nothing runs when a value is missing; the error carries the path."""
    with pytest.raises(MissingValueError, match=r"no value for parameter 'user' of .*needs_user") as info:
        await Container().call(reads_user)
    assert info.value.parameter == "user"
    assert info.value.function.endswith("needs_user")
    assert info.value.path[-1].endswith("needs_user")
    assert "reads_user -> " in str(info.value)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now


def reads_clock(clock: Clock) -> float:
    return clock.now


async def clock_user(t: Annotated[float, Depends(reads_clock)]) -> float:
    return t


async def test_values_bound_by_type() -> None:
    """`Scope.bind` fills parameters annotated with that class; by name wins over by type."""
    async with Container().scope() as scope:
        scope.bind(Clock, Clock(1.0))
        assert await scope.call(clock_user) == 1.0
        assert await scope.call(reads_clock, clock=Clock(2.0)) == 2.0
    with pytest.raises(MissingValueError, match=r"Clock value was given by name or bound by type"):
        await Container().call(clock_user)


async def test_bind_rejects_builtins_and_non_classes() -> None:
    """Builtins are never matched by type, so binding one is an error at the point of the mistake."""
    async with Container().scope() as scope:
        with pytest.raises(TypeError, match="non-builtin class"):
            scope.bind(str, "x")
        with pytest.raises(TypeError, match="non-builtin class"):
            not_a_class: Any = "Clock"
            scope.bind(not_a_class, 1)


async def wants_scope(scope: Scope, container: Container) -> tuple[Scope, Container]:
    return scope, container


async def test_scope_and_container_are_special_parameters() -> None:
    """Parameters annotated Scope or Container receive the current ones."""
    container = Container()
    async with container.scope() as scope:
        got_scope, got_container = await scope.call(wants_scope)
    assert got_scope is scope
    assert got_container is container


async def test_current_scope_is_set_inside_the_block() -> None:
    """`async with container.scope()` makes the scope current and restores the previous one."""
    assert current_scope.get() is None
    async with Container().scope() as scope:
        assert current_scope.get() is scope
    assert current_scope.get() is None


async def test_a_closed_scope_refuses_calls_and_tasks() -> None:
    """After exit, calling in the scope or adding to its collector is a ScopeError."""
    async with Container().scope() as scope:
        pass
    with pytest.raises(ScopeError, match="already exited"):
        await scope.call(reads_user)
    with pytest.raises(ScopeError, match="already exited and flushed"):
        scope.tasks.add_task(note, "late")
    await scope.close()  # closing twice is harmless


def failing_task() -> None:
    raise ValueError("task failed")


async def test_task_failures_raise_at_scope_exit_unless_told_not_to() -> None:
    """The scope raises BackgroundTaskError after every task ran; `raise_task_errors=False` only logs."""
    with pytest.raises(BackgroundTaskError, match="1 background task"):
        async with Container().scope() as scope:
            scope.tasks.add_task(failing_task)
            scope.tasks.add_task(note, "after")
    assert EVENTS == ["after"]
    scope = Container().scope()
    scope.tasks.add_task(failing_task)
    await scope.close(raise_task_errors=False)
    assert scope.tasks.all[0].state is TaskState.FAILED


async def test_tasks_added_while_flushing_also_run() -> None:
    """A task that adds to the same collector while it is flushed is not dropped."""
    async with Container().scope() as scope:
        collector = scope.tasks

        def adds_more() -> None:
            collector.add_task(note, "added during flush")

        collector.add_task(adds_more)
    assert EVENTS == ["added during flush"]


async def test_cancelled_body_still_tears_down() -> None:
    """When the caller is cancelled, teardown still runs (shielded) and tasks are skipped."""
    container = Container()

    async def slow(session: Annotated[str, Depends(request_resource)], tasks: BackgroundTasks) -> None:
        tasks.add_task(note, "never")
        await anyio.sleep(10)

    with anyio.move_on_after(0.05):
        await container.call(slow)
    assert EVENTS == ["request:setup", "request:teardown"]


def test_a_forgotten_scope_with_pending_tasks_warns() -> None:
    """A scope collected without exiting warns with the names of the tasks that never ran."""
    scope = Container().scope()
    scope.tasks.add_task(note, "lost")
    with pytest.warns(RuntimeWarning, match=r"1 background task\(s\) never ran: .*note"):
        del scope
        gc.collect()


def rollback_in_thread() -> Iterator[str]:
    try:
        yield "session"
    except ValueError:
        note("rolled back in a thread")


async def uses_thread_rollback(s: Annotated[str, Depends(rollback_in_thread, sync_to_thread=True)]) -> None:
    raise ValueError("body failed")


async def test_a_thread_generator_that_handles_the_error_keeps_the_body_error() -> None:
    """A sync_to_thread generator that catches the body's error and returns: the body's error still propagates."""
    with pytest.raises(ValueError, match="body failed"):
        await Container().call(uses_thread_rollback)
    assert EVENTS == ["rolled back in a thread"]


async def test_a_teardown_that_fails_after_a_cancelled_body_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A cancelled body's teardown still runs; if it raises, the error is logged and the cancellation goes on."""
    torn: list[bool] = []

    def broken() -> Iterator[int]:
        try:
            yield 1
        finally:
            torn.append(True)
            raise RuntimeError("teardown broke")  # a teardown that fails, on purpose

    async def body(x: Annotated[int, Depends(broken)]) -> None:
        await anyio.sleep_forever()

    with anyio.move_on_after(0.01) as deadline:
        await Container().call(body)
    assert deadline.cancelled_caught
    assert torn == [True]
    assert "tearing down a cancelled scope failed" in caplog.text
    assert "teardown broke" in caplog.text


async def test_a_task_failing_in_another_scope_while_this_one_exits_is_not_raised_here() -> None:
    """The failed-task count is the container's: a task of another scope failing while this scope runs its tasks
    or tears down does not make this scope raise; the other scope raises it."""
    container = Container()
    started = anyio.Event()
    release = anyio.Event()

    async def slow_ok() -> None:
        started.set()
        await release.wait()

    async def failing() -> None:
        raise ValueError("the other scope's")

    async def slow_teardown() -> AsyncIterator[int]:
        yield 1
        started.set()
        await release.wait()

    async def with_a_task(tasks: BackgroundTasks) -> str:
        tasks.add_task(slow_ok)
        return "with a task"

    async def with_a_teardown(x: Annotated[int, Depends(slow_teardown)]) -> str:
        return "with a teardown"

    async def fails(tasks: BackgroundTasks) -> None:
        tasks.add_task(failing)

    for endpoint in (with_a_task, with_a_teardown):
        started, release = anyio.Event(), anyio.Event()
        results: list[str] = []

        async def run(endpoint: Any = endpoint, results: list[str] = results) -> None:
            results.append(await container.call(endpoint))

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await started.wait()
            with pytest.raises(BackgroundTaskError, match="failing"):
                await container.call(fails)
            release.set()
        assert results == [endpoint.__name__.replace("_", " ")]


async def test_tasks_added_during_teardown_after_a_task_stopped_the_flush_are_skipped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A task that lets a BaseException through stops the flush: a task added afterwards, during teardown, is skipped
    and logged with that reason, every teardown runs, and the BaseException propagates."""
    added: list[Any] = []

    async def stops() -> None:
        raise KeyboardInterrupt

    async def later() -> None:
        raise AssertionError("never run")

    def adds_in_teardown(tasks: BackgroundTasks) -> Iterator[int]:
        yield 1
        added.append(tasks.add_task(later))

    async def body(tasks: BackgroundTasks, x: Annotated[int, Depends(adds_in_teardown)]) -> None:
        tasks.add_task(stops)

    with pytest.raises(KeyboardInterrupt):
        await Container().call(body)
    assert added[0].state is TaskState.SKIPPED
    assert "not run because KeyboardInterrupt stopped the flush: " in caplog.text


async def test_a_scope_closed_in_another_context_than_it_was_entered_in_still_closes() -> None:
    """A scope entered in one task and closed in another (a lifespan task, say) exits as usual: its tasks run and it
    closes; the context it was entered in is the other task's, so there is nothing to reset here."""
    ran: list[str] = []

    async def job() -> None:
        ran.append("job")

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(job)

    scope = Container().scope()
    await scope.__aenter__()
    await scope.call(endpoint)
    async with anyio.create_task_group() as tg:
        tg.start_soon(scope.close)  # a task of its own runs in a copy of this context
    assert not scope.is_open
    assert ran == ["job"]
    current_scope.set(None)  # this test's own context still names it, as a task that entered it would
