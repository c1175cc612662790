"""A job submission, checked: what a client asked (:class:`JobRequest`) becomes what the
trainer will run (:class:`Submission`), every default filled in, or the error that says
what to change. No protobuf: the servicer translates the request into a JobRequest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.trainer import hyperparameters as hparams
from services.trainer.distributed import (
    Devices,
    Strategy,
    check_strategy,
    detect_devices,
    resolve_world_size,
)
from services.trainer.hyperparameters import Hyperparameters, Kind
from services.trainer.store import ArtifactStore, check_role
from spar.adapter_files import check_name
from spar.config import Settings
from spar.errors import FailedPrecondition, InvalidArgument
from spar.request_checks import check_path_text, expand_path

if TYPE_CHECKING:  # state.py reads job records, whose submissions this module defines
    from services.trainer.state import TrainerState


@dataclass(frozen=True)
class JobRequest:
    """A job as a client asked for it, not yet checked; empty values take defaults."""

    kind: Kind | None
    """None: not given (an error)."""
    dataset_digest: str
    role: str = ""
    """'' : ``actor`` for DPO, ``refiner`` for SFT."""
    iteration: int = 0
    base_model: str = ""
    """'' : the trainer's model (``SPAR_MODEL``)."""
    parent_adapter: str = ""
    """A published version to continue training (its LoRA shape is kept)."""
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    """The hyperparameters the client set; the others take the defaults."""
    world_size: int = 0
    """Processes (GPUs) to spread over; 0: the setting, else every GPU."""
    strategy: Strategy | None = None
    idempotency_key: str = ""


@dataclass(frozen=True)
class Submission:
    """A checked job: what the trainer runs and what the job record keeps."""

    kind: Kind
    dataset_digest: str
    role: str
    base_model: str
    """The resolved folder of the base model."""
    hyperparameters: Hyperparameters
    world_size: int
    strategy: Strategy | None
    """None: not given, on one process (it runs as DDP)."""
    iteration: int = 0
    parent_adapter: str = ""
    idempotency_key: str = ""

    @property
    def runs_as(self) -> Strategy:
        return self.strategy or "ddp"


class SubmissionCheck:
    """Checks job requests against the trainer's settings, datasets, store and devices."""

    def __init__(self, settings: Settings, store: ArtifactStore, state: TrainerState) -> None:
        self.settings = settings
        self.store = store
        self.state = state
        self._devices: Devices | None = None
        self.bounds = hparams.Bounds(
            max_lora_rank=settings.trainer.max_lora_rank,
            max_epochs=settings.trainer.max_epochs,
            max_length=settings.trainer.max_length_limit,
        )

    @property
    def devices(self) -> Devices:
        """What jobs may spread over; counted once, at the first submit (imports torch)."""
        if self._devices is None:
            self._devices = detect_devices(self.settings.trainer.device)
        return self._devices

    @devices.setter
    def devices(self, devices: Devices) -> None:
        self._devices = devices

    def check(self, request: JobRequest) -> Submission:
        """The request with every default filled in, or the error that explains why not."""
        kind = request.kind
        if kind is None:
            raise InvalidArgument("kind is required: JOB_KIND_DPO or JOB_KIND_SFT")
        if not request.dataset_digest:
            raise InvalidArgument("dataset_digest is required (UploadDataset returns it)")
        self.state.dataset_path(request.dataset_digest, kind)
        role = check_role(request.role or ("actor" if kind == "dpo" else "refiner"))
        base_model = self._base_model(request.base_model)
        world_size = resolve_world_size(
            request.world_size, self.settings.trainer.world_size, self.devices
        )
        check_strategy(request.strategy or "ddp", world_size)
        given = request.hyperparameters
        base = hparams.defaults(kind, max_length=self.settings.trainer.default_max_length)
        if request.parent_adapter:
            base, given = self._inherit(request.parent_adapter, role, base_model, base, given)
        hp = hparams.resolve(kind, given, base, self.bounds)
        strategy = request.strategy
        if world_size > 1 and strategy is None:
            strategy = "ddp"
        return Submission(
            kind=kind,
            dataset_digest=request.dataset_digest,
            role=role,
            base_model=base_model,
            hyperparameters=hp,
            world_size=world_size,
            strategy=strategy,
            iteration=request.iteration,
            parent_adapter=request.parent_adapter,
            idempotency_key=request.idempotency_key,
        )

    def _base_model(self, requested: str) -> str:
        configured = str(self.settings.model_path().expanduser().resolve())
        allowed = [
            configured,
            *(str(Path(p).expanduser().resolve()) for p in self.settings.trainer.base_models),
        ]
        if requested:
            check_path_text(requested, "base_model", self.settings.limits.max_path_chars)
        path = str(expand_path(requested, "base_model")) if requested else configured
        if path not in allowed:
            raise InvalidArgument(
                f"base_model {requested[:200]!r} is not a model this trainer may load; allowed: "
                f"{', '.join(allowed)} (add folders with SPAR_TRAINER__BASE_MODELS)"
            )
        if not (Path(path) / "config.json").is_file():
            raise FailedPrecondition(
                f"base model folder {path} holds no model (config.json is missing); run "
                "`spar model prepare` or point SPAR_MODEL at a Hugging Face model folder"
            )
        return path

    def _inherit(
        self, parent: str, role: str, base_model: str, base: Hyperparameters, given: dict[str, Any]
    ) -> tuple[Hyperparameters, dict[str, Any]]:
        """A continued adapter keeps its parent's LoRA shape; other defaults stay."""
        check_name(parent)
        manifest = self.store.get(parent)
        if manifest["version"]["role"] != role:
            raise FailedPrecondition(
                f"parent_adapter {parent!r} is a {manifest['version']['role']} adapter; "
                f"this job trains a {role} adapter"
            )
        if manifest.get("base_model") != base_model:
            raise FailedPrecondition(
                f"parent_adapter {parent!r} was trained on {manifest.get('base_model')!r}, not "
                f"{base_model!r}"
            )
        parent_hp = manifest.get("hyperparameters", {})
        shape = {}
        for key in ("lora_rank", "lora_alpha", "target_modules"):
            if key not in parent_hp:
                continue
            value = list(parent_hp[key]) if key == "target_modules" else int(parent_hp[key])
            mine = given.get(key)
            if key in given and mine != value:
                raise InvalidArgument(
                    f"hyperparameters.{key}={mine} differs from {value} of parent_adapter "
                    f"{parent!r}; a continued adapter keeps its parent's LoRA shape"
                )
            shape[key] = value
        merged = base.as_dict() | shape
        return Hyperparameters.from_dict(merged), {k: v for k, v in given.items() if k not in shape}
