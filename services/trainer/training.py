"""What a training job does, start to end, inside the worker process (no gRPC here).

Loads the base model (CPU float32, CUDA bf16: the same code), wraps it in a fresh LoRA
adapter or the parent version's, trains with TRL (:mod:`services.trainer.dpo` or
:mod:`services.trainer.sft`), reports progress through a callback and saves the adapter
folder. Publishing is the server's business: a worker that dies leaves only its scratch
folder behind.

The same code runs as each rank of a job over several processes
(:mod:`services.trainer.distributed`): the Trainer finds torchrun's environment and wraps
the model in DDP (or shards it with FSDP); rank 0 alone reports and saves.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from services.trainer.datasets import to_trl
from services.trainer.distributed import (
    COLLECTIVE_TIMEOUT_S,
    Rank,
    Strategy,
    micro_batch_index,
    micro_batch_seed,
)
from services.trainer.hyperparameters import Hyperparameters, Kind

Report = Callable[[dict[str, Any]], None]

#: Files a published adapter consists of (PEFT's model card and the like are dropped).
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class JobSpec:
    """Everything the worker needs; written by the server as ``spec.json``."""

    kind: Kind
    base_model: str
    dataset_path: str
    output_dir: str
    hyperparameters: dict[str, Any]
    parent_dir: str = ""
    device: str = "auto"
    threads: int = 0
    gradient_checkpointing: bool = True
    #: Processes (GPUs) the job runs on, each with ``hyperparameters.batch_size`` examples
    #: per micro-batch: the global batch is batch_size x gradient_accumulation_steps x this.
    world_size: int = 1
    strategy: Strategy = "ddp"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        return cls(**json.loads(text))


def pick_device(device: str) -> tuple[str, Any]:
    """(device, dtype): CUDA bf16 when a GPU is there (or asked for), else CPU float32."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no GPU")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    return device, torch.bfloat16 if device == "cuda" else torch.float32


def load_records(path: Path, kind: Kind) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [to_trl(kind, json.loads(line)) for line in f if line.strip()]


