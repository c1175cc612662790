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
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.local_servers import free_port, stop_server
from spar.soak import (
    RssSeries,
    answer_request,
    drive,
    report,
    sample_rss,
    serving,
)
from spar.v1 import refiner_pb2

# -- servers -------------------------------------------------------------------------


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
