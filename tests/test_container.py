"""The container: solving with paths, overrides, the app lifetime, run() and call()."""

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import anyio
import pytest

from di_tasks import (
    BackgroundTasks,
    Container,
    DependencyCycleError,
    Depends,
    InProcessFlusher,
    Kind,
    ScopeError,
    WiringError,
    provider,
)

pytestmark = pytest.mark.anyio

EVENTS: list[Any] = []
NOT_CALLABLE: Any = 42  # typed Any: the mistakes under test must reach the runtime checks


@pytest.fixture(autouse=True)
def _clear() -> None:
    EVENTS.clear()


# -- cycles ----------------------------------------------------------------------------------------------


def cyc_a(b: Annotated[int, Depends(lambda: 0)]) -> int:
    return b


def cyc_c(x: "Annotated[int, Depends(cyc_d)]") -> int:  # pyright: ignore[reportUndefinedVariable, reportUnknownArgumentType]  # defined below: the cycle
    return x


def cyc_d(x: "Annotated[int, Depends(cyc_c)]") -> int:
    return x


async def cyc_root(x: "Annotated[int, Depends(cyc_c)]") -> int:
    return x


def test_cycles_fail_at_solve_with_the_path() -> None:
    """A cycle is a DependencyCycleError at solve time whose path starts and ends on the repeated node."""
    with pytest.raises(DependencyCycleError, match=r"dependency cycle: .*cyc_c -> .*cyc_d -> .*cyc_c") as info:
        Container().solve(cyc_root)
    assert [p.rsplit(".", 1)[-1] for p in info.value.path] == ["cyc_c", "cyc_d", "cyc_c"]


# -- scope violations ------------------------------------------------------------------------------------


def per_request() -> str:
    return "r"


def app_needs_request(r: Annotated[str, Depends(per_request)]) -> str:
    return r


async def root_app_needs_request(x: Annotated[str, Depends(app_needs_request, scope="app")]) -> str:
    return x


def app_needs_tasks(tasks: BackgroundTasks) -> str:
    return "x"


async def root_app_needs_tasks(x: Annotated[str, Depends(app_needs_tasks, scope="app")]) -> str:
    return x


def request_needs_call(x: Annotated[str, Depends(per_request, scope="call")]) -> str:
    return x


async def root_request_needs_call(x: Annotated[str, Depends(request_needs_call)]) -> str:
    return x


def test_scope_violations_fail_at_solve_with_the_path_and_fix() -> None:
    """Longer-lived dependencies may not need shorter-lived ones, nor the request's collector."""
    container = Container()
    with pytest.raises(ScopeError, match=r"app_needs_request \(app-scoped\) depends on .*per_request") as info:
        container.solve(root_app_needs_request)
    assert info.value.path[-1].endswith("per_request")
    assert "scope='app'" in str(info.value)
    with pytest.raises(ScopeError, match="asks for BackgroundTasks, which belongs to the request scope"):
        container.solve(root_app_needs_tasks)
    with pytest.raises(ScopeError, match=r"is call-scoped and would end before it"):
        Container().solve(root_request_needs_call)  # per_request as call-scoped: a container of its own


# -- wiring errors ---------------------------------------------------------------------------------------


def star_args(*args: int) -> int:
    return 0


async def root_star(x: Annotated[int, Depends(star_args)]) -> int:
    return x


async def root_bad_depends_without_class(x: Annotated["str | None", Depends()]) -> None:
    """Depends() on a non-class annotation."""


async def root_two_markers(x: Annotated[int, Depends(per_request), Depends(per_request)]) -> None:
    """Two markers on one parameter."""


async def root_marker_twice(x: Annotated[str, Depends(per_request)] = Depends(per_request)) -> None:
    """A marker in Annotated and as the default."""


async def root_unresolvable(x: "Annotated[int, Depends(does_not_exist)]") -> None:  # noqa: F821  # pyright: ignore[reportUndefinedVariable, reportUnknownArgumentType]  # the mistake under test
    """A forward reference that does not exist."""


def gen_root() -> Iterator[int]:
    yield 1