def load_policy(spec: JobSpec, hp: Hyperparameters, device: str, dtype: Any) -> tuple[Any, Any]:
    """(model, tokenizer): the base model with the parent adapter made trainable, or the bare
    base model (TRL then adds a fresh LoRA adapter from :func:`lora_config`). Under FSDP the
    model stays in host memory until accelerate shards it onto the devices."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec.base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(spec.base_model, dtype=dtype)
    if not sharded(spec):
        model = model.to(device)
    if spec.parent_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, spec.parent_dir, is_trainable=True)
    return model, tokenizer


def lora_config(hp: Hyperparameters) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=hp.lora_rank,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=list(hp.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def common_args(
    hp: Hyperparameters, device: str, scratch: Path, gradient_checkpointing: bool = True
) -> dict[str, Any]:
    """TrainingArguments shared by DPO and SFT jobs."""
    return {
        "gradient_checkpointing": gradient_checkpointing,
        "output_dir": str(scratch),
        "learning_rate": hp.learning_rate,
        "num_train_epochs": hp.epochs,
        "per_device_train_batch_size": hp.batch_size,
        "gradient_accumulation_steps": hp.gradient_accumulation_steps,
        "max_length": hp.max_length,
        "seed": hp.seed,
        "data_seed": hp.seed,
        # Same seed, same adapter bytes on CPU; on CUDA determinism would cost speed.
        "full_determinism": device == "cpu",
        "use_cpu": device == "cpu",
        "bf16": device == "cuda",
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "lr_scheduler_type": "linear",
        "warmup_steps": 0,
    }


def sharded(spec: JobSpec) -> bool:
    return spec.strategy == "fsdp" and spec.world_size > 1


def distributed_args(spec: JobSpec, device: str) -> dict[str, Any]:
    """TrainingArguments of a job over several processes (none for one process)."""
    if spec.world_size == 1:
        return {}
    out: dict[str, Any] = {
        "ddp_backend": "nccl" if device == "cuda" else "gloo",
        "ddp_timeout": COLLECTIVE_TIMEOUT_S,
    }
    if sharded(spec):
        # FSDP2 wraps each decoder layer; it checkpoints activations itself (the Trainer's
        # gradient checkpointing would add an all-gather per layer in the backward pass).
        out["fsdp"] = "full_shard auto_wrap"
        out["fsdp_config"] = {
            "version": 2,
            "reshard_after_forward": True,
            "state_dict_type": "FULL_STATE_DICT",
            "activation_checkpointing": spec.gradient_checkpointing,
        }
        out["gradient_checkpointing"] = False
    else:
        # Every LoRA weight gets a gradient each step: DDP need not search for unused ones.
        out["ddp_find_unused_parameters"] = False
    return out


class MicroBatchSeeds:
    """Reseeds torch before every micro-batch from (seed, its global index), so dropout
    draws the same masks for the same batch on any world size
    (:mod:`services.trainer.distributed`). It matters for SFT jobs: TRL's DPOTrainer turns
    dropout off."""

    def __init__(self, seed: int, rank: Rank) -> None:
        self.seed = seed
        self.rank = rank
        self.accumulated = 0

    def _reseed(self, args: Any, state: Any) -> None:
        import torch

        index = micro_batch_index(
            int(state.global_step), self.accumulated, int(args.gradient_accumulation_steps),
            self.rank,
        )  # fmt: skip
        torch.manual_seed(micro_batch_seed(self.seed, index))

    # transformers.TrainerCallback hooks: before the first micro-batch of a step, and after
    # each one but the last.
    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.accumulated = 0
        self._reseed(args, state)

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.accumulated += 1
        self._reseed(args, state)


class ProgressCallback:
    """Turns the trainer's logs into progress events (step, loss, margin, tokens/s, ETA)."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.start = time.monotonic()
        self.last: dict[str, float] = {}

    def event(self, state: Any, logs: dict[str, float] | None = None) -> dict[str, Any]:
        logs = logs or {}
        elapsed = max(time.monotonic() - self.start, 1e-9)
        step, total = int(state.global_step), int(state.max_steps)
        out: dict[str, Any] = {
            "event": "progress",
            "step": step,
            "total_steps": total,
            "epoch": float(state.epoch or 0.0),
            "elapsed_s": elapsed,
        }
        if "loss" in logs:
            out["loss"] = float(logs["loss"])
        if "rewards/margins" in logs:
            out["reward_margin"] = float(logs["rewards/margins"])
            out["reward_accuracy"] = float(logs.get("rewards/accuracies", 0.0))
        if "num_tokens" in logs:
            out["tokens_per_second"] = float(logs["num_tokens"]) / elapsed
        if step > 0:
            out["eta_s"] = elapsed / step * max(total - step, 0)
        return out

    # transformers.TrainerCallback hooks (duck-typed; see training_callback()).
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.start = time.monotonic()
        self.report(self.event(state))

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **_: Any
    ) -> None:
        if logs and "train_runtime" not in logs:
            event = self.event(state, logs)
            self.last = {k: v for k, v in event.items() if isinstance(v, float | int)}
            self.report(event)


def training_callback(report: Report) -> Any:
    """A transformers TrainerCallback that forwards to :class:`ProgressCallback`."""
    from transformers import TrainerCallback

    class _Callback(ProgressCallback, TrainerCallback):  # type: ignore[misc]
        pass

    return _Callback(report)


def seeds_callback(seed: int, rank: Rank) -> Any:
    """A transformers TrainerCallback that is :class:`MicroBatchSeeds`."""
    from transformers import TrainerCallback

    class _Callback(MicroBatchSeeds, TrainerCallback):  # type: ignore[misc]
        pass

    return _Callback(seed, rank)


def threads_per_process(spec: JobSpec, device: str) -> int:
    """torch threads: the setting, else (0) torch's default for one process and an equal
    share of the cores for each of several CPU processes (no oversubscription)."""
    if spec.threads > 0 or device != "cpu" or spec.world_size == 1:
        return spec.threads
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // spec.world_size)


