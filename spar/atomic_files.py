"""Crash-safe file writes: temp file in the same folder, fsync, rename, fsync the folder.

The one way spar replaces a file: the trainer's state and store, the coordinator's
journal, prompt sets and reports all write through :func:`write_atomic`.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Makes a rename or a new file in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Makes the bytes written to ``path`` durable."""
    with path.open("rb") as f:
        os.fsync(f.fileno())


TMP_SUFFIX = ".tmp"
"""Temporary files of write_atomic (``.<name>.<random>.tmp``); a crash may leave them."""


def write_atomic(path: Path, data: bytes) -> None:
    """After a crash, path holds either its old content or data, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
