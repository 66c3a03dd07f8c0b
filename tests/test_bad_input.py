"""Hostile and unusual input: every mistake is a DITasksError or TypeError naming it, never a silent wrong result."""

import functools
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import fastapi
import httpx
import pytest

from di_tasks import BackgroundTasks, Container, Depends, DITasksError, TaskState, WiringError
from di_tasks.asgi import ScopeMiddleware


async def notify(x: int = 1) -> int:
    """An async task function."""
    return x


def _container_and_collector() -> tuple[Container, BackgroundTasks]:
    container = Container()
    return container, BackgroundTasks(container)


# -- not a function at all -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [42, "text", b"bytes", 1.5, [1], object()])
def test_non_callables_are_rejected_everywhere(bad: Any) -> None:
    """A non-callable is refused by Depends, solve, run and add_task, each naming the object."""
    container, collector = _container_and_collector()
    with pytest.raises(TypeError, match=r"Depends\(\) takes a callable"):
        Depends(bad)
    with pytest.raises(WiringError, match="is not callable"):
        container.solve(bad)
    with pytest.raises(WiringError, match="is not callable"):
        container.run(bad)
    with pytest.raises(TypeError, match=r"add_task\(\) takes a function .* not callable"):
        collector.add_task(bad)


def test_a_coroutine_object_is_not_a_function() -> None:
    """add_task(f()), Depends(f()), solve(f()) and run(f()) each say to pass the function itself."""
    container, collector = _container_and_collector()
    coroutine = notify()
    try:
        with pytest.raises(TypeError, match=r"instead of add_task\(f\(arg\)\)"):
            collector.add_task(coroutine)  # type: ignore[arg-type]  # the mistake under test
        with pytest.raises(TypeError, match="not the result of calling it"):
            Depends(coroutine)  # type: ignore[arg-type]  # the mistake under test
        with pytest.raises(WiringError, match="coroutine object notify"):
            container.solve(coroutine)  # type: ignore[arg-type]  # the mistake under test
        with pytest.raises(WiringError, match="coroutine object notify"):
            container.run(coroutine)  # type: ignore[call-overload]  # the mistake under test
    finally:
        coroutine.close()


class Awaitable:
    """An awaitable object that is not callable."""

    def __await__(self) -> Iterator[None]:
        yield None


def test_an_awaitable_object_is_not_a_function() -> None:
    """A non-callable awaitable is refused at add_task and at solve, naming it."""
    container, collector = _container_and_collector()
    with pytest.raises(TypeError, match=r"got the awaitable <.*Awaitable object"):
        collector.add_task(Awaitable())  # type: ignore[arg-type]  # the mistake under test
    with pytest.raises(WiringError, match=r"Awaitable object at 0x[0-9a-f]+> is (not callable|an awaitable object)"):
        container.solve(Awaitable())  # type: ignore[arg-type]  # the mistake under test


def test_a_sync_task_returning_a_coroutine_fails_loudly(caplog: pytest.LogCaptureFixture) -> None:
    """add_task(lambda: notify()) fails the task with a TypeError naming it instead of never awaiting the coroutine."""
    tasks: list[Any] = []

    def endpoint(background: BackgroundTasks) -> None:
        tasks.append(background.add_task(lambda: notify()))

    with pytest.raises(DITasksError, match=r"1 background task\(s\) failed: .*lambda"):
        Container().run(endpoint)
    (task,) = tasks
    assert task.state is TaskState.FAILED
    assert isinstance(task.exception, TypeError)
    assert "returned a coroutine" in str(task.exception)
    assert "lambda" in caplog.text


class ReturnsCoroutine:
    """A sync callable instance that returns a coroutine."""

    def __call__(self) -> Any:
        return notify()


def test_a_sync_dependency_returning_a_coroutine_is_an_error() -> None:
    """A plain callable dependency that returns a coroutine raises DITasksError naming it."""

    def endpoint(value: Annotated[int, Depends(ReturnsCoroutine())]) -> int:
        return value

    with pytest.raises(DITasksError, match="ReturnsCoroutine instance is a plain function but returned a coroutine"):
        Container().run(endpoint)


