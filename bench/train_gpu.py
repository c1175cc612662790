"""GPU throughput of the trainer's DPO job code: bf16 on CUDA, LoRA, TRL's DPOTrainer.

Runs :func:`services.trainer.training.run_job` (exactly what a trainer worker runs) on
synthetic preference pairs that fill ``--length`` tokens each, for the default model's
architecture (SmolLM2-135M) and a ~1B-parameter Llama, both with random weights:
throughput does not depend on the weight values, and the default checkpoint (538 MB) is
too large to carry to the GPU machine. Prints a table and a ``RESULT train_gpu`` line.

MFU counts 6·N·T FLOPs per step against the dense bf16 peak (--peak-tflops, 989 for
H100/H200 SXM); N = all base-model parameters, T = tokens of chosen + rejected. With LoRA
the base weights are frozen: the policy's backward computes activation gradients
(≈ 2·N·T) but no weight gradients, so policy forward + backward ≈ 4·N·T, plus the
reference forward (the same model with the adapter off) 2·N·T. The LoRA matrices
themselves (~1 % of N) and gradient checkpointing's recomputed forward are not counted
(model FLOPs, not hardware FLOPs).

    python -m bench.train_gpu --tokenizer ~/.cache/spar/models/SmolLM2-135M-Instruct
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from services.trainer.hyperparameters import DEFAULT_TARGET_MODULES
from services.trainer.training import JobSpec, run_job

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
FLOPS_PER_PARAM_TOKEN = 6
"""LoRA DPO: policy forward 2 + backward without weight gradients 2 + reference forward 2."""

#: name -> LlamaConfig overrides (the default model's own config is read from --tokenizer).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "llama-1b": {
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "num_hidden_layers": 22,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "head_dim": 64,
    },
    # Smoke test of this script on a CPU.
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
    },
}

WORDS = [
    "river",
    "stone",
    "light",
    "window",
    "garden",
    "morning",
    "quiet",
    "paper",
    "yellow",
    "silver",
    "bridge",
    "market",
    "winter",
    "summer",
    "forest",
    "ocean",
    "candle",
    "mirror",
    "letter",
    "violin",
    "harbor",
    "meadow",
    "thunder",
    "lantern",
]


def materialise(name: str, source: Path, out: Path, device: str) -> None:
    """Writes a random-weight model folder (bf16 on CUDA) with the default tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(source)
    for key, value in ARCHITECTURES.get(name, {}).items():
        setattr(config, key, value)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.save_pretrained(out)
    for file in TOKENIZER_FILES:
        if (source / file).is_file():
            shutil.copy(source / file, out / file)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()


def _param_count(folder: Path) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
    return int(sum(p.numel() for p in model.parameters()))


def write_pairs(path: Path, pairs: int, length: int) -> None:
    """Pairs long enough that every sequence is truncated to exactly ``length`` tokens."""
    rng = random.Random(0)

    def text(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n))

    with path.open("w") as f:
        for _ in range(pairs):
            record = {"prompt": text(length // 4), "chosen": text(length), "rejected": text(length)}
            f.write(json.dumps(record) + "\n")


def measure(
    name: str, batch: int, checkpointing: bool, args: argparse.Namespace, work: Path
) -> dict[str, float]:
    import torch

    folder = work / name
    if not folder.is_dir():
        materialise(name, Path(args.tokenizer), folder, args.device)
    params = _param_count(folder)
    data = work / f"{name}-{batch}.jsonl"
    # Enough pairs for warm-up plus --steps measured steps.
    write_pairs(data, batch * (args.warmup_steps + args.steps), args.length)
    events: list[dict[str, Any]] = []
    hp = {
        "beta": 0.1, "sft_loss_weight": 0.1, "lora_rank": args.rank,
        "lora_alpha": 2 * args.rank, "lora_dropout": 0.05,
        "target_modules": list(DEFAULT_TARGET_MODULES), "learning_rate": 5e-6,
        "epochs": 1, "batch_size": batch, "gradient_accumulation_steps": 1,
        "max_length": args.length, "seed": 0,
    }  # fmt: skip
    spec = JobSpec(
        kind="dpo",
        base_model=str(folder),
        dataset_path=str(data),
        output_dir=str(work / f"{name}-out" / "adapter"),
        hyperparameters=hp,
        device=args.device,
        gradient_checkpointing=checkpointing,
    )
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.monotonic()
    metrics = run_job(spec, events.append)
    wall = time.monotonic() - t0
    steps = [e for e in events if e.get("step") and "tokens_per_second" in e]
    # Steady state: skip the first steps (kernel selection, allocator warm-up).
    skip = min(args.warmup_steps, len(steps) - 2)
    a, b = steps[skip], steps[-1]
    tokens = b["tokens_per_second"] * b["elapsed_s"] - a["tokens_per_second"] * a["elapsed_s"]
    seconds = b["elapsed_s"] - a["elapsed_s"]
    tok_s = tokens / seconds
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else 0.0
    shutil.rmtree(work / f"{name}-out", ignore_errors=True)
    return {
        "params_m": params / 1e6,
        "steps": float(len(steps)),
        "tokens_per_step": tokens / (b["step"] - a["step"]),
        "s_per_step": seconds / (b["step"] - a["step"]),
        "tokens_per_s": tok_s,
        "mfu_pct": 100 * FLOPS_PER_PARAM_TOKEN * params * tok_s / (args.peak_tflops * 1e12),
        "peak_mem_gib": peak_gib,
        "job_wall_s": wall,
        "final_loss": float(metrics.get("final_loss", float("nan"))),
    }


def add_job_flags(p: argparse.ArgumentParser, *, checkpointing: str) -> None:
    """The flags of the measured jobs' shape, shared with bench.train_multi_gpu."""
    p.add_argument("--tokenizer", required=True, help="default model folder (config+tokenizer)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--checkpointing", default=checkpointing, help="on, off or on,off")
    p.add_argument("--steps", type=int, default=12, help="measured steps after warm-up")
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--rank", type=int, default=16)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_job_flags(p, checkpointing="on")
    p.add_argument("--models", default="default,llama-1b", help="comma-separated")
    p.add_argument("--batches", default="8", help="pairs per step, comma-separated")
    p.add_argument("--peak-tflops", type=float, default=989.0)
    args = p.parse_args(argv)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                for gc in args.checkpointing.split(","):
                    key = f"{name}_b{batch}_gc{gc}"
                    results[key] = measure(name, batch, gc == "on", args, Path(tmp))
    print(
        f"\nDPO + LoRA r={args.rank} (trainer job code), {args.device}, pairs of 2 x "
        f"{args.length} tokens (chosen + rejected), MFU vs {args.peak_tflops:.0f} TFLOP/s"
    )
    header = f"{'run':26s} {'params':>7s} {'pairs':>5s} {'s/step':>7s} {'tokens/s':>9s}"
    print(f"{header} {'MFU':>6s} {'mem GiB':>8s}")
    for key, r in results.items():
        pairs = int(r["tokens_per_step"] / (2 * args.length) + 0.5)
        print(
            f"{key:26s} {r['params_m']:6.0f}M {pairs:5d} {r['s_per_step']:7.3f} "
            f"{r['tokens_per_s']:9.0f} {r['mfu_pct']:5.1f}% {r['peak_mem_gib']:8.1f}"
        )
    fields = " ".join(
        f"{key.replace('-', '_')}_{field}={value:.4g}"
        for key, r in results.items()
        for field, value in r.items()
        if field in ("tokens_per_s", "mfu_pct", "s_per_step", "peak_mem_gib")
    )
    print(f"RESULT train_gpu device={args.device} length={args.length} {fields}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
