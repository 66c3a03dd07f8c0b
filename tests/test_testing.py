"""di_tasks.testing: capturing tasks, running them on demand, calling with overrides, validating entry points."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Annotated, Any, Literal

import anyio
import anyio.lowlevel
import fastapi
import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from di_tasks import (
    BackgroundTaskError,
    BackgroundTasks,
    Container,
    DependencyCycleError,
    Depends,
    DITasksError,
    Scope,
    ScopeError,
    Task,
    TaskState,
    WiringError,
)
from di_tasks.asgi import ScopeMiddleware
from di_tasks.testing import CallResult, CapturedTasks, call, capture_tasks, run, validate, wiring_errors

pytestmark = pytest.mark.anyio

LOG: list[str] = []


@pytest.fixture(autouse=True)
def clear_log() -> Iterator[None]:
    """Each test starts with an empty log."""
    LOG.clear()
    yield
    LOG.clear()


def note(message: str) -> None:
    LOG.append(message)


def fail(message: str) -> None:
    raise ValueError(message)


def get_name() -> str:
    return "real"


def fake_name() -> str:
    return "fake"


def greet(name: str = Depends(get_name)) -> None:
    LOG.append(f"hello {name}")


async def endpoint(tasks: BackgroundTasks, who: str = "ada") -> str:
    tasks.add_task(note, f"first {who}")
    tasks.add_task(note, message=f"second {who}")
    return who


async def queues_greeting(tasks: BackgroundTasks) -> None:
    tasks.add_task(greet)


class Rejecting:
    """A flusher whose add-time check refuses a task named ``fail`` (as a queue refuses unpicklable ones)."""

    async def flush(self, tasks: Any, /) -> None:
        for task in tasks:
            await task.run()

    def check_task(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any], /) -> None:
        if func is fail:
            raise TypeError("fail cannot be sent to the queue")


def audit(tasks: BackgroundTasks) -> str:
    tasks.add_task(note, "audited")
    return "audit"


def outer(label: str = Depends(audit)) -> None:
    note(f"outer after {label}")


async def queues_outer(tasks: BackgroundTasks) -> None:
    tasks.add_task(outer)


EVENTS: list[str] = []


async def app_resource() -> AsyncIterator[str]:
    EVENTS.append("open")
    yield "resource"
    EVENTS.append("close")


def uses_app_resource(value: str = Depends(app_resource, scope="app")) -> None:
    EVENTS.append(f"task got {value}")


async def queues_app_task(tasks: BackgroundTasks) -> None:
    tasks.add_task(uses_app_resource)


def name_of(name: Annotated[str, Depends(get_name)]) -> str:
    return name


# -- capturing -------------------------------------------------------------------------------------------------


async def test_capture_records_tasks_instead_of_running_them() -> None:
    """Every task of every scope of the container is recorded, in order, with its function and arguments."""
    container = Container()
    with capture_tasks(container) as captured:
        assert await container.call(endpoint) == "ada"
        await container.call(endpoint, who="bob")
    assert LOG == []
    assert [(t.func, t.args, t.kwargs) for t in captured] == [
        (note, ("first ada",), {}),
        (note, (), {"message": "second ada"}),
        (note, ("first bob",), {}),
        (note, (), {"message": "second bob"}),
    ]
    assert all(t.state is TaskState.HANDED_OFF for t in captured)
    assert len(captured) == 4
    assert captured[0].args == ("first ada",)
    assert [t.args for t in captured[2:3]] == [("first bob",)]
    assert repr(captured).startswith("<CapturedTasks ['test_testing.note'")


async def test_capture_restores_the_flusher_and_later_scopes_run_their_tasks() -> None:
    """After the block the container's own flusher is back: tasks run as usual again."""
    container = Container()
    flusher = container.flusher
    with capture_tasks(container):
        assert container.flusher is not flusher
    assert container.flusher is flusher
    await container.call(endpoint)
    assert LOG == ["first ada", "second ada"]


async def test_nested_captures_each_see_their_own_tasks() -> None:
    """An inner capture takes the tasks of its block; the outer one gets the rest."""
    container = Container()
    with capture_tasks(container) as outer:
        await container.call(endpoint, who="outer")
        with capture_tasks(container) as inner:
            await container.call(endpoint, who="inner")
        await container.call(endpoint, who="outer again")
    assert [t.args or t.kwargs["message"] for t in inner] == [("first inner",), "second inner"]
    assert len(outer) == 4


