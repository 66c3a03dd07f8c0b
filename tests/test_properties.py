"""Property tests: random dependency graphs, random overrides, random values and random add_task arguments."""

import contextlib
import inspect
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from di_tasks import (
    BackgroundTasks,
    Container,
    DependencyCycleError,
    Depends,
    MissingValueError,
    Scope,
    ScopeError,
    ScopeName,
)
from di_tasks._inspect import qualname

PROPERTY = settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])
RANK = {"app": 0, "request": 1, "call": 2}
SCOPES: tuple[ScopeName, ...] = ("app", "request", "call")
KINDS = ("sync", "async", "gen", "agen")
Edge = tuple[int, bool]  # (index of the dependency, use_cache)


# -- the random graph ----------------------------------------------------------------------------------------


@dataclass
class Spec:
    """One generated dependency: how it produces its value, its lifetime, what it asks for."""

    kind: str
    scope: ScopeName
    deps: list[Edge]
    wants_tasks: bool = False
    to_thread: bool = False


@dataclass
class Dag:
    """A generated graph: its nodes, the root's dependencies and the overrides to apply."""

    nodes: list[Spec]
    root: list[Edge]
    root_async: bool
    overrides: dict[int, Spec] = field(default_factory=lambda: {})


@st.composite
def _spec(draw: st.DrawFn, index: int, nodes: list[Spec], scope: ScopeName | None) -> Spec:
    """A node whose dependencies all come before it (so the graph is acyclic) and respect the lifetimes."""
    chosen: ScopeName = draw(st.sampled_from(SCOPES)) if scope is None else scope
    allowed = [j for j in range(index) if RANK[nodes[j].scope] <= RANK[chosen]]
    deps = draw(st.lists(st.tuples(st.sampled_from(allowed), st.booleans()), max_size=3)) if allowed else []
    kind = draw(st.sampled_from(KINDS))
    return Spec(
        kind=kind,
        scope=chosen,
        deps=deps,
        wants_tasks=chosen != "app" and draw(st.booleans()),
        to_thread=kind in ("sync", "gen") and draw(st.booleans()),
    )


@st.composite
def dags(draw: st.DrawFn) -> Dag:
    """A valid random DAG (lifetimes respected), with shared nodes, random caching and random overrides."""
    n = draw(st.integers(min_value=1, max_value=7))
    nodes: list[Spec] = []
    overrides: dict[int, Spec] = {}
    for i in range(n):
        spec = draw(_spec(i, nodes, None))
        nodes.append(spec)
        if draw(st.integers(0, 3)) == 0:
            overrides[i] = draw(_spec(i, nodes, spec.scope))
    root = draw(st.lists(st.tuples(st.integers(0, n - 1), st.booleans()), min_size=1, max_size=4))
    return Dag(nodes=nodes, root=root, root_async=draw(st.booleans()), overrides=overrides)


class Token:
    """The value a generated dependency returns: who made it, and in which lifetime."""

    def __init__(self, name: str) -> None:
        self.name = name