# -- callables of every shape work, with the right values ----------------------------------------------------


def _base(x: int, y: int = 10) -> int:
    return x * y


def test_lambdas_are_dependencies_and_tasks() -> None:
    """A lambda works as a dependency and as a task."""
    ran: list[int] = []

    def endpoint(value: Annotated[int, Depends(lambda: 3)], background: BackgroundTasks) -> int:
        background.add_task(lambda: ran.append(value))
        return value

    assert Container().run(endpoint) == 3
    assert ran == [3]


def test_partials_keep_their_bound_arguments() -> None:
    """functools.partial dependencies and tasks are called with their bound arguments (sync and async)."""
    ran: list[int] = []

    def endpoint(
        product: Annotated[int, Depends(functools.partial(_base, y=7))],
        awaited: Annotated[int, Depends(functools.partial(notify, 5))],
        background: BackgroundTasks,
    ) -> tuple[int, int]:
        background.add_task(functools.partial(ran.append, product))
        background.add_task(functools.partial(notify, 2))
        return product, awaited

    assert Container().run(endpoint, x=2) == (14, 5)
    assert ran == [14]


def test_a_partial_task_checks_its_remaining_signature() -> None:
    """add_task(partial(f, y=...)) checks the arguments against what the partial still needs."""
    _, collector = _container_and_collector()
    with pytest.raises(TypeError, match=r"add_task\(.*_base, \.\.\.\): too many positional arguments"):
        collector.add_task(functools.partial(_base, y=1), 1, 2)
    collector.add_task(functools.partial(_base, y=1), 1)


class Service:
    """A class with sync and async methods used as dependencies."""

    def __init__(self) -> None:
        self.calls = 0

    def sync_value(self, q: int = 4) -> int:
        self.calls += 1
        return q

    async def async_value(self) -> str:
        self.calls += 1
        return "async"


def test_bound_methods_are_dependencies_and_tasks() -> None:
    """Bound methods (sync and async) resolve with self bound, and run as tasks."""
    service = Service()

    def endpoint(
        a: Annotated[int, Depends(service.sync_value)],
        b: Annotated[str, Depends(service.async_value)],
        background: BackgroundTasks,
    ) -> tuple[int, str]:
        background.add_task(service.sync_value, 9)
        background.add_task(service.async_value)
        return a, b

    assert Container().run(endpoint) == (4, "async")
    assert service.calls == 4


class Connection:
    """A class with both __init__ (with a dependency) and __call__."""

    def __init__(self, url: Annotated[str, Depends(lambda: "db://")]) -> None:
        self.url = url

    async def __call__(self, extra: str = "!") -> str:
        return self.url + extra


def test_classes_are_built_and_instances_are_called() -> None:
    """Depends(Class) builds an instance via __init__; Depends(instance) calls its __call__ (async here)."""
    instance = Connection("inst://")

    def endpoint(
        built: Annotated[Connection, Depends()],
        called: Annotated[str, Depends(instance)],
    ) -> tuple[str, str]:
        return built.url, called

    assert Container().run(endpoint) == ("db://", "inst://!")


class Unhashable:
    """A callable instance that cannot be a dict key."""

    __hash__ = None  # type: ignore[assignment]  # unhashable on purpose

    def __call__(self, n: int = 1) -> int:
        return n + 1


def test_unhashable_callables_still_resolve_and_run() -> None:
    """Unhashable callable instances work as root, dependency and task."""
    ran: list[int] = []

    def endpoint(v: Annotated[int, Depends(Unhashable())], background: BackgroundTasks) -> int:
        background.add_task(Unhashable())
        background.add_task(ran.append, v)
        return v

    assert Container().run(endpoint) == 2
    assert Container().run(Unhashable(), n=5) == 6
    assert ran == [2]


def test_positional_only_dependency_parameters_are_filled() -> None:
    """A dependency with positional-only parameters gets its values and dependencies positionally."""

    def dep(x: int, y: Annotated[int, Depends(lambda: 5)], /) -> int:
        return x - y

    def endpoint(v: Annotated[int, Depends(dep)]) -> int:
        return v

    assert Container().run(endpoint, x=8) == 3


