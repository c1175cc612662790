"""The one narrow protocol between services and an inference engine.

Services build :class:`GenerationRequest` objects and never touch engine internals;
:mod:`spar.engine.vllm_engine` implements the protocol over vLLM's ``AsyncLLM``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

FinishReason = Literal["stop", "length", "abort", "repetition"]
"""Why a sample ended: EOS or a stop string, max_tokens, cancelled, or a loop
(:class:`LoopStop`)."""


@dataclass(frozen=True)
class Message:
    """One chat turn: role (system, user, assistant) and text."""

    role: str
    content: str


@dataclass(frozen=True)
class LoopStop:
    """Ends a sample whose generated tokens end in a loop: a run of ``min_pattern`` to
    ``max_pattern`` tokens repeated ``repeats`` times in a row (finish reason
    ``repetition``). vLLM's ``repetition_detection``; the hf engines check the same rule
    (:func:`spar.engine.loops.ends_in_loop`). A pattern shorter than ``min_pattern`` is
    caught once its repeats add up to a longer one."""

    min_pattern: int = 6
    max_pattern: int = 64
    repeats: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.min_pattern <= self.max_pattern:
            raise ValueError(
                f"LoopStop needs 1 <= min_pattern ({self.min_pattern}) <= max_pattern "
                f"({self.max_pattern})"
            )
        if self.repeats < 2:
            raise ValueError(f"LoopStop.repeats={self.repeats} must be at least 2")


@dataclass(frozen=True)
class AdapterRef:
    """A loaded adapter as the engine knows it. ``engine_id`` is never reused."""

    name: str
    engine_id: int
    path: Path


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt, n samples. ``messages`` get the chat template unless ``raw``."""

    messages: Sequence[Message]
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: Sequence[str] = ()
    seed: int | None = None
    adapter: AdapterRef | None = None
    raw: bool = False
    request_id: str = ""
    clamp_to_context: bool = False
    """Lower max_tokens to what fits after the prompt instead of refusing the request."""
    prefill: str = ""
    """Text the assistant turn starts with (after the chat template's generation prompt);
    the model continues it. Samples hold only the continuation, not the prefill."""
    loop_stop: LoopStop | None = None
    """End a sample early once it loops (finish reason ``repetition``); None: never."""


@dataclass(frozen=True)
class Sample:
    """One of the n samples of a request, with why it ended."""

    index: int
    text: str
    finish_reason: FinishReason
    completion_tokens: int


@dataclass(frozen=True)
class Usage:
    """Prompt and generated tokens of one request (prompt tokens counted once for n)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0


@dataclass(frozen=True)
class GenerationResult:
    """All samples of a finished request and its usage."""

    samples: list[Sample]
    usage: Usage


@dataclass(frozen=True)
class StreamDelta:
    """New text of one sample. ``usage`` is set on the stream's last delta only."""

    index: int
    text: str
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


@dataclass
class EngineInfo:
    """What a started engine serves: model, context length, LoRA rank limit, device."""

    model: str
    max_model_len: int
    max_lora_rank: int
    device: str
    extra: dict[str, str] = field(default_factory=dict)


class Engine(Protocol):
    """What a service may ask of an engine. Errors are :class:`spar.errors.SparError`."""

    @property
    def info(self) -> EngineInfo: ...

    def prompt_tokens(self, request: GenerationRequest) -> int:
        """Tokens of the rendered prompt (raises InvalidArgument when it cannot fit)."""
        ...

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """All samples, when finished. Cancelling the awaiting task aborts the work."""
        ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        """Deltas as they are produced. Closing the iterator aborts the work."""
        ...

    async def add_adapter(self, adapter: AdapterRef) -> None:
        """Loads an adapter; raises FailedPrecondition when the files are unusable."""
        ...

    async def remove_adapter(self, adapter: AdapterRef) -> None: ...

    async def list_adapters(self) -> set[int]:
        """engine_ids of the adapters loaded now."""
        ...

    async def unfinished_requests(self) -> int:
        """Requests the engine is still working on (used to prove aborts happen)."""
        ...

    async def check_health(self) -> None:
        """Raises Unavailable when the engine is dead."""
        ...

    def shutdown(self) -> None: ...
