"""LoRA DPO of the actor with TRL's DPOTrainer: sigmoid DPO loss plus a weighted SFT (NLL on
chosen) term, the SPaR paper's recipe (beta 0.1, SFT weight 0.1)."""

from __future__ import annotations

from typing import Any

from services.trainer.hyperparameters import Hyperparameters


def dpo_config(hp: Hyperparameters, args: dict[str, Any]) -> Any:
    """args: :func:`services.trainer.training.common_args`."""
    from trl.trainer.dpo_config import DPOConfig

    losses, weights = ["sigmoid"], [1.0]
    if hp.sft_loss_weight > 0:
        losses, weights = ["sigmoid", "sft"], [1.0, hp.sft_loss_weight]
    return DPOConfig(
        **args,
        beta=hp.beta,
        loss_type=losses,
        loss_weights=weights,
    )


def build_dpo_trainer(
    model: Any,
    tokenizer: Any,
    records: list[dict[str, Any]],
    hp: Hyperparameters,
    args: dict[str, Any],
    peft_config: Any,
    callbacks: list[Any],
) -> Any:
    """A DPOTrainer over conversational preference pairs. With a parent adapter (no
    peft_config), TRL keeps a frozen copy of it as the reference policy."""
    from datasets import Dataset  # type: ignore[import-untyped]
    from trl.trainer.dpo_trainer import DPOTrainer

    return DPOTrainer(
        model=model,
        args=dpo_config(hp, args),
        train_dataset=Dataset.from_list(records),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
