"""The training record formats every service agrees on, and how a JSON Lines file of
them is read. Pure logic.

Records follow TRL's conventions: DPO ``{prompt, chosen, rejected}``; SFT
``{prompt, completion}`` or ``{messages}`` (a chat whose last turn is the assistant's).
The coordinator writes them (services.coordinator.data), the trainer checks every
uploaded record with :func:`check_record`, and ``spar trainer`` reads files of them with
:func:`parse_jsonl`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from spar.errors import InvalidArgument

DatasetKind = Literal["dpo", "sft"]
CHAT_ROLES = ("system", "user", "assistant")


def check_record(kind: DatasetKind, record: dict[str, Any], where: str) -> dict[str, Any]:
    """The canonical form of one record, or InvalidArgument saying what is wrong with it."""
    if kind == "dpo":
        return _check_dpo(record, where)
    return _check_sft(record, where)


def _text(record: dict[str, Any], key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise InvalidArgument(f"{where}: {key!r} must be a string")
    if not value.strip():
        raise InvalidArgument(f"{where}: {key!r} is empty")
    return value


def _check_dpo(record: dict[str, Any], where: str) -> dict[str, Any]:
    extra = set(record) - {"prompt", "chosen", "rejected"}
    if extra:
        raise InvalidArgument(
            f"{where}: unexpected fields {sorted(extra)}; DPO records are "
            "{prompt, chosen, rejected}"
        )
    clean = {k: _text(record, k, where) for k in ("prompt", "chosen", "rejected")}
    if clean["chosen"] == clean["rejected"]:
        raise InvalidArgument(
            f"{where}: 'chosen' equals 'rejected'; a preference pair needs two different responses"
        )
    return clean


def _check_sft(record: dict[str, Any], where: str) -> dict[str, Any]:
    messages = record.get("messages")
    has_pair = bool(record.get("prompt")) or bool(record.get("completion"))
    extra = set(record) - {"prompt", "completion", "messages"}
    if extra:
        raise InvalidArgument(
            f"{where}: unexpected fields {sorted(extra)}; SFT records are "
            "{prompt, completion} or {messages}"
        )
    if messages and has_pair:
        raise InvalidArgument(
            f"{where}: set either {{prompt, completion}} or {{messages}}, not both"
        )
    if messages:
        return {"messages": _check_messages(messages, where)}
    if not has_pair:
        raise InvalidArgument(
            f"{where}: an SFT record needs {{prompt, completion}} or {{messages}}"
        )
    return {k: _text(record, k, where) for k in ("prompt", "completion")}


def _check_messages(messages: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(messages, list):
        raise InvalidArgument(f"{where}: 'messages' must be a list of {{role, content}}")
    clean = []
    for i, message in enumerate(messages):
        at = f"{where}: messages[{i}]"
        if not isinstance(message, dict) or set(message) - {"role", "content"}:
            raise InvalidArgument(f"{at} must be an object with 'role' and 'content'")
        role = message.get("role")
        if role not in CHAT_ROLES:
            raise InvalidArgument(f"{at}.role={role!r} must be one of {', '.join(CHAT_ROLES)}")
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            raise InvalidArgument(f"{at}.content must be a non-empty string")
        clean.append({"role": role, "content": content})
    if clean[-1]["role"] != "assistant":
        raise InvalidArgument(
            f"{where}: the last message must be the assistant's (the turn that is trained on)"
        )
    if not any(m["role"] == "user" for m in clean[:-1]):
        raise InvalidArgument(f"{where}: the conversation needs a user message before the answer")
    return clean


def parse_jsonl(text: str, source: str = "dataset") -> list[dict[str, Any]]:
    """Records of a JSON Lines text (blank lines skipped); errors name the line."""
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"{source} line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise InvalidArgument(f"{source} line {number}: a record must be a JSON object")
        out.append(record)
    return out
