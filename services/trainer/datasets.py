"""Training datasets: per-record validation, canonical form, deduplication, digest. No I/O.

Records are in spar's training formats (spar.datasets: DPO ``{prompt, chosen, rejected}``;
SFT ``{prompt, completion}`` or ``{messages}``). A dataset's digest is the sha256 of its
canonical JSON Lines (sorted keys, compact, one record a line, first occurrence order),
so the same records always get the same digest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from services.trainer.hyperparameters import Kind
from spar.datasets import check_record
from spar.errors import InvalidArgument


@dataclass(frozen=True)
class DatasetLimits:
    """Size limits of an upload (from the trainer's settings)."""

    max_record_bytes: int = 256 * 1024
    """Of one record's canonical JSON line."""
    max_records: int = 100_000
    max_bytes: int = 256 * 1024 * 1024
    """Of the whole canonical dataset."""


@dataclass(frozen=True)
class Dataset:
    """A validated, deduplicated dataset in canonical form."""

    kind: Kind
    records: list[dict[str, Any]]
    """Unique records, in the order they first came."""
    digest: str
    """sha256 of ``canonical``: the dataset's name."""
    duplicates_dropped: int
    """Records dropped as repeats of an earlier one."""
    canonical: bytes
    """The records as canonical JSON Lines (what is stored)."""


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
