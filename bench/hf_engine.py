"""Generated tokens/s of the hf engine (transformers + peft) for K concurrent requests.

Each round sends K requests of n samples at once straight to the engine (no gRPC) and
counts the generated tokens. With ``--lora-rank`` > 0 every other request uses a random
LoRA adapter, so batches mix adapter and base rows. Runs unchanged on CPU (tiny sizes)
and on a GPU:

    .venv/bin/python -m bench.hf_engine --concurrency 1,4 --n 2 --max-tokens 16   # CPU
    python -m bench.hf_engine --device cuda --concurrency 1,64,256 --n 4 --max-tokens 256

Ends with ``RESULT hf_engine device=... tok_s=<at the largest K> ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from spar.config import EngineSettings, Settings
from spar.engine.hf_engine import HfEngine
from spar.engine.protocol import AdapterRef, GenerationRequest, Message
from spar.model import prepare_default_model

TOPICS = [
    "the sea", "a mountain", "coffee", "rain", "a library", "autumn", "a train", "the moon",
    "bread", "a garden", "winter", "a bicycle", "music", "a river", "the city", "friendship",
]  # fmt: skip


def make_random_lora(model_path: Path, out: Path, rank: int, device: str) -> Path:
    """A PEFT LoRA folder with random (non-zero) weights on q_proj and v_proj."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(base.to(device), config).save_pretrained(str(out))
    return out


def request(i: int, args: argparse.Namespace, adapter: AdapterRef | None) -> GenerationRequest:
    topic = TOPICS[i % len(TOPICS)]
    return GenerationRequest(
        messages=[Message("user", f"Write a long story about {topic}.")],
        n=args.n,
        temperature=args.temperature,
        top_p=1.0,
        max_tokens=args.max_tokens,
        adapter=adapter if adapter is not None and i % 2 == 1 else None,
    )


async def round_(
    engine: HfEngine, k: int, args: argparse.Namespace, adapter: AdapterRef | None
) -> tuple[float, int, list[float]]:
    latencies: list[float] = []

    async def one(i: int) -> int:
        t0 = time.perf_counter()
        result = await engine.generate(request(i, args, adapter))
        latencies.append(time.perf_counter() - t0)
        return result.usage.completion_tokens

    t0 = time.perf_counter()
    tokens = await asyncio.gather(*(one(i) for i in range(k)))
    return time.perf_counter() - t0, sum(tokens), latencies


async def main(args: argparse.Namespace) -> None:
    model = Path(args.model) if args.model else prepare_default_model(Settings().cache_dir).path
    levels = [int(k) for k in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        engine_settings = EngineSettings(
            kind="hf",
            device=args.device,
            max_batch_sequences=args.max_batch_sequences,
            batch_wait_ms=args.batch_wait_ms,
            max_model_len=args.max_tokens + 128,
            **({"dtype": args.dtype} if args.dtype else {}),
        )
        settings = Settings(cache_dir=Path(tmp), model=str(model), engine=engine_settings)
        t0 = time.perf_counter()
        engine = await asyncio.to_thread(HfEngine.start, settings)
        start_s = time.perf_counter() - t0
        info = engine.info
        adapter = None
        if args.lora_rank > 0:
            folder = await asyncio.to_thread(
                make_random_lora, model, Path(tmp) / "lora", args.lora_rank, info.device
            )
            adapter = AdapterRef("bench-lora", 1, folder)
            await engine.add_adapter(adapter)
        await round_(engine, 2, argparse.Namespace(**{**vars(args), "max_tokens": 4}), adapter)
        print(
            f"hf engine on {info.device} ({info.extra['dtype']}), started in {start_s:.1f} s; "
            f"n={args.n} max_tokens={args.max_tokens} temperature={args.temperature} "
            f"lora={'every other request' if adapter else 'none'}"
        )
        print(f"{'K':>5} {'rows':>6} {'seconds':>8} {'tokens':>8} {'tok/s':>9} {'p50 s':>7}")
        best = {}
        for k in levels:
            runs = [await round_(engine, k, args, adapter) for _ in range(args.rounds)]
            seconds = sum(r[0] for r in runs)
            tokens = sum(r[1] for r in runs)
            p50 = statistics.median(lat for r in runs for lat in r[2])
            tps = tokens / seconds
            print(f"{k:>5} {k * args.n:>6} {seconds:>8.2f} {tokens:>8} {tps:>9.1f} {p50:>7.2f}")
            best = {"k": k, "tok_s": tps, "p50_s": p50}
        engine.shutdown()
    print(
        f"RESULT hf_engine device={info.device} dtype={info.extra['dtype']} k={best['k']} "
        f"n={args.n} max_tokens={args.max_tokens} tok_s={best['tok_s']:.1f} "
        f"p50_s={best['p50_s']:.2f} lora={int(adapter is not None)} "
        f"max_batch_sequences={args.max_batch_sequences}"
    )


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--dtype", default="", help="default: float32 on CPU, bfloat16 on CUDA")
    p.add_argument("--model", default="", help="model folder (default: the default model)")
    p.add_argument("--concurrency", default="1,4", help="comma-separated K values")
    p.add_argument("--n", type=int, default=2, help="samples per request")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--max-batch-sequences", type=int, default=256)
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--lora-rank", type=int, default=8, help="0: no adapter")
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