def test_wiring_errors_name_the_function_parameter_and_fix() -> None:
    """Unusable signatures are WiringErrors at solve time."""
    container = Container()
    with pytest.raises(WiringError, match=r"parameter \*args of .*star_args cannot be injected") as info:
        container.solve(root_star)
    assert info.value.path[-1].endswith("star_args")
    with pytest.raises(WiringError, match="Depends\\(\\) without a callable, which needs a class annotation"):
        container.solve(root_bad_depends_without_class)
    with pytest.raises(WiringError, match="has 2 Depends markers"):
        container.solve(root_two_markers)
    with pytest.raises(WiringError, match="both in Annotated"):
        container.solve(root_marker_twice)
    with pytest.raises(WiringError, match=r"cannot evaluate the annotations of .*root_unresolvable.*does_not_exist"):
        container.solve(root_unresolvable)
    with pytest.raises(WiringError, match="is a generator function; it can be a dependency"):
        container.solve(gen_root)
    with pytest.raises(WiringError, match="is not callable"):
        container.solve(NOT_CALLABLE)


# -- graphs ----------------------------------------------------------------------------------------------


class Database:
    def __init__(self) -> None:
        self.name = "real"


def repo(db: Annotated[Database, Depends()], tasks: BackgroundTasks, table: str = "users") -> str:
    return f"{db.name}:{table}"


async def service(r: Annotated[str, Depends(repo)], user_id: int) -> str:
    return f"{r}:{user_id}"


def test_solve_returns_the_graph_without_calling_anything() -> None:
    """Nodes in dependency order, the values needed, and who asks for the collector."""
    graph = Container().solve(service)
    assert [n.name.rsplit(".", 1)[-1] for n in graph.nodes] == ["Database", "repo", "service"]
    assert [n.kind for n in graph.nodes] == [Kind.CLASS, Kind.SYNC, Kind.ASYNC]
    assert graph.root.scope == "call"
    assert graph.nodes[0].scope == "request"
    assert [v.name for v in graph.values] == ["table", "user_id"]
    assert [v.name for v in graph.required_values] == ["user_id"]
    assert [n.name.rsplit(".", 1)[-1] for n in graph.task_users] == ["repo"]
    assert graph.root.dependencies[0][0] == "r"


def test_solve_is_cached_per_function() -> None:
    """Solving twice returns the same graph object: plans are made once."""
    container = Container()
    assert container.solve(service) is container.solve(service)


async def test_call_with_positional_arguments_and_values() -> None:
    """Positional arguments fill the function's leading parameters; values by name reach every depth."""

    async def handler(user_id: int, r: Annotated[str, Depends(repo)]) -> str:
        return f"{user_id}/{r}"

    container = Container()
    assert await container.call(handler, 7, table="orders") == "7/real:orders"
    assert await container.call(handler, user_id=8) == "8/real:users"


async def test_container_values_are_visible_everywhere_and_scope_values_win() -> None:
    """App-wide values from the constructor, overridden by the scope's."""
    container = Container(values={"user_id": 1, "table": "t"})
    assert await container.call(service) == "real:t:1"
    assert await container.call(service, user_id=2) == "real:t:2"
    async with container.scope(table="u") as scope:
        assert await scope.call(service) == "real:u:1"


# -- overrides -------------------------------------------------------------------------------------------


class FakeDatabase(Database):
    def __init__(self, label: str) -> None:
        self.name = label


async def test_override_replaces_a_class_and_resolves_the_replacement_dependencies() -> None:
    """Inside the block the replacement is used, with its own parameters resolved; after it, the original."""
    container = Container()

    def fake(label: str = "fake") -> Database:
        return FakeDatabase(label)

    with container.override(Database, fake):
        assert await container.call(service, user_id=1) == "fake:users:1"
        assert await container.call(service, user_id=1, label="other") == "other:users:1"
        graph = container.solve(service)
        assert graph.nodes[0].overridden is Database
    assert await container.call(service, user_id=1) == "real:users:1"
    assert container._override_key == ()
    assert set(container._plan_caches) == {()}  # nothing left behind


async def test_overrides_nest_and_restore_in_order() -> None:
    """An inner override wins inside its block and the outer one comes back after it."""
    container = Container()
    with container.override(Database, lambda: FakeDatabase("outer")):
        with container.override(Database, lambda: FakeDatabase("inner")):
            assert await container.call(service, user_id=1) == "inner:users:1"
        assert await container.call(service, user_id=1) == "outer:users:1"
    assert await container.call(service, user_id=1) == "real:users:1"