# -- signatures that cannot be injected ----------------------------------------------------------------------


def uses_missing_forward_reference(x: Any) -> None:
    """A function whose annotation names nothing (set below, as ``x: "NoSuchType"`` would)."""


uses_missing_forward_reference.__annotations__["x"] = "NoSuchType"


def test_unresolvable_forward_references_fail_at_solve() -> None:
    """A forward reference that names nothing is a WiringError at solve naming the function, the name and the path."""

    def endpoint(x: Annotated[None, Depends(uses_missing_forward_reference)]) -> None:
        del x

    container = Container()
    with pytest.raises(WiringError, match=r"uses_missing_forward_reference: name 'NoSuchType' is not defined") as info:
        container.solve(endpoint)
    assert info.value.path[-1].endswith("uses_missing_forward_reference")
    with pytest.raises(TypeError, match=r"add_task\(.*uses_missing_forward_reference, \.\.\.\).*NoSuchType"):
        BackgroundTasks(container).add_task(uses_missing_forward_reference, 1)


def test_star_parameters_in_a_dependency_fail_at_solve() -> None:
    """A dependency taking *args or **kwargs is a WiringError naming the parameter and the path."""

    def star_args(*rest: int) -> int:
        return len(rest)

    def star_kwargs(**options: int) -> int:
        return len(options)

    def a(v: Annotated[int, Depends(star_args)]) -> None:
        del v

    def b(v: Annotated[int, Depends(star_kwargs)]) -> None:
        del v

    container = Container()
    with pytest.raises(WiringError, match=r"parameter \*rest of .*star_args cannot be injected"):
        container.solve(a)
    with pytest.raises(WiringError, match=r"parameter \*\*options of .*star_kwargs cannot be injected"):
        container.solve(b)


def test_the_called_function_keeps_its_star_parameters() -> None:
    """The root function's *args and **kwargs are the caller's business and are not injected."""

    def endpoint(first: int, *rest: int, **options: int) -> tuple[int, tuple[int, ...], dict[str, int]]:
        return first, rest, options

    assert Container().run(endpoint, 1, 2, 3) == (1, (2, 3), {})


def test_a_task_with_injected_parameters_cannot_take_star_parameters() -> None:
    """A task with an injected parameter and *args/**kwargs is refused at add_task, not silently truncated."""

    def with_args(first: int, *rest: int, background: BackgroundTasks) -> None:
        del first, rest, background

    def with_kwargs(background: BackgroundTasks, **options: int) -> None:
        del background, options

    def with_posonly(first: int, /, background: BackgroundTasks) -> None:
        del first, background

    _, collector = _container_and_collector()
    with pytest.raises(TypeError, match=r"add_task\(.*with_args, \.\.\.\): .*cannot take \*rest"):
        collector.add_task(with_args, 1, 2, 3)  # type: ignore[call-arg]  # injected parameters are not passed
    with pytest.raises(TypeError, match=r"add_task\(.*with_kwargs, \.\.\.\): .*cannot take \*\*options"):
        collector.add_task(with_kwargs, x=1)  # type: ignore[call-arg]  # injected parameters are not passed
    with pytest.raises(TypeError, match=r"add_task\(.*with_posonly, \.\.\.\): .*positional-only"):
        collector.add_task(with_posonly, 1)  # type: ignore[call-arg]  # injected parameters are not passed


def test_generator_functions_are_not_tasks_nor_roots() -> None:
    """A generator function passed to add_task or run is refused, naming it."""

    def gen() -> Iterator[int]:
        yield 1

    async def agen() -> AsyncIterator[int]:
        yield 1

    container, collector = _container_and_collector()
    for func in (gen, agen):
        with pytest.raises(
            TypeError, match=r"add_task\(.*gen, \.\.\.\): a generator function cannot be a background task"
        ):
            collector.add_task(func)
        with pytest.raises(WiringError, match=r"gen is a generator function; it can be a dependency"):
            container.run(func)


