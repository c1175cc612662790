"""Generated tokens/s of the hf engine for K concurrent requests, old path vs new.

Each level sends K requests at once straight to the engine (no gRPC) and counts the
generated tokens. *old*: :class:`spar.engine.hf_generate.HfGenerateEngine` (one eager
``model.generate`` per batch — the engine before continuous batching); *new*:
:class:`spar.engine.hf_engine.HfEngine` (continuous batching, decode steps as CUDA
graphs). Both run in the same process, one after the other, with the same settings.

Models: by default the default model's architecture (SmolLM2-135M, config and tokenizer
from ``--tokenizer``) and a 1.07B Llama, both with random weights
(``bench.train_gpu.ARCHITECTURES``): throughput does not depend on the weight values, and
the default checkpoint is too large to carry to the GPU machine. Random weights rarely
sample EOS, so nearly every request generates all ``--max-tokens`` tokens. ``--model``
takes a real model folder instead.

GPU busy: ``engine``: the new engine's own counter (GPU time inside its steps, from CUDA
events) over the wall time of the level; ``nvml``: the mean NVML utilisation sampled
every 20 ms (both paths).

    .venv/bin/python -m bench.hf_engine --device cpu --models tiny --concurrency 1,4 \\
        --max-tokens 16 --tokenizer ~/.cache/spar/models/SmolLM2-135M-Instruct     # CPU
    python -m bench.hf_engine --tokenizer .gpu/smollm2                             # H200

Ends with ``RESULT hf_engine speedup_256=<new÷old tokens/s at K=256, default model>
tokens_per_s_256=<new> gpu_busy_256=<new, engine %> ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import format_result
from bench.train_gpu import materialise
from spar.config import EngineSettings, Settings
from spar.engine.hf_engine import HfEngine
from spar.engine.hf_generate import HfGenerateEngine
from spar.engine.hf_requests import HfEngineBase
from spar.engine.protocol import AdapterRef, GenerationRequest, Message

TOPICS = [
    "the sea", "a mountain", "coffee", "rain", "a library", "autumn", "a train", "the moon",
    "bread", "a garden", "winter", "a bicycle", "music", "a river", "the city", "friendship",
]  # fmt: skip


@dataclass
class Level:
    """One row of the table: one engine path at one concurrency and what it measured."""

    model: str
    path: str
    k: int
    seconds: float
    tokens: int
    p50_s: float
    engine_busy_pct: float
    nvml_pct: float

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds


class UtilisationSampler:
    """Mean NVML GPU utilisation while it runs (nan without a GPU or NVML)."""

    def __init__(self, device: str) -> None:
        self._on = device == "cuda"
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import torch

        while not self._stop.wait(0.02):
            try:
                self._samples.append(float(torch.cuda.utilization()))
            except Exception:
                return

    def __enter__(self) -> UtilisationSampler:
        if self._on:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._on:
            self._thread.join()

    @property
    def mean(self) -> float:
        return statistics.fmean(self._samples) if self._samples else float("nan")


def make_random_lora(model_path: Path, out: Path, rank: int) -> Path:
    """A PEFT LoRA folder with random (non-zero) weights on all seven projections."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=modules, init_lora_weights=False
    )
    get_peft_model(base, config).save_pretrained(str(out))
    return out


def request(i: int, args: argparse.Namespace, adapter: AdapterRef | None) -> GenerationRequest:
    return GenerationRequest(
        messages=[Message("user", f"Write a long story about {TOPICS[i % len(TOPICS)]}.")],
        n=args.n,
        temperature=args.temperature,
        top_p=args.top_p,
        max_tokens=args.max_tokens,
        adapter=adapter if adapter is not None and i % 2 == 1 else None,
    )


async def run_level(
    engine: HfEngineBase, k: int, args: argparse.Namespace, adapter: AdapterRef | None
) -> tuple[float, int, float, float, float]:
    """(seconds, generated tokens, p50 latency, engine busy %, nvml %) of K requests."""
    latencies: list[float] = []

    async def one(i: int) -> int:
        t0 = time.perf_counter()
        result = await engine.generate(request(i, args, adapter))
        latencies.append(time.perf_counter() - t0)
        return result.usage.completion_tokens

    stats = getattr(engine, "stats", None)
    busy0 = stats()["device_busy_s"] if stats else 0.0
    with UtilisationSampler(engine.info.device) as nvml:
        t0 = time.perf_counter()
        tokens = await asyncio.gather(*(one(i) for i in range(k)))
        seconds = time.perf_counter() - t0
    busy = 100 * (stats()["device_busy_s"] - busy0) / seconds if stats else float("nan")
    return seconds, sum(tokens), statistics.median(latencies), busy, nvml.mean


