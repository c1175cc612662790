from __future__ import annotations

from pathlib import Path

from services.coordinator.journal import Journal, read_json, write_json


def test_torn_last_line_is_ignored_and_sealed(tmp_path: Path) -> None:
    j = Journal(tmp_path / "x.jsonl")
    j.append([{"key": "a", "v": 1}, {"key": "b", "v": 2}])
    with j.path.open("a") as f:
        f.write('{"key": "c", "v"')  # a crash mid-write
    assert set(j.read()) == {"a", "b"}
    j.append([{"key": "c", "v": 3}])
    assert j.read()["c"]["v"] == 3


def test_last_record_of_a_key_wins(tmp_path: Path) -> None:
    j = Journal(tmp_path / "x.jsonl")
    j.append([{"key": "a", "v": 1}])
    j.append([{"key": "a", "v": 2}])
    assert j.read() == {"a": {"key": "a", "v": 2}}


def test_atomic_json(tmp_path: Path) -> None:
    p = tmp_path / "d" / "x.json"
    assert read_json(p, {"default": True}) == {"default": True}
    write_json(p, {"a": 1})
    write_json(p, {"a": 2})
    assert read_json(p) == {"a": 2}
    assert [f.name for f in p.parent.iterdir()] == ["x.json"]
