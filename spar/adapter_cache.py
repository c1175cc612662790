"""A replica's own folder of adapter copies, kept across restarts.

A replica copies every version it loads into this folder, so nobody can change the bytes
behind a loaded name. A restarted replica finds the copies of its last run here: one
whose content still hashes to the version's digest is loaded where it lies, without a
fetch; one that does not is deleted and fetched again. What a killed process left half
written (``.fetch-*`` transfers, ``*.partial`` copies) is removed at start, and every
copy gets a random suffix, so a new copy never lands on an old folder.

Layout of ``<cache_dir>/adapters/<role>``::

    .lock                     held (flock) by the one live replica that uses the folder
    .fetch-<name>-<random>/   a transfer in progress (spar.adapter_fetch)
    <name>.<random>.partial/  a local copy in progress (spar.adapter_files.copy_adapter)
    <name>.<random>/          a complete copy of version <name>; never written again

Further replicas of the role that share the cache dir on one machine get
``<role>.2``, ``<role>.3``, ...: a folder is cleaned only by the process that holds its
lock, so one replica's start never deletes another's transfer.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from spar.adapter_fetch import FETCH_PREFIX
from spar.adapter_files import PARTIAL_SUFFIX, check_name, folder_digest
from spar.errors import FailedPrecondition, SparError

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
MAX_FOLDERS = 64
"""Replicas of one role that may share one cache dir (each gets its own folder)."""

_VERSION = re.compile(r"^(?P<role>[a-z]+)-(?P<iteration>[0-9]+)-(?P<digest>[0-9a-f]{12})$")
_TAG = re.compile(r"^[0-9a-f]{1,32}$")


@dataclass(frozen=True)
class VersionName:
    """The parts of a store version name ``<role>-<iteration>-<sha256[:12]>``."""

    role: str
    iteration: int
    digest_prefix: str


def parse_version_name(name: str) -> VersionName | None:
    """The parts of a content-addressed version name; None for any other name."""
    match = _VERSION.fullmatch(name)
    if match is None:
        return None
    return VersionName(match["role"], int(match["iteration"]), match["digest"])


def copy_of(entry: str) -> str | None:
    """The version name a cache entry is a complete copy of (``<name>.<tag>``); None for
    anything else. Tags were counters before they were random: both count."""
    name, dot, tag = entry.rpartition(".")
    if not dot or not _TAG.fullmatch(tag):
        return None
    try:
        return check_name(name)
    except SparError:
        return None


def is_leftover(entry: str) -> bool:
    """A folder a killed process was writing: never complete, never read."""
    return entry.startswith(FETCH_PREFIX) or entry.endswith(PARTIAL_SUFFIX)


def copy_matches(name: str, digest: str, actual: str) -> bool:
    """Whether a copy whose files hash to ``actual`` is version ``name``: against the
    expected digest when the caller knows it, else against the digest in the name."""
    if digest:
        return actual == digest
    parsed = parse_version_name(name)
    return parsed is not None and actual[:12] == parsed.digest_prefix


@dataclass(frozen=True)
class CachedCopy:
    """A verified copy of a version that an earlier run left in the folder."""

    path: Path
    """The copy's folder."""
    digest: str
    """Its folder digest, as hashed when it was claimed."""
    iteration: int
    """The iteration its version name carries (0 when the name has none)."""


class AdapterCache:
    """One replica's adapter folder: locked for the life of the replica (see module doc)."""

    def __init__(self, root: Path, lock: TextIO) -> None:
        self.root = root
        self._lock: TextIO | None = lock
        self._copies: dict[str, list[Path]] = {}
        self.removed = self._clean_and_index()

    @classmethod
    def open(cls, folder: Path, *, max_folders: int = MAX_FOLDERS) -> AdapterCache:
        """Takes ``folder``, or the next free ``<folder>.N`` when another live process
        holds it; cleans what a killed process left there and indexes its copies."""
        for n in range(1, max_folders + 1):
            root = folder if n == 1 else folder.with_name(f"{folder.name}.{n}")
            try:
                lock = _try_lock(root)
            except OSError as exc:
                raise FailedPrecondition(
                    f"cannot use the adapter folder {root}: {exc.strerror}; make it writable "
                    "or point SPAR_CACHE_DIR elsewhere"
                ) from exc
            if lock is not None:
                if n > 1:
                    log.info("%s is in use by another replica; using %s", folder, root)
                return cls(root, lock)
        raise FailedPrecondition(
            f"{max_folders} live replicas already use adapter folders under {folder.parent}; "
            "stop one, or give this replica its own SPAR_CACHE_DIR"
        )

    def _clean_and_index(self) -> int:
        removed = 0
        for entry in sorted(self.root.iterdir()):
            if not entry.is_dir():
                continue
            if is_leftover(entry.name):
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
            elif (name := copy_of(entry.name)) is not None:
                self._copies.setdefault(name, []).append(entry)
        if removed:
            log.warning("removed %d half-written adapter folder(s) in %s", removed, self.root)
        if self._copies:
            log.info("%s holds copies of %s", self.root, ", ".join(sorted(self._copies)))
        return removed

    def cached(self) -> list[str]:
        """Versions with an unclaimed copy from an earlier run."""
        return sorted(self._copies)

    def new_folder(self, name: str) -> Path:
        """A folder name for a new copy of ``name`` that no earlier run has used."""
        while True:
            path = self.root / f"{name}.{uuid.uuid4().hex[:12]}"
            if not path.exists():
                return path

    def claim(self, name: str, digest: str = "") -> CachedCopy | None:
        """A verified copy of ``name`` from an earlier run, now the caller's; None when
        there is none. Copies that fail verification are deleted (blocking: it hashes)."""
        found = None
        for path in self._copies.pop(name, []):
            if found is None:
                actual = folder_digest(path)
                if copy_matches(name, digest, actual):
                    parsed = parse_version_name(name)
                    found = CachedCopy(path, actual, parsed.iteration if parsed else 0)
                    continue
                log.warning(
                    "the cached copy %s hashes to %s, not version %s; deleting it",
                    path, actual[:12], name,
                )  # fmt: skip
            shutil.rmtree(path, ignore_errors=True)
        return found

    def drop_unclaimed(self) -> list[str]:
        """Deletes the copies no stage claimed; returns their version names."""
        names = sorted(self._copies)
        for paths in self._copies.values():
            for path in paths:
                shutil.rmtree(path, ignore_errors=True)
        self._copies.clear()
        if names:
            log.info("deleted cached copies no longer wanted: %s", ", ".join(names))
        return names

    def close(self) -> None:
        """Releases the folder (the copies stay for the next start)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _try_lock(folder: Path) -> TextIO | None:
    folder.mkdir(parents=True, exist_ok=True)
    lock = (folder / LOCK_FILE).open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock
