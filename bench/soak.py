"""Load soak: N concurrent clients for T seconds against the refiner's ``Answer`` on loopback.

Starts a real actor and refiner (each its own process, real vLLM engine, plaintext on
127.0.0.1) unless ``--refiner`` names a running one, then runs N clients that each send
one Answer after another until T seconds have passed (short max_tokens and small search
budgets, so answers finish). A client that gets RESOURCE_EXHAUSTED (the refiner is full)
waits ``--backoff`` seconds and tries again.

    .venv/bin/python -m bench.soak --clients 8 --seconds 120

Reports requests by status code, p50/p95/p99 latency of the answered requests,
answers/min, and the RSS of each server (its whole process tree, engine included),
sampled every second: start, max, end and slope. Ends with one line::

    RESULT soak clients=N seconds=T ok=.. resource_exhausted=.. other_errors=.. \
p50_s=.. p95_s=.. p99_s=.. rss_growth_mb=..

Healthy: other_errors=0 and rss_growth_mb small against the servers' size.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc

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
    clients: int
    seconds: float
    codes: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)
    """Seconds per answered (OK) request."""
    errors: list[str] = field(default_factory=list)
    """Details of statuses other than OK and RESOURCE_EXHAUSTED (the first few)."""
    elapsed: float = 0.0

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
    wall = Duration()
    wall.FromNanoseconds(int(wall_s * 1e9))
    return refiner_pb2.AnswerRequest(
        prompt=prompt,
        constraints=[common_pb2.VerifiableConstraint(instruction_id=constraint)],
        sampling=common_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.7),
        budget=common_pb2.SearchBudget(
            max_nodes=max_nodes, max_generated_tokens=budget_tokens, max_wall_time=wall
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
    name: str
    pid: int
    samples: list[tuple[float, float]] = field(default_factory=list)

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


# -- servers -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(role: str, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "spar_cli", role, "serve", "--port", str(port), "--plaintext"]
    args += ["--metrics-port", "-1"]
    out = log.open("ab")
    return subprocess.Popen(args, env=env, stdout=out, stderr=out, start_new_session=True)


async def wait_serving(target: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await serving(target, timeout=5):
        if proc.poll() is not None:
            raise SystemExit(f"the server for {target} exited ({proc.returncode})")
        if time.monotonic() > deadline:
            raise SystemExit(f"{target} not SERVING after {timeout:.0f} s")
        await asyncio.sleep(2)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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


async def main_async(args: argparse.Namespace) -> int:
    procs: list[subprocess.Popen[bytes]] = []
    rss: list[RssSeries] = []
    target = args.refiner
    try:
        if not target:
            work = Path(tempfile.mkdtemp(prefix="spar-soak-"))
            actor_port, refiner_port = free_port(), free_port()
            env = {
                **os.environ,
                "SPAR_REFINER__ACTOR_TARGET": f"127.0.0.1:{actor_port}",
                "SPAR_REFINER__JUDGE_SAMPLES": "3",
                "SPAR_REFINER__JUDGE_MAX_TOKENS": str(args.judge_max_tokens),
                "SPAR_REFINER__REFINE_MAX_TOKENS": str(args.refine_max_tokens),
                "SPAR_REFINER__TIE_RESAMPLE_ROUNDS": "0",
                "SPAR_REFINER__MAX_CONCURRENT_SEARCHES": str(args.max_concurrent),
                "SPAR_REFINER__MAX_QUEUE": str(args.max_queue),
            }
            print(f"starting actor :{actor_port} and refiner :{refiner_port} (logs in {work})")
            actor = start_server("actor", actor_port, env, work / "actor.log")
            procs.append(actor)
            await wait_serving(f"127.0.0.1:{actor_port}", actor, args.start_timeout)
            refiner = start_server("refiner", refiner_port, env, work / "refiner.log")
            procs.append(refiner)
            target = f"127.0.0.1:{refiner_port}"
            await wait_serving(target, refiner, args.start_timeout)
            rss = [RssSeries("actor", actor.pid), RssSeries("refiner", refiner.pid)]
        if args.warmup:
            await drive(
                target, clients=1, seconds=0.1, make_request=make_factory(args), timeout=300
            )
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(rss, stop))
        stats = await drive(
            target,
            clients=args.clients,
            seconds=args.seconds,
            make_request=make_factory(args),
            timeout=args.timeout,
            backoff=args.backoff,
        )
        stop.set()
        await sampler
        healthy = await serving(target)
        print(report(stats, rss))
        print(f"health after the run: {'SERVING' if healthy else 'NOT SERVING'}")
        return 0 if stats.other_errors == 0 and healthy else 1
    finally:
        for p in reversed(procs):
            stop_server(p)


def make_factory(args: argparse.Namespace) -> Callable[[int], refiner_pb2.AnswerRequest]:
    def make(i: int) -> refiner_pb2.AnswerRequest:
        return answer_request(
            i,
            max_tokens=args.max_tokens,
            budget_tokens=args.budget_tokens,
            max_nodes=args.max_nodes,
            wall_s=args.wall_s,
        )

    return make


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=120.0)
    p.add_argument("--refiner", default="", help="HOST:PORT of a running refiner (plaintext)")
    p.add_argument("--max-tokens", type=int, default=24, help="actor tokens per answer")
    p.add_argument("--budget-tokens", type=int, default=400, help="search token budget")
    p.add_argument("--max-nodes", type=int, default=2, help="search node budget")
    p.add_argument("--wall-s", type=float, default=30.0, help="search wall-time budget")
    p.add_argument("--judge-max-tokens", type=int, default=48)
    p.add_argument("--refine-max-tokens", type=int, default=48)
    p.add_argument("--max-concurrent", type=int, default=2, help="refiner search slots")
    p.add_argument("--max-queue", type=int, default=2, help="refiner queue length")
    p.add_argument("--timeout", type=float, default=120.0, help="deadline per request")
    p.add_argument("--backoff", type=float, default=0.5, help="wait after RESOURCE_EXHAUSTED")
    p.add_argument("--start-timeout", type=float, default=300.0)
    p.add_argument("--no-warmup", dest="warmup", action="store_false")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
