"""What observing tasks with ``di_tasks.otel`` costs, measured in one process and printed as two tables.

    python benchmarks/otel_cost.py            # 15 rounds, 40 ms batches
    python benchmarks/otel_cost.py --quick    # 5 rounds, 15 ms batches: checks that it runs, too noisy to quote

1. The cost per task: ``Container.call`` of an endpoint that adds N no-op async tasks (W7's builder), per task =
   (time with N = 10 - time with none) / 10, computed in each round and reported as the median over rounds, for: no
   observer; ``TaskTelemetry()`` with no SDK configured (the observer installed and off); the SDK with a
   ``BatchSpanProcessor`` and a metric reader (what production runs); the SDK with a ``SimpleSpanProcessor``. The
   SDK's providers are given to the observer, so the global ones are never set (and ``TaskTelemetry()`` stays off);
   the span exporter drops what it gets, counting it, so only the work in this process is measured. A scope with
   tasks also has one flush span: at 10 tasks a scope, a tenth of it is in each task's figure.
2. W1 to W5 of ``benchmarks/run.py``, built by its builders, for di_tasks without an observer and with
   ``TaskTelemetry()`` installed and off, timed in the same rounds (in a shuffled order): the median over rounds of
   the ratio of the two times.

The batches are run and checked by ``run.py``'s harness (calibrated to about ``--batch-ms``, the garbage collector
disabled during each batch).
"""

import argparse
import asyncio
import importlib.metadata
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import run as bench
import task_path
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from di_tasks import Container
from di_tasks.otel import TaskTelemetry

N = 10
WORKLOADS = ("W1", "W2", "W3", "W4", "W5")


class Dropped(SpanExporter):
    """An exporter that drops the spans it gets, counting them (proof that the SDK setups did trace)."""

    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Count ``spans`` and drop them."""
        self.count += len(spans)
        return SpanExportResult.SUCCESS


@dataclass
class Setup:
    """One way of observing: the observer to install (``None``: none) and how to release what it holds."""

    name: str
    observer: TaskTelemetry | None
    exporter: Dropped | None = None
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    per_task: list[float] = field(default_factory=list[float])  # seconds per task, one per round

    def close(self) -> None:
        """Flush and stop the SDK's providers (the batch processor's thread)."""
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


def sdk_setup(name: str, batch: bool) -> Setup:
    """An SDK tracer provider (batching or simple span processor, dropping exporter) and meter provider (an
    in-memory reader), given to the observer explicitly."""
    exporter = Dropped()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    observer = TaskTelemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    return Setup(name, observer, exporter, tracer_provider, meter_provider)


def install(cell: bench.Cell, observer: TaskTelemetry | None) -> None:
    """Give the container behind a builder's run the observer (the builders keep it on ``run.container``)."""
    container: Container = cell.run.container  # type: ignore[attr-defined]
    container.task_observer = observer


async def per_task_cost(setups: list[Setup], rounds: int, batch_s: float, rng: random.Random) -> None:
    """Part 1: per round and setup, (time of a call adding N tasks - time of one adding none) / N."""
    cells: dict[tuple[str, int], bench.Cell] = {}
    for setup in setups:
        for n in (0, N):
            cell = bench.Cell(setup.name, task_path.build_di_tasks(n, True), task_path.check(n))
            install(cell, setup.observer)
            await bench.calibrate(cell, f"{n} tasks", batch_s)
            cells[(setup.name, n)] = cell
    for _ in range(rounds):
        order = list(cells.items())
        rng.shuffle(order)
        times = {key: await bench.timed_batch(cell, f"{key[1]} tasks") for key, cell in order}
        for setup in setups:
            setup.per_task.append((times[(setup.name, N)] - times[(setup.name, 0)]) / N)


@dataclass
class Pair:
    """One workload of run.py for di_tasks: without an observer, and with ``TaskTelemetry()`` installed and off."""

    name: str
    plain: bench.Cell
    observed: bench.Cell
    ratios: list[float] = field(default_factory=list[float])


