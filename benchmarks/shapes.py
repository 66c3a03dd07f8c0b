"""W2 (wide) and W3 (deep), generated for any number of nodes in each system's own idiom.

W2: an async endpoint over ``n`` independent trivial sync dependencies (``d_i`` returns ``i``), returning
their sum. W3: a chain of ``n`` sync dependencies (``d_0`` returns 1, ``d_i`` returns its input + 1), the
endpoint depending on the last and returning it. The bodies are the same text for every system; only the
wiring (markers, type keys, registration) differs. The source is generated because the scaling runs use
up to 1,000 nodes.
"""

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from inspect import Parameter
from typing import Any

Run = Callable[[], Awaitable[Any]]


def expected(shape: str, n: int) -> int:
    """The endpoint's result for a correct resolution."""
    return sum(range(n)) if shape == "wide" else n


def _bodies(shape: str, n: int, param: Callable[[int], str], ret: Callable[[int], str], deco: str = "") -> list[str]:
    """The dependency functions: ``param(i)`` writes the parameter on ``d_{i-1}``, ``ret(i)`` the return type."""
    lines: list[str] = []
    for i in range(n):
        if shape == "wide" or i == 0:
            value, sig = (str(i) if shape == "wide" else "1"), ""
        else:
            value, sig = "x + 1", f"x: {param(i - 1)}"
        lines += [deco, f"def d{i}({sig}) -> {ret(i)}:", f"    return {value}"]
    return lines


def _endpoint(shape: str, n: int, param: Callable[[int], str], extra: str = "") -> list[str]:
    if shape == "wide":
        params = ", ".join(f"p{i}: {param(i)}" for i in range(n))
        body = " + ".join(f"p{i}" for i in range(n))
    else:
        params, body = f"x: {param(n - 1)}", "x"
    return [f"async def endpoint({params}{extra}) -> int:", f"    return {body}"]


def _exec(lines: list[str], namespace: dict[str, Any]) -> dict[str, Any]:
    exec(compile("\n".join(lines) + "\n", f"<bench {namespace.get('__name__', 'shape')}>", "exec"), namespace)
    return namespace


def _newtypes(n: int) -> list[str]:
    return [f"T{i} = NewType('T{i}', int)" for i in range(n)]


def build_direct(shape: str, n: int) -> Run:
    """Hand-written calls."""
    lines = _bodies(shape, n, lambda i: "int", lambda i: "int")
    lines += _endpoint(shape, n, lambda i: "int")
    lines.append("async def run():")
    if shape == "wide":
        lines.append(f"    return await endpoint({', '.join(f'd{i}()' for i in range(n))})")
    else:
        lines += ["    x = d0()"] + [f"    x = d{i}(x)" for i in range(1, n)] + ["    return await endpoint(x)"]
    run: Run = _exec(lines, {})["run"]
    return run


def build_di_tasks(shape: str, n: int) -> Run:
    """``Container.call``."""
    from typing import Annotated

    from di_tasks import Container, Depends

    lines = _bodies(shape, n, lambda i: f"Annotated[int, Depends(d{i})]", lambda i: "int")
    lines += _endpoint(shape, n, lambda i: f"Annotated[int, Depends(d{i})]")
    ns = _exec(lines, {"Annotated": Annotated, "Depends": Depends})
    container, endpoint = Container(), ns["endpoint"]
    container.solve(endpoint)

    async def run() -> Any:
        return await container.call(endpoint)

    run.container = container  # type: ignore[attr-defined]  # otel_cost.py installs an observer on it
    return run


def build_fastapi(shape: str, n: int) -> Run:
    """``get_dependant`` once, ``solve_dependencies`` per call with the router's request and exit stacks."""
    from typing import Annotated

    from fastapi import Depends
    from fastapi.dependencies.utils import get_dependant, solve_dependencies
    from fastapi.routing import run_endpoint_function
    from starlette.requests import Request

    lines = _bodies(shape, n, lambda i: f"Annotated[int, Depends(d{i})]", lambda i: "int")
    lines += _endpoint(shape, n, lambda i: f"Annotated[int, Depends(d{i})]")
    endpoint = _exec(lines, {"Annotated": Annotated, "Depends": Depends})["endpoint"]
    dependant = get_dependant(path="/", call=endpoint)

    async def run() -> Any:
        scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": []}
        request = Request(scope)
        async with AsyncExitStack() as request_stack:
            scope["fastapi_inner_astack"] = request_stack
            async with AsyncExitStack() as function_stack:
                scope["fastapi_function_astack"] = function_stack
                solved = await solve_dependencies(
                    request=request, dependant=dependant, async_exit_stack=request_stack, embed_body_fields=False
                )
                if solved.errors:
                    raise RuntimeError(solved.errors)
                return await run_endpoint_function(dependant=dependant, values=solved.values, is_coroutine=True)

    return run


