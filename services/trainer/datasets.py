"""Training datasets: per-record validation, canonical form, deduplication, digest. No I/O.

Records follow TRL's conventions: DPO ``{prompt, chosen, rejected}``; SFT
``{prompt, completion}`` or ``{messages}``. A dataset's digest is the sha256 of its
canonical JSON Lines (sorted keys, compact, one record a line, first occurrence order),
so the same records always get the same digest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from services.trainer.hyperparameters import Kind
from spar.errors import InvalidArgument

CHAT_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class DatasetLimits:
    max_record_bytes: int = 256 * 1024
    max_records: int = 100_000
    max_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class Dataset:
    kind: Kind
    records: list[dict[str, Any]]
    digest: str
    duplicates_dropped: int
    canonical: bytes


def canonical_line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class DatasetBuilder:
    """Accumulates records of one upload; ``add`` raises InvalidArgument naming the record."""

    kind: Kind
    limits: DatasetLimits = field(default_factory=DatasetLimits)
    _lines: list[bytes] = field(default_factory=list)
    _records: list[dict[str, Any]] = field(default_factory=list)
    _seen: set[bytes] = field(default_factory=set)
    _bytes: int = 0
    _received: int = 0

    @property
    def received(self) -> int:
        return self._received

    def add(self, record: dict[str, Any]) -> None:
        self._received += 1
        where = f"record {self._received}"
        if self._received > self.limits.max_records:
            raise InvalidArgument(
                f"the dataset has more than {self.limits.max_records} records (the server limit "
                "SPAR_TRAINER__MAX_DATASET_RECORDS); split it or raise the limit"
            )
        clean = check_record(self.kind, record, where)
        line = canonical_line(clean)
        if len(line) > self.limits.max_record_bytes:
            raise InvalidArgument(
                f"{where}: {len(line)} bytes exceeds the per-record limit of "
                f"{self.limits.max_record_bytes} bytes (SPAR_TRAINER__MAX_RECORD_BYTES)"
            )
        if line in self._seen:
            return
        self._bytes += len(line) + 1
        if self._bytes > self.limits.max_bytes:
            raise InvalidArgument(
                f"the dataset exceeds {self.limits.max_bytes} bytes at {where} (the server limit "
                "SPAR_TRAINER__MAX_DATASET_BYTES)"
            )
        self._seen.add(line)
        self._lines.append(line)
        self._records.append(clean)

    def finish(self) -> Dataset:
        if not self._records:
            raise InvalidArgument(
                "the dataset is empty: send at least one record after the header"
                if self._received == 0
                else "the dataset is empty"
            )
        canonical = b"".join(line + b"\n" for line in self._lines)
        return Dataset(
            kind=self.kind,
            records=list(self._records),
            digest=hashlib.sha256(canonical).hexdigest(),
            duplicates_dropped=self._received - len(self._records),
            canonical=canonical,
        )


def check_record(kind: Kind, record: dict[str, Any], where: str) -> dict[str, Any]:
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


def to_trl(kind: Kind, record: dict[str, Any]) -> dict[str, Any]:
    """A canonical record in TRL's conversational form, so training sees the chat template
    exactly as the serving engine applies it. SFT conversations train the last turn only."""
    if kind == "dpo":
        return {
            "prompt": [{"role": "user", "content": record["prompt"]}],
            "chosen": [{"role": "assistant", "content": record["chosen"]}],
            "rejected": [{"role": "assistant", "content": record["rejected"]}],
        }
    if "messages" in record:
        messages = record["messages"]
        return {"prompt": messages[:-1], "completion": messages[-1:]}
    return {
        "prompt": [{"role": "user", "content": record["prompt"]}],
        "completion": [{"role": "assistant", "content": record["completion"]}],
    }


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
