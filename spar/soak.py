"""A load soak of a refiner's ``Answer``: N clients for T seconds, and what came back.

:func:`drive` runs N clients that each send one Answer after another until T seconds have
passed; a client that gets RESOURCE_EXHAUSTED (the refiner is full) backs off and tries
again. :class:`SoakStats` holds the status codes and latencies, :class:`RssSeries` a
server's memory over time (its whole process tree, engine included), and :func:`report`
prints both, ending with one ``RESULT soak ...`` line. ``bench/soak.py`` starts the
servers and runs it from the command line; ``tests/load`` runs it against the test
session's refiner.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from spar.proto_time import duration
from spar.v1 import common_pb2, refiner_pb2, refiner_pb2_grpc

PROMPTS = [
    ("Name three colours without using any commas.", "punctuation:no_comma"),
    ("Describe rain in one sentence, all in lowercase.", "change_case:english_lowercase"),
    ("Say hello to a friend without commas.", "punctuation:no_comma"),
    (
        "Write a short line about the sea in lowercase letters only.",
        "change_case:english_lowercase",
    ),
]

# -- pure statistics -----------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(math.ceil(q / 100 * len(ordered)), 1)
    return ordered[min(rank, len(ordered)) - 1]


def slope_per_minute(samples: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) samples, per minute; 0 for < 2 samples."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mx = sum(t for t, _ in samples) / n
    my = sum(v for _, v in samples) / n
    var = sum((t - mx) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    cov = sum((t - mx) * (v - my) for t, v in samples)
    return cov / var * 60.0


@dataclass
class SoakStats:
    """What the clients of one soak got back."""

    clients: int
    """Clients sending at once."""
    seconds: float
    """How long they were to send."""
    codes: collections.Counter[str] = field(default_factory=collections.Counter)
    """Replies by status code name (OK, RESOURCE_EXHAUSTED, ...)."""
    latencies: list[float] = field(default_factory=list)
    """Seconds per answered (OK) request."""
    errors: list[str] = field(default_factory=list)
    """Details of statuses other than OK and RESOURCE_EXHAUSTED (the first few)."""
    elapsed: float = 0.0
    """How long the soak really took (the last answers finish after ``seconds``)."""

    @property
    def ok(self) -> int:
        return self.codes["OK"]

    @property
    def resource_exhausted(self) -> int:
        return self.codes["RESOURCE_EXHAUSTED"]

    @property
    def other_errors(self) -> int:
        return sum(self.codes.values()) - self.ok - self.resource_exhausted

    @property
    def answers_per_minute(self) -> float:
        return self.ok / self.elapsed * 60 if self.elapsed else 0.0

    def quantiles(self) -> tuple[float, float, float]:
        return tuple(percentile(self.latencies, q) for q in (50, 95, 99))  # type: ignore[return-value]


# -- the load ------------------------------------------------------------------------


def answer_request(
    i: int, *, max_tokens: int, budget_tokens: int, max_nodes: int, wall_s: float
) -> refiner_pb2.AnswerRequest:
    prompt, constraint = PROMPTS[i % len(PROMPTS)]
    return refiner_pb2.AnswerRequest(
        prompt=prompt,
        constraints=[common_pb2.VerifiableConstraint(instruction_id=constraint)],
        sampling=common_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.7),
        budget=common_pb2.SearchBudget(
            max_nodes=max_nodes, max_generated_tokens=budget_tokens, max_wall_time=duration(wall_s)
        ),
    )


async def drive(
    target: str,
    *,
    clients: int,
    seconds: float,
    make_request: Callable[[int], refiner_pb2.AnswerRequest],
    timeout: float = 120.0,
    backoff: float = 0.5,
) -> SoakStats:
    """N clients, each sending Answer after Answer until seconds have passed."""
    stats = SoakStats(clients=clients, seconds=seconds)
    start = time.monotonic()
    end = start + seconds
    async with grpc.aio.insecure_channel(target) as channel:
        stub = refiner_pb2_grpc.RefinerStub(channel)

        async def client(c: int) -> None:
            i = c
            while time.monotonic() < end:
                t0 = time.monotonic()
                code = grpc.StatusCode.OK
                try:
                    await stub.Answer(make_request(i), timeout=timeout)
                except grpc.aio.AioRpcError as exc:
                    code = exc.code()
                    if code not in (grpc.StatusCode.RESOURCE_EXHAUSTED,) and len(stats.errors) < 5:
                        stats.errors.append(f"{code.name}: {exc.details()}")
                stats.codes[code.name] += 1
                i += clients
                if code == grpc.StatusCode.OK:
                    stats.latencies.append(time.monotonic() - t0)
                elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    await asyncio.sleep(backoff)

        await asyncio.gather(*(client(c) for c in range(clients)))
    stats.elapsed = time.monotonic() - start
    return stats


async def serving(target: str, timeout: float = 10.0) -> bool:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


# -- memory --------------------------------------------------------------------------


def tree_rss_mb(pid: int) -> float:
    """RSS of pid and all its descendants in MiB (Linux /proc); 0 when it is gone."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                todo.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total / 1024