def run_job(spec: JobSpec, report: Report) -> dict[str, float]:
    """Trains and saves the adapter into ``spec.output_dir``; returns the final metrics.
    As one rank of several, only rank 0 reports (``report`` is called there alone) and
    saves."""
    import torch

    rank = Rank.from_env()
    if rank.world_size != spec.world_size:
        raise RuntimeError(
            f"the job is for world_size={spec.world_size} but this process is one of "
            f"{rank.world_size}; multi-process jobs start through torchrun"
        )
    hp = Hyperparameters.from_dict(spec.hyperparameters)
    device, dtype = pick_device(spec.device)
    threads = threads_per_process(spec, device)
    if threads > 0:
        torch.set_num_threads(threads)
    if device == "cuda" and rank.world_size > 1:
        torch.cuda.set_device(rank.local_rank)
    records = load_records(Path(spec.dataset_path), spec.kind)
    model, tokenizer = load_policy(spec, hp, device, dtype)
    scratch = Path(spec.output_dir).with_name("scratch")
    callback = training_callback(report if rank.main else _discard)
    callbacks = [callback, seeds_callback(hp.seed, rank)]
    peft = None if spec.parent_dir else lora_config(hp)
    args = common_args(hp, device, scratch, spec.gradient_checkpointing)
    args.update(distributed_args(spec, device))
    from datasets import Dataset  # type: ignore[import-untyped]

    if spec.kind == "dpo":
        from services.trainer.dpo import dpo_trainer as method
    else:
        from services.trainer.sft import sft_trainer as method
    trainer_class, config = method(hp, args)
    trainer = trainer_class(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(records),
        processing_class=tokenizer,
        peft_config=peft,
        callbacks=callbacks,
    )
    kept = len(trainer.train_dataset)
    if kept == 0:
        raise ValueError(
            f"no example fits: every prompt (with the chat template) fills max_length="
            f"{hp.max_length} tokens; raise hyperparameters.max_length"
        )
    t0 = time.monotonic()
    result = trainer.train()
    runtime = time.monotonic() - t0
    # Under FSDP every rank holds a shard: gathering the full weights takes all of them.
    state_dict = trainer.accelerator.get_state_dict(trainer.model) if sharded(spec) else None
    if rank.main:
        save_adapter(trainer.model, Path(spec.output_dir), state_dict)
    if torch.distributed.is_initialized():
        # Every rank waits here until rank 0 has saved: a rank that tears its process group
        # down while a peer still uses it can leave that peer hanging (pytorch#75097).
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    metrics = {
        "train_loss": float(result.training_loss),
        "train_runtime_s": runtime,
        "steps": float(result.global_step),
        "examples": float(kept),
        "examples_dropped": float(len(records) - kept),
    }
    for key in ("loss", "reward_margin", "reward_accuracy", "tokens_per_second"):
        if key in callback.last:
            metrics[f"final_{key}" if key == "loss" else key] = float(callback.last[key])
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


def _discard(event: dict[str, Any]) -> None:
    pass


def save_adapter(model: Any, out: Path, state_dict: dict[str, Any] | None = None) -> None:
    """Saves only the trained adapter (not TRL's frozen reference copy) and only the files a
    version consists of, so its content digest depends on the weights and config alone.
    state_dict: the gathered full weights of a sharded (FSDP) model."""
    out.mkdir(parents=True, exist_ok=True)
    extra = {} if state_dict is None else {"state_dict": state_dict}
    model.save_pretrained(str(out), selected_adapters=["default"], safe_serialization=True, **extra)
    for path in out.iterdir():
        if path.name not in ADAPTER_FILES:
            if path.is_dir():
                import shutil

                shutil.rmtree(path)
            else:
                path.unlink()
    missing = [name for name in ADAPTER_FILES if not (out / name).is_file()]
    if missing:
        raise RuntimeError(f"saving the adapter produced no {', '.join(missing)}")
    canonical_config(out / "adapter_config.json")


def canonical_config(path: Path) -> None:
    """PEFT writes target_modules from a set, in an order that changes with every process's
    hash seed; sorted keys and lists make the same training give the same bytes (and name)."""
    config = json.loads(path.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
