"""Generated tokens/s of the default model on this CPU in float32 vs bfloat16.

What `SPAR_ENGINE__DTYPE=auto` decides on a CPU (spar.engine.placement): bfloat16 where
the CPU computes it natively (AMX or AVX-512 BF16), float32 elsewhere. One process, one
engine per dtype in turn, the same workload on each: refine-sized batches (requests of 3
samples at T 0.7, 200 tokens, as a search level sends them), measured twice after a
warm-up, plus the greedy answers of the same prompts compared between the dtypes.

    .venv/bin/python -m bench.cpu_dtype [--engine vllm|hf] [--requests 8] [--rounds 2]

Ends with ``RESULT cpu_dtype float32_tok_s=… bfloat16_tok_s=… ratio=… greedy_same=…``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import format_result
from spar.config import Settings
from spar.engine.placement import cpu_native_bf16
from spar.engine.protocol import Engine, GenerationRequest, Message
from spar.model import prepare_default_model

TOPICS = [
    "the sea", "a mountain", "coffee", "rain", "a library", "autumn", "a train", "the moon",
]  # fmt: skip
DTYPES = ("float32", "bfloat16")


def request(i: int, n: int, temperature: float, max_tokens: int) -> GenerationRequest:
    prompt = f"Write a short paragraph about {TOPICS[i % len(TOPICS)]}."
    return GenerationRequest(
        messages=[Message("user", prompt)], n=n, temperature=temperature, max_tokens=max_tokens
    )


async def measure(engine: Engine, args: argparse.Namespace) -> tuple[list[float], list[str]]:
    """Tokens/s of each round (after one warm-up round) and the greedy answers."""
    rates: list[float] = []
    for round_ in range(args.rounds + 1):
        batch = [request(i, 3, 0.7, args.max_tokens) for i in range(args.requests)]
        start = time.perf_counter()
        results = await asyncio.gather(*(engine.generate(r) for r in batch))
        took = time.perf_counter() - start
        if round_:  # round 0 warms the engine up
            rates.append(sum(r.usage.completion_tokens for r in results) / took)
    greedy = await asyncio.gather(
        *(engine.generate(request(i, 1, 0.0, 64)) for i in range(len(TOPICS)))
    )
    return rates, [g.samples[0].text for g in greedy]


async def main_async(args: argparse.Namespace) -> str:
    from spar.runtime import start_engine

    model = prepare_default_model(Settings().cache_dir).path
    rates: dict[str, list[float]] = {}
    answers: dict[str, list[str]] = {}
    for dtype in DTYPES:
        settings = Settings(
            cache_dir=Path(tempfile.mkdtemp(prefix="spar-bench-")),
            model=str(model),
            engine=Settings().engine.model_copy(
                update={"kind": args.engine, "dtype": dtype, "kv_cache_gib": 1.0}
            ),
        )
        engine = await asyncio.to_thread(start_engine, settings)
        try:
            rates[dtype], answers[dtype] = await measure(engine, args)
        finally:
            engine.shutdown()
        print(f"{dtype}: {', '.join(f'{r:.0f}' for r in rates[dtype])} tokens/s", flush=True)
    same = sum(a == b for a, b in zip(answers["float32"], answers["bfloat16"], strict=True))
    f32, bf16 = (statistics.mean(rates[d]) for d in DTYPES)
    print()
    print(f"engine {args.engine}, {os.cpu_count()} CPUs, native bf16: {cpu_native_bf16()}, "
          f"{args.requests} requests x 3 samples x {args.max_tokens} tokens, "
          f"{args.rounds} rounds (load {os.getloadavg()[0]:.1f})")  # fmt: skip
    print(f"{'dtype':10s} {'tokens/s':>9s}")
    for d in DTYPES:
        print(f"{d:10s} {statistics.mean(rates[d]):9.0f}")
    print(f"greedy answers identical in both dtypes: {same}/{len(TOPICS)}")
    return format_result(
        "cpu_dtype",
        engine=args.engine,
        float32_tok_s=f"{f32:.0f}",
        bfloat16_tok_s=f"{bf16:.0f}",
        ratio=f"{bf16 / f32:.2f}",
        greedy_same=f"{same}/{len(TOPICS)}",
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--engine", choices=["vllm", "hf"], default="vllm")
    p.add_argument("--requests", type=int, default=8, help="requests at once (3 samples each)")
    p.add_argument("--max-tokens", type=int, default=200)
    p.add_argument("--rounds", type=int, default=2, help="measured rounds after a warm-up")
    print(asyncio.run(main_async(p.parse_args())))


if __name__ == "__main__":
    main()
