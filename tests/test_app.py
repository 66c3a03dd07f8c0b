"""The app lifetime: entries are counted, app values are made once, and torn down at the last exit."""

from collections.abc import Iterator
from typing import Annotated

import anyio
import pytest

from di_tasks import Container, Depends, ScopeError

pytestmark = pytest.mark.anyio


async def test_entries_are_counted_and_the_last_exit_tears_down() -> None:
    """Two entries keep app values alive until the second exit; a further exit is refused."""
    closed: list[str] = []

    def pool() -> Iterator[str]:
        yield "pool"
        closed.append("pool")

    async def use(p: Annotated[str, Depends(pool, scope="app")]) -> str:
        return p

    container = Container()
    await container.__aenter__()
    await container.__aenter__()
    assert await container.call(use) == "pool"
    await container.__aexit__(None, None, None)
    assert is_open(container)
    assert closed == []
    await container.__aexit__(None, None, None)
    assert not is_open(container)
    assert closed == ["pool"]
    assert container.app.cache == {}
    with pytest.raises(ScopeError, match="exited more often than it was entered"):
        await container.__aexit__(None, None, None)


async def test_concurrent_first_uses_make_the_value_once() -> None:
    """Ten requests that all need an app value first created by a slow factory share one instance."""
    made: list[object] = []

    async def client() -> object:
        await anyio.sleep(0.01)
        made.append(object())
        return made[-1]

    async def use(c: Annotated[object, Depends(client, scope="app")]) -> object:
        return c

    container = Container()
    seen: list[object] = []
    async with container:

        async def one() -> None:
            seen.append(await container.call(use))

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(one)
    assert len(made) == 1
    assert seen == made * 10


async def test_an_app_value_outside_the_lifetime_says_how_to_open_it() -> None:
    """Resolving an app-scoped dependency with the lifetime closed is a ScopeError naming the fix."""

    def settings() -> int:
        return 1

    async def use(s: Annotated[int, Depends(settings, scope="app")]) -> int:
        return s

    with pytest.raises(ScopeError, match=r"settings is app-scoped, but the container's app lifetime is not open"):
        await Container().call(use)


def is_open(container: Container) -> bool:
    """Read through a call so a type checker does not narrow the property between reads."""
    return container.app.is_open