def test_generators_that_yield_twice_or_never_are_errors() -> None:
    """A generator dependency that yields twice or never raises DITasksError naming it; the other one still closes."""
    closed: list[str] = []

    def twice() -> Iterator[int]:
        try:
            yield 1
            yield 2
        finally:
            closed.append("twice")

    def never() -> Iterator[int]:
        closed.append("never")
        yield from ()

    async def async_twice() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            closed.append("async_twice")

    def a(v: Annotated[int, Depends(twice)], w: Annotated[int, Depends(async_twice)]) -> int:
        return v + w

    def b(v: Annotated[int, Depends(never)]) -> int:
        return v

    with pytest.raises(DITasksError, match=r"generator dependency .*twice yielded more than once"):
        Container().run(a)
    assert sorted(closed) == ["async_twice", "twice"]
    with pytest.raises(DITasksError, match=r"generator dependency .*never returned without yielding"):
        Container().run(b)


def test_a_task_argument_mismatch_names_the_function() -> None:
    """add_task with the wrong arguments raises TypeError at the call site naming the function and its signature."""
    _, collector = _container_and_collector()
    with pytest.raises(
        TypeError, match=r"add_task\(.*_base, \.\.\.\): .*missing a required argument: 'x'.*\(x: int, y: int = 10\)"
    ):
        collector.add_task(_base)  # type: ignore[call-arg]  # the mistake under test
    with pytest.raises(TypeError, match=r"add_task\(.*notify, \.\.\.\): too many positional arguments"):
        collector.add_task(notify, 1, 2)  # type: ignore[call-arg]  # the mistake under test
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'z'"):
        collector.add_task(_base, 1, z=2)  # type: ignore[call-arg]  # the mistake under test


def test_an_unannotated_parameter_is_named_without_a_type() -> None:
    """A parameter with no annotation, no default and no value: the message has no internal type name."""
    from di_tasks import MissingValueError

    def needs(user):  # type: ignore[no-untyped-def]  # unannotated on purpose  # pyright: ignore[reportMissingParameterType]
        return None

    with pytest.raises(MissingValueError, match=r"no value for parameter 'user' of .*needs: it has no Depends") as info:
        Container().run(needs)  # pyright: ignore[reportUnknownArgumentType]  # unannotated on purpose
    assert "_empty" not in str(info.value)


def test_a_task_with_a_graph_too_deep_to_walk_fails_at_add_task() -> None:
    """add_task of a function whose graph is deeper than the recursion limit: TypeError with the fix, no
    RecursionError."""
    import sys

    from di_tasks import BackgroundTasks, Depends

    funcs: list[Any] = [lambda: 0]
    for _ in range(sys.getrecursionlimit()):
        prev = funcs[-1]

        def nxt(x: int = Depends(prev)) -> int:
            return x

        funcs.append(nxt)

    async def endpoint(tasks: BackgroundTasks) -> None:
        tasks.add_task(funcs[-1])

    with pytest.raises(TypeError, match=r"add_task\(.*\): the dependency graph of .* is deeper than"):
        Container().run(endpoint)


def test_a_parametrised_generic_class_is_read_as_its_class() -> None:
    """Depends(Repo[int]) is called as Repo is: its parameters are Repo's, not the alias's *args."""
    from typing import Annotated, Generic, TypeVar

    from di_tasks import Depends

    t = TypeVar("t")

    class Repo(Generic[t]):
        def __init__(self, table: str = "users") -> None:
            self.table = table

    def use(repo: Annotated[Any, Depends(Repo[int])]) -> str:
        return str(repo.table)

    assert Container().run(use) == "users"


# -- parity: the mistakes users met, each named where it is made -------------------------------------------------


def send_email(to: str, subject: str, body: str = "") -> None:
    """A task function with a required keyword-able parameter."""