class Recorder:
    """Collects every event of one run; appends are atomic, so worker threads may record too."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.scope_no = 0
        self.call_no = 0
        self.collectors: dict[int, set[int]] = {}
        self.lock = threading.Lock()

    def group(self, scope: str) -> tuple[Any, ...]:
        if scope == "app":
            return ("app",)
        if scope == "request":
            return ("request", self.scope_no)
        return ("call", self.scope_no, self.call_no)


def _task(rec: Recorder, name: str, scope_no: int) -> None:
    rec.events.append(("task", name, scope_no))


def _build(rec: Recorder, name: str, spec: Spec, targets: list[Callable[..., Any]]) -> Callable[..., Any]:
    """Make a real function of the spec's kind whose signature declares the spec's dependencies."""

    def body(kw: dict[str, Any]) -> Token:
        for key, value in kw.items():
            if key.startswith("d"):
                expected = targets[int(key[1:].split("_")[0])].__name__
                assert isinstance(value, Token), (name, key, value)
                assert value.name == expected, (name, key, value.name)
            if key == "tasks":
                assert isinstance(value, BackgroundTasks)
                rec.collectors.setdefault(rec.scope_no, set()).add(id(value))
                value.add_task(_task, rec, name, rec.scope_no)
        token = Token(name)
        rec.events.append(("call", name, rec.group(spec.scope)))
        return token

    def sync_func(**kw: Any) -> Token:
        return body(kw)

    async def async_func(**kw: Any) -> Token:
        await anyio.lowlevel.checkpoint()
        return body(kw)

    def gen_func(**kw: Any) -> Any:
        group = rec.group(spec.scope)
        rec.events.append(("setup", name, group))
        yield body(kw)
        rec.events.append(("teardown", name, group))

    async def agen_func(**kw: Any) -> Any:
        group = rec.group(spec.scope)
        rec.events.append(("setup", name, group))
        yield body(kw)
        await anyio.lowlevel.checkpoint()
        rec.events.append(("teardown", name, group))

    kinds: dict[str, Callable[..., Any]] = {"sync": sync_func, "async": async_func, "gen": gen_func, "agen": agen_func}
    func = kinds[spec.kind]
    func.__qualname__ = func.__name__ = name
    return func


def _to_thread(func: Callable[..., Any]) -> bool:
    return bool(getattr(func, "_to_thread", False))


def _materialise(dag: Dag, rec: Recorder) -> tuple[Callable[..., Any], Container, list[tuple[Any, Any]]]:
    targets: list[Callable[..., Any]] = []
    effective: list[Callable[..., Any]] = []  # filled below: what each node's Depends resolves to
    replacements: dict[int, Callable[..., Any]] = {}
    scopes: list[ScopeName] = [s.scope for s in dag.nodes]
    for i, spec in enumerate(dag.nodes):
        targets.append(_build(rec, f"n{i}", spec, effective))
        targets[i]._to_thread = spec.to_thread  # type: ignore[attr-defined]  # read back by _resign
        if i in dag.overrides:
            replacements[i] = _build(rec, f"r{i}", dag.overrides[i], effective)
    effective.extend(replacements.get(i, t) for i, t in enumerate(targets))
    for i in replacements:
        replacements[i]._to_thread = dag.overrides[i].to_thread  # type: ignore[attr-defined]  # read back by _resign
    # the Depends markers name the original targets; overrides swap them at solve time
    for i, spec in enumerate(dag.nodes):
        _resign(targets[i], spec, targets, scopes, effective)
        if i in replacements:
            _resign(replacements[i], dag.overrides[i], targets, scopes, effective)
    root = _build(rec, "root", Spec("async" if dag.root_async else "sync", "call", dag.root), effective)
    _resign(root, Spec("sync", "call", dag.root), targets, scopes, effective)
    return root, Container(), [(targets[i], r) for i, r in replacements.items()]


def _resign(
    func: Callable[..., Any],
    spec: Spec,
    targets: list[Callable[..., Any]],
    scopes: list[ScopeName],
    effective: list[Callable[..., Any]],
) -> None:
    params: list[inspect.Parameter] = []
    for i, (j, cached) in enumerate(spec.deps):
        marker = Depends(targets[j], use_cache=cached, scope=scopes[j], sync_to_thread=_to_thread(effective[j]))
        params.append(inspect.Parameter(f"d{j}_{i}", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[Any, marker]))
    if spec.wants_tasks:
        params.append(inspect.Parameter("tasks", inspect.Parameter.KEYWORD_ONLY, annotation=BackgroundTasks))
    func.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]  # a generated signature


def _expected_calls(dag: Dag) -> dict[str, int]:
    """Simulate the solver (shared nodes per plan) and the caches (per scope) for 2 scopes x 2 calls."""
    eff = {i: dag.overrides.get(i, s) for i, s in enumerate(dag.nodes)}
    name = {i: (f"r{i}" if i in dag.overrides else f"n{i}") for i in eff}
    memo: set[int] = set()
    expansions: list[Edge] = []

    def expand(k: int, cached: bool) -> None:
        if cached and k in memo:
            return
        for j, c in eff[k].deps:
            expand(j, c)
        expansions.append((k, cached))
        if cached:
            memo.add(k)

    for j, c in dag.root:
        expand(j, c)
    counts: dict[str, int] = {"root": 4}
    for k, cached in expansions:
        scope = eff[k].scope
        if not cached or scope == "call":
            add = 4
        elif scope == "request":
            add = 2
        else:
            add = 1
        counts[name[k]] = counts.get(name[k], 0) + add
    return counts


async def _drive(rec: Recorder, container: Container, root: Callable[..., Any]) -> None:
    async with container:
        for s in range(2):
            rec.scope_no = s
            async with container.scope() as scope:
                rec.collectors.setdefault(s, set()).add(id(scope.tasks))
                for c in range(2):
                    rec.call_no = c
                    await scope.call(root)
                    rec.events.append(("end-call", s, c))
                rec.events.append(("body-done", s))
            rec.events.append(("end-scope", s))
    rec.events.append(("end-app",))


@PROPERTY
@given(dag=dags())
@BACKENDS
def test_random_dags_compute_cache_and_tear_down_as_promised(backend: str, dag: Dag) -> None:
    """Random DAGs and overrides: cached nodes run once per scope, generators unwind LIFO once, one collector."""
    rec = Recorder()
    root, container, overrides = _materialise(dag, rec)

    async def main() -> None:
        with contextlib.ExitStack() as stack:
            for target, replacement in overrides:  # overrides nest
                stack.enter_context(container.override(target, replacement))
            await _drive(rec, container, root)

    anyio.run(main, backend=backend)
    calls: dict[str, int] = {}
    for event in rec.events:
        if event[0] == "call":
            calls[event[1]] = calls.get(event[1], 0) + 1
    assert calls == _expected_calls(dag)
    # one collector per scope, the one every dependency received
    assert all(len(ids) == 1 for ids in rec.collectors.values()), rec.collectors
    _check_teardowns(rec)


def _check_teardowns(rec: Recorder) -> None:
    """Each generator is torn down exactly once, LIFO within its lifetime, at the right moment."""
    position = {event: i for i, event in enumerate(rec.events) if event[0].startswith("end") or event[0] == "body-done"}
    setups: dict[tuple[Any, ...], list[tuple[str, int]]] = {}
    teardowns: dict[tuple[Any, ...], list[tuple[str, int]]] = {}
    for i, event in enumerate(rec.events):
        if event[0] == "setup":
            setups.setdefault(event[2], []).append((event[1], i))
        elif event[0] == "teardown":
            teardowns.setdefault(event[2], []).append((event[1], i))
    assert set(setups) == set(teardowns)
    for group, done in setups.items():
        undone = teardowns[group]
        assert [n for n, _ in undone] == [n for n, _ in reversed(done)], group
        last_setup = done[-1][1]
        for _, at in undone:
            assert at > last_setup
            if group[0] == "call":
                assert at < position[("end-call", group[1], group[2])]
            elif group[0] == "request":
                # after the body and after the scope's tasks ran, before the scope exit returned
                assert position[("body-done", group[1])] < at < position[("end-scope", group[1])]
                tasks = [i for i, e in enumerate(rec.events) if e[0] == "task" and e[2] == group[1]]
                assert all(t < at for t in tasks)
            else:
                assert position[("end-scope", 1)] < at < position[("end-app",)]
    # every task ran after its scope's body, before the scope's exit returned
    for s in (0, 1):
        for i, e in enumerate(rec.events):
            if e[0] == "task" and e[2] == s:
                assert position[("body-done", s)] < i < position[("end-scope", s)]


@BACKENDS
def test_uncached_app_generator_is_torn_down_at_app_exit(backend: str) -> None:
    """An app-scoped generator with use_cache=False lives until the app exits, like every app-scoped generator."""
    log: list[str] = []

    def resource() -> Any:
        yield 1
        log.append("teardown")

    def endpoint(x: Annotated[int, Depends(resource, scope="app", use_cache=False)]) -> None:
        log.append("body")

    container = Container()

    async def main() -> None:
        async with container:
            await container.call(endpoint)
            log.append("request exited")
        log.append("app exited")

    anyio.run(main, backend=backend)
    assert log == ["body", "request exited", "teardown", "app exited"]


# -- random wiring errors ------------------------------------------------------------------------------------


@st.composite
def digraphs(draw: st.DrawFn) -> tuple[list[list[int]], list[ScopeName]]:
    """Any directed graph (cycles allowed) with random lifetimes; node 0 is what the root depends on."""
    n = draw(st.integers(1, 6))
    edges = [draw(st.lists(st.integers(0, n - 1), max_size=3)) for _ in range(n)]
    scopes: list[ScopeName] = [draw(st.sampled_from(SCOPES)) for _ in range(n)]
    return edges, scopes


def _plain(name: str) -> Callable[..., Any]:
    def func(**kw: Any) -> str:
        return name

    func.__qualname__ = func.__name__ = name
    return func


@PROPERTY
@given(graph=digraphs(), cached=st.booleans())
def test_cycles_and_scope_violations_are_found_at_solve_time_with_a_true_path(
    graph: tuple[list[list[int]], list[ScopeName]], cached: bool
) -> None:
    """solve() raises DependencyCycleError or ScopeError exactly when the graph has one, with a real path."""
    edges, scopes = graph
    funcs = [_plain(f"g{i}") for i in range(len(edges))]
    for i, out in enumerate(edges):
        funcs[i].__signature__ = inspect.Signature(  # type: ignore[attr-defined]  # a generated signature
            [
                inspect.Parameter(
                    f"p{k}",
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=Annotated[Any, Depends(funcs[j], scope=scopes[j], use_cache=cached)],
                )
                for k, j in enumerate(out)
            ]
        )

    def root(x: Annotated[Any, Depends(funcs[0], scope=scopes[0])]) -> None:
        del x

    names = {qualname(f): i for i, f in enumerate(funcs)}
    reachable: set[int] = set()
    stack = [0]
    while stack:
        k = stack.pop()
        if k not in reachable:
            reachable.add(k)
            stack.extend(edges[k])
    has_cycle = _has_cycle(edges, reachable)
    violation = any(RANK[scopes[j]] > RANK[scopes[i]] for i in reachable for j in edges[i])
    container = Container()
    if not (has_cycle or violation):
        container.solve(root)
        return
    with pytest.raises((DependencyCycleError, ScopeError), match=r"cycle|scoped") as info:
        container.solve(root)
    error = info.value
    if isinstance(error, DependencyCycleError):
        assert has_cycle
        path = [names[p] for p in error.path]
        assert path[0] == path[-1]
        assert len(path) >= 2
        assert all(b in edges[a] for a, b in itertools.pairwise(path))
    else:
        assert violation
        assert error.path[0] == qualname(root)
        path = [names[p] for p in error.path[1:]]
        assert all(b in edges[a] for a, b in itertools.pairwise(path))
        if len(path) > 1:
            assert RANK[scopes[path[-1]]] > RANK[scopes[path[-2]]]


def _has_cycle(edges: list[list[int]], nodes: set[int]) -> bool:
    colour: dict[int, int] = {}

    def visit(k: int) -> bool:
        colour[k] = 1
        for j in edges[k]:
            if colour.get(j) == 1 or (j not in colour and visit(j)):
                return True
        colour[k] = 2
        return False

    return any(k not in colour and visit(k) for k in sorted(nodes))


# -- values by name, by type, by default ---------------------------------------------------------------------


@st.composite
def value_plans(draw: st.DrawFn) -> list[tuple[bool, bool, bool]]:
    """For each of up to 5 parameters: (given by name, bound by type, has a default)."""
    return draw(st.lists(st.tuples(st.booleans(), st.booleans(), st.booleans()), min_size=1, max_size=5))


@PROPERTY
@given(plan=value_plans(), depth=st.integers(0, 2))
@BACKENDS
def test_values_are_looked_up_by_name_then_type_then_default(
    backend: str, plan: list[tuple[bool, bool, bool]], depth: int
) -> None:
    """Each parameter gets its value by name, else by bound type, else its default, else MissingValueError."""
    classes = [type(f"C{i}", (), {}) for i in range(len(plan))]
    by_name = {f"v{i}": classes[i]() for i, (named, _, _) in enumerate(plan) if named}
    by_type = {classes[i]: classes[i]() for i, (_, bound, _) in enumerate(plan) if bound}
    defaults = {f"v{i}": classes[i]() for i, (_, _, has_default) in enumerate(plan) if has_default}
    seen: dict[str, Any] = {}

    def leaf(**kw: Any) -> None:
        seen.update(kw)

    leaf.__signature__ = inspect.Signature(  # type: ignore[attr-defined]  # a generated signature
        [
            inspect.Parameter(
                f"v{i}",
                inspect.Parameter.KEYWORD_ONLY,
                annotation=classes[i],
                default=defaults.get(f"v{i}", inspect.Parameter.empty),
            )
            for i in range(len(plan))
        ]
    )
    func: Callable[..., Any] = leaf
    for level in range(depth):
        func = _wrap(func, level)
    missing = [f"v{i}" for i, (named, bound, has_default) in enumerate(plan) if not (named or bound or has_default)]
    container = Container()
    graph = container.solve(func)
    assert sorted(v.name for v in graph.required_values) == [f"v{i}" for i, p in enumerate(plan) if not p[2]]

    async def main() -> None:
        async with container.scope(**by_name) as scope:
            for tp, value in by_type.items():
                scope.bind(tp, value)
            await scope.call(func)

    if missing:
        with pytest.raises(MissingValueError, match="no value for parameter") as info:
            anyio.run(main, backend=backend)
        assert info.value.parameter in missing
        assert info.value.path[-1] == qualname(leaf)
        assert len(info.value.path) == depth + 1
        return
    anyio.run(main, backend=backend)
    for i in range(len(plan)):
        key = f"v{i}"
        expected = by_name.get(key, by_type.get(classes[i], defaults.get(key)))
        assert seen[key] is expected


def _wrap(inner: Callable[..., Any], level: int) -> Callable[..., Any]:
    def outer(x: Annotated[Any, Depends(inner)]) -> None:
        del x

    outer.__qualname__ = outer.__name__ = f"w{level}"
    return outer


@BACKENDS
def test_missing_value_is_detected_before_anything_is_called(backend: str) -> None:
    """A missing value fails the resolution before any dependency of the plan has been called."""
    called: list[str] = []

    def first() -> int:
        called.append("first")
        return 1

    def second(x: int) -> int:
        called.append("second")
        return x

    def root(a: Annotated[int, Depends(first)], b: Annotated[int, Depends(second)]) -> None:
        called.append("root")

    with pytest.raises(MissingValueError, match=r"parameter 'x' of .*second"):
        Container().run(root, backend="asyncio" if backend == "asyncio" else "trio")
    assert called == []


# -- add_task arguments against the signature ----------------------------------------------------------------


@dataclass
class Shape:
    """A generated signature."""

    posonly: int
    normal: int
    pos_defaults: int
    varargs: bool
    kwonly: list[bool]  # has a default
    varkw: bool
    injected: bool

    def source(self, name: str, *, with_injected: bool) -> str:
        parts: list[str] = []
        npos = self.posonly + self.normal
        for i in range(npos):
            default = f"='d{i}'" if i >= npos - self.pos_defaults else ""
            parts.append(f"p{i}{default}")
            if i == self.posonly - 1:
                parts.append("/")
        if self.varargs:
            parts.append("*args")
        elif self.kwonly or (with_injected and self.injected):
            parts.append("*")
        parts += [f"k{i}='e{i}'" if d else f"k{i}" for i, d in enumerate(self.kwonly)]
        if with_injected and self.injected:
            parts.append("bg: BackgroundTasks")
        if self.varkw:
            parts.append("**kwargs")
        names = [f"p{i}" for i in range(npos)] + [f"k{i}" for i in range(len(self.kwonly))]
        items = [f"{n!r}: {n}" for n in names]
        if self.varargs:
            items.append("'*args': args")
        if self.varkw:
            items.append("'**kwargs': kwargs")
        check = "    assert isinstance(bg, BackgroundTasks)\n" if with_injected and self.injected else ""
        return f"def {name}({', '.join(parts)}):\n{check}    return {{{', '.join(items)}}}\n"


@st.composite
def shapes(draw: st.DrawFn) -> Shape:
    """A random valid signature: positional-only, normal, defaults, *args, keyword-only, **kwargs, injected."""
    posonly = draw(st.integers(0, 2))
    normal = draw(st.integers(0, 2))
    return Shape(
        posonly=posonly,
        normal=normal,
        pos_defaults=draw(st.integers(0, posonly + normal)),
        varargs=draw(st.booleans()),
        kwonly=draw(st.lists(st.booleans(), max_size=2)),
        varkw=draw(st.booleans()),
        injected=draw(st.booleans()),
    )


@PROPERTY
@given(shape=shapes(), data=st.data())
def test_add_task_accepts_exactly_what_a_direct_call_accepts(shape: Shape, data: st.DataObject) -> None:
    """add_task raises TypeError exactly when a direct call would, and the task gets the same arguments."""
    npos = shape.posonly + shape.normal
    args = data.draw(st.lists(st.integers(0, 9), min_size=max(0, npos - 2), max_size=npos + 2), label="args")
    names = [f"p{i}" for i in range(npos)] + [f"k{i}" for i in range(len(shape.kwonly))] + ["x"]
    kwargs = data.draw(st.dictionaries(st.sampled_from(names), st.integers(0, 9), max_size=3), label="kwargs")
    namespace: dict[str, Any] = {"BackgroundTasks": BackgroundTasks}
    exec(shape.source("task", with_injected=True), namespace)  # generated test functions
    exec(shape.source("twin", with_injected=False), namespace)
    task, twin = namespace["task"], namespace["twin"]
    if shape.injected and shape.posonly:
        with pytest.raises(TypeError, match="positional-only"):
            BackgroundTasks(Container()).add_task(task, *args, **kwargs)
        return
    if shape.injected and (shape.varargs or shape.varkw):
        with pytest.raises(TypeError, match=r"cannot take \*"):
            BackgroundTasks(Container()).add_task(task, *args, **kwargs)
        return
    try:
        direct = twin(*args, **kwargs)
    except TypeError:
        with pytest.raises(TypeError, match=r"add_task\(task, \.\.\.\)"):
            BackgroundTasks(Container()).add_task(task, *args, **kwargs)
        return
    container = Container()

    async def main() -> Any:
        async with container.scope() as scope:
            handle = scope.tasks.add_task(task, *args, **kwargs)
        return handle.result

    assert anyio.run(main) == direct


@PROPERTY
@given(shape=shapes(), args=st.lists(st.integers(0, 9), max_size=4))
def test_injected_parameters_cannot_be_passed_to_add_task(shape: Shape, args: list[int]) -> None:
    """Passing a value for an injected parameter (BackgroundTasks) is rejected at add_task unless **kwargs takes it."""
    if not shape.injected or shape.posonly or shape.varargs or shape.varkw:
        return
    namespace: dict[str, Any] = {"BackgroundTasks": BackgroundTasks}
    exec(shape.source("task", with_injected=True), namespace)  # a generated test function
    collector = BackgroundTasks(Container())
    with pytest.raises(TypeError, match="injected parameters"):
        collector.add_task(namespace["task"], *args, bg=BackgroundTasks(Container()))


def test_scope_is_the_same_object_for_every_dependency() -> None:
    """Every dependency that asks for Scope in one scope gets the scope itself."""
    seen: list[Scope] = []

    def dep(scope: Scope) -> None:
        seen.append(scope)

    def root(scope: Scope, a: Annotated[None, Depends(dep)], b: Annotated[None, Depends(dep, use_cache=False)]) -> None:
        seen.append(scope)

    async def main() -> Scope:
        async with Container().scope() as scope:
            await scope.call(root)
        return scope

    scope = anyio.run(main)
    assert len(seen) == 3
    assert all(s is scope for s in seen)