async def test_capture_of_one_scope_leaves_other_scopes_alone() -> None:
    """Capturing a scope records that scope's tasks only; other scopes of the container run theirs."""
    container = Container()
    scope = container.scope(who="captured")
    with capture_tasks(scope) as captured:
        async with scope:
            await scope.call(endpoint)
            await container.call(endpoint, who="other")
            assert LOG == ["first other", "second other"]
    assert [t.func for t in captured] == [note, note]
    assert captured[0].args == ("first captured",)
    assert LOG == ["first other", "second other"]


def test_capture_rejects_what_is_neither_a_container_nor_a_scope() -> None:
    """A wrong target is a TypeError that names what it got."""
    with (
        pytest.raises(TypeError, match=r"capture_tasks\(\) takes a Container or a Scope, got 42"),
        capture_tasks(42),  # type: ignore[arg-type]  # the mistake under test
    ):
        pass


@pytest.mark.parametrize("per_scope", [False, True])
async def test_capture_keeps_the_replaced_flushers_add_time_check(per_scope: bool) -> None:
    """A task the real flusher would refuse is refused while capturing too, at the add_task call."""
    container = Container(flusher=Rejecting())

    async def adds_fail(tasks: BackgroundTasks) -> None:
        tasks.add_task(fail, "x")

    scope = container.scope()
    with capture_tasks(scope if per_scope else container) as captured:
        with pytest.raises(TypeError, match="fail cannot be sent to the queue"):
            async with scope:
                await scope.call(adds_fail)
        async with container.scope() as other:
            await other.call(endpoint)
    assert len(captured) == (0 if per_scope else 2)


async def test_capture_without_a_check_accepts_every_task() -> None:
    """With the default flusher (no add-time check) capturing checks nothing more."""
    container = Container()
    with capture_tasks(container) as captured:
        async with container.scope() as scope:
            scope.tasks.add_task(fail, "x")
    assert captured.of(fail)[0].args == ("x",)
    assert captured.of(note) == []


# -- running on demand -----------------------------------------------------------------------------------------


async def test_run_runs_every_captured_task_once_in_order() -> None:
    """run() runs the tasks not run yet, in the order added; a second run() runs nothing again."""
    container = Container()
    with capture_tasks(container) as captured:
        await container.call(endpoint)
    assert captured.pending == list(captured)
    await captured.run()
    assert LOG == ["first ada", "second ada"]
    assert [t.state for t in captured] == [TaskState.SUCCEEDED, TaskState.SUCCEEDED]
    assert captured.pending == []
    await captured.run()
    assert LOG == ["first ada", "second ada"]


async def test_run_raises_every_failure_after_running_every_task() -> None:
    """One failing task does not stop the others; run() raises all the failures at the end."""
    container = Container()

    async def two_failures(tasks: BackgroundTasks) -> None:
        tasks.add_task(fail, "one")
        tasks.add_task(note, "between")
        tasks.add_task(fail, "two")

    with capture_tasks(container) as captured:
        await container.call(two_failures)
    with pytest.raises(BackgroundTaskError, match=r"2 captured task\(s\) failed") as caught:
        await captured.run()
    assert [str(e) for e in caught.value.exceptions] == ["one", "two"]
    assert caught.value.tasks == (captured[0], captured[2])
    assert LOG == ["between"]


async def test_run_uses_the_overrides_active_when_the_tasks_were_captured() -> None:
    """A task with dependencies runs, later, under the overrides that applied when it was queued."""
    container = Container()
    with capture_tasks(container) as captured:
        with container.override(get_name, fake_name):
            await container.call(queues_greeting)
        await container.call(queues_greeting)
    await captured.run()
    assert LOG == ["hello fake", "hello real"]
    assert "overrides" not in container.solve(greet).render()


async def test_run_inside_the_override_block_keeps_it() -> None:
    """Running while the same override is still active does not stack it again, and leaves it active."""
    container = Container()
    with capture_tasks(container) as captured, container.override(get_name, fake_name):
        await container.call(queues_greeting)
        await captured.run()
        assert "overrides get_name" in container.solve(greet).render()
    assert LOG == ["hello fake"]


