"""The coordinator's state folder across restarts: desired versions and iterations read
back as written, unfinished writes removed, damaged files named in a DataLoss error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from google.protobuf import json_format

from services.coordinator.iteration_messages import iteration_message
from services.coordinator.iteration_record import ITERATION_SCHEMA, IterationRecord
from services.coordinator.rollout import Version
from services.coordinator.state import StateStore
from spar.errors import DataLoss

V1 = Version("actor-1-0123456789ab", "0123456789ab" + "0" * 52, "actor", 1)
V2 = Version("actor-2-ba9876543210", "ba9876543210" + "0" * 52, "actor", 2)


def test_a_restart_reads_back_versions_and_iterations(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.set_desired("actor", V2, V1)
    store.set_desired("refiner", None, None)
    for number, state in ((1, "succeeded"), (2, "running")):
        store.save_iteration(IterationRecord(number=number, state=state))  # type: ignore[arg-type]
    # What a coordinator killed mid-write leaves: the temporary file, never a half target.
    torn = [tmp_path / ".versions.json.tmp-4242", store.iteration_dir(2) / ".iteration.json.tmp-1"]
    for path in torn:
        path.write_text('{"actor": {"act')

    restarted = StateStore(tmp_path)
    assert restarted.desired("actor") == (V2, V1)
    assert restarted.desired("refiner") == (None, None) and restarted.manages("refiner")
    assert [(i.number, i.state) for i in restarted.iterations()] == [
        (1, "succeeded"),
        (2, "running"),
    ]
    assert restarted.last_number() == 2
    assert not any(path.exists() for path in torn)


@pytest.mark.parametrize(
    "text",
    ['{"actor": {"active": {"name": "a"', "[1, 2]", '{"actor": {"active": {"nom": "a"}}}'],
)
def test_a_damaged_versions_file_is_a_clear_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "versions.json").write_text(text)
    store = StateStore(tmp_path)
    with pytest.raises(DataLoss, match=r"versions\.json is damaged.*restore it"):
        store.desired("actor")


def test_a_damaged_iteration_record_is_a_clear_error(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save_iteration(IterationRecord(number=1, state="succeeded"))
    record = store.iteration_dir(1) / "iteration.json"
    for text in ('{"number": 1, "sta', '{"number": "one"}', "\xff\xfe"):
        record.write_bytes(text.encode("latin-1"))
        with pytest.raises(DataLoss, match=r"0001/iteration\.json is damaged"):
            StateStore(tmp_path).iterations()


STATE_V0 = Path(__file__).resolve().parents[1] / "data" / "state_v0" / "coordinator"


def test_an_older_coordinators_state_is_migrated(tmp_path: Path) -> None:
    """A state folder as coordinators before spar's iteration schema left it (protobuf
    JSON records, tests/data/state_v0): every iteration reads back, the unfinished one
    resumes, and clients see what they saw before."""
    shutil.copytree(STATE_V0, tmp_path, dirs_exist_ok=True)
    store = StateStore(tmp_path)
    assert store.desired("actor") == (
        Version("actor-2-bbbbbbbbbbbb", "b" * 64, "actor", 2),
        Version("actor-1-aaaaaaaaaaaa", "a" * 64, "actor", 1),
    )
    first, second, third = store.iterations()
    assert (first.state, first.stage, second.state, third.state, third.stage) == (
        "rejected", "done", "succeeded", "running", "judge",
    )  # fmt: skip
    assert first.warmup is not None and first.warmup.mix == {"repair": 1, "search": 2}
    assert first.warmup.version == Version("refiner-0-dddddddddddd", "d" * 64, "refiner", 0)
    assert first.warmup.duration_s == 120.0 and first.actor_candidate is None
    assert second.counts.search_outcomes == {"refined": 4, "exhausted": 2}
    assert second.counts.dpo_pairs == 3 and second.counts.judge_relabelled == 1
    assert second.candidate_eval is not None and second.candidate_eval.prompt_level_strict == 0.625
    assert second.baseline_eval is not None
    assert second.baseline_eval.criteria[0].id == "punctuation:no_comma"
    assert second.search_cost is not None and second.search_cost.judge.requests == 30
    assert second.search_cost.unusable == {"empty": 1, "duplicate": 2}
    assert [(t.stage, t.seconds) for t in second.timings] == [("prompts", 0.01), ("sample", 31.25)]
    assert second.started_at is not None
    assert second.started_at.isoformat() == "2025-12-06T05:46:40.123456+00:00"
    assert second.refiner_candidate is not None and second.refiner_candidate.iteration == 2
    assert third.finished_at is None and store.last_number() == 3
    # Clients see the record as before (the old file was the wire message's JSON).
    old = json.loads((STATE_V0 / "iterations" / "0002" / "iteration.json").read_text())
    message = json_format.MessageToDict(iteration_message(second), preserving_proto_field_name=True)
    for key in ("number", "state", "stage", "counts", "actor_candidate", "baseline_eval",
                "candidate_eval", "timings", "started_at", "finished_at", "decision"):  # fmt: skip
        assert message[key] == old[key], key
    # Written again, a record is in spar's schema and reads back the same.
    store.save_iteration(second)
    doc = json.loads((store.iteration_dir(2) / "iteration.json").read_text())
    assert doc["schema"] == ITERATION_SCHEMA and doc["state"] == "succeeded"
    assert store.load_iteration(2) == second
