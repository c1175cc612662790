"""A trainer job's record: its submission, state, progress and result, and its file format.

``<state>/jobs/<id>/job.json`` holds :meth:`Job.to_json`: spar's own versioned schema
(``"schema": "spar.trainer.job/v1"``), not protobuf JSON. A record written by an older
trainer (protobuf JSON of ``spar.v1.Job``, no ``schema`` field) is read by
:func:`job_from_protobuf_json`, and written in the new schema at its next change.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from services.trainer.hyperparameters import Hyperparameters, Kind
from services.trainer.submission import Submission
from spar.dataclass_json import as_document, from_document

JOB_SCHEMA = "spar.trainer.job/v1"
"""The ``schema`` field of a job record in this format."""

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JOB_STATES: tuple[JobState, ...] = get_args(JobState)
FINAL: tuple[JobState, ...] = ("succeeded", "failed", "cancelled")
RETRYABLE: tuple[JobState, ...] = ("failed", "cancelled")
"""Final states that published nothing: their idempotency key may queue a new job."""


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Published:
    """The adapter version a succeeded job published."""

    name: str
    digest: str
    role: str
    iteration: int


@dataclass
class Progress:
    """What the training worker last reported."""

    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    loss: float = 0.0
    reward_margin: float = 0.0
    """DPO: mean chosen minus rejected reward."""
    reward_accuracy: float = 0.0
    """DPO: share of pairs whose chosen reward is higher."""
    tokens_per_second: float = 0.0
    eta_s: int | None = None
    """Seconds the worker expects the job still needs (None: not estimated yet)."""


@dataclass
class Job:
    """One job of the trainer's queue."""

    id: str
    submission: Submission
    state: JobState
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: Published | None = None
    error: str = ""
    progress: Progress = field(default_factory=Progress)

    @property
    def kind(self) -> Kind:
        return self.submission.kind

    def copy(self) -> Job:
        return dataclasses.replace(self, progress=dataclasses.replace(self.progress))

    def to_json(self) -> dict[str, Any]:
        return as_document(JOB_SCHEMA, self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Job:
        """A record in this schema, or an older trainer's (see the module docstring)."""
        if "schema" not in doc:
            return job_from_protobuf_json(doc)
        return from_document(cls, JOB_SCHEMA, doc)


# -- older trainers' records (protobuf JSON of spar.v1.Job) -------------------------------

_DURATION = re.compile(r"^(-?\d+(?:\.\d+)?)s$")
_HYPERPARAMETER_INTS = (
    "lora_rank", "lora_alpha", "epochs", "batch_size", "gradient_accumulation_steps",
    "max_length", "seed",
)  # fmt: skip


def _enum(value: Any, prefix: str) -> str:
    """A protobuf JSON enum value (``JOB_STATE_FAILED``) as spar's name (``failed``)."""
    return str(value).removeprefix(prefix).lower()


def _parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    t = datetime.fromisoformat(text)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def job_from_protobuf_json(doc: dict[str, Any]) -> Job:
    """A job record as trainers before the versioned schema wrote it. Protobuf JSON leaves
    out fields at their default and writes 64-bit integers as strings."""
    request = doc.get("request", {})
    kind = _enum(request.get("kind") or doc.get("kind", ""), "JOB_KIND_")
    if kind not in ("dpo", "sft"):
        raise ValueError(f"kind {kind[:40]!r} is unknown")
    state = _enum(doc.get("state", ""), "JOB_STATE_")
    if state not in JOB_STATES:
        raise ValueError(f"state {state[:40]!r} is unknown")
    given = dict(request.get("hyperparameters", {}))
    for key in _HYPERPARAMETER_INTS:
        if key in given:
            given[key] = int(given[key])
    strategy = request.get("strategy")
    submission = Submission(
        kind=kind,  # type: ignore[arg-type]
        dataset_digest=str(request.get("dataset_digest", "")),
        role=str(request.get("role", "")),
        base_model=str(request.get("base_model", "")),
        hyperparameters=Hyperparameters.from_dict(given),
        world_size=int(request.get("world_size", 0)),
        strategy=_enum(strategy, "DISTRIBUTED_STRATEGY_")  # type: ignore[arg-type]
        if strategy and strategy != "DISTRIBUTED_STRATEGY_UNSPECIFIED"
        else None,
        iteration=int(request.get("iteration", 0)),
        parent_adapter=str(request.get("parent_adapter", "")),
        idempotency_key=str(request.get("idempotency_key", "")),
    )
    result = doc.get("result")
    p = doc.get("progress", {})
    eta = _DURATION.match(str(p["eta"])) if "eta" in p else None
    return Job(
        id=str(doc.get("id", "")),
        submission=submission,
        state=state,  # type: ignore[arg-type]
        created_at=_parse_time(doc.get("created_at")) or datetime.fromtimestamp(0, UTC),
        started_at=_parse_time(doc.get("started_at")),
        finished_at=_parse_time(doc.get("finished_at")),
        result=Published(
            name=str(result.get("name", "")),
            digest=str(result.get("digest", "")),
            role=str(result.get("role", "")),
            iteration=int(result.get("iteration", 0)),
        )
        if result
        else None,
        error=str(doc.get("error", "")),
        progress=Progress(
            step=int(p.get("step", 0)),
            total_steps=int(p.get("total_steps", 0)),
            epoch=float(p.get("epoch", 0.0)),
            loss=float(p.get("loss", 0.0)),
            reward_margin=float(p.get("reward_margin", 0.0)),
            reward_accuracy=float(p.get("reward_accuracy", 0.0)),
            tokens_per_second=float(p.get("tokens_per_second", 0.0)),
            eta_s=int(float(eta.group(1))) if eta else None,
        ),
    )