async def test_run_captures_and_runs_tasks_added_by_tasks() -> None:
    """A task whose dependency queues another task: the new one is captured and run in the same run()."""
    container = Container()
    with capture_tasks(container) as captured:
        await container.call(queues_outer)
    await captured.run()
    assert LOG == ["outer after audit", "audited"]
    assert [t.name.rsplit(".", 1)[-1] for t in captured] == ["outer", "note"]
    flusher = container.flusher
    assert not isinstance(flusher, CapturedTasks)


async def test_run_opens_the_app_lifetime_for_app_scoped_dependencies() -> None:
    """Tasks with app-scoped dependencies run after the call's app lifetime has ended."""
    EVENTS.clear()
    outcome = await call(queues_app_task)
    await outcome.tasks.run()
    assert EVENTS == ["open", "task got resource", "close"]


def test_run_sync_runs_the_tasks_on_a_new_loop() -> None:
    """run_sync() runs the captured tasks from plain synchronous code, on the chosen backend."""
    outcome = run(endpoint, backend="trio")
    outcome.tasks.run_sync(backend="trio")
    assert LOG == ["first ada", "second ada"]


# -- the context a captured task runs in (each its own, as in production) ---------------------------------------

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="<unset>")
tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="<none>")
SEEN: list[str] = []


def see_request_id() -> None:
    SEEN.append(request_id.get())


async def asee_request_id() -> None:
    await anyio.lowlevel.checkpoint()  # a step after a suspension, on the backend the task runs on
    SEEN.append(request_id.get())


async def in_request(tasks: BackgroundTasks, rid: str = "req-42") -> None:
    token = request_id.set(rid)  # as a middleware sets it for the request, and resets it after
    tasks.add_task(see_request_id)
    tasks.add_task(asee_request_id)
    request_id.reset(token)


async def test_a_captured_task_sees_the_context_variables_set_before_add_task() -> None:
    """A captured task, run later, sees the context variables set when it was added, as it would in production."""
    SEEN.clear()
    container = Container()
    with capture_tasks(container) as captured:
        await container.call(in_request)
    await captured.run()
    assert SEEN == ["req-42", "req-42"]


@pytest.mark.parametrize(("captured_on", "run_on"), [("trio", "asyncio"), ("asyncio", "trio")])
def test_tasks_captured_on_one_backend_run_on_another(
    captured_on: Literal["asyncio", "trio"], run_on: Literal["asyncio", "trio"]
) -> None:
    """Tasks captured on one backend run on the backend of ``run_sync``, in the context they were added in."""
    SEEN.clear()
    container = Container()
    with capture_tasks(container) as captured:
        container.run(in_request, backend=captured_on)
    captured.run_sync(backend=run_on)
    assert SEEN == ["req-42", "req-42"]


def set_tenant(name: str) -> None:
    tenant.set(name)


def see_tenant() -> None:
    SEEN.append(tenant.get())


async def queues(tasks: BackgroundTasks, func: Callable[..., None], args: tuple[Any, ...]) -> None:
    tasks.add_task(func, *args)


async def test_a_context_variable_set_by_one_captured_task_stays_in_that_task() -> None:
    """What one test's captured task sets in its context is not seen by another test's captured task."""
    SEEN.clear()
    first, second = Container(), Container()
    with capture_tasks(first) as captured:
        await first.call(queues, func=set_tenant, args=("tenant-A",))
    await captured.run()
    with capture_tasks(second) as captured:
        await second.call(queues, func=see_tenant, args=())
    await captured.run()
    assert SEEN == ["<none>"]
    assert tenant.get() == "<none>"


def slow_see_request_id() -> None:
    time.sleep(0.1)  # long enough that the four threads' tasks overlap
    SEEN.append(request_id.get())


