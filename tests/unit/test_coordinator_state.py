"""The coordinator's state folder across restarts: desired versions and iterations read
back as written, unfinished writes removed, damaged files named in a DataLoss error."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.coordinator.rollout import Version
from services.coordinator.state import StateStore
from spar.errors import DataLoss
from spar.v1 import coordinator_pb2 as pb

V1 = Version("actor-1-0123456789ab", "0123456789ab" + "0" * 52, "actor", 1)
V2 = Version("actor-2-ba9876543210", "ba9876543210" + "0" * 52, "actor", 2)


def test_a_restart_reads_back_versions_and_iterations(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.set_desired("actor", V2, V1)
    store.set_desired("refiner", None, None)
    for number, state in ((1, pb.ITERATION_STATE_SUCCEEDED), (2, pb.ITERATION_STATE_RUNNING)):
        store.save_iteration(pb.Iteration(number=number, state=state))
    # What a coordinator killed mid-write leaves: the temporary file, never a half target.
    torn = [tmp_path / ".versions.json.tmp-4242", store.iteration_dir(2) / ".iteration.json.tmp-1"]
    for path in torn:
        path.write_text('{"actor": {"act')

    restarted = StateStore(tmp_path)
    assert restarted.desired("actor") == (V2, V1)
    assert restarted.desired("refiner") == (None, None) and restarted.manages("refiner")
    assert [(i.number, i.state) for i in restarted.iterations()] == [
        (1, pb.ITERATION_STATE_SUCCEEDED),
        (2, pb.ITERATION_STATE_RUNNING),
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
    store.save_iteration(pb.Iteration(number=1, state=pb.ITERATION_STATE_SUCCEEDED))
    record = store.iteration_dir(1) / "iteration.json"
    for text in ('{"number": 1, "sta', '{"number": "one"}', "\xff\xfe"):
        record.write_bytes(text.encode("latin-1"))
        with pytest.raises(DataLoss, match=r"0001/iteration\.json is damaged"):
            StateStore(tmp_path).iterations()
