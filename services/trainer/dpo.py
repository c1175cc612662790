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


def dpo_trainer(hp: Hyperparameters, args: dict[str, Any]) -> tuple[Any, Any]:
    """TRL's DPOTrainer class and its config, over conversational preference pairs. With a
    parent adapter (no peft_config), TRL keeps a frozen copy of it as the reference
    policy."""
    from trl.trainer.dpo_trainer import DPOTrainer

    return DPOTrainer, dpo_config(hp, args)