async def slow_request(tasks: BackgroundTasks, rid: str) -> None:
    token = request_id.set(rid)
    tasks.add_task(slow_see_request_id)
    request_id.reset(token)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_captured_tasks_run_from_parallel_threads(backend: Literal["asyncio", "trio"]) -> None:
    """Four threads each capture a request's task and run it at once: each runs, in its own request's context."""
    SEEN.clear()
    barrier = threading.Barrier(4, timeout=10)
    errors: list[BaseException] = []

    def one_test(n: int) -> None:
        try:
            container = Container()
            with capture_tasks(container) as captured:
                container.run(slow_request, rid=f"req-{n}", backend=backend)
            barrier.wait()
            captured.run_sync(backend=backend)
        except BaseException as exc:  # reported by the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=one_test, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sorted(SEEN) == ["req-0", "req-1", "req-2", "req-3"]


async def test_run_sync_refuses_a_running_loop() -> None:
    """run_sync() inside an event loop says to await run() instead."""
    with pytest.raises(RuntimeError, match=r"use 'await captured.run\(\)' there"):
        CapturedTasks(Container()).run_sync()


async def test_clear_forgets_the_captured_tasks() -> None:
    """clear() empties the capture; the cleared tasks are not run."""
    outcome = await call(endpoint)
    outcome.tasks.clear()
    await outcome.tasks.run()
    assert len(outcome.tasks) == 0
    assert LOG == []


# -- calling one function or dependency -----------------------------------------------------------------------


async def test_call_returns_the_result_and_the_captured_tasks() -> None:
    """call() gives the function's result and its tasks, not run; values by name reach every depth."""
    outcome = await call(endpoint, who="cy")
    assert isinstance(outcome, CallResult)
    assert outcome.result == "cy"
    assert [t.func for t in outcome.tasks] == [note, note]
    assert isinstance(outcome.tasks[0], Task)
    assert LOG == []


async def test_call_applies_overrides_for_the_call_only() -> None:
    """Overrides given to call() apply inside the call and are gone afterwards."""
    container = Container()
    assert (await call(get_name, container=container)).result == "real"
    await call(greet, container=container, overrides={get_name: fake_name})
    assert LOG == ["hello fake"]
    assert container.overrides == {}
    await container.call(greet)
    assert LOG == ["hello fake", "hello real"]


async def test_call_passes_positional_arguments() -> None:
    """Positional arguments fill the function's leading parameters."""

    def add(a: int, b: int, offset: int = 0) -> int:
        return a + b + offset

    assert (await call(add, 1, 2, offset=3)).result == 6


async def test_call_on_a_generator_dependency_returns_what_it_yields() -> None:
    """A generator dependency is set up, its value returned, and torn down; async ones too."""
    events: list[str] = []

    def sync_resource(tasks: BackgroundTasks, label: str = "sync") -> Iterator[str]:
        tasks.add_task(note, f"queued by {label}")
        yield label
        events.append(f"closed {label}")

    async def async_resource() -> AsyncIterator[str]:
        yield "async"
        events.append("closed async")

    outcome = await call(sync_resource, label="given")
    assert outcome.result == "given"
    assert [t.args for t in outcome.tasks] == [("queued by given",)]
    assert (await call(async_resource)).result == "async"
    assert (await call(sync_resource)).result == "sync"
    assert events == ["closed given", "closed async", "closed sync"]


async def test_call_on_a_generator_dependency_refuses_positional_arguments() -> None:
    """A generator dependency's parameters are values by name; positional ones are a TypeError."""

    def resource(label: str) -> Iterator[str]:
        yield label

    with pytest.raises(TypeError, match=r"resource is a generator dependency: pass its parameters by name"):
        await call(resource, "x")


async def test_call_on_an_unhashable_generator_instance() -> None:
    """A callable instance that cannot be hashed, whose __call__ is a generator, still works, every time."""

    class Resource:
        __hash__ = None  # type: ignore[assignment]  # unhashable on purpose

        def __call__(self) -> Iterator[str]:
            yield "instance"

    resource = Resource()
    assert (await call(resource)).result == "instance"
    assert (await call(resource)).result == "instance"


def test_run_is_call_from_sync_code() -> None:
    """run() starts its own loop (asyncio by default) and returns the same CallResult."""
    outcome = run(greet, overrides={get_name: fake_name})
    assert outcome.result is None
    assert LOG == ["hello fake"]


