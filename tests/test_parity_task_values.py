"""A task whose own dependencies need a value it can never have is refused where it is added, not after the 200."""

from typing import Annotated

import fastapi
import httpx
import pytest

from di_tasks import BackgroundTasks, Container, Depends, MissingValueError
from di_tasks.asgi import ScopeMiddleware
from di_tasks.testing import validate, wiring_errors

pytestmark = pytest.mark.anyio
sent: list[str] = []


class Smtp:
    """A mail client that needs a host, given by name."""

    def __init__(self, host: str) -> None:
        self.host = host


def send_welcome(email: str, smtp: Annotated[Smtp, Depends()]) -> None:
    """A task whose dependency asks for 'host', which no task run has."""
    sent.append(f"{email} via {smtp.host}")


def send_welcome_via(email: str, host: str, smtp: Annotated[Smtp, Depends()]) -> None:
    """The same task declaring 'host' itself: add_task passes it, and Smtp sees it by name."""
    sent.append(f"{email} via {smtp.host}")


def add_welcome(background_tasks: BackgroundTasks) -> None:
    """Adds the task whose dependency reads 'host' from the container's values."""
    background_tasks.add_task(send_welcome, "b@x")  # type: ignore[call-arg]  # smtp is injected when it runs


def _app(container: Container, task: object) -> fastapi.FastAPI:
    app = fastapi.FastAPI()

    @app.post("/signup")
    @container.inject
    async def signup(email: str, host: str, background_tasks: BackgroundTasks) -> str:
        if task is send_welcome:
            background_tasks.add_task(send_welcome, email)  # type: ignore[call-arg]  # smtp is injected when it runs
        else:
            background_tasks.add_task(send_welcome_via, email, host)  # type: ignore[call-arg]  # smtp is injected when it runs
        return "ok"

    return app


async def test_an_unfindable_task_value_fails_the_request_not_the_background() -> None:
    """The request that adds the task fails with a TypeError naming task, parameter, path and fix; nothing runs."""
    sent.clear()
    container = Container()
    transport = httpx.ASGITransport(app=ScopeMiddleware(_app(container, send_welcome), container=container))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with pytest.raises(
            TypeError,
            match=r"add_task\(.*send_welcome, \.\.\.\): parameter 'host' of .*Smtp needs a value that the task "
            r".*send_welcome will never have: .* Add a parameter host to .*send_welcome and pass it to add_task\(\), "
            r"give Container\(values=\{'host': \.\.\.\}\)(.|\n)*dependency path: .*send_welcome -> .*Smtp",
        ):
            await client.post("/signup", params={"email": "a@x", "host": "smtp.local"})
    assert sent == []


async def test_a_task_value_from_its_arguments_or_the_container_is_accepted() -> None:
    """The two fixes the error names both work: a parameter of the task, or a container value."""
    sent.clear()
    container = Container()
    transport = httpx.ASGITransport(app=ScopeMiddleware(_app(container, send_welcome_via), container=container))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/signup", params={"email": "a@x", "host": "smtp.local"})
    assert response.json() == "ok"
    assert sent == ["a@x via smtp.local"]
    with_host = Container(values={"host": "smtp.app"})
    await with_host.call(add_welcome)
    assert sent == ["a@x via smtp.local", "b@x via smtp.app"]


def test_validate_reports_the_task_values_it_can_see() -> None:
    """validate(..., tasks=[...]) reports a task's unfindable value; a task that declares it passes."""
    container = Container()
    with pytest.raises(ExceptionGroup, match=r"1 wiring error\(s\) in 1 of 2 entry point\(s\): .*send_welcome") as info:
        validate(container, send_welcome_via, tasks=[send_welcome])
    (error,) = info.value.exceptions
    assert isinstance(error, MissingValueError)
    assert error.path[-1].endswith("Smtp")
    validate(container, tasks=[send_welcome_via])
    validate(Container(values={"host": "h"}), tasks=[send_welcome])
    assert wiring_errors(container, send_welcome) == []  # as an entry point, 'host' may come from its caller
