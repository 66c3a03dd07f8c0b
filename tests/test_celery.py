"""di_tasks.celery: the flusher that sends tasks to Celery and the worker that runs them.

The integration tests start their own redis-server (a free port on 127.0.0.1, no persistence) and real
Celery worker processes that import ``tests/celery_app.py``: one with the solo pool, and one with the prefork
pool (two child processes) for what only the prefork pool does (time limits).
"""

from __future__ import annotations

import base64
import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
import weakref
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio
import celery_app
import httpx
import pytest
import redis
from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded
from celery.exceptions import TimeoutError as CeleryTimeout
from celery_app import DB, Jobs, add, aplain, arecord, charge, flaky, parked, plain, record, url_options
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from di_tasks import (
    BackgroundTaskError,
    BackgroundTasks,
    Container,
    Depends,
    DITasksError,
    Graph,
    InProcessFlusher,
    Task,
)
from di_tasks import TaskState as State
from di_tasks.asgi import ScopeMiddleware
from di_tasks.celery import (
    TASK_NAME,
    CeleryFlusher,
    CeleryWorker,
    celery_task,
    register_worker,
    task_reference,
    to_celery,
)

TESTS = Path(__file__).parent
WAIT = 30.0  # seconds: an upper bound for anything the worker does, never a latency check


def _free_port() -> int:
    """A port nothing listens on (for a broker that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def db(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the test Redis server, for reading what tasks recorded."""
    client = redis.Redis(**url_options(redis_url))
    yield client
    client.close()


class Worker:
    """A running ``celery worker`` subprocess and its log."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log
        self.pids: set[int] = set()  # the processes that ran the start-up probe

    def received(self, task_id: str) -> int:
        """How many times the worker logged receiving a message of ``task_id`` (a retry is received again)."""
        return sum(1 for line in self.log.read_text(errors="replace").splitlines() if f"[{task_id}] received" in line)

    def tail(self) -> str:
        """The end of the worker's log, for failure messages."""
        return self.log.read_text(errors="replace")[-4000:]