async def test_run_refuses_a_running_loop() -> None:
    """run() inside an event loop says to await call() instead, and leaves no coroutine behind."""
    with pytest.raises(RuntimeError, match=r"use 'await di_tasks.testing.call\(...\)' there"):
        run(greet)


async def test_concurrent_calls_on_separate_containers_do_not_share_overrides() -> None:
    """Two concurrent calls overriding the same dependency differently, each on its own container."""
    results: dict[str, Any] = {}

    async def one(label: str) -> None:
        def replacement() -> str:
            return label

        await anyio.lowlevel.checkpoint()
        results[label] = (await call(name_of, container=Container(), overrides={get_name: replacement})).result

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "a")
        tg.start_soon(one, "b")
    assert results == {"a": "a", "b": "b"}


# -- validating entry points ------------------------------------------------------------------------------------


def needs_star(*args: int) -> int:
    return len(args)


def uses_star(n: Annotated[int, Depends(needs_star)]) -> int:
    return n


def per_request(tasks: BackgroundTasks) -> int:
    return len(tasks)


def app_scoped(n: Annotated[int, Depends(per_request)]) -> int:
    return n


def broken_twice(a: Annotated[int, Depends(uses_star)], b: Annotated[int, Depends(app_scoped, scope="app")]) -> int:
    return a + b


def shares_the_broken_one(a: Annotated[int, Depends(needs_star)], b: Annotated[int, Depends(uses_star)]) -> int:
    return a + b


def fine(n: Annotated[str, Depends(get_name)]) -> str:
    return n


def cycle_first(x: int) -> int:
    return x


def cycle_second(y: Annotated[int, Depends(cycle_first)]) -> int:
    return y


cycle_first.__annotations__["x"] = Annotated[int, Depends(cycle_second)]  # each names the other


def test_wiring_errors_reports_every_error_of_one_graph() -> None:
    """Two broken branches of one graph give two errors, each with its path from the entry point."""
    errors = wiring_errors(Container(), broken_twice)
    assert [type(e) for e in errors] == [WiringError, ScopeError]
    assert errors[0].path == ("test_testing.broken_twice", "test_testing.uses_star", "test_testing.needs_star")
    assert "parameter *args of test_testing.needs_star cannot be injected" in str(errors[0])
    assert errors[1].path[-1] == "test_testing.per_request"


def test_wiring_errors_reports_a_shared_broken_dependency_once() -> None:
    """The same broken dependency reached through two parents is one error (the first path)."""
    errors = wiring_errors(Container(), shares_the_broken_one)
    assert len(errors) == 1
    assert errors[0].path == ("test_testing.shares_the_broken_one", "test_testing.needs_star")


def test_wiring_errors_reports_cycles_and_root_errors() -> None:
    """A cycle, a generator as entry point and a non-callable are reported with the rest."""

    def gen() -> Iterator[int]:
        yield 1

    errors = wiring_errors(Container(), cycle_first, gen, 42, fine)  # type: ignore[arg-type]  # 42 on purpose
    assert [type(e) for e in errors] == [DependencyCycleError, WiringError, WiringError]
    assert errors[0].path[0] == errors[0].path[-1]
    assert "is a generator function" in str(errors[1])
    assert "42 is not callable" in str(errors[2])


def test_wiring_errors_respects_the_containers_overrides() -> None:
    """An override that replaces the broken dependency removes its error."""
    container = Container()

    def two() -> int:
        return 2

    assert wiring_errors(container, uses_star)
    with container.override(needs_star, two):
        assert wiring_errors(container, uses_star) == []


def test_validate_passes_quietly_when_all_is_well() -> None:
    """No error: validate returns None."""
    validate(Container(), fine, endpoint, greet)


def test_validate_raises_one_group_with_every_error() -> None:
    """Every error of every entry point arrives in one ExceptionGroup whose message counts them."""
    with pytest.raises(ExceptionGroup, match=r"3 wiring error\(s\) in 2 of 3 entry point\(s\)") as caught:
        validate(Container(), broken_twice, fine, shares_the_broken_one)
    assert all(isinstance(e, DITasksError) and e.path for e in caught.value.exceptions)
    assert "test_testing.broken_twice, test_testing.shares_the_broken_one" in str(caught.value)
    scope_errors, rest = caught.value.split(ScopeError)
    assert scope_errors is not None
    assert len(scope_errors.exceptions) == 1
    assert rest is not None
    assert len(rest.exceptions) == 2


