from __future__ import annotations

import os
from pathlib import Path

from services.coordinator.journal import Journal, read_json, remove_unfinished_writes, write_json


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


def test_a_torn_tail_of_any_bytes_is_ignored(tmp_path: Path) -> None:
    j = Journal(tmp_path / "x.jsonl")
    j.append([{"key": "a", "v": 1}])
    with j.path.open("ab") as f:
        f.write(b'{"key": "b", \xff\xfe\x00\x00')  # a power cut mid-write
    assert set(j.read()) == {"a"}
    j.append([{"key": "b", "v": 2}])
    assert j.read()["b"] == {"key": "b", "v": 2}


def test_write_json_never_reuses_a_temporary_name(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    # A dead process's temporary file with this process's pid (pids are reused).
    stale = tmp_path / f".x.json.tmp-{os.getpid()}"
    stale.write_text('{"stale"')
    write_json(p, {"a": 1})
    assert read_json(p) == {"a": 1} and stale.read_text() == '{"stale"'
    assert remove_unfinished_writes(tmp_path) == 1 and not stale.exists()