@dataclass
class RssSeries:
    """One server's memory over a soak: its process tree's resident set size."""

    name: str
    """The server (actor, refiner)."""
    pid: int
    """Its process; its children count too."""
    samples: list[tuple[float, float]] = field(default_factory=list)
    """(seconds since the start, MiB) pairs."""

    def summary(self) -> tuple[float, float, float, float]:
        values = [v for _, v in self.samples] or [0.0]
        return values[0], max(values), values[-1], slope_per_minute(self.samples)

    def late_slope(self) -> float:
        """Slope over the second half of the run: warm-up (engine caches, first
        searches) is over by then, so a leak shows here and warm-up does not."""
        if not self.samples:
            return 0.0
        half = self.samples[-1][0] / 2
        return slope_per_minute([(t, v) for t, v in self.samples if t >= half])

    def per_minute(self) -> list[float]:
        """RSS at the end of each whole minute of the run."""
        marks: dict[int, float] = {}
        for t, v in self.samples:
            marks[int(t // 60)] = v
        return [marks[m] for m in sorted(marks)]


async def sample_rss(series: list[RssSeries], stop: asyncio.Event, every: float = 1.0) -> None:
    t0 = time.monotonic()
    while True:
        for s in series:
            s.samples.append((time.monotonic() - t0, tree_rss_mb(s.pid)))
        try:
            await asyncio.wait_for(stop.wait(), timeout=every)
            return
        except TimeoutError:
            continue


# -- report --------------------------------------------------------------------------


def report(stats: SoakStats, rss: list[RssSeries]) -> str:
    lines = [f"soak: {stats.clients} clients for {stats.seconds:.0f} s ({stats.elapsed:.0f} s)"]
    lines.append(f"{'status':<22}{'requests':>10}")
    for code, n in stats.codes.most_common():
        lines.append(f"{code:<22}{n:>10}")
    p50, p95, p99 = stats.quantiles()
    lat_max = max(stats.latencies) if stats.latencies else math.nan
    lines.append(
        f"latency of OK (s): p50 {p50:.2f}  p95 {p95:.2f}  p99 {p99:.2f}  max {lat_max:.2f}"
    )
    lines.append(f"answers/min: {stats.answers_per_minute:.1f}")
    growth = late = 0.0
    if rss:
        lines.append(
            f"{'RSS MiB':<10}{'start':>9}{'max':>9}{'end':>9}{'slope/min':>11}"
            f"{'2nd-half slope/min':>20}{'samples':>9}"
        )
        for s in rss:
            start, top, end, slope = s.summary()
            growth += end - start
            late += s.late_slope()
            lines.append(
                f"{s.name:<10}{start:>9.0f}{top:>9.0f}{end:>9.0f}{slope:>11.2f}"
                f"{s.late_slope():>20.2f}{len(s.samples):>9}"
            )
        for s in rss:
            marks = " ".join(f"{v:.0f}" for v in s.per_minute())
            lines.append(f"{s.name} RSS MiB by minute: {marks}")
    for e in stats.errors:
        lines.append(f"error: {e[:300]}")
    rss_text = f"{growth:.1f}" if rss else "n/a"
    lines.append(
        f"RESULT soak clients={stats.clients} seconds={stats.seconds:.0f} ok={stats.ok} "
        f"resource_exhausted={stats.resource_exhausted} other_errors={stats.other_errors} "
        f"p50_s={p50:.2f} p95_s={p95:.2f} p99_s={p99:.2f} rss_growth_mb={rss_text} "
        f"rss_late_slope_mb_per_min={late:.1f}"
    )
    return "\n".join(lines)
