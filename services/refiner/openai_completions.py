"""The OpenAI chat-completions responses of the refiner's HTTP endpoint, from spar's
protobuf messages. Pure logic: no I/O, no web framework.

Responses are OpenAI's shapes plus one extension field, ``spar``, derived from the
``AnswerResponse`` message by walking its fields: a field added to the contract
appears in the extension without a change here. ``usage`` counts every token spent for
the answer, in every phase of ``SearchCost`` (the actor's answer, judge votes,
refinements). Requests and errors are services.refiner.openai_protocol.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from spar.client.enums import FINISH_REASON, enum_of
from spar.v1 import actor_pb2, common_pb2
from spar.v1 import refiner_pb2 as pb


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def to_json(message: Message) -> dict[str, Any]:
    """A message as JSON, every field present: enums as lowercase names without their
    prefix, durations as seconds (``wall_time`` becomes ``wall_time_s``)."""
    out: dict[str, Any] = {}
    descriptor: Descriptor = message.DESCRIPTOR
    for field in descriptor.fields:
        value = getattr(message, field.name)
        message_type = field.message_type
        if message_type is not None and message_type.GetOptions().map_entry:
            out[field.name] = MessageToDict(message, preserving_proto_field_name=True).get(
                field.name, {}
            )
            continue
        name = field.name
        if message_type is not None and message_type.full_name == DURATION:
            name += "_s"
        if field.is_repeated:
            out[name] = [_value(field, v) for v in value]
        else:
            out[name] = _value(field, value)
    return out


DURATION = Duration.DESCRIPTOR.full_name
WELL_KNOWN = "google.protobuf."


def _value(field: FieldDescriptor, value: Any) -> Any:
    if field.message_type is not None:
        if field.message_type.full_name == DURATION:
            return round(value.seconds + value.nanos / 1e9, 6)
        if field.message_type.full_name.startswith(WELL_KNOWN):  # Struct, Timestamp, ...
            return MessageToDict(value)
        return to_json(value)
    if field.enum_type is not None:
        return enum_of(field.enum_type).label(value)
    return value


def phases(cost: common_pb2.SearchCost) -> dict[str, dict[str, int]]:
    """Token counts of every phase of a SearchCost (every PhaseTokens field)."""
    out = {}
    for field in cost.DESCRIPTOR.fields:
        if field.message_type is common_pb2.PhaseTokens.DESCRIPTOR and not field.is_repeated:
            p = getattr(cost, field.name)
            out[field.name] = {
                "prompt_tokens": p.prompt_tokens,
                "completion_tokens": p.completion_tokens,
                "total_tokens": p.prompt_tokens + p.completion_tokens,
                "requests": p.requests,
            }
    return out


def usage_of(by_phase: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """OpenAI's usage: the sum over every phase."""
    prompt = sum(p["prompt_tokens"] for p in by_phase.values())
    completion = sum(p["completion_tokens"] for p in by_phase.values())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def answer_extension(reply: pb.AnswerResponse) -> dict[str, Any]:
    """The ``spar`` extension of a refined answer: every AnswerResponse field but the
    answer itself, the cost flattened (outcome, nodes, judge samples, wall time) with
    its phases under ``usage_by_phase``."""
    out: dict[str, Any] = {"model_kind": "refined", **to_json(reply)}
    out.pop("answer", None)
    cost = out.pop("cost", {})
    by_phase = phases(reply.cost)
    for name in by_phase:
        cost.pop(name, None)
    cost.pop("outcome", None)  # the reply's own outcome says the same
    out.update(cost)
    out["usage_by_phase"] = by_phase
    return out


def answer_completion(
    reply: pb.AnswerResponse, model: str, *, trace: bool, id: str | None = None
) -> dict[str, Any]:
    """A chat.completion object for a refined answer."""
    extension = answer_extension(reply)
    if not trace:
        extension.pop("trace", None)
    return {
        "id": id or completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.answer},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": usage_of(extension["usage_by_phase"]),
        "spar": extension,
    }


def actor_usage(usage: common_pb2.Usage) -> dict[str, dict[str, int]]:
    return {
        "generate": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            "requests": 1,
        }
    }


def actor_extension(adapter: str, usage: common_pb2.Usage, wall_time_s: float) -> dict[str, Any]:
    return {
        "model_kind": "actor",
        "actor_adapter": adapter,
        "wall_time_s": round(wall_time_s, 6),
        "usage_by_phase": actor_usage(usage),
    }


def actor_completion(
    reply: actor_pb2.GenerateResponse, model: str, wall_time_s: float
) -> dict[str, Any]:
    """A chat.completion object for the actor's plain samples."""
    extension = actor_extension(reply.adapter, reply.usage, wall_time_s)
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": c.index,
                "message": {"role": "assistant", "content": c.text},
                "finish_reason": FINISH_REASON.get(c.finish_reason, "stop"),
                "logprobs": None,
            }
            for c in reply.completions
        ],
        "usage": usage_of(extension["usage_by_phase"]),
        "spar": extension,
    }


def chunk(
    id: str,
    created: int,
    model: str,
    choices: list[dict[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    """A chat.completion.chunk object."""
    return {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
        **extra,
    }


def delta(index: int, *, role: str | None = None, content: str | None = None,
          finish_reason: str | None = None) -> dict[str, Any]:  # fmt: skip
    d: dict[str, Any] = {}
    if role is not None:
        d["role"] = role
    if content is not None:
        d["content"] = content
    return {"index": index, "delta": d, "finish_reason": finish_reason, "logprobs": None}


_PIECE = re.compile(r"\s*\S+\s*")


def pieces(text: str, words: int = 8) -> Iterator[str]:
    """The text as content deltas of a few words each; they join back to the text."""
    found = _PIECE.findall(text)
    if "".join(found) != text:  # whitespace only, or empty
        yield text
        return
    for i in range(0, len(found), words):
        yield "".join(found[i : i + words])