async def measure(
    name: str, folder: Path, path: str, args: argparse.Namespace, work: Path
) -> list[Level]:
    settings = Settings(
        cache_dir=work / "cache",
        model=str(folder),
        engine=EngineSettings(
            kind="hf",
            device=args.device,
            max_batch_sequences=args.max_batch_sequences,
            batch_wait_ms=args.batch_wait_ms,
            max_model_len=args.max_tokens + 128,
            max_lora_rank=max(args.lora_rank, 16),
        ),
    )
    kind = HfEngine if path.startswith("new") else HfGenerateEngine
    t0 = time.perf_counter()
    engine = await asyncio.to_thread(kind.start, settings)
    started = time.perf_counter() - t0
    adapter = None
    if path.endswith("+lora"):
        lora = await asyncio.to_thread(make_random_lora, folder, work / "lora", args.lora_rank)
        adapter = AdapterRef("bench-lora", 1, lora)
        await engine.add_adapter(adapter)
    levels = [int(k) for k in args.concurrency.split(",")]
    if path.endswith("+lora"):
        levels = [int(k) for k in args.lora_levels.split(",")]
    print(f"\n{name} / {path}: {engine.info.extra} started in {started:.1f} s", flush=True)
    out = []
    for k in levels:
        if path.startswith("new"):  # first round of a level captures its graphs
            t0 = time.perf_counter()
            await run_level(engine, k, args, adapter)
            stats: dict[str, float] = getattr(engine, "stats", dict)()
            warm = time.perf_counter() - t0
            print(f"  warm-up K={k}: {warm:.1f} s, graphs {stats.get('graphs')}", flush=True)
        else:
            await run_level(engine, 2, argparse.Namespace(**{**vars(args), "max_tokens": 4}), None)
        seconds, tokens, p50, busy, nvml = await run_level(engine, k, args, adapter)
        level = Level(name, path, k, seconds, tokens, p50, busy, nvml)
        print(
            f"  K={k:5d} {seconds:8.2f} s {tokens:8d} tokens {level.tok_s:10.1f} tok/s "
            f"p50 {p50:6.2f} s busy {busy:5.1f} % nvml {nvml:5.1f} %",
            flush=True,
        )
        out.append(level)
    engine.shutdown()
    return out


def result_line(levels: list[Level], args: argparse.Namespace) -> str:
    by = {(lv.model, lv.path, lv.k): lv for lv in levels}
    fields: dict[str, Any] = {}
    main = "default" if any(lv.model == "default" for lv in levels) else levels[0].model
    key = 256 if any(lv.k == 256 for lv in levels) else max(lv.k for lv in levels)
    new, old = by.get((main, "new", key)), by.get((main, "old", key))
    if new and old:
        fields[f"speedup_{key}"] = f"{new.tok_s / old.tok_s:.2f}"
    if new:
        fields[f"tokens_per_s_{key}"] = f"{new.tok_s:.0f}"
        fields[f"gpu_busy_{key}"] = f"{new.engine_busy_pct:.1f}"
    for lv in levels:
        tag = f"{lv.model.replace('-', '_')}_{lv.path.replace('+', '_')}_{lv.k}"
        fields[f"{tag}_tok_s"] = f"{lv.tok_s:.0f}"
    fields.update(device=args.device, max_tokens=args.max_tokens, n=args.n)
    return format_result("hf_engine", **fields)


async def main(args: argparse.Namespace) -> None:
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    levels: list[Level] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folders = {}
        for name in args.models.split(","):
            folders[name] = Path(args.model) if args.model else work / name
            if not args.model:
                materialise(name, Path(args.tokenizer), folders[name], args.device)
        for path in args.paths.split(","):  # paths outside: the slow old path runs last
            for name, folder in folders.items():
                try:
                    levels += await measure(name, folder, path, args, work)
                except Exception as exc:  # report the others, whatever one path does
                    print(f"  {name} / {path} FAILED: {type(exc).__name__}: {exc}", flush=True)
    print(f"\n{'model':10s} {'path':9s} {'K':>5s} {'tok/s':>10s} {'p50 s':>7s} {'busy %':>7s}")
    for lv in levels:
        print(
            f"{lv.model:10s} {lv.path:9s} {lv.k:5d} {lv.tok_s:10.1f} {lv.p50_s:7.2f} "
            f"{lv.engine_busy_pct:7.1f}"
        )
    print(result_line(levels, args))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--tokenizer", default="", help="default model folder (config + tokenizer)")
    p.add_argument("--model", default="", help="a real model folder instead of random weights")
    p.add_argument("--models", default="default,llama-1b", help="comma-separated")
    p.add_argument("--paths", default="new,new+lora,old", help="old, new, new+lora")
    p.add_argument("--concurrency", default="1,64,256,1024", help="comma-separated K values")
    p.add_argument("--lora-levels", default="256", help="K values of the new+lora path")
    p.add_argument("--n", type=int, default=1, help="samples per request")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.9)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--max-batch-sequences", type=int, default=1024)
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--lora-rank", type=int, default=16)
    args = p.parse_args(argv)
    if not args.model and not args.tokenizer:
        p.error("--tokenizer (the default model's folder) or --model is required")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
