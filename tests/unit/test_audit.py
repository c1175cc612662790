"""The append-only audit log: records, filters, the hash chain, torn lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.coordinator.audit import AuditEntry, AuditLog, operator


def entry(action: str = "rollout", role: str = "actor", iteration: int = 1) -> AuditEntry:
    return AuditEntry(
        action=action,
        role=role,
        iteration=iteration,
        decision="promote",
        decided_by="policy",
        version={"name": f"{role}-{iteration}-aaaaaaaaaaaa", "digest": "a" * 64},
        replicas=["10.0.0.1:50051"],
    )


def test_records_come_back_in_order_with_sequence_time_and_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append(entry(iteration=1))
    log.append(entry("rollback", "refiner", 0))
    log.append(entry(iteration=2))
    records = log.records()
    assert [r["sequence"] for r in records] == [1, 2, 3]
    assert [r["action"] for r in records] == ["rollout", "rollback", "rollout"]
    assert records[0]["previous_hash"] == "" and records[1]["previous_hash"]
    assert records[0]["time"].endswith("+00:00")
    assert log.verify() == (True, "")


def test_filters_and_limit(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(1, 5):
        log.append(entry(iteration=i))
        log.append(entry(role="refiner", iteration=i))
    assert [r["role"] for r in log.records(iteration=3)] == ["actor", "refiner"]
    assert {r["role"] for r in log.records(role="refiner")} == {"refiner"}
    assert [r["iteration"] for r in log.records(role="actor", limit=2)] == [3, 4]


def test_a_reopened_log_continues_the_sequence_and_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(path).append(entry(iteration=1))
    AuditLog(path).append(entry(iteration=2))
    assert [r["sequence"] for r in AuditLog(path).records()] == [1, 2]
    assert AuditLog(path).verify() == (True, "")


def three_records(path: Path) -> list[str]:
    """The lines of a new audit log at path with the rollouts of iterations 1 to 3."""
    log = AuditLog(path)
    for i in range(3):
        log.append(entry(iteration=i + 1))
    return path.read_text().splitlines()


def test_an_edited_record_breaks_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = three_records(path)
    doc = json.loads(lines[0])
    doc["decided_by"] = "operator:mallory"
    lines[0] = json.dumps(doc, sort_keys=True)
    path.write_text("\n".join(lines) + "\n")
    intact, where = AuditLog(path).verify()
    assert not intact and "line 2" in where


def test_a_removed_record_breaks_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = three_records(path)
    path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    assert not AuditLog(path).verify()[0]


def test_a_torn_last_line_is_skipped_and_sealed(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(path).append(entry(iteration=1))
    with path.open("a") as f:
        f.write('{"action": "rollout", "seq')  # a crash mid-write
    log = AuditLog(path)
    assert [r["sequence"] for r in log.records()] == [1]
    log.append(entry(iteration=2))
    assert [r["sequence"] for r in log.records()] == [1, 2]
    assert log.verify() == (True, "")


def test_bad_actions_and_results_are_refused() -> None:
    with pytest.raises(ValueError, match="audit action"):
        AuditEntry(action="deploy", role="actor", decision="x", decided_by="policy")
    with pytest.raises(ValueError, match="audit result"):
        AuditEntry(action="rollout", role="actor", decision="x", decided_by="p", result="meh")


def test_operator_names_the_person_and_the_peer() -> None:
    assert operator("alice", "ipv4:10.1.2.3:5555") == "operator:alice (ipv4:10.1.2.3:5555)"
    assert operator("  ") == "operator:unknown"


def test_on_append_sees_every_record(tmp_path: Path) -> None:
    seen: list[str] = []
    log = AuditLog(tmp_path / "a.jsonl", on_append=lambda r: seen.append(r["action"]))
    log.append(entry())
    log.append(entry("reject"))
    assert seen == ["rollout", "reject"]
