"""The job queue of one trainer: submit, run one at a time in a worker process, watch, cancel.

A submission is checked into a :class:`~services.trainer.submission.Submission` first;
each job trains in its own process (:mod:`services.trainer.supervision`), so cancelling
kills it outright and the server's event loop stays responsive. The worker only writes
into the job's scratch folder; this module publishes the result to the artifact store
after the worker exited cleanly, so a killed job (or a killed trainer) publishes nothing. Job
records are persisted on every change; at start, a job that was running when the trainer
died reads as FAILED and the queue continues. An idempotency key returns its job while
that job is queued, running or succeeded; once it failed or was cancelled, submitting the
key again queues a new job, so a caller that resumes after a restart trains again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import uuid
from collections.abc import AsyncIterator
from typing import Any

from services.trainer import supervision
from services.trainer.metrics import TrainerMetrics
from services.trainer.records import (
    FINAL,
    RETRYABLE,
    Job,
    JobState,
    Progress,
    Published,
    now,
)
from services.trainer.state import TrainerState
from services.trainer.store import ArtifactStore, Manifest
from services.trainer.submission import JobRequest, SubmissionCheck
from services.trainer.supervision import Worker
from services.trainer.training import JobSpec
from spar.config import Settings
from spar.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    SparError,
)
from spar.request_checks import check_token

log = logging.getLogger(__name__)

RESTARTED = "trainer restarted during the job; nothing was published; resubmit it"
STOPPED = "the trainer was stopped during the job; nothing was published; resubmit it"


class JobManager:
    """The trainer's jobs (see the module docstring): checks submissions
    (:mod:`services.trainer.submission`), runs one at a time in a worker process
    (:mod:`services.trainer.supervision`), publishes its adapter, and lets callers watch or
    cancel. ``jobs`` holds every job by id, ``queue`` the ids still waiting, in order."""

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
        self.submissions = SubmissionCheck(settings, store, state)
        self.jobs: dict[str, Job] = {}
        self.queue: list[str] = []
        self._keys: dict[str, str] = {}
        self._running: Worker | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # Life cycle

    def recover(self) -> None:
        """Loads the job records; a job that was running when the trainer died is FAILED
        (or SUCCEEDED, when its version reached the store before the crash)."""
        jobs = self.state.load_jobs()
        for job in sorted(jobs, key=lambda j: (j.created_at, j.id)):
            if job.state == "running":
                manifest = self.store.find_by_job(job.id)
                if manifest is not None:
                    job.state = "succeeded"
                    job.result = published(manifest)
                else:
                    job.state, job.error = "failed", RESTARTED
                job.finished_at = now()
                self.state.save_job(job)
                log.warning("job %s was interrupted by a restart: %s", job.id, job.error or "ok")
            self._clean_scratch(job.id)
            self.jobs[job.id] = job
            if job.state == "queued":
                self.queue.append(job.id)
            if job.submission.idempotency_key:
                self._keys[job.submission.idempotency_key] = job.id
        self.metrics.queue_length.labels(self.metrics.service).set(len(self.queue))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_loop(), name="trainer-job-loop")

    async def stop(self) -> None:
        """Stops the queue; a running job's worker is killed and the job FAILED."""
        self._stopping = True
        if self._running is not None:
            self._running.cancelled = True
            supervision.kill(self._running)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._running.done.wait(), timeout=30)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # Reads

    def get(self, job_id: str) -> Job:
        """A copy of the job's record."""
        self.state.job_dir(job_id)  # validates the id
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r} on this trainer")
        return job.copy()

    def queue_position(self, job_id: str) -> int:
        """Jobs that run before this one: the running job, then the queue ahead of it."""
        if job_id not in self.queue:
            return 0
        return self.queue.index(job_id) + (1 if self._running is not None else 0)

    async def watch(self, job_id: str) -> AsyncIterator[Job]:
        """The job now, then at every change of its state or progress, until it reaches a
        final state."""
        self.get(job_id)
        last: tuple[JobState, Progress] | None = None
        while True:
            changed = self._changed
            job = self.get(job_id)
            final = job.state in FINAL
            if (job.state, job.progress) != last:
                yield job
                last = (job.state, job.progress)
            if final:
                return
            await changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
        self.metrics.queue_length.labels(self.metrics.service).set(len(self.queue))

    # Submit and cancel

    def submit(self, request: JobRequest) -> Job:
        """Queues a checked job, or returns the job of its idempotency key."""
        check_token(
            request.idempotency_key,
            "idempotency_key",
            self.settings.trainer.max_idempotency_key_chars,
        )
        existing_id = self._keys.get(request.idempotency_key)
        if existing_id is not None and self.jobs[existing_id].state in RETRYABLE:
            existing_id = None  # it published nothing: the key may train again
        if existing_id is not None:
            existing = self.jobs[existing_id].submission
            if existing.dataset_digest != request.dataset_digest or existing.kind != request.kind:
                raise AlreadyExists(
                    f"idempotency_key {request.idempotency_key[:40]!r} was used for job "
                    f"{existing_id} with another dataset or kind; use a new key"
                )
            return self.get(existing_id)
        submission = self.submissions.check(request)
        if len(self.queue) >= self.settings.trainer.max_queued_jobs:
            raise ResourceExhausted(
                f"{len(self.queue)} jobs are queued (the limit, SPAR_TRAINER__MAX_QUEUED_JOBS); "
                "retry when one has finished"
            )
        job = Job(
            id=f"job-{uuid.uuid4().hex[:12]}",
            submission=submission,
            state="queued",
            created_at=now(),
        )
        self.state.save_job(job)
        self.jobs[job.id] = job
        self.queue.append(job.id)
        if submission.idempotency_key:
            self._keys[submission.idempotency_key] = job.id
        log.info("queued job %s (%s, dataset %s)", job.id, job.kind, submission.dataset_digest[:12])
        self._notify()
        return self.get(job.id)

    async def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state == "cancelled":
            return job
        if job.state in FINAL:
            raise FailedPrecondition(
                f"job {job_id} already finished ({state_name(job.state)}); nothing to cancel"
            )
        if job.state == "queued":
            self.queue.remove(job_id)
            self._finish(self.jobs[job_id], "cancelled", "cancelled by a client")
            return self.get(job_id)
        running = self._running
        if running is not None and running.job_id == job_id:
            running.cancelled = True
            supervision.kill(running)
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
                    self._finish(job, "failed", f"trainer error: {exc}")

    async def _run(self, job: Job) -> None:
        kind = job.kind
        folder = self.state.job_dir(job.id)
        self._clean_scratch(job.id)
        folder.mkdir(parents=True, exist_ok=True)
        sub = job.submission
        parent_dir = str(self.store.files_dir(sub.parent_adapter)) if sub.parent_adapter else ""
        spec = JobSpec(
            kind=kind,
            base_model=sub.base_model,
            dataset_path=str(self.state.dataset_path(sub.dataset_digest, kind)),
            output_dir=str(folder / "output"),
            hyperparameters=sub.hyperparameters.as_dict(),
            parent_dir=parent_dir,
            device=self.settings.trainer.device,
            threads=self.settings.trainer.threads,
            gradient_checkpointing=self.settings.trainer.gradient_checkpointing,
            world_size=sub.world_size or 1,
            strategy=sub.runs_as,
        )
        job.state = "running"
        job.started_at = now()
        self.state.save_job(job)
        worker = await supervision.start(job.id, folder, spec)
        self._running = worker
        self.metrics.running.labels(self.metrics.service, kind).set(1)
        log.info(
            "job %s running (worker pid %d, %d process(es))",
            job.id, worker.process.pid, spec.world_size,
        )  # fmt: skip
        self._notify()
        try:
            await self._follow(job, worker)
        finally:
            if worker.process.returncode is None:
                supervision.kill(worker)
                await worker.process.wait()
            await supervision.ranks_gone(worker)
            self._running = None
            self.metrics.running.labels(self.metrics.service, kind).set(0)
            self._clean_scratch(job.id)
            worker.done.set()
            self._notify()

    async def _follow(self, job: Job, worker: Worker) -> None:
        def on_progress(event: dict[str, Any]) -> None:
            self._progress(job, event)
            self.metrics.progress(job.kind, event)

        end = await supervision.follow(worker, on_progress)
        log.info("job %s worker exited with %d after %.1f s", job.id, end.code, end.seconds)
        if worker.cancelled and self._stopping:
            self._finish(job, "failed", STOPPED)
        elif worker.cancelled:
            self._finish(job, "cancelled", "cancelled by a client")
        elif end.code == 0 and end.metrics is not None:
            await self._publish(job, end.metrics)
        else:
            log_path = self.state.job_dir(job.id) / "worker.log"
            self._finish(job, "failed", supervision.failure(log_path, end.code, end.error))

    def _progress(self, job: Job, event: dict[str, Any]) -> None:
        p = job.progress
        p.step = int(event.get("step", p.step))
        p.total_steps = int(event.get("total_steps", p.total_steps))
        p.epoch = float(event.get("epoch", p.epoch))
        for key in ("loss", "reward_margin", "reward_accuracy", "tokens_per_second"):
            if key in event:
                setattr(p, key, float(event[key]))
        if "eta_s" in event:
            p.eta_s = int(event["eta_s"])
        self.state.save_job(job)
        self._notify()

    async def _publish(self, job: Job, metrics: dict[str, float]) -> None:
        sub = job.submission
        hp = sub.hyperparameters
        world_size = sub.world_size or 1
        # How the job was spread belongs to how it was trained: the global batch decides
        # what each optimizer step saw.
        how = {
            "world_size": world_size,
            "strategy": sub.runs_as,
            "global_batch_size": hp.batch_size * hp.gradient_accumulation_steps * world_size,
        }
        try:
            manifest = await asyncio.to_thread(
                self.store.publish,
                self.state.job_dir(job.id) / "output",
                role=sub.role,
                iteration=sub.iteration,
                base_model=sub.base_model,
                parent=sub.parent_adapter,
                job_id=job.id,
                dataset_digest=sub.dataset_digest,
                hyperparameters=hp.as_dict() | how,
                metrics=metrics,
            )
        except (SparError, OSError) as exc:
            message = exc.message if isinstance(exc, SparError) else str(exc)
            self._finish(job, "failed", f"publishing the adapter failed: {message}")
            return
        job.result = published(manifest)
        self.metrics.published.labels(self.metrics.service, sub.role).inc()
        self._finish(job, "succeeded", "")

    def _finish(self, job: Job, state: JobState, error: str) -> None:
        job.state = state
        job.error = error
        job.finished_at = now()
        self.state.save_job(job)
        self.metrics.jobs.labels(self.metrics.service, job.kind, state).inc()
        log.info("job %s %s%s", job.id, state_name(state), f": {error}" if error else "")
        self._notify()

    def _clean_scratch(self, job_id: str) -> None:
        folder = self.state.job_dir(job_id)
        for name in ("output", "scratch"):
            shutil.rmtree(folder / name, ignore_errors=True)


def state_name(state: JobState) -> str:
    """The state as clients see it (``JOB_STATE_FAILED``)."""
    return f"JOB_STATE_{state.upper()}"


def published(manifest: Manifest) -> Published:
    v = manifest["version"]
    return Published(
        name=v["name"], digest=v["digest"], role=v["role"], iteration=int(v["iteration"])
    )
