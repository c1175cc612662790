"""Helpers shared by tests (not fixtures): real PEFT adapters made on the spot."""

from __future__ import annotations

from pathlib import Path


def make_lora(model_path: Path, out: Path, seed: int, rank: int = 8) -> Path:
    """A real PEFT LoRA adapter with random (non-zero) weights, so it changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    model = get_peft_model(base, config)
    model.save_pretrained(out)
    return out
