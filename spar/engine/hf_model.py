"""Loading a Hugging Face causal LM for the hf engines (transformers, no vLLM).

Both hf engines — the continuous-batching one (:mod:`spar.engine.hf_engine`) and the
``model.generate`` one (:mod:`spar.engine.hf_generate`) — load the model, its two
tokenizers and the special token ids the same way, so they serve the same model the
same way and refuse the same settings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spar.config import EngineSettings, Settings
from spar.engine.inputs import require_model_folder
from spar.engine.placement import resolve_device, resolve_dtype
from spar.engine.protocol import EngineInfo
from spar.errors import FailedPrecondition

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model on its device, in eval mode, with what an engine needs around it."""

    model: Any
    tokenizer: Any
    """For the event loop: prompt rendering."""
    decoder: Any
    """For the engine's worker thread: decoding (tokenizers are not shared across threads)."""
    info: EngineInfo
    settings: EngineSettings


def load_model(settings: Settings, model_path: Path | None = None) -> LoadedModel:
    """Loads the model of ``settings`` (blocking, seconds)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = require_model_folder(model_path or settings.model_path())
    e = settings.engine
    device = resolve_device(e.device, torch.cuda.is_available())
    # float32 on every CPU under auto: in bfloat16 the hf engines' greedy answers change
    # with the batch a request shares (padding, other rows), which vLLM's do not.
    dtype = resolve_dtype(e, device, native_cpu_bf16=False)
    torch.manual_seed(e.seed)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=getattr(torch, dtype), attn_implementation="sdpa"
        )
        tokenizer = AutoTokenizer.from_pretrained(path)
        decoder = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise FailedPrecondition(f"could not load the model from {path}: {exc}") from exc
    positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and e.max_model_len > positions:
        raise FailedPrecondition(
            f"SPAR_ENGINE__MAX_MODEL_LEN={e.max_model_len} exceeds the {positions} "
            f"positions of the model in {path}; lower it to at most {positions}"
        )
    model.to(device).eval()
    info = EngineInfo(
        model=str(path),
        max_model_len=e.max_model_len,
        max_lora_rank=e.max_lora_rank,
        device=device,
        extra={
            "engine": "hf",
            "dtype": dtype,
            "max_batch_sequences": str(e.max_batch_sequences),
        },
    )
    log.info("hf engine: %s on %s in %s", path.name, device, dtype)
    return LoadedModel(model, tokenizer, decoder, info, e)


def special_ids(model: Any, tokenizer: Any) -> tuple[int, set[int]]:
    """The pad id and the ids that end a sample (EOS)."""
    eos: set[int] = set()
    configured = model.generation_config.eos_token_id
    if isinstance(configured, int):
        eos.add(configured)
    elif configured:
        eos.update(configured)
    if tokenizer.eos_token_id is not None:
        eos.add(int(tokenizer.eos_token_id))
    if not eos:
        raise FailedPrecondition("the model defines no EOS token; the hf engine needs one")
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = model.generation_config.pad_token_id
    if pad is None:
        pad = min(eos)
    return int(pad), eos