def build_di(shape: str, n: int) -> Run:
    """Solved once; ``execute_async`` in an entered "request" scope."""
    from typing import Annotated

    from di import Container
    from di.dependent import Dependent, Marker
    from di.executors import AsyncExecutor

    lines = _bodies(shape, n, lambda i: f"Annotated[int, Marker(d{i}, scope='request')]", lambda i: "int")
    lines += _endpoint(shape, n, lambda i: f"Annotated[int, Marker(d{i}, scope='request')]")
    endpoint = _exec(lines, {"Annotated": Annotated, "Marker": Marker})["endpoint"]
    container = Container()
    solved = container.solve(Dependent(endpoint, scope="request"), scopes=["request"])
    executor = AsyncExecutor()

    async def run() -> Any:
        async with container.enter_scope("request") as state:
            return await solved.execute_async(executor=executor, state=state)

    return run


def build_fast_depends(shape: str, n: int) -> Run:
    """``@inject(cast=False)``."""
    from typing import Annotated

    from fast_depends import Depends, inject

    lines = _bodies(shape, n, lambda i: f"Annotated[int, Depends(d{i})]", lambda i: "int")
    lines += _endpoint(shape, n, lambda i: f"Annotated[int, Depends(d{i})]")
    injected = inject(cast=False)(_exec(lines, {"Annotated": Annotated, "Depends": Depends})["endpoint"])

    async def run() -> Any:
        return await injected()

    return run


def build_dishka(shape: str, n: int) -> Run:
    """REQUEST-scoped factories keyed by ``NewType``; the endpoint wrapped by ``wrap_injection``."""
    from typing import NewType

    from dishka import FromDishka, Provider, Scope, make_async_container
    from dishka.integrations.base import wrap_injection

    lines = _newtypes(n) + _bodies(shape, n, lambda i: f"T{i}", lambda i: f"T{i}")
    lines += _endpoint(shape, n, lambda i: f"FromDishka[T{i}]")
    ns = _exec(lines, {"NewType": NewType, "FromDishka": FromDishka})
    provider = Provider(scope=Scope.REQUEST)
    for i in range(n):
        provider.provide(ns[f"d{i}"])
    container = make_async_container(provider)
    injected = wrap_injection(
        func=ns["endpoint"],
        container_getter=lambda _args, kwargs: kwargs["dishka_container"],
        is_async=True,
        additional_params=[Parameter("dishka_container", Parameter.KEYWORD_ONLY)],
    )

    async def run() -> Any:
        async with container() as request_container:
            return await injected(dishka_container=request_container)

    return run


def build_wireup(shape: str, n: int) -> Run:
    """Scoped injectables keyed by ``NewType``; the endpoint wrapped by ``inject_from_container``."""
    from typing import NewType

    import wireup
    from wireup import Injected, injectable

    lines = _newtypes(n) + _bodies(
        shape, n, lambda i: f"T{i}", lambda i: f"T{i}", deco="@injectable(lifetime='scoped')"
    )
    lines += _endpoint(shape, n, lambda i: f"Injected[T{i}]")
    ns = _exec(lines, {"NewType": NewType, "Injected": Injected, "injectable": injectable})
    container = wireup.create_async_container(injectables=[ns[f"d{i}"] for i in range(n)])
    injected = wireup.inject_from_container(container)(ns["endpoint"])

    async def run() -> Any:
        return await injected()

    return run


BUILDERS: dict[str, Callable[[str, int], Run]] = {
    "direct": build_direct,
    "di_tasks": build_di_tasks,
    "fastapi": build_fastapi,
    "di": build_di,
    "fast-depends": build_fast_depends,
    "dishka": build_dishka,
    "wireup": build_wireup,
}