def test_add_task_names_a_misspelt_keyword_before_the_parameter_it_hides() -> None:
    """add_task(send_email, "a@x", subjcet="hi") names 'subjcet' and suggests 'subject', not "missing 'subject'"."""
    _, collector = _container_and_collector()
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'subjcet' \(did you mean 'subject'\?\)"):
        collector.add_task(send_email, "a@x", subjcet="hi")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'zzz';"):
        collector.add_task(send_email, "a@x", "s", zzz=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"missing a required argument: 'subject'"):
        collector.add_task(send_email, "a@x")  # type: ignore[call-arg]


def test_add_task_of_a_called_function_says_it_was_called_instead_of_passed() -> None:
    """add_task(send_email(...)) hands add_task None: the error says the function was called and shows the form."""
    _, collector = _container_and_collector()
    with pytest.raises(TypeError, match=r"got None, which is not callable: the function was probably called instead"):
        collector.add_task(send_email("a@x", "hi"))  # type: ignore[func-returns-value, arg-type]  # the mistake under test
    with pytest.raises(TypeError, match=r"pass the function and its arguments: add_task\(send_email, to\)"):
        collector.add_task(send_email("a@x", "hi"))  # type: ignore[func-returns-value, arg-type]  # the mistake under test


def current_user(x_user: str) -> str:
    """Reads a per-request value by name."""
    return x_user


async def user_endpoint(client: Annotated[str, Depends(current_user, scope="app")]) -> str:
    """Asks for an app-scoped dependency that needs a per-request value."""
    return client


@pytest.mark.anyio
async def test_app_scoped_dependency_says_it_sees_only_the_containers_values() -> None:
    """A per-request value passed to the call is not seen by an app-scoped dependency, and the error says why."""
    container = Container()
    async with container:
        with pytest.raises(
            DITasksError,
            match=r"current_user is app-scoped .* sees only the values given to Container\(\.\.\.\), never the "
            r"values of a request or call, even if x_user=\.\.\. was passed there\. "
            r"Give Container\(values=\{'x_user': \.\.\.\}\)",
        ):
            await container.call(user_endpoint, x_user="ada")
    async with Container(values={"x_user": "app"}) as fixed:
        assert await fixed.call(user_endpoint, x_user="ada") == "app"


def user_from_header(x_user: Annotated[str, fastapi.Header()]) -> str:
    """A sub-dependency that (wrongly) asks FastAPI for a header."""
    return x_user


def user_from_header_default(x_user: str = fastapi.Query()) -> str:
    """The same mistake with the marker as the default."""
    return x_user


def user_by_name(x_user: str) -> str:
    """The right form: a plain parameter, filled by name from the endpoint's argument."""
    return x_user.upper()


@pytest.mark.parametrize("dependency", [user_from_header, user_from_header_default])
def test_a_request_marker_on_a_sub_dependency_fails_at_decoration(dependency: Any) -> None:
    """Header()/Query() on a dependency's parameter is refused when the endpoint is decorated, with the fix."""
    container = Container()

    async def endpoint(user: Annotated[str, Depends(dependency)]) -> str:
        return user

    with pytest.raises(
        WiringError,
        match=r"parameter 'x_user' of .*user_from_header\w* has fastapi\.params\.(Header|Query)\(\), but only the "
        r"endpoint's own parameters come from the framework.* Declare it on the endpoint \(x_user: "
        r"Annotated\[str, (Header|Query)\(\)\]\) and give .* a plain parameter x_user: str",
    ) as info:
        container.inject(endpoint)
    assert info.value.path[-1].endswith(dependency.__name__)


@pytest.mark.anyio
async def test_a_header_declared_on_the_endpoint_reaches_the_dependency_by_name() -> None:
    """The fix the error gives works: Header() on the endpoint, a plain parameter on the dependency."""
    container = Container()
    app = fastapi.FastAPI()

    @app.get("/me")
    @container.inject
    async def me(user: Annotated[str, Depends(user_by_name)], x_user: Annotated[str, fastapi.Header()]) -> str:
        return user

    transport = httpx.ASGITransport(app=ScopeMiddleware(app, container=container))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/me", headers={"x-user": "ada"})
    assert response.json() == "ADA"
