"""The audit trail: one record per rollout, rollback and promotion decision, never rewritten.

``<state_dir>/audit.jsonl`` (``SPAR_COORDINATOR__AUDIT_PATH``) holds one JSON object a
line: what happened (``action``), to which role and adapter version, the evaluation
evidence, the decision and who or what made it (``policy`` or ``operator:<name>``), the
replicas switched, the result and the time. Lines are only ever appended (and fsynced),
so the file is the history as it happened; each record carries the sha256 of the line
before it, so a record edited, removed or reordered afterwards breaks the chain that
:meth:`AuditLog.verify` (and ``spar audit``) checks.

A crash can leave a torn last line; readers skip it and the next append seals it, and
the chain runs over the records that were written whole.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.coordinator.journal import append_lines

ACTIONS = ("rollout", "rollback", "reject", "await_approval")
"""What a record is about: a version went live (``rollout``), an operator returned a role
to a version (``rollback``), a candidate was dropped (``reject``), or a candidate that
passed evaluation waits for an operator (``await_approval``)."""

POLICY = "policy"
"""``decided_by`` of decisions the promotion policy made by itself."""


def operator(name: str, peer: str = "") -> str:
    """``decided_by`` of a person's decision: ``operator:<name>`` (and where it came from)."""
    who = f"operator:{name.strip() or 'unknown'}"
    return f"{who} ({peer})" if peer else who


@dataclass(frozen=True)
class AuditEntry:
    """What the caller knows about one event; :class:`AuditLog` adds sequence, time, chain."""

    action: str
    role: str
    decision: str
    decided_by: str
    iteration: int = 0
    version: Mapping[str, Any] | None = None
    """``{"name", "digest", "role", "iteration"}`` of the version the action is about."""
    previous: Mapping[str, Any] | None = None
    """The version served before, same shape."""
    reason: str = ""
    evidence: Mapping[str, Any] = field(default_factory=dict)
    """``{"baseline": EvalMetrics JSON, "candidate": EvalMetrics JSON}``, when evaluated."""
    replicas: Sequence[str] = ()
    result: str = "ok"
    error: str = ""

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"audit action {self.action!r} is not one of {ACTIONS}")
        if self.result not in ("ok", "failed"):
            raise ValueError(f"audit result {self.result!r} is not ok or failed")


def _line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _digest(line: str) -> str:
    return hashlib.sha256(line.encode()).hexdigest()


class AuditLog:
    """The append-only audit log at ``path`` (one writer: the coordinator)."""

    def __init__(
        self, path: Path, on_append: Callable[[Mapping[str, Any]], None] | None = None
    ) -> None:
        self.path = path
        self.on_append = on_append
        """Called with every record once it is on disk (metrics)."""
        self._lock = threading.Lock()
        self._tail: tuple[int, str] | None = None  # (last sequence, hash of its line)

    def _parsed(self) -> Iterator[tuple[int, str, dict[str, Any]]]:
        """(line number, line, record) of the file's whole lines. A torn last line of a
        crash is left out, and so is a torn line that a later append sealed (the only kind
        of line that cannot be read)."""
        if not self.path.is_file():
            return
        text = self.path.read_text(encoding="utf-8")
        # The text after the last newline is a torn write (or empty).
        whole = [line for line in text.split("\n")[:-1] if line.strip()]
        for number, line in enumerate(whole, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            yield number, line, record

    def _last(self) -> tuple[int, str]:
        if self._tail is None:
            seq, digest = 0, ""
            for _, line, record in self._parsed():
                seq, digest = int(record.get("sequence", seq)), _digest(line)
            self._tail = (seq, digest)
        return self._tail

    def append(self, entry: AuditEntry, *, now: datetime | None = None) -> dict[str, Any]:
        """Appends entry as the next record (fsynced before it returns); returns the record."""
        with self._lock:
            seq, previous_hash = self._last()
            record = {
                **asdict(entry),
                "version": dict(entry.version) if entry.version else None,
                "previous": dict(entry.previous) if entry.previous else None,
                "evidence": dict(entry.evidence),
                "replicas": list(entry.replicas),
                "sequence": seq + 1,
                "time": (now or datetime.now(UTC)).isoformat(timespec="milliseconds"),
                "previous_hash": previous_hash,
            }
            line = _line(record)
            append_lines(self.path, line + "\n", mode=0o640)
            self._tail = (seq + 1, _digest(line))
        if self.on_append is not None:
            self.on_append(record)
        return record

    def records(
        self, *, iteration: int = 0, role: str = "", limit: int = 0
    ) -> list[dict[str, Any]]:
        """Records, oldest first: of one iteration and/or role when given, the last
        ``limit`` when it is set."""
        out = []
        for _, _, record in self._parsed():
            if iteration and record.get("iteration") != iteration:
                continue
            if role and record.get("role") != role:
                continue
            out.append(record)
        return out[-limit:] if limit else out

    def verify(self) -> tuple[bool, str]:
        """(True, "") when every record follows the one before it; else (False, where)."""
        expected_seq, previous = 1, ""
        for number, line, record in self._parsed():
            if record.get("previous_hash") != previous:
                return False, (
                    f"line {number} (sequence {record.get('sequence')}): previous_hash does "
                    "not match the line before it; a record was edited, removed or reordered"
                )
            if record.get("sequence") != expected_seq:
                return False, (
                    f"line {number}: sequence {record.get('sequence')}, expected {expected_seq}"
                )
            expected_seq, previous = expected_seq + 1, _digest(line)
        return True, ""
