"""LoRA SFT (the refiner's RFT data) with TRL's SFTTrainer: loss on the completion only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.trainer.hyperparameters import Hyperparameters
from services.trainer.training import common_args


def sft_config(hp: Hyperparameters, device: str, scratch: Path) -> Any:
    from trl.trainer.sft_config import SFTConfig

    return SFTConfig(**common_args(hp, device, scratch), completion_only_loss=True)


def build_sft_trainer(
    model: Any,
    tokenizer: Any,
    records: list[dict[str, Any]],
    hp: Hyperparameters,
    device: str,
    scratch: Path,
    peft_config: Any,
    callback: Any,
) -> Any:
    from datasets import Dataset  # type: ignore[import-untyped]
    from trl.trainer.sft_trainer import SFTTrainer

    return SFTTrainer(
        model=model,
        args=sft_config(hp, device, scratch),
        train_dataset=Dataset.from_list(records),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[callback],
    )
