"""Training settings of a job: defaults (the SPaR paper's for DPO), validation. No I/O.

A job's hyperparameters are resolved once, when it is submitted, and stored with the job
and in the published manifest, so a version always records exactly how it was trained.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from spar.dataclass_json import as_json, from_json
from spar.errors import InvalidArgument

Kind = Literal["dpo", "sft"]

#: Attention and MLP projections of Llama-style models (the default LoRA targets).
DEFAULT_TARGET_MODULES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)


@dataclass(frozen=True)
class Hyperparameters:
    """The training hyperparameters of a job, all resolved (defaults filled in, bounds
    checked)."""

    beta: float
    """DPO's beta (the strength of the KL penalty)."""
    sft_loss_weight: float
    """Weight of the SFT loss added to DPO's (0: pure DPO)."""
    lora_rank: int
    lora_alpha: int
    lora_dropout: float
    target_modules: tuple[str, ...]
    """The modules LoRA adapts (e.g. q_proj, v_proj)."""
    learning_rate: float
    epochs: int
    batch_size: int
    gradient_accumulation_steps: int
    max_length: int
    """Tokens of prompt and answer together at most (TRL's max_length)."""
    seed: int

    def as_dict(self) -> dict[str, Any]:
        return as_json(self)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hyperparameters:
        return from_json(cls, data)


@dataclass(frozen=True)
class Bounds:
    """Server limits on hyperparameters (from TrainerSettings)."""

    max_lora_rank: int = 64
    max_epochs: int = 100
    max_length: int = 8192
    max_batch_size: int = 256


def defaults(kind: Kind, *, max_length: int) -> Hyperparameters:
    """Defaults of a job kind: DPO beta 0.1 with SFT-loss weight 0.1 (the paper), lr 5e-6 DPO
    and 1e-5 SFT, LoRA rank 16 / alpha 32 on attention and MLP projections."""
    return Hyperparameters(
        beta=0.1,
        sft_loss_weight=0.1,
        lora_rank=16,
        lora_alpha=32,
        lora_dropout=0.05,
        target_modules=DEFAULT_TARGET_MODULES,
        learning_rate=5e-6 if kind == "dpo" else 1e-5,
        epochs=1,
        batch_size=4,
        gradient_accumulation_steps=1,
        max_length=max_length,
        seed=0,
    )


_MODULE_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")


def resolve(
    kind: Kind, given: dict[str, Any], base: Hyperparameters, bounds: Bounds
) -> Hyperparameters:
    """base with the fields the caller set (``given``) replaced, after checking every one."""
    unknown = set(given) - {f.name for f in dataclasses.fields(Hyperparameters)}
    if unknown:
        raise InvalidArgument(f"unknown hyperparameters: {', '.join(sorted(unknown))}")
    values = base.as_dict()
    values.update({k: v for k, v in given.items() if k != "target_modules" or v})
    hp = Hyperparameters.from_dict(values)
    _check_float("beta", hp.beta, low=0.0, low_open=True, high=100.0)
    _check_float("sft_loss_weight", hp.sft_loss_weight, low=0.0, high=100.0)
    _check_float("lora_dropout", hp.lora_dropout, low=0.0, high=1.0, high_open=True)
    _check_float("learning_rate", hp.learning_rate, low=0.0, low_open=True, high=1.0)
    _check_int("lora_rank", hp.lora_rank, 1, bounds.max_lora_rank)
    _check_int("lora_alpha", hp.lora_alpha, 1, 4096)
    _check_int("epochs", hp.epochs, 1, bounds.max_epochs)
    _check_int("batch_size", hp.batch_size, 1, bounds.max_batch_size)
    _check_int("gradient_accumulation_steps", hp.gradient_accumulation_steps, 1, 1024)
    _check_int("max_length", hp.max_length, 16, bounds.max_length)
    _check_int("seed", hp.seed, 0, 2**32 - 1)
    if len(hp.target_modules) > 64:
        raise InvalidArgument("hyperparameters.target_modules: at most 64 module names")
    for name in hp.target_modules:
        if not name or len(name) > 128 or not set(name) <= _MODULE_NAME_CHARS:
            raise InvalidArgument(
                f"hyperparameters.target_modules: {name[:80]!r} is not a module name "
                "(letters, digits, '_' and '.', e.g. q_proj)"
            )
    if kind == "sft" and "beta" in given:
        raise InvalidArgument(
            "hyperparameters.beta applies to DPO jobs only; leave it unset for sft"
        )
    return hp


def _check_float(
    name: str,
    value: float,
    *,
    low: float,
    high: float,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    ok = (
        math.isfinite(value)
        and (value > low if low_open else value >= low)
        and (value < high if high_open else value <= high)
    )
    if not ok:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise InvalidArgument(f"hyperparameters.{name}={value} must be in {lo}{low}, {high}{hi}")


def _check_int(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise InvalidArgument(f"hyperparameters.{name}={value} must be between {low} and {high}")
