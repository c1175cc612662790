"""Generated tokens/s through the gRPC actor vs the same engine called directly.

One engine, one run: 16 concurrent greedy requests (the same prompts both ways, so the
same tokens are generated), alternating direct and gRPC rounds after a warm-up.

    .venv/bin/python -m bench.actor_overhead [--concurrency 16] [--max-tokens 128] [--rounds 3]

Ends with ``RESULT actor_overhead ratio=<grpc ÷ direct> ...``. Target: ratio ≥ 0.9.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from services.actor.server import ActorServer
from spar.client import AsyncActorClient
from spar.config import EngineSettings, Settings, TlsSettings
from spar.engine.protocol import GenerationRequest, Message
from spar.model import prepare_default_model

TOPICS = [
    "the sea", "a mountain", "coffee", "rain", "a library", "autumn", "a train", "the moon",
    "bread", "a garden", "winter", "a bicycle", "music", "a river", "the city", "friendship",
]  # fmt: skip


def prompts(n: int) -> list[str]:
    return [f"Write a short paragraph about {TOPICS[i % len(TOPICS)]}." for i in range(n)]


async def timed(fn: Callable[[str], Awaitable[int]], batch: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    tokens = await asyncio.gather(*(fn(p) for p in batch))
    return time.perf_counter() - t0, sum(tokens)


async def main(args: argparse.Namespace) -> None:
    model = prepare_default_model(Settings().cache_dir).path
    with tempfile.TemporaryDirectory() as cache:
        settings = Settings(
            cache_dir=Path(cache),
            model=str(model),
            port=0,
            metrics_port=-1,
            engine=EngineSettings(kv_cache_gib=1.0, max_num_seqs=max(32, args.concurrency)),
            tls=TlsSettings(plaintext=True),
        )
        server = ActorServer(settings)
        await server.start()
        engine = server.runtime.engine
        batch = prompts(args.concurrency)

        async def direct(prompt: str) -> int:
            req = GenerationRequest(
                messages=[Message("user", prompt)], max_tokens=args.max_tokens, temperature=0.0
            )
            return (await engine.generate(req)).usage.completion_tokens

        async with AsyncActorClient(f"127.0.0.1:{server.port}", timeout=600) as client:

            async def grpc(prompt: str) -> int:
                reply = await client.generate(prompt, max_tokens=args.max_tokens, temperature=0.0)
                return int(reply.usage.completion_tokens)

            await timed(direct, batch)  # warm-up: prefix cache and allocator in steady state
            await timed(grpc, batch)
            rates: dict[str, list[float]] = {"direct": [], "grpc": []}
            tokens: dict[str, int] = {}
            for _ in range(args.rounds):
                for name, fn in (("direct", direct), ("grpc", grpc)):
                    seconds, n = await timed(fn, batch)
                    rates[name].append(n / seconds)
                    tokens[name] = n
        await server.stop()

    direct_tps = statistics.median(rates["direct"])
    grpc_tps = statistics.median(rates["grpc"])
    print(f"{'path':8s} {'tokens/round':>12s} {'tok/s (median)':>15s}  rounds")
    for name, tps in (("direct", direct_tps), ("grpc", grpc_tps)):
        runs = " ".join(f"{r:.1f}" for r in rates[name])
        print(f"{name:8s} {tokens[name]:12d} {tps:15.1f}  {runs}")
    ratio = grpc_tps / direct_tps
    print(f"ratio grpc/direct = {ratio:.3f} (target >= 0.9)")
    print(
        f"RESULT actor_overhead ratio={ratio:.3f} grpc_tok_s={grpc_tps:.1f} "
        f"direct_tok_s={direct_tps:.1f} concurrency={args.concurrency} "
        f"max_tokens={args.max_tokens}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