async def test_call_calls_the_function_itself_even_when_it_is_overridden() -> None:
    """An override of the called function itself does not apply: call() tests what it is given."""
    assert (await call(get_name, overrides={get_name: fake_name})).result == "real"


def test_the_module_namespace_is_sorted_and_documented() -> None:
    """``di_tasks.testing.__all__`` is sorted, lists what the module defines, and each name has a docstring."""
    import di_tasks.testing as testing

    assert list(testing.__all__) == sorted(testing.__all__)
    defined = {
        name
        for name, obj in vars(testing).items()
        if not name.startswith("_") and getattr(obj, "__module__", None) == testing.__name__
    }
    assert defined == set(testing.__all__)
    assert all((getattr(testing, name).__doc__ or "").strip() for name in testing.__all__)


def test_wiring_errors_sees_through_inject_wrappers() -> None:
    """An endpoint decorated with Container.inject is checked whole, not through its narrowed signature."""
    container = Container()

    @container.inject
    def injected(request_id: str, name: Annotated[str, Depends(get_name)]) -> str:
        return name

    assert wiring_errors(container, injected) == []
    with container.override(get_name, needs_star):
        errors = wiring_errors(container, injected)
    assert [type(e) for e in errors] == [WiringError]
    assert errors[0].path[-1] == "test_testing.needs_star"


# -- hold=True: captured tasks run in their scope's exit, before its teardown ------------------------------------


class Connection:
    """A fake database connection: unusable once the request's teardown has closed it."""

    def __init__(self) -> None:
        self.open = True

    def execute(self, statement: str) -> None:
        if not self.open:
            raise ValueError("no active connection")
        LOG.append(statement)


def db_session() -> Iterator[Connection]:
    connection = Connection()
    LOG.append("open")
    yield connection
    connection.open = False
    LOG.append("closed")


def save(db: Connection, name: str) -> None:
    db.execute(f"insert {name}")


async def saves(tasks: BackgroundTasks, db: Annotated[Connection, Depends(db_session)], name: str = "ada") -> str:
    tasks.add_task(save, db, name)
    return "saved"


def session_closing_with_a_task(tasks: BackgroundTasks) -> Iterator[Connection]:
    connection = Connection()
    yield connection
    connection.open = False
    tasks.add_task(note, "added during teardown")


async def saves_then_audits(
    tasks: BackgroundTasks, db: Annotated[Connection, Depends(session_closing_with_a_task)]
) -> None:
    tasks.add_task(save, db, "ada")


async def test_without_hold_a_captured_task_runs_after_the_teardown() -> None:
    """Without hold, ``container.call`` returns after the teardown, so the task meets a closed connection."""
    container = Container()
    with capture_tasks(container) as captured:
        await container.call(saves)
    with pytest.raises(BackgroundTaskError, match="save") as caught:
        await captured.run()
    assert isinstance(caught.value.exceptions[0], ValueError)
    assert LOG == ["open", "closed"]


async def test_a_held_task_runs_with_the_request_session_still_open() -> None:
    """With hold, the task runs in the scope's exit (connection open), then the teardown closes it."""
    container = Container()
    with capture_tasks(container, hold=True) as captured:
        async with anyio.create_task_group() as tg:
            tg.start_soon(container.call, saves)
            await captured.wait_for(1)
            assert [(t.func, t.args[1:]) for t in captured] == [(save, ("ada",))]
            assert LOG == ["open"]  # captured, the scope waits with its connection open
            await captured.run()
    assert LOG == ["open", "insert ada", "closed"]
    assert [t.state for t in captured] == [TaskState.SUCCEEDED]


