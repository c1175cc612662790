"""The artifact store: a folder of immutable, content-addressed adapter versions.

Layout: ``<root>/<name>/manifest.json`` and ``<root>/<name>/files/<adapter files>``, where
``name = <role>-<iteration>-<sha256[:12]>`` of the files' content digest
(:mod:`spar.adapter_files`). A version is written into ``<root>/.partial-*`` first, every
file and folder fsynced, then renamed into place in one step: a crash leaves either a
complete version or a partial folder that is never listed and is removed at the next start.
Publishing content the store already holds returns that version once its bytes verify; a
version whose bytes no longer match its manifest is replaced by the new copy.
Manifests are plain JSON with the field names of ``spar.v1.AdapterManifest``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spar.adapter_files import FileDigest, check_name, digest_of, file_digests, version_name
from spar.atomic_files import fsync_dir, fsync_file
from spar.errors import DataLoss, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted

log = logging.getLogger(__name__)

Manifest = dict[str, Any]
ROLES = ("actor", "refiner")
PARTIAL_PREFIX = ".partial-"
#: Write errors that mean the store's volume (or the process's share of it) is full.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
MANIFEST = "manifest.json"
FILES = "files"


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidArgument(f"role={role[:40]!r} must be one of {', '.join(ROLES)}")
    return role


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ArtifactStore:
    """The published adapter versions: immutable folders named by version, each with its
    manifest, published atomically (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.remove_partials()

    def remove_partials(self) -> int:
        """Deletes what crashed publishes left behind; returns how many."""
        removed = 0
        for entry in self.root.iterdir():
            if entry.name.startswith(PARTIAL_PREFIX):
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        if removed:
            log.warning("removed %d partial version(s) left by an interrupted publish", removed)
        return removed

    def version_dir(self, name: str) -> Path:
        check_name(name)
        # check_name allows no '/' and no '..', so this stays inside root.
        return self.root / name

    def publish(
        self,
        folder: Path,
        *,
        role: str,
        iteration: int,
        base_model: str,
        parent: str = "",
        job_id: str = "",
        dataset_digest: str = "",
        hyperparameters: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
    ) -> Manifest:
        """Publishes an adapter folder atomically; returns the manifest. Publishing content
        that is already there returns the existing version (names are never reused)."""
        check_role(role)
        files = file_digests(folder)
        if not files:
            raise FailedPrecondition(f"{folder} holds no files to publish")
        digest = digest_of(files)
        name = version_name(role, iteration, digest)
        final = self.version_dir(name)
        if final.is_dir() and self.intact(name):
            return self.get(name)
        manifest: Manifest = {
            "version": {"name": name, "digest": digest, "role": role, "iteration": iteration},
            "base_model": base_model,
            "parent": parent,
            "job_id": job_id,
            "dataset_digest": dataset_digest,
            "hyperparameters": hyperparameters or {},
            "metrics": metrics or {},
            "created_at": now_rfc3339(),
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in files],
        }
        tmp = self.root / f"{PARTIAL_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
        try:
            for f in files:  # file by file, so a write error keeps its errno
                (tmp / FILES / f.path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(folder / f.path, tmp / FILES / f.path)
            copied = file_digests(tmp / FILES)
            if digest_of(copied) != digest:
                raise FailedPrecondition(f"{folder} changed while it was being published")
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
            for path in sorted(tmp.rglob("*"), reverse=True):
                if path.is_file():
                    fsync_file(path)
                else:
                    fsync_dir(path)
            fsync_dir(tmp)
            if final.is_dir() and not self.intact(name):
                self._set_aside(final)
            try:
                os.rename(tmp, final)
            except OSError:
                if final.is_dir():  # the same content was published concurrently
                    return self.get(name)
                raise
            fsync_dir(self.root)
        except OSError as exc:
            if exc.errno in NO_SPACE:
                raise ResourceExhausted(
                    f"the artifact store {self.root} has no space left for {name} "
                    f"({exc.strerror}); nothing was published; free space or grow the store's "
                    "volume (SPAR_TRAINER__STORE_DIR), then resubmit the job"
                ) from exc
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("published adapter %s (%d files)", name, len(files))
        return manifest

    def intact(self, name: str) -> bool:
        """Whether the stored version's manifest is readable and its bytes match it."""
        try:
            self.verify(name)
        except (DataLoss, NotFound, KeyError, TypeError, ValueError):
            return False
        return True

    def _set_aside(self, folder: Path) -> None:
        """Moves a damaged version out of the listing in one step, then deletes it (a
        crash in between leaves a partial folder, removed at the next start)."""
        log.warning("the stored version %s is damaged; replacing it", folder.name)
        aside = self.root / f"{PARTIAL_PREFIX}damaged-{folder.name}-{uuid.uuid4().hex[:8]}"
        os.rename(folder, aside)
        shutil.rmtree(aside, ignore_errors=True)

    def get(self, name: str) -> Manifest:
        path = self.version_dir(name) / MANIFEST
        try:
            manifest: Manifest = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotFound(
                f"adapter version {name!r} is not in the store (list versions with "
                "`spar adapters list`)"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataLoss(f"the manifest of {name!r} is unreadable: {exc}") from exc
        return manifest

    def list(self, role: str = "") -> list[Manifest]:
        """Complete versions, newest first (partial publishes are never listed)."""
        if role:
            check_role(role)
        out = []
        for entry in self.root.iterdir():
            if entry.name.startswith(".") or not (entry / MANIFEST).is_file():
                continue
            try:
                manifest = self.get(entry.name)
            except (InvalidArgument, DataLoss, NotFound):
                log.warning("skipping unreadable store entry %s", entry.name)
                continue
            if not role or manifest["version"]["role"] == role:
                out.append(manifest)
        out.sort(key=lambda m: (m["created_at"], m["version"]["name"]), reverse=True)
        return out

    def find_by_job(self, job_id: str) -> Manifest | None:
        for manifest in self.list():
            if manifest.get("job_id") == job_id:
                return manifest
        return None

    def files_dir(self, name: str) -> Path:
        self.get(name)
        return self.version_dir(name) / FILES

    def file_path(self, name: str, relative: str) -> Path:
        """The path of one listed file of a version; never outside the version's folder."""
        base = self.files_dir(name).resolve()
        path = (base / relative).resolve()
        if not path.is_relative_to(base) or path == base:
            raise InvalidArgument(f"file path {relative[:80]!r} escapes the version folder")
        return path

    def verify(self, name: str) -> None:
        """Checks the stored bytes against the manifest (DataLoss when they differ)."""
        manifest = self.get(name)
        actual = {f.path: f for f in file_digests(self.files_dir(name))}
        listed = [FileDigest(f["path"], int(f["size"]), f["sha256"]) for f in manifest["files"]]
        if sorted(actual.values(), key=lambda f: f.path) != sorted(listed, key=lambda f: f.path):
            raise DataLoss(f"the stored files of {name!r} do not match its manifest")
        if digest_of(listed) != manifest["version"]["digest"]:
            raise DataLoss(f"the manifest digest of {name!r} does not match its file list")