def pairs(quick: bool) -> list[Pair]:
    """W1 to W5, built twice by run.py (its di_tasks cells only), the second set given an observer that is off."""
    plain, observed = (
        [wl for wl in bench.build(quick, {"di_tasks"}) if wl.name.startswith(WORKLOADS)] for _ in range(2)
    )
    out: list[Pair] = []
    for a, b in zip(plain, observed, strict=True):
        cell_a = next(c for c in a.cells if c.system == "di_tasks")
        cell_b = next(c for c in b.cells if c.system == "di_tasks")
        # set after the build: a ScopeMiddleware (W4) made with the observer would also register its backlog gauge
        # with it, which only an SDK's metric reader ever reads
        install(cell_b, TaskTelemetry())
        out.append(Pair(a.name, cell_a, cell_b))
    return out


async def off_ratio(found: list[Pair], rounds: int, batch_s: float, rng: random.Random) -> None:
    """Part 2: per round and workload, both cells in a shuffled order, and the ratio of their times."""
    for pair in found:
        await bench.calibrate(pair.plain, pair.name, batch_s)
        await bench.calibrate(pair.observed, pair.name, batch_s)
        pair.observed.batch = pair.plain.batch  # the same amount of work in both
    for _ in range(rounds):
        for pair in found:
            cells = [pair.plain, pair.observed]
            rng.shuffle(cells)
            times = {id(cell): await bench.timed_batch(cell, pair.name) for cell in cells}
            pair.plain.times.append(times[id(pair.plain)])
            pair.observed.times.append(times[id(pair.observed)])
            pair.ratios.append(times[id(pair.observed)] / times[id(pair.plain)])


def report(setups: list[Setup], found: list[Pair], rounds: int, quick: bool, elapsed: float) -> None:
    """Print the two tables."""
    sdk = importlib.metadata.version("opentelemetry-sdk")
    mode = "quick" if quick else "full"
    print(f"di_tasks.otel cost — {time.strftime('%Y-%m-%d')} — {mode} run, {rounds} rounds, {elapsed:.0f} s")
    print(f"machine: {bench.machine()}")
    print(f"versions: {bench.versions()}, opentelemetry-sdk {sdk}")
    print()
    print(f"Per task: a no-op async task, {N} added by an endpoint under Container.call (median over rounds)")
    print()
    print("| setup | per task | over no observer |")
    print("|---|---|---|")
    base = statistics.median(setups[0].per_task)
    for setup in setups:
        cost = statistics.median(setup.per_task)
        over = "—" if setup is setups[0] else f"{'+' if cost >= base else '-'}{bench.fmt_time(abs(cost - base))}"
        print(f"| {setup.name} | {bench.fmt_time(cost)} | {over} |")
    print()
    print("run.py's workloads, di_tasks without an observer and with TaskTelemetry() installed and off")
    print()
    print("| workload | no observer | TaskTelemetry() off | ratio (median over rounds) |")
    print("|---|---|---|---|")
    for pair in found:
        plain, observed = statistics.median(pair.plain.times), statistics.median(pair.observed.times)
        ratio = statistics.median(pair.ratios)
        print(f"| {pair.name} | {bench.fmt_time(plain)} | {bench.fmt_time(observed)} | {ratio:.3f}x |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 rounds of 15 ms batches (checks that it runs)")
    parser.add_argument("--rounds", type=int, help="rounds (default 15, quick 5)")
    parser.add_argument("--batch-ms", type=float, help="target duration of one batch (default 40, quick 15)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-round shuffle")
    args = parser.parse_args()
    rounds = args.rounds or (5 if args.quick else 15)
    batch_s = (args.batch_ms or (15 if args.quick else 40)) / 1000
    rng = random.Random(args.seed)
    setups = [
        Setup("no observer", None),
        Setup("TaskTelemetry(), no SDK configured", TaskTelemetry()),
        sdk_setup("SDK: BatchSpanProcessor + metric reader", batch=True),
        sdk_setup("SDK: SimpleSpanProcessor + metric reader", batch=False),
    ]
    if setups[1].observer is None or setups[1].observer.enabled:
        print("a tracer or meter provider is configured globally (OTEL_* variables?): nothing measures 'off'")
        return 1
    start = time.perf_counter()
    try:
        found = pairs(args.quick)

        async def go() -> None:
            await per_task_cost(setups, rounds, batch_s, rng)
            await off_ratio(found, rounds, batch_s, rng)

        asyncio.run(go())
    except common.CheckError as exc:
        print(f"CHECK FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        for setup in setups:
            setup.close()
    if any(setup.exporter is not None and setup.exporter.count == 0 for setup in setups):
        print("CHECK FAILED: an SDK setup exported no span", file=sys.stderr)
        return 1
    report(setups, found, rounds, args.quick, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