async def test_a_hold_capture_passes_task_observations_on_to_the_containers_observer() -> None:
    """While a capture holds scopes it watches their flushes through the FlushObserver seam, and the container's own
    task observer still sees each task it runs, and every flush; both are back as they were after the block."""
    seen: list[str] = []

    class Watching:
        enabled = True

        def task_started(self, task: Task, /) -> Callable[[], object]:
            seen.append(f"started {task.name}")
            return lambda: seen.append(f"finished {task.name}")

        def flush_started(self, scope: Scope, tasks: Sequence[Task], /) -> None:
            seen.append(f"flush of {len(tasks)}")

    observer = Watching()
    container = Container(task_observer=observer)
    with capture_tasks(container, hold=True) as captured:
        assert container.task_observer is not observer
        async with anyio.create_task_group() as tg:
            tg.start_soon(container.call, saves)
            await captured.wait_for(1)
            await captured.run()
    assert container.task_observer is observer
    assert seen == ["flush of 1", "started test_testing.save", "finished test_testing.save"]
    assert LOG == ["open", "insert ada", "closed"]


def save_then_fail(db: Connection) -> None:
    db.execute("insert half")
    raise RuntimeError("disk full")


async def saves_badly(tasks: BackgroundTasks, db: Annotated[Connection, Depends(db_session)]) -> None:
    tasks.add_task(save_then_fail, db)
    tasks.add_task(save, db, "bob")


async def test_a_held_task_that_fails_raises_from_run_after_every_task_ran() -> None:
    """A held task's failure is raised by ``run()`` once every held task ran; the scope then tears down."""
    container = Container()

    async def request() -> None:  # as in production, the request's own exit raises its tasks' failures too
        with pytest.raises(BackgroundTaskError, match="save_then_fail"):
            await container.call(saves_badly)

    with capture_tasks(container, hold=True) as captured:
        async with anyio.create_task_group() as tg:
            tg.start_soon(request)
            await captured.wait_for(2)
            with pytest.raises(BackgroundTaskError, match=r"1 captured task\(s\) failed: .*save_then_fail"):
                await captured.run()
    assert LOG == ["open", "insert half", "insert bob", "closed"]


async def test_leaving_the_block_with_held_tasks_never_hangs(caplog: pytest.LogCaptureFixture) -> None:
    """Exiting the block releases the held scope: its tasks stay captured, not run, logged by name."""
    container = Container()
    captured = CapturedTasks(container)  # replaced by the block's own
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            with capture_tasks(container, hold=True) as captured:
                tg.start_soon(container.call, saves)
                await captured.wait_for(1)
    assert LOG == ["open", "closed"]
    assert captured.pending == list(captured)
    assert "held task(s) not run" in caplog.text
    assert "save" in caplog.text


async def test_a_scope_held_too_long_raises_a_timeout_naming_the_fix() -> None:
    """A held scope whose test never awaits ``run()`` fails its exit after ``hold_timeout``, not hangs."""
    container = Container()
    with (
        capture_tasks(container, hold=True, hold_timeout=0.05) as captured,
        pytest.raises(TimeoutError, match=r"held a scope's exit .*save captured.*await captured.run\(\)"),
    ):
        await container.call(saves)
    assert LOG == ["open", "closed"]
    assert captured.pending == list(captured)


async def test_run_sync_with_held_tasks_points_to_await_run() -> None:
    """``run_sync()`` cannot run tasks held in a scope's exit on a loop: it says to await ``run()``."""
    container = Container()
    with capture_tasks(container, hold=True) as captured:
        async with anyio.create_task_group() as tg:
            tg.start_soon(container.call, saves)
            await captured.wait_for(1)
            with pytest.raises(RuntimeError, match=r"run_sync\(\) cannot run held task\(s\) .*save.*await captured"):
                captured.run_sync()
            await captured.run()
    assert LOG == ["open", "insert ada", "closed"]


async def test_run_on_another_loop_than_the_held_scope_is_refused() -> None:
    """Held scopes wait on the test's loop; ``run()`` on a loop of another thread is an error, not a hang."""
    container = Container()
    with capture_tasks(container, hold=True) as captured:
        async with anyio.create_task_group() as tg:
            tg.start_soon(container.call, saves)
            await captured.wait_for(1)
            with pytest.raises(RuntimeError, match=r"run\(\) was awaited on another event loop"):
                await anyio.to_thread.run_sync(anyio.run, captured.run)
            await captured.run()
    assert LOG == ["open", "insert ada", "closed"]


