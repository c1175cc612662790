"""What every engine checks the same way: the model folder, an adapter's folder, prompt
rendering, context fit.

Pure logic over a tokenizer (no engine), so both engines give the same tokens and the
same errors for the same request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spar.adapter_files import validate_adapter_dir
from spar.engine.protocol import AdapterRef, GenerationRequest
from spar.errors import FailedPrecondition, InvalidArgument, SparError


def require_model_folder(path: Path) -> Path:
    """Returns path when it holds a Hugging Face model, else raises FailedPrecondition."""
    if not (path / "config.json").is_file():
        raise FailedPrecondition(
            f"model folder {path} does not exist or has no config.json; run "
            "`spar model prepare` (default model) or set SPAR_MODEL / --model to a "
            "Hugging Face model folder"
        )
    return path


def check_adapter_folder(ref: AdapterRef, max_rank: int) -> None:
    """The adapter's folder is a peft LoRA of at most ``max_rank`` (FailedPrecondition,
    naming the adapter, when it is not)."""
    try:
        validate_adapter_dir(ref.path, max_rank)
    except SparError as exc:
        raise FailedPrecondition(
            f"the engine could not load adapter {ref.name!r}: {exc.message}"
        ) from exc


def adapter_load_failed(ref: AdapterRef, exc: Exception) -> FailedPrecondition:
    """The error of an adapter whose weights the engine could not load."""
    return FailedPrecondition(
        f"the engine could not load adapter {ref.name!r}: {type(exc).__name__}: {exc}"
    )


def render_prompt(tokenizer: Any, request: GenerationRequest) -> list[int]:
    """Prompt token ids: the messages' text as is when ``raw``, else the chat template."""
    if request.raw:
        text = "".join(m.content for m in request.messages) + request.prefill
        ids: list[int] = tokenizer(text).input_ids
        return ids
    messages = [{"role": m.role, "content": m.content} for m in request.messages]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # jinja errors of a model's template
        raise InvalidArgument(f"the model's chat template rejected the messages: {exc}") from exc
    # A prefill starts the assistant's turn, for templates that want the answer to begin a
    # certain way ("Final Refined Output: [[start]]"); the engines return the continuation.
    ids = tokenizer(text + request.prefill, add_special_tokens=False).input_ids
    return ids


def fit_max_tokens(prompt_tokens: int, request: GenerationRequest, max_model_len: int) -> int:
    """max_tokens the request may generate after its prompt (lowered if it clamps)."""
    room = max_model_len - prompt_tokens
    if room <= 0:
        raise InvalidArgument(
            f"the prompt is {prompt_tokens} tokens; the model's context is {max_model_len} "
            "tokens. Shorten the prompt."
        )
    max_tokens = request.max_tokens
    if max_tokens > room:
        if not request.clamp_to_context:
            raise InvalidArgument(
                f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) exceeds the "
                f"model's context of {max_model_len} tokens; lower max_tokens to at most {room} "
                "or shorten the prompt."
            )
        max_tokens = room
    return max_tokens