async def test_overrides_exiting_out_of_order_leave_nothing_behind() -> None:
    """Two overlapping overrides closed in the order they were opened both disappear."""
    container = Container()
    first = container.override(Database, lambda: FakeDatabase("first"))
    second = container.override(per_request, lambda: "second")
    first.__enter__()
    second.__enter__()
    assert await container.call(service, user_id=1) == "first:users:1"
    first.__exit__(None, None, None)
    assert await container.call(service, user_id=1) == "real:users:1"
    second.__exit__(None, None, None)
    assert container.overrides == {}
    assert set(container._plan_caches) == {()}


async def test_an_override_outside_the_graph_changes_nothing() -> None:
    """Overriding something the graph does not use leaves the result unchanged."""
    container = Container()
    with container.override(per_request, lambda: "other"):
        assert await container.call(service, user_id=1) == "real:users:1"


def test_override_rejects_non_callables() -> None:
    """Both sides must be callable."""
    container = Container()
    not_callable: Any = 1
    with pytest.raises(TypeError, match="the replacement must be a function or a class"):
        container.override(Database, not_callable).__enter__()
    with pytest.raises(TypeError, match="the target must be"):
        container.override(not_callable, Database).__enter__()


# -- the app lifetime ------------------------------------------------------------------------------------

CREATED: list[str] = []


async def pool() -> AsyncIterator[str]:
    CREATED.append("pool")
    yield "pool"
    EVENTS.append("pool closed")


def sync_pool() -> Iterator[str]:
    yield "sync pool"
    EVENTS.append("sync pool closed")


async def app_config() -> str:
    CREATED.append("config")
    return "config"


def app_threaded() -> str:
    return "threaded"


async def uses_pool(
    p: Annotated[str, Depends(pool, scope="app")],
    s: Annotated[str, Depends(sync_pool, scope="app")],
    c: Annotated[str, Depends(app_config, scope="app")],
    t: Annotated[str, Depends(app_threaded, scope="app", sync_to_thread=True)],
) -> str:
    return f"{p}/{s}/{c}/{t}"


async def test_app_scoped_dependencies_are_created_once_and_torn_down_at_exit() -> None:
    """Inside `async with container`, app values are shared by every request and closed at the end LIFO."""
    CREATED.clear()
    container = Container()
    async with container:
        assert await container.call(uses_pool) == "pool/sync pool/config/threaded"
        assert await container.call(uses_pool) == "pool/sync pool/config/threaded"
        async with container:  # nested entries share the lifetime
            pass
        assert EVENTS == []
    assert CREATED == ["pool", "config"]
    assert EVENTS == ["sync pool closed", "pool closed"]


async def test_concurrent_first_use_creates_an_app_value_once() -> None:
    """Many requests racing on first use still create the app value once."""
    CREATED.clear()
    container = Container()
    async with container, anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(container.call, uses_pool)
    assert CREATED == ["pool", "config"]


async def test_app_scoped_dependencies_need_the_app_lifetime() -> None:
    """Without `async with container`, an app-scoped dependency is a ScopeError with the fix."""
    with pytest.raises(ScopeError, match="wrap the app in 'async with container:'"):
        await Container().call(uses_pool)


def app_reads_value(setting: str = "default") -> str:
    return setting


async def app_value_root(x: Annotated[str, Depends(app_reads_value, scope="app")]) -> str:
    return x


async def test_app_scoped_dependencies_read_only_container_values() -> None:
    """Request values never leak into app-wide objects; container values do reach them."""
    async with Container() as container:
        assert await container.call(app_value_root, setting="per-request") == "default"
    async with Container(values={"setting": "app-wide"}) as container:
        assert await container.call(app_value_root) == "app-wide"


async def failing_teardown_app() -> AsyncIterator[str]:
    yield "x"
    raise RuntimeError("app teardown failed")


async def uses_failing_app(x: Annotated[str, Depends(failing_teardown_app, scope="app")]) -> str:
    return x


async def test_app_teardown_errors_propagate_from_the_container_exit() -> None:
    """An app teardown error is raised by `async with container` at exit."""
    with pytest.raises(RuntimeError, match="app teardown failed"):
        async with Container() as container:
            await container.call(uses_failing_app)


def test_run_enters_the_container_for_app_scoped_dependencies() -> None:
    """`Container.run` opens the app lifetime itself when it is not open."""
    EVENTS.clear()
    assert Container().run(uses_pool, backend="trio") == "pool/sync pool/config/threaded"
    assert EVENTS == ["sync pool closed", "pool closed"]


