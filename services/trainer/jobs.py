"""The job queue of one trainer: submit, run one at a time in a worker process, watch, cancel.

Each job trains in its own process (:mod:`services.trainer.worker`), so cancelling kills
it outright and the server's event loop stays responsive. The worker only writes into the
job's scratch folder; this module publishes the result to the artifact store after the
worker exited cleanly, so a killed job (or a killed trainer) publishes nothing. Job
records are persisted on every change; at start, a job that was running when the trainer
died reads as FAILED and the queue continues. An idempotency key returns its job while
that job is queued, running or succeeded; once it failed or was cancelled, submitting the
key again queues a new job, so a caller that resumes after a restart trains again.

A job over several GPUs (world_size > 1) is the same worker running torchrun
(:mod:`services.trainer.distributed`); killing the worker's process group kills torchrun's
agent, and every rank dies with it (the kernel's parent-death signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from services.trainer import hyperparameters as hparams
from services.trainer.distributed import (
    Devices,
    Strategy,
    alive,
    check_strategy,
    descendants,
    detect_devices,
    resolve_world_size,
)
from services.trainer.hyperparameters import Hyperparameters, Kind
from services.trainer.metrics import TrainerMetrics
from services.trainer.state import TrainerState
from services.trainer.store import ArtifactStore, Manifest, check_role
from services.trainer.training import JobSpec
from services.trainer.worker import PARENT_PID_ENV
from spar.adapter_files import check_name
from spar.config import Settings
from spar.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    SparError,
)
from spar.request_checks import check_path_text, check_token, expand_path
from spar.v1 import common_pb2
from spar.v1 import trainer_pb2 as pb

log = logging.getLogger(__name__)

KINDS: dict[int, Kind] = {pb.JOB_KIND_DPO: "dpo", pb.JOB_KIND_SFT: "sft"}
STRATEGIES: dict[int, Strategy] = {
    pb.DISTRIBUTED_STRATEGY_UNSPECIFIED: "ddp",
    pb.DISTRIBUTED_STRATEGY_DDP: "ddp",
    pb.DISTRIBUTED_STRATEGY_FSDP: "fsdp",
}
FINAL = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)
#: Final states that published nothing: their idempotency key may queue a new job.
RETRYABLE = (pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)
RESTARTED = "trainer restarted during the job; nothing was published; resubmit it"
STOPPED = "the trainer was stopped during the job; nothing was published; resubmit it"
LOG_TAIL_LINES = 5
#: How long a killed job's ranks may take to go after its worker (they die with it).
RANKS_EXIT_S = 10.0


def _now() -> Timestamp:
    ts = Timestamp()
    ts.GetCurrentTime()
    return ts


def version_message(manifest: Manifest) -> common_pb2.AdapterVersion:
    v = manifest["version"]
    return common_pb2.AdapterVersion(
        name=v["name"], digest=v["digest"], role=v["role"], iteration=int(v["iteration"])
    )


@dataclass
class _Running:
    job_id: str
    process: asyncio.subprocess.Process
    cancelled: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)
    #: Processes below the worker (torchrun's ranks) seen when it was killed.
    killed: list[int] = field(default_factory=list)


class JobManager:
    """The trainer's jobs (see the module docstring): submits and validates them, runs one at a
    time in a worker process, publishes its adapter, and lets callers watch or cancel.
    ``jobs`` holds every job by id, ``queue`` the ids still waiting, in order."""

    def __init__(
        self,
        settings: Settings,
        store: ArtifactStore,
        state: TrainerState,
        metrics: TrainerMetrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self.state = state
        self.metrics = metrics
        self.jobs: dict[str, pb.Job] = {}
        self.queue: list[str] = []
        self._keys: dict[str, str] = {}
        self._running: _Running | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._devices: Devices | None = None
        self.bounds = hparams.Bounds(
            max_lora_rank=settings.trainer.max_lora_rank,
            max_epochs=settings.trainer.max_epochs,
            max_length=settings.trainer.max_length_limit,
        )

    # Life cycle

    def recover(self) -> None:
        """Loads the job records; a job that was running when the trainer died is FAILED
        (or SUCCEEDED, when its version reached the store before the crash)."""
        jobs = self.state.load_jobs()
        for job in sorted(jobs, key=lambda j: (j.created_at.ToNanoseconds(), j.id)):
            if job.state == pb.JOB_STATE_RUNNING:
                manifest = self.store.find_by_job(job.id)
                if manifest is not None:
                    job.state = pb.JOB_STATE_SUCCEEDED
                    job.result.CopyFrom(version_message(manifest))
                else:
                    job.state, job.error = pb.JOB_STATE_FAILED, RESTARTED
                job.finished_at.CopyFrom(_now())
                job.progress.state = job.state
                self.state.save_job(job)
                log.warning("job %s was interrupted by a restart: %s", job.id, job.error or "ok")
            self._clean_scratch(job.id)
            self.jobs[job.id] = job
            if job.state == pb.JOB_STATE_QUEUED:
                self.queue.append(job.id)
            if job.request.idempotency_key:
                self._keys[job.request.idempotency_key] = job.id
        self.metrics.queue_length.labels(self.metrics.service).set(len(self.queue))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_loop(), name="trainer-job-loop")

    async def stop(self) -> None:
        """Stops the queue; a running job's worker is killed and the job FAILED."""
        self._stopping = True
        if self._running is not None:
            self._running.cancelled = True
            self._kill(self._running)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._running.done.wait(), timeout=30)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # Reads

    def get(self, job_id: str) -> pb.Job:
        self.state.job_dir(job_id)  # validates the id
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r} on this trainer")
        out = pb.Job()
        out.CopyFrom(job)
        out.queue_position = self.queue_position(job_id)
        return out

    def queue_position(self, job_id: str) -> int:
        """Jobs that run before this one: the running job, then the queue ahead of it."""
        if job_id not in self.queue:
            return 0
        return self.queue.index(job_id) + (1 if self._running is not None else 0)

    async def watch(self, job_id: str) -> AsyncIterator[pb.JobProgress]:
        """The job's progress now, then at every change, until it reaches a final state."""
        self.get(job_id)
        last: pb.JobProgress | None = None
        while True:
            changed = self._changed
            job = self.get(job_id)
            progress = pb.JobProgress()
            progress.CopyFrom(job.progress)
            progress.job_id, progress.state = job.id, job.state
            final = job.state in FINAL
            if final:
                progress.job.CopyFrom(job)
            if progress != last:
                yield progress
                last = progress
            if final:
                return
            await changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
        self.metrics.queue_length.labels(self.metrics.service).set(len(self.queue))

    @property
    def devices(self) -> Devices:
        """What jobs may spread over; counted once, at the first submit (imports torch)."""
        if self._devices is None:
            self._devices = detect_devices(self.settings.trainer.device)
        return self._devices

    # Submit and cancel

    def submit(self, request: pb.SubmitJobRequest, given: dict[str, Any]) -> pb.Job:
        """Queues a job; ``given`` are the hyperparameters the caller set."""
        check_token(
            request.idempotency_key,
            "idempotency_key",
            self.settings.trainer.max_idempotency_key_chars,
        )
        existing_id = self._keys.get(request.idempotency_key)
        if existing_id is not None and self.jobs[existing_id].state in RETRYABLE:
            existing_id = None  # it published nothing: the key may train again
        if existing_id is not None:
            existing = self.jobs[existing_id]
            if (
                existing.request.dataset_digest != request.dataset_digest
                or existing.request.kind != request.kind
            ):
                raise AlreadyExists(
                    f"idempotency_key {request.idempotency_key[:40]!r} was used for job "
                    f"{existing.id} with another dataset or kind; use a new key"
                )
            return self.get(existing.id)
        accepted = self._accept(request, given)
        if len(self.queue) >= self.settings.trainer.max_queued_jobs:
            raise ResourceExhausted(
                f"{len(self.queue)} jobs are queued (the limit, SPAR_TRAINER__MAX_QUEUED_JOBS); "
                "retry when one has finished"
            )
        job = pb.Job(
            id=f"job-{uuid.uuid4().hex[:12]}",
            kind=accepted.kind,
            state=pb.JOB_STATE_QUEUED,
            request=accepted,
            created_at=_now(),
        )
        job.progress.job_id, job.progress.state = job.id, job.state
        self.state.save_job(job)
        self.jobs[job.id] = job
        self.queue.append(job.id)
        if accepted.idempotency_key:
            self._keys[accepted.idempotency_key] = job.id
        log.info(
            "queued job %s (%s, dataset %s)", job.id, KINDS[job.kind], accepted.dataset_digest[:12]
        )
        self._notify()
        return self.get(job.id)

    def _accept(self, request: pb.SubmitJobRequest, given: dict[str, Any]) -> pb.SubmitJobRequest:
        """The request with every default filled in, or the error that explains why not."""
        kind = KINDS.get(request.kind)
        if kind is None:
            raise InvalidArgument("kind is required: JOB_KIND_DPO or JOB_KIND_SFT")
        if not request.dataset_digest:
            raise InvalidArgument("dataset_digest is required (UploadDataset returns it)")
        self.state.dataset_path(request.dataset_digest, kind)
        role = check_role(request.role or ("actor" if kind == "dpo" else "refiner"))
        base_model = self._base_model(request.base_model)
        strategy = STRATEGIES.get(request.strategy)
        if strategy is None:
            raise InvalidArgument(f"strategy={request.strategy} is unknown; use DDP or FSDP")
        world_size = resolve_world_size(
            request.world_size, self.settings.trainer.world_size, self.devices
        )
        check_strategy(strategy, world_size)
        base = hparams.defaults(kind, max_length=self.settings.trainer.default_max_length)
        if request.parent_adapter:
            base, given = self._inherit(request.parent_adapter, role, base_model, base, given)
        hp = hparams.resolve(kind, given, base, self.bounds)
        accepted = pb.SubmitJobRequest()
        accepted.CopyFrom(request)
        accepted.role, accepted.base_model, accepted.world_size = role, base_model, world_size
        if world_size > 1 and request.strategy == pb.DISTRIBUTED_STRATEGY_UNSPECIFIED:
            accepted.strategy = pb.DISTRIBUTED_STRATEGY_DDP
        accepted.hyperparameters.CopyFrom(hyperparameters_message(hp))
        return accepted

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

    async def cancel(self, job_id: str) -> pb.Job:
        job = self.get(job_id)
        if job.state == pb.JOB_STATE_CANCELLED:
            return job
        if job.state in FINAL:
            raise FailedPrecondition(
                f"job {job_id} already finished ({pb.JobState.Name(job.state)}); nothing to cancel"
            )
        if job.state == pb.JOB_STATE_QUEUED:
            self.queue.remove(job_id)
            self._finish(self.jobs[job_id], pb.JOB_STATE_CANCELLED, "cancelled by a client")
            return self.get(job_id)
        running = self._running
        if running is not None and running.job_id == job_id:
            running.cancelled = True
            self._kill(running)
            await running.done.wait()
        return self.get(job_id)

    # Running

    async def _run_loop(self) -> None:
        while True:
            if not self.queue:
                await self._changed.wait()
                continue
            job = self.jobs[self.queue.pop(0)]
            try:
                await self._run(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("job %s failed in the trainer", job.id)
                if job.state not in FINAL:
                    self._finish(job, pb.JOB_STATE_FAILED, f"trainer error: {exc}")

    async def _run(self, job: pb.Job) -> None:
        kind = KINDS[job.kind]
        folder = self.state.job_dir(job.id)
        self._clean_scratch(job.id)
        folder.mkdir(parents=True, exist_ok=True)
        request = job.request
        parent_dir = (
            str(self.store.files_dir(request.parent_adapter)) if request.parent_adapter else ""
        )
        spec = JobSpec(
            kind=kind,
            base_model=request.base_model,
            dataset_path=str(self.state.dataset_path(request.dataset_digest, kind)),
            output_dir=str(folder / "output"),
            hyperparameters=hyperparameters_from_message(request.hyperparameters).as_dict(),
            parent_dir=parent_dir,
            device=self.settings.trainer.device,
            threads=self.settings.trainer.threads,
            gradient_checkpointing=self.settings.trainer.gradient_checkpointing,
            world_size=request.world_size or 1,
            strategy=STRATEGIES[request.strategy],
        )
        (folder / "spec.json").write_text(spec.to_json())
        job.state = pb.JOB_STATE_RUNNING
        job.started_at.CopyFrom(_now())
        job.progress.state = job.state
        self.state.save_job(job)
        env = dict(os.environ, **{PARENT_PID_ENV: str(os.getpid()), "HF_HUB_OFFLINE": "1"})
        with (folder / "worker.log").open("ab") as worker_log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.trainer.worker", str(folder / "spec.json"),
                stdout=asyncio.subprocess.PIPE, stderr=worker_log, env=env,
                start_new_session=True, limit=1 << 20,
            )  # fmt: skip
        running = _Running(job.id, process)
        self._running = running
        (folder / "worker.pid").write_text(str(process.pid))
        self.metrics.running.labels(self.metrics.service, kind).set(1)
        log.info(
            "job %s running (worker pid %d, %d process(es))",
            job.id, process.pid, spec.world_size,
        )  # fmt: skip
        self._notify()
        try:
            await self._follow(job, running)
        finally:
            if process.returncode is None:
                self._kill(running)
                await process.wait()
            await self._ranks_gone(running)
            self._running = None
            self.metrics.running.labels(self.metrics.service, kind).set(0)
            self._clean_scratch(job.id)
            running.done.set()
            self._notify()

    async def _follow(self, job: pb.Job, running: _Running) -> None:
        kind = KINDS[job.kind]
        assert running.process.stdout is not None
        error, metrics = "", None
        t0 = time.monotonic()
        async for line in running.process.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == "progress":
                self._progress(job, event)
                self.metrics.progress(kind, event)
            elif event.get("event") == "error":
                error = str(event.get("message", ""))
            elif event.get("event") == "done":
                metrics = {k: float(v) for k, v in event.get("metrics", {}).items()}
        code = await running.process.wait()
        log.info("job %s worker exited with %d after %.1f s", job.id, code, time.monotonic() - t0)
        if running.cancelled and self._stopping:
            self._finish(job, pb.JOB_STATE_FAILED, STOPPED)
        elif running.cancelled:
            self._finish(job, pb.JOB_STATE_CANCELLED, "cancelled by a client")
        elif code == 0 and metrics is not None:
            await self._publish(job, metrics)
        else:
            self._finish(job, pb.JOB_STATE_FAILED, self._failure(job.id, code, error))

    def _progress(self, job: pb.Job, event: dict[str, Any]) -> None:
        p = job.progress
        p.job_id, p.state = job.id, job.state
        p.step = int(event.get("step", p.step))
        p.total_steps = int(event.get("total_steps", p.total_steps))
        p.epoch = float(event.get("epoch", p.epoch))
        for key in ("loss", "reward_margin", "reward_accuracy", "tokens_per_second"):
            if key in event:
                setattr(p, key, float(event[key]))
        if "eta_s" in event:
            p.eta.CopyFrom(Duration(seconds=int(event["eta_s"])))
        self.state.save_job(job)
        self._notify()

    async def _publish(self, job: pb.Job, metrics: dict[str, float]) -> None:
        request = job.request
        hp = hyperparameters_from_message(request.hyperparameters)
        world_size = request.world_size or 1
        # How the job was spread belongs to how it was trained: the global batch decides
        # what each optimizer step saw.
        how = {
            "world_size": world_size,
            "strategy": STRATEGIES[request.strategy],
            "global_batch_size": hp.batch_size * hp.gradient_accumulation_steps * world_size,
        }
        try:
            manifest = await asyncio.to_thread(
                self.store.publish,
                self.state.job_dir(job.id) / "output",
                role=request.role,
                iteration=request.iteration,
                base_model=request.base_model,
                parent=request.parent_adapter,
                job_id=job.id,
                dataset_digest=request.dataset_digest,
                hyperparameters=hp.as_dict() | how,
                metrics=metrics,
            )
        except (SparError, OSError) as exc:
            message = exc.message if isinstance(exc, SparError) else str(exc)
            self._finish(job, pb.JOB_STATE_FAILED, f"publishing the adapter failed: {message}")
            return
        job.result.CopyFrom(version_message(manifest))
        self.metrics.published.labels(self.metrics.service, request.role).inc()
        self._finish(job, pb.JOB_STATE_SUCCEEDED, "")

    def _failure(self, job_id: str, code: int, error: str) -> str:
        path = self.state.job_dir(job_id) / "worker.log"
        if code < 0:
            why = f"the training worker was killed by signal {-code}"
            if -code == signal.SIGKILL:
                why += " (out of memory?)"
        else:
            why = f"training failed: {error}" if error else f"the worker exited with code {code}"
        return f"{why}; worker log: {path}"

    def _finish(self, job: pb.Job, state: pb.JobState, error: str) -> None:
        job.state = state
        job.error = error
        job.finished_at.CopyFrom(_now())
        job.progress.state = state
        self.state.save_job(job)
        self.metrics.jobs.labels(
            self.metrics.service,
            KINDS[job.kind],
            pb.JobState.Name(state).removeprefix("JOB_STATE_").lower(),
        ).inc()
        log.info("job %s %s%s", job.id, pb.JobState.Name(state), f": {error}" if error else "")
        self._notify()

    def _kill(self, running: _Running) -> None:
        """The worker's process group and every process below it (torchrun's ranks run in
        sessions of their own; they would also die with the worker, a moment later)."""
        running.killed = descendants(running.process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(running.process.pid, signal.SIGKILL)
        for pid in running.killed:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    async def _ranks_gone(self, running: _Running) -> None:
        """Waits until a killed job's ranks are gone, so the next job finds the GPUs free."""
        deadline = time.monotonic() + RANKS_EXIT_S
        while any(alive(pid) for pid in running.killed) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def _clean_scratch(self, job_id: str) -> None:
        folder = self.state.job_dir(job_id)
        for name in ("output", "scratch"):
            shutil.rmtree(folder / name, ignore_errors=True)


def hyperparameters_message(hp: Hyperparameters) -> pb.TrainingHyperparameters:
    values = hp.as_dict()
    msg = pb.TrainingHyperparameters(target_modules=values.pop("target_modules"))
    for key, value in values.items():
        setattr(msg, key, value)
    return msg


def hyperparameters_given(msg: pb.TrainingHyperparameters) -> dict[str, Any]:
    """The fields a caller set (unset optional fields take the defaults)."""
    given: dict[str, Any] = {f.name: v for f, v in msg.ListFields() if f.name != "target_modules"}
    if msg.target_modules:
        given["target_modules"] = list(msg.target_modules)
    return given


def hyperparameters_from_message(msg: pb.TrainingHyperparameters) -> Hyperparameters:
    return Hyperparameters.from_dict(hyperparameters_given(msg))