async def test_wait_for_times_out_naming_what_was_captured() -> None:
    """``wait_for(n)`` fails after its timeout with the count and names of what was captured."""
    container = Container()
    with (
        capture_tasks(container, hold=True) as captured,
        pytest.raises(TimeoutError, match=r"wait_for\(1\): 0 task\(s\) captured after 0.05 s \(none\)"),
    ):
        await captured.wait_for(1, timeout=0.05)


async def test_a_scope_with_nothing_to_tear_down_is_not_held() -> None:
    """Holding only matters before a teardown: a scope without one exits at once, its tasks captured."""
    container = Container()
    with anyio.fail_after(5), capture_tasks(container, hold=True) as captured:
        await container.call(queues_greeting)
        assert [t.state for t in captured] == [TaskState.HANDED_OFF]
        await captured.run()
    assert LOG == ["hello real"]


async def test_tasks_added_during_teardown_are_captured_not_held() -> None:
    """The exit's second flush (tasks added by a teardown) comes after the teardown, so it is not held."""
    container = Container()
    with anyio.fail_after(5), capture_tasks(container, hold=True) as captured:
        async with anyio.create_task_group() as tg:
            tg.start_soon(container.call, saves_then_audits)
            await captured.wait_for(1)
            await captured.run()  # the request goes on: teardown, then the second flush, which must not wait
            await captured.wait_for(2)
        await captured.run()  # the teardown's task, if the first run() did not already pick it up
    assert LOG == ["insert ada", "added during teardown"]
    assert [t.state for t in captured] == [TaskState.SUCCEEDED, TaskState.SUCCEEDED]


def own_collector(tasks: BackgroundTasks) -> BackgroundTasks:
    return tasks


async def saves_in_its_own_session(
    db: Connection = Depends(db_session), tasks: BackgroundTasks = Depends(own_collector)
) -> None:
    tasks.add_task(save, db, "bob")


async def uses_session_and_queues(tasks: BackgroundTasks, db: Annotated[Connection, Depends(db_session)]) -> None:
    tasks.add_task(save, db, "ada")
    tasks.add_task(saves_in_its_own_session)


async def test_tasks_queued_by_held_tasks_run_in_the_same_run() -> None:
    """A held task's own scope exiting during ``run()`` runs its tasks at once, before its own teardown."""
    container = Container()
    with anyio.fail_after(5), capture_tasks(container, hold=True) as captured:
        async with anyio.create_task_group() as tg:
            tg.start_soon(container.call, uses_session_and_queues)
            await captured.wait_for(2)
            await captured.run()
    assert LOG == ["open", "insert ada", "open", "insert bob", "closed", "closed"]
    assert [t.state for t in captured] == [TaskState.SUCCEEDED] * 3


def make_app(framework: str, container: Container) -> Any:
    """A FastAPI or Starlette app whose endpoint queues ``save`` with the request's DB session."""
    if framework == "fastapi":
        app = fastapi.FastAPI()
        app.post("/users/{name}")(container.inject(saves))
        return ScopeMiddleware(app, container=container)

    @container.inject
    async def route(request: Request, tasks: BackgroundTasks, db: Annotated[Connection, Depends(db_session)]) -> Any:
        tasks.add_task(save, db, request.path_params["name"])
        return PlainTextResponse("saved")

    routes = [Route("/users/{name}", route, methods=["POST"])]
    return Starlette(routes=routes, middleware=[Middleware(ScopeMiddleware, container=container)])


@pytest.mark.parametrize("framework", ["fastapi", "starlette"])
async def test_a_held_task_of_an_asgi_request_uses_its_session_before_teardown(framework: str) -> None:
    """Under httpx.ASGITransport, the request's task runs on ``run()`` with its session open, then it closes."""
    container = Container()
    responses: list[httpx.Response] = []
    transport = httpx.ASGITransport(app=make_app(framework, container))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

        async def post() -> None:
            responses.append(await client.post("/users/ada"))

        with anyio.fail_after(5), capture_tasks(container, hold=True) as captured:
            async with anyio.create_task_group() as tg:
                tg.start_soon(post)
                await captured.wait_for(1)
                assert LOG == ["open"]
                await captured.run()
    assert LOG == ["open", "insert ada", "closed"]
    assert responses[0].status_code == 200