def test_run_rejects_a_bad_backend_and_a_running_loop() -> None:
    """Bad input to run() is refused at once."""

    async def noop() -> None:
        return None

    with pytest.raises(ValueError, match="must be 'asyncio' or 'trio'"):
        Container().run(noop, backend=NOT_CALLABLE)

    async def nested() -> None:
        with pytest.raises(RuntimeError, match="inside a running event loop"):
            Container().run(noop)

    anyio.run(nested)


def test_constructor_validates_its_settings() -> None:
    """Counts below one and non-positive timeouts are refused."""
    with pytest.raises(ValueError, match="task_threads"):
        Container(task_threads=0)
    with pytest.raises(ValueError, match="task_timeout"):
        Container(task_timeout=0)
    with pytest.raises(ValueError, match="concurrency"):
        InProcessFlusher(0)


async def test_sync_dependencies_run_inline_unless_offloaded() -> None:
    """Sync dependencies run on the loop thread by default and in a worker with sync_to_thread=True."""
    import threading

    main = threading.get_ident()

    def inline() -> bool:
        return threading.get_ident() == main

    def offloaded() -> bool:
        return threading.get_ident() != main

    def offloaded_gen() -> Iterator[bool]:
        yield threading.get_ident() != main
        EVENTS.append(("teardown in thread", threading.get_ident() != main))

    async def root(
        a: Annotated[bool, Depends(inline)],
        b: Annotated[bool, Depends(offloaded, sync_to_thread=True)],
        c: Annotated[bool, Depends(offloaded_gen, sync_to_thread=True)],
    ) -> tuple[bool, bool, bool]:
        return a, b, c

    assert await Container().call(root) == (True, True, True)
    assert EVENTS == [("teardown in thread", True)]


async def test_the_container_policy_sends_sync_dependencies_to_threads() -> None:
    """Container(sync_to_thread=True) offloads every sync dependency whose Depends does not say; False there wins."""
    import threading

    main = threading.get_ident()

    def offloaded() -> bool:
        return threading.get_ident() != main

    def offloaded_gen() -> Iterator[bool]:
        yield threading.get_ident() != main
        EVENTS.append(("teardown in thread", threading.get_ident() != main))

    def kept_inline() -> bool:
        return threading.get_ident() == main

    async def on_the_loop() -> bool:
        return threading.get_ident() == main

    async def root(
        a: Annotated[bool, Depends(offloaded)],
        b: Annotated[bool, Depends(offloaded_gen)],
        c: Annotated[bool, Depends(kept_inline, sync_to_thread=False)],
        d: Annotated[bool, Depends(on_the_loop)],
    ) -> tuple[bool, bool, bool, bool]:
        return a, b, c, d

    container = Container(sync_to_thread=True)
    assert container.sync_to_thread
    assert await container.call(root) == (True, True, True, True)
    assert EVENTS == [("teardown in thread", True)]
    threaded = {node.name.rsplit(".", 1)[-1]: node.sync_to_thread for node in container.solve(root).nodes}
    assert threaded == {"offloaded": True, "offloaded_gen": True, "kept_inline": False, "on_the_loop": False,
                        "root": False}  # fmt: skip
    assert not Container().sync_to_thread


async def test_a_sync_dependency_returning_a_coroutine_is_an_error() -> None:
    """A plain function that returns a coroutine is refused instead of injecting the coroutine."""

    async def real() -> int:
        return 1

    def wraps() -> Any:
        return real()

    async def root(x: Annotated[int, Depends(wraps)]) -> int:
        return x

    with pytest.raises(Exception, match="returned a coroutine; declare it with 'async def'"):
        await Container().call(root)


async def test_concurrent_flush_runs_tasks_together_and_isolates_failures(caplog: pytest.LogCaptureFixture) -> None:
    """With task_concurrency > 1 tasks overlap, and one failure does not cancel the others."""
    started = anyio.Event()

    async def first() -> None:
        await started.wait()  # only finishes if `second` runs concurrently
        EVENTS.append("first done")

    async def second() -> None:
        started.set()
        EVENTS.append("second done")

    async def boom() -> None:
        raise ValueError("x")

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(first)
        tasks.add_task(boom)
        tasks.add_task(second)

    with caplog.at_level(logging.ERROR, logger="di_tasks"), pytest.raises(Exception, match="1 background task"):
        await Container(task_concurrency=2).call(endpoint)
    assert sorted(EVENTS) == ["first done", "second done"]


