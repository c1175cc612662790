"""Turns a client's prompt and SamplingParams into an engine request, within limits.

Pure logic: every limit violation is an InvalidArgument that says what to change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from spar.config import Limits, SamplingDefaults
from spar.engine.protocol import GenerationRequest, Message
from spar.errors import InvalidArgument
from spar.v1 import common_pb2

ROLES = ("system", "user", "assistant")


def messages_from(prompt: str, messages: Sequence[common_pb2.ChatMessage]) -> list[Message]:
    if prompt and messages:
        raise InvalidArgument("set either prompt or messages, not both")
    if prompt:
        out = [Message("user", prompt)]
    else:
        out = [Message(m.role, m.content) for m in messages]
        for i, m in enumerate(out):
            if m.role not in ROLES:
                raise InvalidArgument(
                    f"messages[{i}].role is {m.role!r}; use one of {', '.join(ROLES)}"
                )
    if not any(m.content.strip() for m in out):
        raise InvalidArgument("the prompt is empty: set prompt (or messages) to some text")
    return out


def check_chat_size(chat: Sequence[Message], limits: Limits, field: str = "the prompt") -> None:
    """The chat (from the request's ``field``) is within the message and character limits."""
    if len(chat) > limits.max_messages:
        raise InvalidArgument(
            f"{len(chat)} messages exceed the server limit {limits.max_messages} "
            "(SPAR_LIMITS__MAX_MESSAGES)"
        )
    chars = sum(len(m.content) for m in chat)
    if chars > limits.max_prompt_chars:
        raise InvalidArgument(
            f"{field} is {chars} characters; the server limit is {limits.max_prompt_chars} "
            "(SPAR_LIMITS__MAX_PROMPT_CHARS)"
        )


def generation_request(
    messages: list[Message],
    sampling: common_pb2.SamplingParams,
    *,
    limits: Limits,
    defaults: SamplingDefaults,
    raw: bool = False,
    request_id: str = "",
) -> GenerationRequest:
    check_chat_size(messages, limits)
    if raw and len(messages) != 1:
        raise InvalidArgument("raw_prompt works with prompt only, not with messages")
    n = sampling.n or 1
    if n > limits.max_n:
        raise InvalidArgument(f"sampling.n={n} exceeds the server limit {limits.max_n}")
    max_tokens = sampling.max_tokens or limits.default_max_tokens
    if sampling.max_tokens > limits.max_tokens:
        raise InvalidArgument(
            f"sampling.max_tokens={sampling.max_tokens} exceeds the server limit "
            f"{limits.max_tokens}"
        )
    temperature = sampling.temperature if sampling.HasField("temperature") else defaults.temperature
    if not math.isfinite(temperature) or not 0.0 <= temperature <= 2.0:
        raise InvalidArgument(f"sampling.temperature={temperature} must be within [0, 2]")
    top_p = sampling.top_p if sampling.HasField("top_p") else defaults.top_p
    if not math.isfinite(top_p) or not 0.0 < top_p <= 1.0:
        raise InvalidArgument(f"sampling.top_p={top_p} must be within (0, 1]")
    stop = list(sampling.stop)
    if len(stop) > limits.max_stop_strings:
        raise InvalidArgument(
            f"{len(stop)} stop strings exceed the server limit {limits.max_stop_strings}"
        )
    if any(not s or len(s) > limits.max_stop_chars for s in stop):
        raise InvalidArgument(
            f"every stop string must have 1 to {limits.max_stop_chars} characters"
        )
    return GenerationRequest(
        messages=messages,
        n=n,
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,
        stop=stop,
        seed=sampling.seed if sampling.HasField("seed") else None,
        raw=raw,
        request_id=request_id,
        # An unset max_tokens means "as much as the default allows and the context fits".
        clamp_to_context=sampling.max_tokens == 0,
    )
