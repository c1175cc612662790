"""The trainer's own records on disk: uploaded datasets and jobs (the state folder).

``<root>/datasets/<digest>.jsonl`` (canonical records) with ``<digest>.json`` (kind, name,
count), and ``<root>/jobs/<id>/job.json`` (spar's job schema, :mod:`records`) plus the
job's scratch space (spec, worker log, the worker's output before it is published). Every
record is written atomically, so a trainer that is killed at any moment restarts from
consistent records; the temporary files of writes it did not finish are removed at start,
a dataset whose records no longer hash to its digest is written again when it is uploaded
again, and a job record that cannot be read is reported and left out instead of stopping
the trainer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

from services.trainer.datasets import Dataset
from services.trainer.hyperparameters import Kind
from services.trainer.records import Job
from spar.atomic_files import TMP_SUFFIX, write_atomic
from spar.errors import FailedPrecondition, InvalidArgument, NotFound

log = logging.getLogger(__name__)

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_JOB_ID = re.compile(r"^job-[0-9a-f]{12}$")


class TrainerState:
    """The trainer's state folder (see the module docstring): uploaded datasets and job
    records."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.datasets = root / "datasets"
        self.jobs = root / "jobs"
        self.datasets.mkdir(parents=True, exist_ok=True)
        self.jobs.mkdir(parents=True, exist_ok=True)
        self.remove_unfinished_writes()

    def remove_unfinished_writes(self) -> int:
        """Deletes the temporary files of writes a killed trainer left; returns how many."""
        removed = 0
        for pattern in (f".*{TMP_SUFFIX}", f"job-*/.*{TMP_SUFFIX}"):
            folder = self.datasets if pattern.startswith(".") else self.jobs
            for path in folder.glob(pattern):
                path.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.warning("removed %d unfinished write(s) of an interrupted trainer", removed)
        return removed

    # Datasets

    def save_dataset(self, dataset: Dataset, name: str) -> None:
        data = self.datasets / f"{dataset.digest}.jsonl"
        meta = self.datasets / f"{dataset.digest}.json"
        if meta.is_file() and _sha256(data) == dataset.digest:
            return  # content-addressed: the same digest is the same records
        write_atomic(data, dataset.canonical)
        info = {"kind": dataset.kind, "name": name, "records": len(dataset.records)}
        write_atomic(meta, json.dumps(info, sort_keys=True).encode())

    def dataset_info(self, digest: str) -> dict[str, Any]:
        if not _DIGEST.fullmatch(digest):
            raise InvalidArgument(
                "dataset_digest must be the 64 hex characters UploadDataset returned"
            )
        try:
            info: dict[str, Any] = json.loads((self.datasets / f"{digest}.json").read_text())
        except FileNotFoundError:
            raise NotFound(
                f"dataset {digest[:12]} is not on this trainer; upload it first"
            ) from None
        return info

    def dataset_path(self, digest: str, kind: Kind) -> Path:
        info = self.dataset_info(digest)
        if info["kind"] != kind:
            raise FailedPrecondition(
                f"dataset {digest[:12]} holds {info['kind']} records; a {kind} job needs a "
                f"{kind} dataset"
            )
        return self.datasets / f"{digest}.jsonl"

    # Jobs

    def job_dir(self, job_id: str) -> Path:
        if not _JOB_ID.fullmatch(job_id):
            raise NotFound(
                f"no job {job_id[:40]!r} on this trainer (ids look like job-0123abcd4567)"
            )
        return self.jobs / job_id

    def save_job(self, job: Job) -> None:
        text = json.dumps(job.to_json(), indent=1)
        write_atomic(self.job_dir(job.id) / "job.json", text.encode())

    def load_jobs(self) -> list[Job]:
        """Every readable job record (older trainers' too, see :mod:`records`); an
        unreadable one is logged and left out."""
        out = []
        for path in sorted(self.jobs.glob("job-*/job.json")):
            try:
                doc = json.loads(path.read_text())
                if not isinstance(doc, dict):
                    raise ValueError("not a JSON object")
                job = Job.from_json(doc)
            except (ValueError, TypeError, KeyError, UnicodeDecodeError, OSError) as exc:
                log.error("skipping the unreadable job record %s: %s", path, exc)
                continue
            if job.id != path.parent.name:
                log.error("skipping %s: it records job %r", path, job.id[:40])
                continue
            out.append(job)
        return out


def _sha256(path: Path) -> str:
    """sha256 of a file's bytes; empty when it cannot be read."""
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError:
        return ""
    return h.hexdigest()
