"""Plan compilation: the generated source reads well, and compiled plans behave exactly as interpreted ones."""

import traceback
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import anyio
import pytest

from di_tasks import BackgroundTasks, Container, Depends, DITasksError, MissingValueError, Scope, _execute
from di_tasks._compile import compile_plan, generate
from di_tasks._solver import Solver

pytestmark = pytest.mark.anyio

EVENTS: list[str] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    EVENTS.clear()


@pytest.fixture(params=["interpreted", "compiled"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test once with every plan interpreted and once with every plan compiled at its first use."""
    monkeypatch.setattr(_execute, "COMPILE_AFTER", 10**9 if request.param == "interpreted" else 1)
    return str(request.param)


class Settings:
    """A class dependency."""

    def __init__(self) -> None:
        self.dsn = "db://"


class Unhashable:
    """A callable instance that cannot be a dict key: cached by identity."""

    __hash__ = None  # type: ignore[assignment]  # deliberately unhashable

    def __call__(self) -> str:
        EVENTS.append("unhashable")
        return "u"


UNHASHABLE = Unhashable()


def settings_id(s: Annotated[Settings, Depends()]) -> int:
    EVENTS.append("settings")
    return id(s)


async def session(dsn: Annotated[int, Depends(settings_id)]) -> AsyncIterator[str]:
    EVENTS.append("session:setup")
    yield "session"
    EVENTS.append("session:teardown")


def per_call() -> Iterator[str]:
    EVENTS.append("per_call:setup")
    yield "call"
    EVENTS.append("per_call:teardown")


def threaded_gen() -> Iterator[str]:
    yield "threaded"
    EVENTS.append("threaded:teardown")


async def app_conf() -> str:
    EVENTS.append("app_conf")
    return "app"


def uncached() -> int:
    EVENTS.append("uncached")
    return 7


def positional_only(a: Annotated[int, Depends(uncached, use_cache=False)], /, b: int = 5) -> int:
    return a + b


def keyword_only(*, user: str, tz: str = "UTC") -> str:
    return f"{user}@{tz}"


def plain_in_thread(helper: Unhashable = UNHASHABLE) -> str:
    return helper() + "!"  # a class-annotated parameter not bound in the scope: its default


async def everything(
    prefix: str,
    s: Annotated[str, Depends(session)],
    c: Annotated[str, Depends(per_call, scope="call")],
    t: Annotated[str, Depends(threaded_gen, sync_to_thread=True)],
    a: Annotated[str, Depends(app_conf, scope="app")],
    p: Annotated[int, Depends(positional_only)],
    k: Annotated[str, Depends(keyword_only)],
    u: Annotated[int, Depends(uncached, use_cache=False)],
    h: Annotated[str, Depends(UNHASHABLE)],
    pt: Annotated[str, Depends(plain_in_thread, sync_to_thread=True)],
    settings: Annotated[int, Depends(settings_id)],
    tasks: BackgroundTasks,
    scope: Scope,
    container: Container,
    bound: Settings,
) -> str:
    assert isinstance(tasks, BackgroundTasks)
    assert isinstance(scope, Scope)
    assert isinstance(container, Container)
    return f"{prefix}{s},{c},{t},{a},{p},{k},{u},{h},{pt},{settings == id(bound) or 'fresh'}"


async def test_every_kind_of_step_gives_the_same_results(mode: str) -> None:
    """Generators of every scope, threads, app values, caching, special types, values by name and by type."""
    container = Container()
    async with container:
        for n in range(3):  # first use, compilation, compiled
            EVENTS.clear()
            async with container.scope(user="ann") as scope:
                scope.bind(Settings, Settings())
                result = await scope.call(everything, f"{n}:")
                assert result == f"{n}:session,call,threaded,app,12,ann@UTC,7,u,u!,fresh"
                assert EVENTS[-1] == "per_call:teardown"  # call-scoped: before the call returns
            assert EVENTS.count("uncached") == 2  # use_cache=False: once per use
            assert EVENTS.count("settings") == 1
            assert EVENTS[-2:] == ["threaded:teardown", "session:teardown"]  # request scope, LIFO
        assert container.app.cache  # app-scoped value made once for the app lifetime
    plan = container.plan(everything, 1)
    assert (plan.run is not None) == (mode == "compiled")


async def test_a_scope_caches_across_calls(mode: str) -> None:
    """Request-scoped values computed by one call are reused by the next call in the same scope."""

    async def root(s: Annotated[int, Depends(settings_id)]) -> int:
        return s

    container = Container()
    async with container.scope(user="bob") as scope:
        assert len({await scope.call(root) for _ in range(3)}) == 1
    assert EVENTS == ["settings"]


async def test_missing_values_name_the_parameter_function_and_path(mode: str) -> None:
    """A value given by neither name, type nor default raises MissingValueError with its place."""

    async def root(k: Annotated[str, Depends(keyword_only)]) -> str:
        return k

    container = Container()
    for _ in range(2):
        with pytest.raises(MissingValueError, match=r"'user' of .*keyword_only") as info:
            await container.call(root)
        assert info.value.path[-1].endswith("keyword_only")
    assert await container.call(root, user="cy") == "cy@UTC"


async def test_app_scoped_dependencies_read_app_values_only(mode: str) -> None:
    """An app-scoped dependency's plain parameter comes from the container's values, falling back to its default."""

    async def region(name: str = "eu") -> str:
        return name

    async def root(r: Annotated[str, Depends(region, scope="app")]) -> str:
        return r

    for values, expected in (({}, "eu"), ({"name": "us"}, "us")):
        container = Container(values=values)
        async with container:
            for _ in range(2):
                assert await container.call(root, name="ignored") == expected


async def test_a_sync_dependency_returning_a_coroutine_is_an_error(mode: str) -> None:
    """A plain function that returns a coroutine is refused (and the coroutine closed, so no warning)."""

    async def later() -> int:
        return 1

    def wrong() -> Any:
        return later()

    async def root(x: Annotated[int, Depends(wrong)]) -> int:
        return x

    container = Container()
    for _ in range(2):
        with pytest.raises(DITasksError, match="wrong is a plain function but returned a coroutine"):
            await container.call(root)


async def test_generators_must_yield(mode: str) -> None:
    """A generator dependency that returns without yielding is an error naming it, sync or async."""

    def sync_empty() -> Iterator[int]:
        yield from list[int]()

    async def async_empty() -> AsyncIterator[int]:
        for item in list[int]():
            yield item  # pragma: no cover  # never reached: there is no item

    async def root_sync(x: Annotated[int, Depends(sync_empty)]) -> int:
        return x

    async def root_async(x: Annotated[int, Depends(async_empty)]) -> int:
        return x

    container = Container()
    for _ in range(2):
        with pytest.raises(DITasksError, match="sync_empty returned without yielding"):
            await container.call(root_sync)
        with pytest.raises(DITasksError, match="async_empty returned without yielding"):
            await container.call(root_async)


async def test_call_scoped_teardown_errors(mode: str) -> None:
    """A call-scoped teardown that raises replaces the result, and replaces the body's error when there is one."""

    def bad() -> Iterator[int]:
        try:
            yield 1
        finally:
            raise RuntimeError("teardown")

    async def ok(x: Annotated[int, Depends(bad, scope="call")]) -> int:
        return x

    async def fails(x: Annotated[int, Depends(bad, scope="call")]) -> int:
        raise ValueError("body")

    def fine() -> Iterator[int]:
        yield 1

    async def fails_cleanly(x: Annotated[int, Depends(fine, scope="call")]) -> int:
        raise ValueError("body")

    container = Container()
    for _ in range(2):
        with pytest.raises(RuntimeError, match="teardown"):
            await container.call(ok)
        with pytest.raises(RuntimeError, match="teardown"):
            await container.call(fails)
        with pytest.raises(ValueError, match="body"):
            await container.call(fails_cleanly)


async def test_a_sync_root_runs_in_a_thread_when_given_a_runner(mode: str) -> None:
    """The root of a task plan runs through the given thread runner (as a sync task with dependencies does)."""
    import functools
    import threading

    def where(prefix: str, s: Annotated[int, Depends(settings_id)]) -> str:
        return f"{prefix}{threading.current_thread() is threading.main_thread()}"

    container = Container()
    runner = functools.partial(anyio.to_thread.run_sync, limiter=anyio.CapacityLimiter(1))
    plan = container.plan(where, 1)
    for _ in range(2):
        async with container.scope() as scope:
            assert await _execute.execute(plan, scope, ("t:",), scope.values, runner) == "t:False"
            assert await _execute.execute(plan, scope, ("n:",), scope.values) == "n:True"


async def test_positional_arguments_the_plan_was_not_solved_for_are_prepended(mode: str) -> None:
    """Extra positional arguments on a plan solved for none still reach the root (by the interpreter)."""

    async def root(*nums: int, s: Annotated[int, Depends(settings_id)]) -> int:
        return sum(nums)

    container = Container()
    plan = container.plan(root, 0)
    async with container.scope() as scope:
        assert await _execute.execute(plan, scope, (), scope.values) == 0
        assert await _execute.execute(plan, scope, (), scope.values) == 0
        assert await _execute.execute(plan, scope, (5, 6), scope.values) == 11


def test_generated_source_is_straight_line_and_commented() -> None:
    """The source names each step, caches request-scoped ones, and has no teardown code when none is needed."""

    def dep(a: int, b: int, *, c: int = 3) -> int:
        return a + b + c

    async def root(x: Annotated[int, Depends(dep)]) -> int:
        return x

    source, namespace = generate(Solver({}).solve(root, 0))
    assert source.startswith("async def run(scope, args, values, root_thread):")
    assert "# step 0: " in source
    assert "dep (sync, request-cached)" in source
    assert "v0 = c0(a0_0, a0_1, c=a0_2)" in source  # leading parameters positionally, keyword-only by name
    assert "v1 = await c1(v0)" in source
    assert "try:" not in source
    assert "call_stack" not in source
    assert namespace["c0"] is dep


class Config:
    """A class a value can be bound by (Scope.bind)."""

    def __init__(self, name: str = "default") -> None:
        self.name = name


DEFAULT_CONFIG = Config()


async def defaults(
    n: int = 1, label: str = "x", config: Config = DEFAULT_CONFIG, *, needed: str
) -> tuple[int, str, str, str]:
    return n, label, config.name, needed


def test_a_default_that_no_bound_type_can_replace_is_read_in_the_same_lookup() -> None:
    """A value with a default and a builtin annotation is looked up with its default in one dict read; one whose
    class may be bound by type, or with no default, goes through the fallback (type, then default, then error)."""
    source, namespace = generate(Solver({}).solve(defaults, 0))
    assert "a0_0 = values.get('n', d0_0)" in source
    assert "a0_1 = values.get('label', d0_1)" in source
    assert namespace["d0_0"] == 1
    assert "a0_2 = values.get('config', MISSING)" in source
    assert "fallback(src0_2, scope.types)" in source
    assert "fallback(src0_3, scope.types)" in source  # no default: the fallback raises MissingValueError


async def test_defaults_values_and_bound_types_give_the_same_results(mode: str) -> None:
    """Defaults are used when nothing is given, values by name win, a value bound by type replaces a default."""
    container = Container()
    assert await container.call(defaults, needed="y") == (1, "x", "default", "y")
    assert await container.call(defaults, needed="y", n=2, label="z") == (2, "z", "default", "y")
    async with container.scope(needed="y") as scope:
        scope.bind(Config, Config("bound"))
        assert await scope.call(defaults) == (1, "x", "bound", "y")
    with pytest.raises(MissingValueError, match="needed"):
        await container.call(defaults)


def test_keyword_parameters_after_a_hidden_one_stay_keywords() -> None:
    """A parameter hidden from the plan (filled by the caller) ends the run of positional arguments."""

    def root(a: int, b: int, c: int) -> int:
        return a + b + c

    plan = Solver({}).solve(root, 0, hide=frozenset({"b"}))
    assert plan.steps[-1].kwpos == 1
    source, _ = generate(plan)
    assert "c0(a0_0, c=a0_1)" in source


async def test_tracebacks_show_the_generated_lines() -> None:
    """A failure inside a compiled plan's own code shows the plan's source line in the traceback."""

    def needs(user: str) -> str:
        return user

    container = Container()
    plan = container.plan(needs, 0)
    run = compile_plan(plan)
    async with container.scope() as scope:
        with pytest.raises(MissingValueError, match="no value for parameter") as info:
            await run(scope, (), scope.values, None)
    text = "".join(traceback.format_exception(info.value))
    assert "<di_tasks plan " in text
    assert "fallback(src0_0, scope.types)" in text
    assert plan.source.startswith("async def run(")


def counted_settings() -> int:
    EVENTS.append("settings")
    return 1


def left_of(s: Annotated[int, Depends(counted_settings)]) -> int:
    return s


def right_of(s: Annotated[int, Depends(counted_settings)]) -> int:
    return s + 1


async def diamond_root(a: Annotated[int, Depends(left_of)], b: Annotated[int, Depends(right_of)]) -> int:
    return a + b


async def scope_user(scope: Scope, a: Annotated[int, Depends(left_of)]) -> int:
    return a + await scope.call(right_of)


async def test_a_scope_made_for_one_call_skips_the_request_cache(mode: str) -> None:
    """Container.call runs the fresh-scope form: the diamond is still computed once per call."""
    container = Container()
    for _ in range(3):
        EVENTS.clear()
        assert await container.call(diamond_root) == 3
        assert EVENTS == ["settings"]
    plan = container.plan(diamond_root, 0)
    assert (plan.run_fresh is not None) == (mode == "compiled")
    assert plan.run is None  # the cached form is made only when a shared scope runs the plan


async def test_a_plan_handed_the_scope_keeps_the_request_cache(mode: str) -> None:
    """A dependency that receives the Scope may call more in it, so the cache must be filled."""
    container = Container()
    for _ in range(3):
        EVENTS.clear()
        assert await container.call(scope_user) == 3
        assert EVENTS == ["settings"]  # right_of, called through the scope, reused the cached settings
    plan = container.plan(scope_user, 0)
    assert not plan.fresh_ok
    assert plan.run_fresh is None


async def session_root(s: Annotated[str, Depends(session)]) -> str:
    return s


def test_the_fresh_form_has_no_cache_lookups() -> None:
    """Fresh forms never read the cache, and fill it only with what an injected function may also ask for."""
    plan = Solver({}).solve(diamond_root, 0)
    fresh, _ = generate(plan, fresh=True)
    assert "cache" not in fresh.split('"""')[2].replace("cached", "")
    shared, _ = generate(plan)
    assert "in cache:" in shared
    with_teardown = Solver({}).solve(session_root, 0)
    fresh, _ = generate(with_teardown, fresh=True, shared={session})
    assert "in cache" not in fresh
    assert fresh.count("cache[") == 1  # the shared session only


async def test_an_injected_helper_shares_the_values_of_the_function_that_calls_it() -> None:
    """Container.call's scope: an injected function called by the function gets the same request-scoped values,
    also when it was decorated after the function's plan was compiled."""
    container = Container()
    made: list[object] = []

    def resource() -> object:
        made.append(object())
        return made[-1]

    async def endpoint(r: Annotated[object, Depends(resource)]) -> bool:
        return await helper() is r

    async def helper_body(r: Annotated[object, Depends(resource)]) -> object:
        return r

    for _ in range(3):  # compiled (fresh) from the second call on, before any injected function exists
        with pytest.raises(NameError):
            await container.call(endpoint)
    helper = container.inject(helper_body)
    for _ in range(3):
        assert await container.call(endpoint)


def first_called() -> str:
    EVENTS.append("first called")
    return "first"


def needs_later(token: str) -> str:
    return token


async def value_root(a: Annotated[str, Depends(first_called)], b: Annotated[str, Depends(needs_later)]) -> str:
    return a + b


async def test_a_missing_value_fails_before_any_step_runs(mode: str) -> None:
    """No dependency is called when a value needed further down is missing."""
    container = Container()
    for _ in range(3):
        with pytest.raises(MissingValueError, match=r"'token' of .*needs_later"):
            await container.call(value_root)
    assert EVENTS == []
    assert await container.call(value_root, token="!") == "first!"


async def per_use_resource() -> AsyncIterator[str]:
    EVENTS.append("resource:setup")
    yield "resource"
    EVENTS.append("resource:teardown")


async def uses_uncached_app(r: Annotated[str, Depends(per_use_resource, scope="app", use_cache=False)]) -> str:
    EVENTS.append("body")
    return r


async def test_an_uncached_app_generator_lives_until_the_app_exits(mode: str) -> None:
    """use_cache=False with scope='app': a new value per use, each torn down at app exit, not request exit."""
    container = Container()
    async with container:
        for _ in range(3):
            assert await container.call(uses_uncached_app) == "resource"
        assert "resource:teardown" not in EVENTS
    assert EVENTS.count("resource:teardown") == 3
    with pytest.raises(DITasksError, match="app lifetime is not open"):
        await Container().call(uses_uncached_app)


async def test_a_pure_graph_gives_the_same_results_with_or_without_a_scope() -> None:
    """A graph with no generator, task or app value runs without a scope of its own while no function is injected
    with the container, and in one once one is: same results, same errors."""
    container = Container()
    for _ in range(3):
        EVENTS.clear()
        assert await container.call(diamond_root) == 3
        assert EVENTS == ["settings"]
    for _ in range(3):
        with pytest.raises(MissingValueError, match="'token'"):
            await container.call(value_root)
    assert container.plan(diamond_root).pure
    container.inject(value_root)  # from now on each call's scope must be current: an injected function may use it
    for _ in range(3):
        EVENTS.clear()
        assert await container.call(diamond_root) == 3
        assert EVENTS == ["settings"]


async def test_plans_compiled_under_an_override_leave_linecache_with_it() -> None:
    """The source of plans solved for an override set is dropped when the override ends."""
    import linecache

    container = Container()
    with container.override(counted_settings, lambda: 5):
        for _ in range(3):
            assert await container.call(diamond_root) == 11
        plan = container.plan(diamond_root, 0)
        assert plan.filenames
        assert all(name in linecache.cache for name in plan.filenames)
    assert not any(name in linecache.cache for name in plan.filenames)