async def test_unhashable_callables_are_solved_each_time() -> None:
    """A callable instance that cannot be hashed still works (it is simply not cached)."""

    class Unhashable:
        __hash__: Any = None  # the case under test

        def __call__(self) -> str:
            return "u"

    dep = Unhashable()

    async def root(x: Annotated[str, Depends(dep)]) -> str:
        return x

    container = Container()
    assert await container.call(root) == "u"
    with pytest.raises(TypeError, match="it is unhashable"), container.override(dep, lambda: "v"):
        pass
    assert await container.call(dep) == "u"


def test_a_graph_deeper_than_the_recursion_limit_says_how_to_fix_it() -> None:
    """A very deep chain is a WiringError naming the root and the fix, not a bare RecursionError."""
    import sys

    namespace: dict[str, Any] = {"Annotated": Annotated, "Depends": Depends}
    lines = ["def d0() -> int:\n    return 0\n"]
    for i in range(1, 400):
        lines.append(f"def d{i}(x: Annotated[int, Depends(d{i - 1})]) -> int:\n    return x\n")
    exec("\n".join(lines), namespace)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(600)
    try:
        with pytest.raises(WiringError, match=r"deeper than Python's recursion limit .* sys.setrecursionlimit"):
            Container().solve(namespace["d399"])
    finally:
        sys.setrecursionlimit(limit)


async def test_an_injected_helper_called_inside_call_shares_its_scope() -> None:
    """Container.call makes its scope current: an injected helper adds to the same collector, flushed once."""
    container = Container()
    collectors: list[BackgroundTasks] = []

    @container.inject
    async def helper(tasks: BackgroundTasks) -> None:
        collectors.append(tasks)
        tasks.add_task(EVENTS.append, "helper task")

    async def endpoint(tasks: BackgroundTasks, session: Annotated[str, Depends(pool)]) -> None:
        collectors.append(tasks)
        await helper()
        EVENTS.append("endpoint returns")

    CREATED.clear()
    await container.call(endpoint)
    assert collectors[0] is collectors[1]
    assert EVENTS == ["endpoint returns", "helper task", "pool closed"]
    assert CREATED == ["pool"]  # the helper's scope is the endpoint's: nothing made twice


async def test_app_scoped_sync_dependencies_are_checked_for_coroutines() -> None:
    """An app-scoped plain function returning a coroutine is refused, not cached."""

    async def later() -> int:
        return 1

    def make() -> Any:
        return later()

    async def root(x: Annotated[int, Depends(make, scope="app")]) -> int:
        return x

    async with Container() as container:
        with pytest.raises(Exception, match="returned a coroutine; declare it with 'async def'"):
            await container.call(root)
        assert container.app.cache == {}


async def test_solve_sees_through_an_injected_wrapper() -> None:
    """The graph of an inject wrapper is the wrapped function's, with every wiring error raised."""
    container = Container()

    @container.inject
    async def endpoint(user_id: int, r: Annotated[str, Depends(repo)]) -> str:
        return r

    graph = container.solve(endpoint)
    assert [n.name.rsplit(".", 1)[-1] for n in graph.nodes] == ["Database", "repo", "endpoint"]


async def test_exiting_the_app_lifetime_more_often_than_entering_is_refused() -> None:
    """An unbalanced exit is a ScopeError instead of a negative count."""
    container = Container()
    with pytest.raises(ScopeError, match="exited more often than it was entered"):
        await container.__aexit__(None, None, None)


def test_task_concurrency_with_a_flusher_of_your_own_is_refused() -> None:
    """The setting would be ignored, so it is an error that says what to pass instead."""
    with pytest.raises(ValueError, match=r"pass InProcessFlusher\(concurrency=...\) as the flusher"):
        Container(flusher=InProcessFlusher(), task_concurrency=3)


def real_settings() -> str:
    return "real"


def app_service(s: Annotated[str, Depends(real_settings, scope="app")]) -> str:
    return f"service({s})"


async def app_endpoint(svc: Annotated[str, Depends(app_service, scope="app")]) -> str:
    return svc