@contextmanager
def start_worker(redis_url: str, log: Path, queue: str, *pool: str) -> Generator[Worker]:
    """Run ``celery worker`` with the given pool options, reading ``queue``, until the block ends.

    It is up once it answered a probe task (bounded by ``WAIT``); at the end it gets a warm shutdown (the
    worker's shutdown signal closes di_tasks' event loops), then a kill if that takes over 15 s.
    """
    env = {
        **os.environ,
        celery_app.URL_VARIABLE: redis_url,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
    }
    env.pop("COVERAGE_PROCESS_START", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "celery_app", "worker", *pool, "--loglevel=INFO",
                "--without-heartbeat", "--without-gossip", "--without-mingle", "-Q", queue,
                "-n", f"{queue}_{os.getpid()}@localhost",
            ],
            cwd=TESTS,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    running = Worker(proc, log)
    try:
        probe = celery_app.app.send_task(TASK_NAME, args=["celery_app:pid", [], {}], queue=queue)
        deadline = time.monotonic() + WAIT
        while True:
            try:
                running.pids.add(probe.get(timeout=1))
                break
            except CeleryTimeout:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the Celery worker did not start:\n{running.tail()}")
        yield running
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def worker(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """A real Celery worker process (solo pool) importing tests/celery_app.py; stopped at teardown."""
    log = tmp_path_factory.mktemp("celery") / "worker.log"
    with start_worker(redis_url, log, celery_app.QUEUE, "--pool=solo") as running:
        assert running.pids == {running.proc.pid}  # the solo pool runs tasks in the worker process itself
        yield running


PREFORK_QUEUE = "di_tasks_tests_prefork"


@pytest.fixture(scope="session")
def prefork_worker(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """A real Celery worker with the prefork pool (two child processes) reading its own queue."""
    log = tmp_path_factory.mktemp("celery") / "prefork.log"
    with start_worker(redis_url, log, PREFORK_QUEUE, "--pool=prefork", "--concurrency=2") as running:
        yield running


def collect(client: redis.Redis, key: str, count: int, worker: Worker) -> list[dict[str, Any]]:
    """Wait (bounded) for ``count`` records pushed onto ``key``."""
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + WAIT
    while len(records) < count:
        left = deadline - time.monotonic()
        item = client.blpop([key], timeout=max(left, 0.1)) if left > 0 else None
        if item is None:
            pytest.fail(f"{len(records)} of {count} records on {key!r}: {records}\nworker log:\n{worker.tail()}")
        records.append(json.loads(item[1]))
    return records


def web() -> Container:
    """The web process's container: every task goes to Celery."""
    return Container(flusher=CeleryFlusher(celery_app.app))


# -- the web side: three depths, one request ------------------------------------------------------------


def depth3(background_tasks: BackgroundTasks, key: str) -> str:
    background_tasks.add_task(record, key, "depth 3")
    return "depth 3"


def depth2(background_tasks: BackgroundTasks, key: str, sub: Annotated[str, Depends(depth3)]) -> str:
    background_tasks.add_task(arecord, key, "depth 2")
    return sub


async def endpoint(background_tasks: BackgroundTasks, key: str, dep: Annotated[str, Depends(depth2)], db: DB) -> str:
    background_tasks.add_task(aplain, key, "depth 1")
    return db.token


def check_three_depths(records: list[dict[str, Any]], web_token: str) -> None:
    by_label = {r["label"]: r for r in records}
    assert set(by_label) == {"depth 1", "depth 2", "depth 2, follow-up", "depth 3"}
    worker_pids = {r["pid"] for r in records}
    assert len(worker_pids) == 1
    assert worker_pids != {os.getpid()}
    with_db = [by_label["depth 2"], by_label["depth 3"]]
    # each task ran in a fresh request scope of the worker's container: its own connection, not the web's
    assert web_token not in {r["db"] for r in with_db}
    assert with_db[0]["db"] != with_db[1]["db"]
    # the app-scoped pool lives as long as the worker process, across tasks
    assert with_db[0]["pool"] == with_db[1]["pool"]


def test_tasks_at_three_depths_run_on_the_worker(worker: Worker, db: redis.Redis) -> None:
    """Tasks added at three depths of one scope are sent, and the worker runs them with its own dependencies."""
    key = uuid.uuid4().hex
    container = web()
    web_token = container.run(endpoint, key=key)
    check_three_depths(collect(db, key, 4, worker), web_token)


def make_asgi_app(container: Container) -> Starlette:
    """A Starlette app under ScopeMiddleware whose endpoint is the three-depth ``endpoint`` above."""
    injected = container.inject(endpoint)

    async def order(request: Request) -> JSONResponse:
        return JSONResponse({"db": await injected(key=request.path_params["key"])})

    return Starlette(
        routes=[Route("/orders/{key}", order, methods=["POST"])],
        middleware=[Middleware(ScopeMiddleware, container=container)],
    )


@pytest.mark.anyio
async def test_an_asgi_request_sends_its_tasks_to_the_worker(worker: Worker, db: redis.Redis) -> None:
    """A request to an ASGI app adds tasks at three depths; the worker runs them with its own dependencies."""
    key = uuid.uuid4().hex
    container = web()
    app = make_asgi_app(container)
    # httpx's transport sends no lifespan events, so the app lifetime (app-scoped dependencies) is opened here
    async with container, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.post(f"/orders/{key}")
    assert response.status_code == 200
    records = await anyio.to_thread.run_sync(collect, db, key, 4, worker)
    check_three_depths(records, response.json()["db"])


def test_a_failing_task_is_retried_as_configured(worker: Worker, db: redis.Redis) -> None:
    """A task that fails twice succeeds on its third attempt with ``max_retries=2``."""
    key = uuid.uuid4().hex

    async def main(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(flaky, key, 2).options = {"max_retries": 2, "retry_delay": 0}

    web().run(main)
    (done,) = collect(db, key, 1, worker)
    assert done["attempt"] == 3


def test_retries_stop_at_max_retries_and_the_result_holds_the_error(worker: Worker, db: redis.Redis) -> None:
    """With ``max_retries=1`` a task that keeps failing runs twice; Celery's result holds its last error."""
    key, task_id = uuid.uuid4().hex, uuid.uuid4().hex

    async def main(background_tasks: BackgroundTasks) -> None:
        to_celery(background_tasks.add_task(flaky, key, 5), max_retries=1, retry_delay=0, task_id=task_id)

    web().run(main)
    with pytest.raises(RuntimeError, match="attempt 2 fails"):
        celery_app.app.AsyncResult(task_id).get(timeout=WAIT)
    assert db.get(f"{key}:attempts") == b"2"


def test_a_task_without_retries_fails_once(worker: Worker, db: redis.Redis) -> None:
    """By default a failing task is not retried (Celery's result shows the failure)."""
    key, task_id = uuid.uuid4().hex, uuid.uuid4().hex

    async def main(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(flaky, key, 1).options = {"task_id": task_id}

    web().run(main)
    with pytest.raises(RuntimeError, match="attempt 1 fails"):
        celery_app.app.AsyncResult(task_id).get(timeout=WAIT)
    assert db.get(f"{key}:attempts") == b"1"


def test_options_reach_the_broker(worker: Worker, db: redis.Redis) -> None:
    """The queue and countdown of a marked function travel in the message; the shadow name is the function's."""
    db.delete("parked")

    async def main(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(parked, 7)

    web().run(main)
    (raw,) = db.lrange("parked", 0, -1)
    envelope = json.loads(raw)
    headers = envelope["headers"]
    assert headers["task"] == TASK_NAME
    assert headers["shadow"] == "celery_app:parked"
    assert headers["eta"] is not None  # countdown=30
    body = json.loads(base64.b64decode(envelope["body"]))
    assert body[0] == ["celery_app:parked", [7], {}]
    db.delete("parked")


def test_mixed_mode_sends_marked_functions_and_runs_the_rest_here(worker: Worker, db: redis.Redis) -> None:
    """In mixed mode a ``to_celery`` task goes to the worker while unmarked tasks (even lambdas) run here."""
    key = uuid.uuid4().hex
    ran: list[str] = []
    container = Container(flusher=CeleryFlusher(celery_app.app, local=InProcessFlusher()))

    async def main(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(lambda: ran.append("here"))
        to_celery(background_tasks.add_task(plain, key, "remote"))

    container.run(main)
    assert ran == ["here"]
    (remote,) = collect(db, key, 1, worker)
    assert remote["label"] == "remote"
    assert remote["pid"] != os.getpid()


# -- the prefork pool: time limits and messages that no longer fit -----------------------------------------

BACKENDS = pytest.mark.parametrize("name", [TASK_NAME, celery_app.TRIO_TASK_NAME], ids=["asyncio", "trio"])


@BACKENDS
def test_an_async_task_past_its_soft_time_limit_is_cancelled_before_its_retry(
    prefork_worker: Worker, db: redis.Redis, name: str
) -> None:
    """An async task with a dependency that passes ``soft_time_limit`` is cancelled on the worker's loop before
    it is reported and retried: the first attempt never charges the card, only the retry does."""
    key, task_id = uuid.uuid4().hex, uuid.uuid4().hex
    container = Container(flusher=CeleryFlusher(celery_app.app, name=name))

    async def checkout(background_tasks: BackgroundTasks) -> None:
        task = background_tasks.add_task(charge, key, 10.0)  # the first attempt would charge after 10 s
        to_celery(task, queue=PREFORK_QUEUE, soft_time_limit=1, max_retries=1, retry_delay=0, task_id=task_id)

    container.run(checkout)
    assert celery_app.app.AsyncResult(task_id).get(timeout=WAIT) == 2
    records = collect(db, key, 2, prefork_worker)
    # the cancelled attempt stopped (and said so) before its retry started; it never reaches the charge
    assert [(r["label"], r["attempt"]) for r in records] == [("cancelled", 1), ("CARD CHARGED", 2)]
    assert all(r["pid"] != os.getpid() for r in records)


@BACKENDS
def test_a_soft_time_limit_without_retries_reports_the_limit(
    prefork_worker: Worker, db: redis.Redis, name: str
) -> None:
    """Without retries, the result of an async task stopped by ``soft_time_limit`` is ``SoftTimeLimitExceeded``,
    and the task was cancelled on the worker's loop first."""
    key, task_id = uuid.uuid4().hex, uuid.uuid4().hex
    container = Container(flusher=CeleryFlusher(celery_app.app, name=name))

    async def checkout(background_tasks: BackgroundTasks) -> None:
        task = background_tasks.add_task(charge, key, 10.0)
        to_celery(task, queue=PREFORK_QUEUE, soft_time_limit=1, task_id=task_id)

    container.run(checkout)
    with pytest.raises(SoftTimeLimitExceeded, match="SoftTimeLimitExceeded"):
        celery_app.app.AsyncResult(task_id).get(timeout=WAIT)
    (cancelled,) = collect(db, key, 1, prefork_worker)
    assert (cancelled["label"], cancelled["attempt"]) == ("cancelled", 1)


def test_a_sync_task_with_dependencies_finishes_its_body_before_the_soft_limit_is_reported(
    prefork_worker: Worker, db: redis.Redis
) -> None:
    """The body of a sync task with dependencies runs in a thread of the worker's loop, out of the soft limit's
    reach: it runs to its end, then the task is reported as ``SoftTimeLimitExceeded`` (documented hazard)."""
    key, task_id = uuid.uuid4().hex, uuid.uuid4().hex

    async def checkout(background_tasks: BackgroundTasks) -> None:
        task = background_tasks.add_task(celery_app.sync_charge, key, 1.5)
        to_celery(task, queue=PREFORK_QUEUE, soft_time_limit=1, task_id=task_id)

    web().run(checkout)
    with pytest.raises(SoftTimeLimitExceeded, match="SoftTimeLimitExceeded"):
        celery_app.app.AsyncResult(task_id).get(timeout=WAIT)
    (charged,) = collect(db, key, 1, prefork_worker)
    assert (charged["label"], charged["attempt"]) == ("CARD CHARGED", 1)


@BACKENDS
def test_a_message_whose_arguments_no_longer_fit_fails_once(prefork_worker: Worker, name: str) -> None:
    """A message whose arguments do not fit the worker's function (sent for another version of it) fails at
    once, even with retries allowed, with an error that speaks of the worker and the message."""
    task_id = uuid.uuid4().hex
    # what an older web process, whose add() took one argument, would have sent
    result = celery_app.app.send_task(
        name,
        args=["celery_app:add", [1], {}],
        kwargs={"max_retries": 3, "retry_delay": 0},
        queue=PREFORK_QUEUE,
        task_id=task_id,
    )
    with pytest.raises(
        TypeError,
        match=r"this worker's celery_app\.add\(a: 'int', b: 'int'\) -> 'int' does not accept the message's arguments "
        r"\(args=\[1\], kwargs=\{\}\): missing a required argument: 'b'\. The message was sent for another "
        r"version of the function.*Not retried",
    ):
        result.get(timeout=WAIT)
    assert prefork_worker.received(task_id) == 1


# -- add_task checks (no broker needed) -------------------------------------------------------------------


def test_a_non_serialisable_argument_fails_at_add_task() -> None:
    """An argument the serializer cannot encode raises TypeError at ``add_task``, naming it."""

    async def main(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(record, "key", object())  # type: ignore[arg-type]  # the mistake under test

    with pytest.raises(
        TypeError,
        match=r"add_task\(celery_app.record, \.\.\.\): positional argument 1 \(object\) cannot be serialised with "
        "Celery's 'json'",
    ):
        web().run(main)


def test_a_non_serialisable_keyword_argument_is_named() -> None:
    """A keyword argument that cannot be encoded is named in the error."""
    flusher = CeleryFlusher(celery_app.app)
    with pytest.raises(TypeError, match="argument 'label' \\(set\\) cannot be serialised"):
        flusher.check(record, ("k",), {"label": {1}})


def test_an_unserialisable_whole_is_reported_when_no_single_argument_is() -> None:
    """When no single argument is to blame (here: a serializer removed after the check), the message says so."""
    flusher = CeleryFlusher(celery_app.app, serializer="json")
    flusher.serializer = "no-such-serializer"
    with pytest.raises(TypeError, match="the arguments cannot be serialised"):
        flusher.check(celery_app.pid, (), {})


def test_pickle_serializer_accepts_objects_json_rejects() -> None:
    """The configured serializer decides: pickle accepts a set that json rejects."""
    CeleryFlusher(celery_app.app, serializer="pickle").check(record, ("k",), {"label": {1}})


def test_an_unknown_serializer_is_rejected() -> None:
    """An unknown serializer name fails when the flusher is made."""
    with pytest.raises(ValueError, match="'yaml-nope' cannot be used"):
        CeleryFlusher(celery_app.app, serializer="yaml-nope")


def local_function_maker() -> Callable[[], None]:
    def inner() -> None:
        return None

    return inner


class CallableObject:
    def __call__(self) -> None:
        return None


@pytest.mark.parametrize(
    ("func", "args", "message"),
    [
        (lambda: None, (), "is a lambda or is defined inside a function; move it to module level"),
        (local_function_maker(), (), "is a lambda or is defined inside a function"),
        (CallableObject(), (), "must be a module-level function so a worker can import it"),
        (Jobs().method, (1,), "imports to <function Jobs.method"),
    ],
    ids=["lambda", "nested", "callable-object", "bound-method"],
)
def test_functions_a_worker_cannot_import_fail_at_add_task(
    func: Callable[..., Any], args: tuple[Any, ...], message: str
) -> None:
    """Lambdas, nested functions, callable objects and bound methods fail at ``add_task``."""

    async def main(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(func, *args)

    with pytest.raises(TypeError, match=message):
        web().run(main)


def test_a_function_of_main_fails() -> None:
    """A function of ``__main__`` cannot be imported under that name by a worker."""

    def script_function() -> None:
        return None

    script_function.__module__ = "__main__"
    script_function.__qualname__ = "script_function"
    with pytest.raises(TypeError, match="is defined in __main__"):
        task_reference(script_function)


def test_a_function_whose_module_does_not_import_fails() -> None:
    """A reference that does not import back fails, with the import error."""

    def ghost() -> None:
        return None

    ghost.__module__ = "no_such_module_for_di_tasks"
    ghost.__qualname__ = "ghost"
    with pytest.raises(TypeError, match="could not import no_such_module_for_di_tasks:ghost"):
        task_reference(ghost)


def test_static_and_class_methods_are_importable() -> None:
    """Static and class methods of a module-level class import by name."""
    assert task_reference(Jobs.static) == "celery_app:Jobs.static"
    assert task_reference(Jobs.klass) == "celery_app:Jobs.klass"


def test_references_are_cached_and_unhashable_callables_still_work() -> None:
    """A function's reference is computed once; an unhashable callable is checked each time."""
    flusher = CeleryFlusher(celery_app.app)
    flusher.check(add, (1, 2), {})
    assert flusher._refs[add] == "celery_app:add"

    class Unhashable:
        __hash__ = None  # type: ignore[assignment]  # the unhashable case under test

        def __init__(self) -> None:
            self.__module__ = "celery_app"
            self.__qualname__ = "add"

        def __call__(self) -> None:
            return None

        def __eq__(self, other: object) -> bool:
            return other is add

    assert flusher._reference(Unhashable()) == "celery_app:add"


def test_tasks_that_stay_local_are_not_checked_in_mixed_mode() -> None:
    """In mixed mode an unmarked task is not checked at ``add_task`` (it runs in this process)."""
    flusher = CeleryFlusher(celery_app.app, local=InProcessFlusher())
    flusher.check_task(lambda: None, (), {})
    with pytest.raises(TypeError, match="positional argument 0"):
        flusher.check_task(parked, (object(),), {})


def test_to_celery_checks_at_the_call_site() -> None:
    """``to_celery`` checks the task against the container's Celery flusher at once."""
    container = Container(flusher=CeleryFlusher(celery_app.app, local=InProcessFlusher()))

    async def main(background_tasks: BackgroundTasks) -> None:
        to_celery(background_tasks.add_task(record, "k", {1}))  # type: ignore[arg-type]  # under test

    with pytest.raises(TypeError, match="argument 1 \\(set\\) cannot be serialised"):
        container.run(main)


def test_to_celery_without_a_celery_flusher_only_sets_options() -> None:
    """With another flusher ``to_celery`` records the choice and the options, and checks only the option names."""
    seen: list[Task] = []

    class Recorder:
        async def flush(self, tasks: Any) -> None:
            seen.extend(tasks)

    async def main(background_tasks: BackgroundTasks) -> None:
        to_celery(background_tasks.add_task(add, 1, 2), queue="q")
        with pytest.raises(TypeError, match="unknown Celery option\\(s\\) 'qeueu'"):
            to_celery(background_tasks.add_task(add, 1, 2), qeueu="q")

    Container(flusher=Recorder()).run(main)
    assert seen[0].options == {"queue": "q", "celery": True}


# -- options ----------------------------------------------------------------------------------------------


def test_options_merge_flusher_then_function_then_task() -> None:
    """Message options: the flusher's, overridden by the function's marker, overridden by the task's."""
    flusher = CeleryFlusher(celery_app.app, options={"queue": "default", "priority": 3, "max_retries": 1})
    messages: list[dict[str, Any]] = []

    async def main(background_tasks: BackgroundTasks) -> None:
        a = background_tasks.add_task(parked, 1)
        b = background_tasks.add_task(parked, 2)
        b.options = {"queue": "mine", "max_retries": 0}
        c = background_tasks.add_task(add, 1, 2)
        c.options = {"retry_delay": 5}
        messages.extend(flusher.message(t) for t in (a, b, c))
        for task in (a, b, c):
            task.mark(State.HANDED_OFF)
        background_tasks.take()

    Container(flusher=flusher).run(main)
    a, b, c = messages
    assert a == {
        "name": TASK_NAME,
        "args": ["celery_app:parked", [1], {}],
        "kwargs": {"max_retries": 1},
        "queue": "parked",
        "countdown": 30,
        "priority": 3,
        "shadow": "celery_app:parked",
        "serializer": "json",
    }
    assert (b["queue"], b["kwargs"]) == ("mine", {})
    assert (c["queue"], c["kwargs"]) == ("default", {"max_retries": 1, "retry_delay": 5})


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"qeue": "x"}, TypeError, "unknown Celery option\\(s\\) 'qeue'; the options are"),
        ({"max_retries": -1}, ValueError, "max_retries must be an int >= 0, got -1"),
        ({"max_retries": True}, ValueError, "max_retries must be an int >= 0, got True"),
        ({"retry_delay": "soon"}, ValueError, "retry_delay must be a number of seconds >= 0 or None, got 'soon'"),
        ({"retry_delay": -1.0}, ValueError, "retry_delay must be a number"),
    ],
)
def test_bad_options_are_rejected(options: dict[str, Any], error: type[Exception], message: str) -> None:
    """Unknown option names and bad retry values fail where they are given."""
    with pytest.raises(error, match=message):
        CeleryFlusher(celery_app.app, options=options)
    with pytest.raises(error, match=message):
        celery_task(**options)


def test_celery_task_marks_bare_and_with_options() -> None:
    """``@celery_task`` and ``@celery_task(...)`` return the function itself, marked."""

    def f() -> None:
        return None

    assert celery_task(f) is f
    assert celery_task(queue="q")(f) is f
    assert f.__di_tasks_celery__ == {"queue": "q"}  # type: ignore[attr-defined]  # the mark under test


def test_celery_task_rejects_objects_without_attributes() -> None:
    """Marking something that takes no attributes (a bound method) fails clearly."""
    with pytest.raises(TypeError, match="takes no attributes"):
        celery_task(Jobs().method)


def test_a_task_can_opt_out_of_celery() -> None:
    """``task.options = {"celery": False}`` keeps one task in this process, even when every task is sent."""
    tasks: list[Task] = []

    async def main(background_tasks: BackgroundTasks) -> None:
        task = background_tasks.add_task(add, 1, 2)
        task.options = {"celery": False}
        tasks.append(task)

    Container(flusher=CeleryFlusher(celery_app.app)).run(main)
    assert tasks[0].state is State.SUCCEEDED
    assert tasks[0].result == 3


# -- send failures ------------------------------------------------------------------------------------------


def test_a_task_that_cannot_be_sent_fails_and_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    """Broker down: the task is FAILED, logged at ERROR, passed to the error hook, and ``run`` raises."""
    dead = Celery("dead", broker=f"redis://127.0.0.1:{_free_port()}/0")
    # fail at once instead of after kombu's connection retries
    dead.conf.update(task_publish_retry=False, broker_transport_options={"max_retries": 0})
    hooked: list[Task] = []
    container = Container(flusher=CeleryFlusher(dead), on_task_error=lambda task, exc: hooked.append(task))
    tasks: list[Task] = []

    async def main(background_tasks: BackgroundTasks) -> None:
        tasks.append(background_tasks.add_task(add, 1, 2))

    with caplog.at_level(logging.ERROR, "di_tasks"), pytest.raises(BackgroundTaskError, match=r"celery_app\.add"):
        container.run(main)
    assert tasks[0].state is State.FAILED
    assert hooked == tasks
    assert "background task celery_app.add could not be sent to Celery" in caplog.text


def test_a_bad_option_set_after_add_task_fails_the_task(caplog: pytest.LogCaptureFixture) -> None:
    """An unknown option set on the handle fails that task at flush (recorded, logged), not silently."""
    dead = Celery("dead", broker=f"redis://127.0.0.1:{_free_port()}/0")

    async def main(background_tasks: BackgroundTasks) -> None:
        background_tasks.add_task(add, 1, 2).options = {"queu": "x"}

    with (
        caplog.at_level(logging.ERROR, "di_tasks"),
        pytest.raises(BackgroundTaskError, match="background task") as info,
    ):
        Container(flusher=CeleryFlusher(dead)).run(main)
    assert isinstance(info.value.exceptions[0], TypeError)
    assert "unknown Celery option(s) 'queu'" in str(info.value.exceptions[0])


# -- the worker side, in this process (Celery's eager ``apply``) -------------------------------------------


@pytest.fixture
def local_worker(redis_url: str) -> Iterator[Any]:
    """celery_app's worker task, run in this process; its event loop is stopped afterwards."""
    yield celery_app.worker.task
    celery_app.worker.close()


def test_worker_runs_sync_and_async_functions(local_worker: Any) -> None:
    """Sync and async functions without dependencies run and return their result."""
    assert local_worker.apply(args=["celery_app:add", [1, 2], {}]).get() == 3
    assert local_worker.apply(args=["celery_app:aadd", [1], {"b": 2}]).get() == 3


def test_worker_resolves_dependencies_in_a_fresh_scope(local_worker: Any, db: redis.Redis) -> None:
    """A task's ``Depends`` parameters are resolved by the worker's container, a fresh request scope per task."""
    key = uuid.uuid4().hex
    assert local_worker.apply(args=["celery_app:record", [key, "a"], {}]).get() == "a"
    assert local_worker.apply(args=["celery_app:arecord", [key], {"label": "b"}]).get() == "b"
    records = [json.loads(raw) for raw in db.lrange(key, 0, -1)]
    assert [r["label"] for r in records] == ["a", "b", "b, follow-up"]
    assert records[0]["db"] != records[1]["db"]
    assert records[0]["pool"] == records[1]["pool"]


def test_worker_retries_in_eager_mode(local_worker: Any, db: redis.Redis) -> None:
    """The retry settings in the message drive Celery's ``Task.retry``."""
    key = uuid.uuid4().hex
    assert (
        local_worker.apply(args=["celery_app:flaky", [key, 1], {}], kwargs={"max_retries": 1, "retry_delay": 0}).get()
        == 2
    )
    with pytest.raises(RuntimeError, match="attempt 3 fails"):
        local_worker.apply(
            args=["celery_app:flaky", [key + "x", 9], {}], kwargs={"max_retries": 2, "retry_delay": 0}
        ).get()
    with pytest.raises(RuntimeError, match="attempt 1 fails"):
        local_worker.apply(args=["celery_app:flaky", [key + "y", 9], {}]).get()


def test_worker_checks_arguments_against_the_signature(local_worker: Any) -> None:
    """Arguments that do not fit raise TypeError naming the worker's function and the message's arguments."""
    with pytest.raises(
        TypeError, match=r"this worker's celery_app\.add\(a: 'int', b: 'int'\) -> 'int' does not accept"
    ):
        local_worker.apply(args=["celery_app:add", [1], {}], kwargs={"max_retries": 0}).get()
    with pytest.raises(TypeError, match=r"\(args=\[\], kwargs=\{'key': 'k', 'label': 'l', 'db': 1\}\): got an "):
        local_worker.apply(args=["celery_app:record", [], {"key": "k", "label": "l", "db": 1}]).get()
    with pytest.raises(TypeError, match=r"\(args=\[1\], kwargs=\{\}\): missing a required argument: 'b'"):
        celery_app.worker.call(add, (1,), {})


class SoftLimitError(Exception):
    """What the signal handler raises, as Celery's soft time limit raises ``SoftTimeLimitExceeded``."""


@pytest.mark.parametrize("which", ["worker", "trio_worker"], ids=["asyncio", "trio"])
def test_call_interrupted_while_it_waits_stops_the_task_first(redis_url: str, db: redis.Redis, which: str) -> None:
    """``CeleryWorker.call`` interrupted by a signal while it waits cancels the task on the loop, and raises
    only once the task has stopped (what Celery's soft time limit needs); in this process, no broker."""
    worker = getattr(celery_app, which)
    key = uuid.uuid4().hex

    def interrupt(signum: int, frame: object) -> None:
        raise SoftLimitError("soft limit")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        with pytest.raises(SoftLimitError, match="soft limit"):
            worker.call(charge, (key, 10.0), {})
        # recorded by the cancelled task before call() raised: nothing is left running
        assert [json.loads(raw)["label"] for raw in db.lrange(key, 0, -1)] == ["cancelled"]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        worker.close()


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("os:system", "refusing to run 'os:system': its module is not in register_worker"),
        ("celery_app_other:f", "refusing to run"),
        ("celery_app:missing", "cannot import background task 'celery_app:missing' on this worker"),
        ("celery_app:NOT_A_FUNCTION", "imports to 3, which is not callable"),
    ],
)
def test_worker_refuses_what_it_should_not_run(local_worker: Any, ref: str, message: str) -> None:
    """Functions outside ``modules``, missing names and non-callables are refused, never retried."""
    with pytest.raises(DITasksError, match=message):
        local_worker.apply(args=[ref, [], {}], kwargs={"max_retries": 3}).get()


def test_worker_close_tears_down_and_a_new_loop_starts_after(local_worker: Any) -> None:
    """Closing stops the loop; the next task starts a new one; closing twice is fine."""
    assert local_worker.apply(args=["celery_app:aadd", [1, 1], {}]).get() == 2
    celery_app.worker.close()
    celery_app.worker.close()
    assert celery_app.worker._portal is None
    assert local_worker.apply(args=["celery_app:aadd", [2, 2], {}]).get() == 4


def test_worker_starts_its_own_loop_in_a_forked_process(local_worker: Any) -> None:
    """A loop started by another process (before a fork) is not reused, and not closed from this one."""
    assert local_worker.apply(args=["celery_app:aadd", [1, 1], {}]).get() == 2
    worker = celery_app.worker
    inherited, inherited_thread = worker._portal, worker._thread
    assert inherited is not None
    assert inherited_thread is not None
    worker._pid = -1  # as if this process had been forked after the loop started
    worker.close()  # not ours: left alone
    assert worker._portal is None
    worker._pid = -1
    assert local_worker.apply(args=["celery_app:aadd", [2, 2], {}]).get() == 4
    assert worker._portal is not inherited
    inherited.call(inherited.stop)
    inherited_thread.join()


def test_register_worker_validates_its_arguments() -> None:
    """``modules`` must be a non-empty collection of names; the backend must be known."""
    app = Celery("validation")
    with pytest.raises(TypeError, match="write modules=\\('myapp',\\)"):
        register_worker(app, Container(), modules="myapp")
    with pytest.raises(ValueError, match="must name at least one package"):
        register_worker(app, Container(), modules=())
    with pytest.raises(ValueError, match="must be 'asyncio' or 'trio', got 'curio'"):
        register_worker(app, Container(), modules=("x",), backend="curio")  # type: ignore[arg-type]  # under test


def test_worker_runs_on_trio(redis_url: str) -> None:
    """The worker's event loop can be trio."""
    app = Celery("trio_worker")
    trio_worker = register_worker(app, Container(), modules=("celery_app",), name="di_tasks.run_trio", backend="trio")
    try:
        assert trio_worker.task.apply(args=("celery_app:aadd", [1, 2], {})).get() == 3
    finally:
        trio_worker.close()


def test_the_module_namespace_is_sorted_and_documented() -> None:
    """``di_tasks.celery.__all__`` is sorted, lists every function and class defined there, and each has a docstring."""
    import di_tasks.celery as module

    assert list(module.__all__) == sorted(module.__all__)
    defined = {
        name
        for name, obj in vars(module).items()
        if not name.startswith("_") and getattr(obj, "__module__", None) == module.__name__
    }
    assert defined <= set(module.__all__)
    for name in defined:
        assert (getattr(module, name).__doc__ or "").strip(), name


# -- the worker tells an observer when a task's dependencies are resolved ----------------------------------------


def connection() -> str:
    """A dependency of the tasks below."""
    return "connection"


def unreachable() -> str:
    """A dependency that cannot be made."""
    raise ConnectionError("the database is down")


class ResolutionRecorder:
    """A task observer, on or off, that records what a worker tells it about the resolution of a task."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.events: list[tuple[str, Any]] = []

    def task_started(self, task: Task, /) -> None:
        return None

    def resolve_started(self, func: Callable[..., Any], graph: Graph, /) -> Callable[[BaseException | None], None]:
        self.events.append(("resolving", [node.name for node in graph.nodes]))
        return lambda exc: self.events.append(("resolved", None if exc is None else type(exc).__name__))


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_worker_tells_an_observer_that_is_on_when_a_tasks_dependencies_are_resolved(is_async: bool) -> None:
    """The worker reports the start of a task's resolution with its graph and its end as the task's own body starts
    (in a worker thread for a sync body), or with the error raised while resolving; what the body raises after that
    is passed on too (the observer ignores it: see TaskTelemetry.resolve_started)."""
    observer = ResolutionRecorder(enabled=True)
    worker = CeleryWorker(Container(task_observer=observer), ("test_celery",), "asyncio")

    def sync_task(n: int, conn: str = Depends(connection)) -> int:
        observer.events.append(("body", conn))
        if n < 0:
            raise ValueError("negative")
        return n

    async def async_task(n: int, conn: str = Depends(connection)) -> int:
        return sync_task(n, conn)

    def never(conn: str = Depends(unreachable)) -> None:
        observer.events.append(("body", conn))

    task = async_task if is_async else sync_task
    try:
        assert worker.call(task, (1,), {}) == 1
        assert worker.call(task, (2,), {}) == 2
        with pytest.raises(ValueError, match="negative"):
            worker.call(task, (-1,), {})
        with pytest.raises(ConnectionError, match="the database is down"):
            worker.call(never, (), {})
    finally:
        worker.close()
    resolving = ("resolving", ["test_celery.connection", task.__qualname__.join(("test_celery.", ""))])
    assert observer.events == [
        *[resolving, ("resolved", None), ("body", "connection")] * 2,
        *[resolving, ("resolved", None), ("body", "connection"), ("resolved", "ValueError")],
        ("resolving", ["test_celery.unreachable", never.__qualname__.join(("test_celery.", ""))]),
        ("resolved", "ConnectionError"),
    ]


def test_a_worker_tells_an_observer_that_is_off_nothing() -> None:
    """With the observer off, the worker runs a task with dependencies as without one: nothing is reported."""
    observer = ResolutionRecorder(enabled=False)
    worker = CeleryWorker(Container(task_observer=observer), ("test_celery",), "asyncio")

    def task(n: int, conn: str = Depends(connection)) -> str:
        return f"{conn} {n}"

    try:
        assert worker.call(task, (1,), {}) == "connection 1"
    finally:
        worker.close()
    assert observer.events == []


class Job:
    """A per-call object whose bound method is the task function."""

    def __init__(self, n: int) -> None:
        self.n = n

    def run(self, conn: str = Depends(connection)) -> int:
        return self.n


def test_a_worker_observed_with_per_call_callables_keeps_no_call_alive() -> None:
    """Bound methods of per-call objects, run with an observer that is on: what the worker and its container keep
    for them (the wrappers that announce their bodies, their specs and plans) is bounded, and old calls die."""
    observer = ResolutionRecorder(enabled=True)
    container = Container(task_observer=observer)
    worker = CeleryWorker(container, ("test_celery",), "asyncio")
    alive: list[weakref.ref[Job]] = []
    try:
        for n in range(600):
            job = Job(n)
            alive.append(weakref.ref(job))
            assert worker.call(job.run, (), {}) == n
            del job
    finally:
        worker.close()
    gc.collect()
    assert len(container._plans) + len(container._task_specs) <= 2 * 256 + 8
    assert sum(ref() is not None for ref in alive) <= 256
    assert observer.events.count(("resolved", None)) == 600
