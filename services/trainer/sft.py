"""LoRA SFT (the refiner's RFT data) with TRL's SFTTrainer: loss on the completion only."""

from __future__ import annotations

from typing import Any

from services.trainer.hyperparameters import Hyperparameters


def sft_config(hp: Hyperparameters, args: dict[str, Any]) -> Any:
    """args: :func:`services.trainer.training.common_args`."""
    from trl.trainer.sft_config import SFTConfig

    return SFTConfig(**args, completion_only_loss=True)


def build_sft_trainer(
    model: Any,
    tokenizer: Any,
    records: list[dict[str, Any]],
    hp: Hyperparameters,
    args: dict[str, Any],
    peft_config: Any,
    callbacks: list[Any],
) -> Any:
    from datasets import Dataset  # type: ignore[import-untyped]
    from trl.trainer.sft_trainer import SFTTrainer

    return SFTTrainer(
        model=model,
        args=sft_config(hp, args),
        train_dataset=Dataset.from_list(records),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
