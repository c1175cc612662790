"""Data-parallel scaling of the trainer's DPO job: the same job on 1 and on N GPUs.

Each run is a real job process tree, started the way the trainer starts it: ``python -m
services.trainer.worker SPEC.json``; with world_size > 1 that worker runs torchrun, whose
ranks train with DDP over NCCL (:mod:`services.trainer.distributed`). Throughput comes from
rank 0's progress events (TRL counts the tokens of every rank). Weak scaling: every GPU
gets the same per-device batch, so N GPUs train N times the global batch per step;
efficiency = tokens/s on N GPUs / (N x tokens/s on 1 GPU).

Models are those of :mod:`bench.train_gpu` (random weights: throughput does not depend on
weight values). Prints a table and a ``RESULT train_multi_gpu`` line.

    python -m bench.train_multi_gpu --tokenizer ~/.cache/spar/models/SmolLM2-135M-Instruct
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.train_gpu import _param_count, add_job_flags, materialise, write_pairs
from services.trainer.hyperparameters import DEFAULT_TARGET_MODULES
from services.trainer.training import JobSpec
from services.trainer.worker import PARENT_PID_ENV


def run_job(spec: JobSpec, folder: Path, timeout_s: float) -> tuple[list[dict[str, Any]], float]:
    """Runs one job's worker as the trainer does; (events, wall seconds)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.json").write_text(spec.to_json())
    env = {**os.environ, PARENT_PID_ENV: str(os.getpid()), "HF_HUB_OFFLINE": "1"}
    t0 = time.monotonic()
    with (folder / "worker.log").open("wb") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "services.trainer.worker", str(folder / "spec.json")],
            stdout=subprocess.PIPE, stderr=log, env=env, timeout=timeout_s, check=False,
        )  # fmt: skip
    wall = time.monotonic() - t0
    events = [json.loads(line) for line in proc.stdout.decode().splitlines() if line.strip()]
    errors = [e["message"] for e in events if e.get("event") == "error"]
    if proc.returncode != 0 or errors or not any(e.get("event") == "done" for e in events):
        tail = (folder / "worker.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"job failed (exit {proc.returncode}): {errors}\n{tail}")
    return events, wall


def steady_state(events: list[dict[str, Any]], warmup: int) -> dict[str, float]:
    """Tokens/s and s/step between the end of warm-up and the last step."""
    steps = [e for e in events if e.get("step") and "tokens_per_second" in e]
    skip = min(warmup, len(steps) - 2)
    a, b = steps[skip], steps[-1]
    tokens = b["tokens_per_second"] * b["elapsed_s"] - a["tokens_per_second"] * a["elapsed_s"]
    seconds = b["elapsed_s"] - a["elapsed_s"]
    return {
        "tokens_per_s": tokens / seconds,
        "s_per_step": seconds / (b["step"] - a["step"]),
        "tokens_per_step": tokens / (b["step"] - a["step"]),
        "final_loss": float(b.get("loss", float("nan"))),
    }


def measure(
    model: Path, world: int, strategy: str, checkpointing: bool, args: argparse.Namespace,
    work: Path,
) -> dict[str, float]:  # fmt: skip
    data = work / f"pairs-{world}.jsonl"
    # Enough pairs for warm-up plus --steps measured steps at this world size.
    write_pairs(data, args.batch * world * (args.warmup_steps + args.steps), args.length)
    hp = {
        "beta": 0.1, "sft_loss_weight": 0.1, "lora_rank": args.rank,
        "lora_alpha": 2 * args.rank, "lora_dropout": 0.05,
        "target_modules": list(DEFAULT_TARGET_MODULES), "learning_rate": 5e-6,
        "epochs": 1, "batch_size": args.batch, "gradient_accumulation_steps": 1,
        "max_length": args.length, "seed": 0,
    }  # fmt: skip
    name = f"w{world}-{strategy}-gc{'on' if checkpointing else 'off'}"
    spec = JobSpec(
        kind="dpo",
        base_model=str(model),
        dataset_path=str(data),
        output_dir=str(work / name / "output"),
        hyperparameters=hp,
        device=args.device,
        gradient_checkpointing=checkpointing,
        world_size=world,
        strategy=strategy,  # type: ignore[arg-type]
    )
    events, wall = run_job(spec, work / name, args.timeout)
    result = steady_state(events, args.warmup_steps)
    result["job_wall_s"] = wall
    result["steps"] = float(max(e.get("step", 0) for e in events))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_job_flags(p, checkpointing="off")
    p.add_argument("--model", default="llama-1b", help="an architecture of bench.train_gpu")
    p.add_argument("--world-sizes", default="1,2", help="comma-separated; the first is the base")
    p.add_argument("--strategies", default="ddp", help="ddp, fsdp or ddp,fsdp (world > 1)")
    p.add_argument("--batch", type=int, default=8, help="pairs per GPU per step")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per job")
    args = p.parse_args(argv)
    worlds = [int(w) for w in args.world_sizes.split(",")]
    rows: list[tuple[str, int, str, bool, dict[str, float]]] = []
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = work / args.model
        materialise(args.model, Path(args.tokenizer), model, args.device)
        params = _param_count(model)
        for gc in (c == "on" for c in args.checkpointing.split(",")):
            for world in worlds:
                for strategy in args.strategies.split(",") if world > 1 else ["ddp"]:
                    key = f"w{world}_{strategy}_gc{'on' if gc else 'off'}"
                    try:
                        r = measure(model, world, strategy, gc, args, work)
                    except (RuntimeError, subprocess.TimeoutExpired) as exc:
                        # One failed run (e.g. FSDP) must not cost the others' figures.
                        print(f"{key} FAILED: {exc}", file=sys.stderr)
                        failed[key] = str(exc).splitlines()[0][:200]
                        continue
                    rows.append((key, world, strategy, gc, r))
                    print(f"{key}: {r['tokens_per_s']:.0f} tokens/s", file=sys.stderr, flush=True)
    print(
        f"\nDPO + LoRA r={args.rank} (trainer job processes), {args.model} "
        f"({params / 1e6:.0f}M params), {args.device}, {args.batch} pairs of 2 x {args.length} "
        "tokens per GPU per step"
    )
    print(
        f"{'run':20s} {'GPUs':>4s} {'strategy':>8s} {'ckpt':>4s} {'pairs':>5s} {'s/step':>7s} "
        f"{'tokens/s':>9s} {'per GPU':>8s} {'scaling':>8s} {'job s':>6s}"
    )
    base: dict[bool, float] = {}
    fields: dict[str, float] = {}
    for key, world, strategy, gc, r in rows:
        if world == worlds[0]:
            base.setdefault(gc, r["tokens_per_s"] / world)
        efficiency = r["tokens_per_s"] / (world * base.get(gc, float("nan")))
        pairs = int(r["tokens_per_step"] / (2 * args.length) + 0.5)
        print(
            f"{key:20s} {world:4d} {strategy:>8s} {'on' if gc else 'off':>4s} {pairs:5d} "
            f"{r['s_per_step']:7.3f} {r['tokens_per_s']:9.0f} {r['tokens_per_s'] / world:8.0f} "
            f"{efficiency:8.3f} {r['job_wall_s']:6.0f}"
        )
        fields[f"{key}_tokens_per_s"] = r["tokens_per_s"]
        fields[f"{key}_efficiency"] = efficiency
    for key, why in failed.items():
        print(f"{key:20s} FAILED: {why}")
    # The headline: the first checkpointing setting, DDP, on the base and the largest world.
    gc0 = args.checkpointing.split(",")[0]
    one = fields.get(f"w{worlds[0]}_ddp_gc{gc0}_tokens_per_s", float("nan"))
    many = fields.get(f"w{worlds[-1]}_ddp_gc{gc0}_tokens_per_s", float("nan"))
    headline = (
        f"tokens_per_s_{worlds[0]}gpu={one:.0f} tokens_per_s_{worlds[-1]}gpu={many:.0f} "
        f"efficiency={many / (worlds[-1] / worlds[0] * one):.3f}"
    )
    rest = " ".join(f"{k}={v:.4g}" for k, v in fields.items())
    print(f"RESULT train_multi_gpu {headline} model={args.model} length={args.length} {rest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
