"""Crash-safe files of the coordinator's state directory.

Two kinds of file: whole documents written atomically (temp file, fsync, rename), and
append-only journals of keyed records. A journal may end in a torn line after a crash;
readers ignore it, and the last record of a key wins, so a resumed stage can skip the
keys it already finished without duplicating data. A killed write leaves only its
temporary file, which :func:`remove_unfinished_writes` deletes at the next start.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from spar.atomic_files import TMP_SUFFIX, write_atomic
from spar.errors import DataLoss

log = logging.getLogger(__name__)

#: Temporary files of earlier versions of write_json (``.<name>.tmp-<random>``); write_json
#: now writes through spar.atomic_files, whose temporaries end in TMP_SUFFIX.
TMP_MARK = ".tmp-"


def write_json(path: Path, doc: Any) -> None:
    """Replaces path with doc atomically: readers see the old or the new file, never half."""
    write_atomic(path, json.dumps(doc, indent=2, sort_keys=True).encode())


def read_json(path: Path, default: Any = None) -> Any:
    """The document at path; default when there is none. A damaged one is DataLoss that
    names the file, not a traceback."""
    try:
        text = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return default
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataLoss(
            f"{path} is damaged ({exc}); spar writes it atomically, so it was changed "
            "outside spar: restore it from a backup, or move it away to start it over"
        ) from None


def remove_unfinished_writes(root: Path) -> int:
    """Deletes what killed writes left under root (their targets are intact)."""
    removed = 0
    leftovers = [*root.rglob(f".*{TMP_MARK}*"), *root.rglob(f".*{TMP_SUFFIX}")]
    for path in leftovers:
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.warning("removed %d unfinished write(s) of an interrupted coordinator", removed)
    return removed


def append_lines(path: Path, lines: str, mode: int = 0o666) -> None:
    """Appends whole lines to a JSON Lines file (made with ``mode`` if new) and fsyncs them.
    A torn last line of a crash is sealed with a newline first, so the new lines stay
    parseable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_APPEND: every write lands at the end, whatever else holds the file open.
    with open(path, "ab", opener=lambda p, flags: os.open(p, flags, mode)) as f:
        if f.tell() > 0 and not _ends_with_newline(path):
            f.write(b"\n")
        f.write(lines.encode())
        f.flush()
        os.fsync(f.fileno())


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


class Journal:
    """An append-only JSON Lines file of records that each carry a ``key``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, dict[str, Any]]:
        """Records by key (last one wins); a torn last line is ignored."""
        out: dict[str, dict[str, Any]] = {}
        if not self.path.is_file():
            return out
        # A crash can leave any bytes in the torn tail; they fail to parse, not to decode.
        for line in self.path.read_bytes().decode("utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # torn write of a crash; the key is redone
            if isinstance(record, dict) and "key" in record:
                out[str(record["key"])] = record
        return out

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        lines = "".join(json.dumps(dict(r), sort_keys=True) + "\n" for r in records)
        if lines:
            append_lines(self.path, lines)