async def test_app_values_built_under_an_override_stay_apart() -> None:
    """An app value whose graph an override touches is never served without the override, nor the reverse."""
    async with Container() as container:
        with container.override(real_settings, lambda: "FAKE"):
            assert await container.call(app_endpoint) == "service(FAKE)"
        assert await container.call(app_endpoint) == "service(real)"
        with container.override(real_settings, lambda: "OTHER"):
            assert await container.call(app_endpoint) == "service(OTHER)"
        assert await container.call(app_endpoint) == "service(real)"


async def test_to_thread_runs_blocking_code_under_the_task_limiter() -> None:
    """Container.to_thread runs a sync callable in a worker thread, at most task_threads at once."""
    import threading

    container = Container(task_threads=1)
    loop_thread = threading.get_ident()
    running = 0
    most = 0
    lock = threading.Lock()

    def blocking(n: int) -> tuple[int, bool]:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        anyio.from_thread.run_sync(lambda: None)  # a worker thread of the loop, as AnyIO's own
        with lock:
            running -= 1
        return n, threading.get_ident() != loop_thread

    results: list[tuple[int, bool]] = []

    async def one(n: int) -> None:
        results.append(await container.to_thread(blocking, n))

    async with anyio.create_task_group() as tg:
        for n in range(3):
            tg.start_soon(one, n)
    assert sorted(results) == [(0, True), (1, True), (2, True)]
    assert most == 1


async def test_call_task_runs_a_task_function_with_its_dependencies() -> None:
    """task_spec + call_task run a task function as a worker would: checked arguments, its own scope."""
    torn_down: list[str] = []

    def session() -> Iterator[str]:
        yield "session"
        torn_down.append("session")

    def report(day: str, db: Annotated[str, Depends(session)]) -> str:
        return f"{day} with {db}"

    container = Container(values={"region": "eu"})
    spec = container.task_spec(report)
    assert container.task_spec(report) is spec  # cached
    assert await container.call_task(spec, spec.check(("monday",), {})) == "monday with session"
    assert torn_down == ["session"]
    with pytest.raises(TypeError, match=r"add_task\(.*report, \.\.\.\): missing a required argument: 'day'"):
        spec.check((), {})


def test_the_containers_settings_are_readable() -> None:
    """values, overrides and task_checker are public and read-only views."""
    container = Container(values={"region": "eu"})

    def original() -> int:
        return 1

    def replacement() -> int:
        return 2

    assert dict(container.values) == {"region": "eu"}
    assert container.task_checker is None
    with container.override(original, replacement):
        assert dict(container.overrides) == {original: replacement}
        with pytest.raises(TypeError, match="does not support item assignment"):
            container.overrides[original] = original  # type: ignore[index]  # the view is read-only on purpose
    assert dict(container.overrides) == {}


def test_one_provider_has_one_lifetime_per_container() -> None:
    """The same callable with scope="app" in one graph and the default in another is refused, naming both places."""
    container = Container()

    async def uses_app(c: Annotated[int, Depends(client, scope="app")]) -> int:
        return c

    async def uses_request(c: Annotated[int, Depends(client)]) -> int:
        return c

    container.solve(uses_app)
    with pytest.raises(
        WiringError, match=r"client is used with two lifetimes in one container: 'app' by parameter 'c'"
    ):
        container.solve(uses_request)


def test_a_provider_declares_its_lifetime_once() -> None:
    """@provider(scope="app") makes every Depends without scope= app-scoped; one naming another scope is refused."""

    @provider(scope="app")
    def pool() -> object:
        return object()

    async def first(p: Annotated[object, Depends(pool)]) -> object:
        return p

    async def second(p: Annotated[object, Depends(pool)]) -> object:
        return p

    async def conflicting(p: Annotated[object, Depends(pool, scope="request")]) -> object:
        return p

    container = Container()
    assert container.solve(first).nodes[0].scope == "app"

    async def both() -> bool:
        async with container:
            return await container.call(first) is await container.call(second)

    assert anyio.run(both)
    with pytest.raises(WiringError, match=r"asks for .*pool with scope='request', but .*pool is declared @provider"):
        Container().solve(conflicting)
    with pytest.raises(TypeError, match="must be 'app', 'request' or 'call', got 'forever'"):
        provider(scope="forever")  # type: ignore[arg-type]  # the mistake under test


def client() -> int:
    return 1
