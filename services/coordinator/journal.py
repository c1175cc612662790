"""Crash-safe files of the coordinator's state directory.

Two kinds of file: whole documents written atomically (temp file, fsync, rename), and
append-only journals of keyed records. A journal may end in a torn line after a crash;
readers ignore it, and the last record of a key wins, so a resumed stage can skip the
keys it already finished without duplicating data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def write_json(path: Path, doc: Any) -> None:
    """Replaces path with doc atomically: readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w") as f:
        json.dump(doc, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    _fsync_dir(path.parent)


def read_json(path: Path, default: Any = None) -> Any:
    if not path.is_file():
        return default
    return json.loads(path.read_text())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """An append-only JSON Lines file of records that each carry a ``key``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, dict[str, Any]]:
        """Records by key (last one wins); a torn last line is ignored."""
        out: dict[str, dict[str, Any]] = {}
        if not self.path.is_file():
            return out
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # torn write of a crash; the key is redone
            if isinstance(record, dict) and "key" in record:
                out[str(record["key"])] = record
        return out

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(dict(r), sort_keys=True) + "\n" for r in records)
        if not lines:
            return
        with self.path.open("a") as f:
            if f.tell() > 0 and not self._ends_with_newline():
                f.write("\n")  # seal a torn line so the new record stays parseable
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
