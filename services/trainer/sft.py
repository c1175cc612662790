"""LoRA SFT (the refiner's RFT data) with TRL's SFTTrainer: loss on the completion only."""

from __future__ import annotations

from typing import Any

from services.trainer.hyperparameters import Hyperparameters


def sft_config(hp: Hyperparameters, args: dict[str, Any]) -> Any:
    """args: :func:`services.trainer.training.common_args`."""
    from trl.trainer.sft_config import SFTConfig

    return SFTConfig(**args, completion_only_loss=True)


def sft_trainer(hp: Hyperparameters, args: dict[str, Any]) -> tuple[Any, Any]:
    """TRL's SFTTrainer class and its config."""
    from trl.trainer.sft_trainer import SFTTrainer

    return SFTTrainer, sft_config(hp, args)
