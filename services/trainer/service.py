"""gRPC handlers of ``spar.v1.Trainer`` and ``spar.v1.ArtifactStore``: thin translation
between protobuf and :mod:`services.trainer.jobs`, :mod:`services.trainer.datasets` and
:mod:`services.trainer.store`."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any, get_args

import grpc
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration

from services.trainer.datasets import DatasetBuilder, DatasetLimits
from services.trainer.distributed import Strategy
from services.trainer.hyperparameters import Hyperparameters, Kind
from services.trainer.jobs import JobManager
from services.trainer.records import Job, JobState
from services.trainer.state import TrainerState
from services.trainer.store import ArtifactStore, Manifest
from services.trainer.submission import JobRequest
from spar.client.enums import ProtoEnum
from spar.config import Settings
from spar.errors import InvalidArgument
from spar.proto_time import timestamp
from spar.v1 import common_pb2
from spar.v1 import trainer_pb2 as pb
from spar.v1 import trainer_pb2_grpc as pb_grpc

KIND: ProtoEnum[pb.JobKind, Kind] = ProtoEnum(pb.JobKind, get_args(Kind))
STRATEGY: ProtoEnum[pb.DistributedStrategy, Strategy] = ProtoEnum(
    pb.DistributedStrategy, get_args(Strategy)
)
JOB_STATE: ProtoEnum[pb.JobState, JobState] = ProtoEnum(pb.JobState, get_args(JobState))

#: Longest dataset name (a label kept with the dataset; the digest identifies it).
MAX_DATASET_NAME_CHARS = 200


def record_dict(record: pb.DatasetRecord) -> tuple[str, dict[str, Any]]:
    """(which, fields) of a record; only the fields that are set, as TRL names them."""
    which = record.WhichOneof("record")
    if which == "dpo":
        r = record.dpo
        return "dpo", {"prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected}
    if which == "sft":
        s = record.sft
        out: dict[str, Any] = {}
        if s.prompt:
            out["prompt"] = s.prompt
        if s.completion:
            out["completion"] = s.completion
        if s.messages:
            out["messages"] = [{"role": m.role, "content": m.content} for m in s.messages]
        return "sft", out
    return "", {}


def manifest_message(manifest: Manifest) -> pb.AdapterManifest:
    msg = pb.AdapterManifest()
    json_format.ParseDict(manifest, msg, ignore_unknown_fields=True)
    return msg


class TrainerService(pb_grpc.TrainerServicer):
    """gRPC handlers of ``spar.v1.Trainer``: dataset uploads (validated and stored as they
    stream in) and jobs, through the :class:`JobManager`."""

    def __init__(self, settings: Settings, state: TrainerState, jobs: JobManager) -> None:
        t = settings.trainer
        self.limits = DatasetLimits(t.max_record_bytes, t.max_dataset_records, t.max_dataset_bytes)
        self.state = state
        self.jobs = jobs

    async def UploadDataset(
        self,
        request_iterator: AsyncIterator[pb.UploadDatasetRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.UploadDatasetResponse:
        builder: DatasetBuilder | None = None
        name = ""
        async for message in request_iterator:
            part = message.WhichOneof("part")
            if builder is None:
                if part != "header":
                    raise InvalidArgument("the first message of an upload must be the header")
                kind = KIND.parse(message.header.kind, "header.kind")
                if kind is None:
                    raise InvalidArgument("header.kind is required: JOB_KIND_DPO or JOB_KIND_SFT")
                name = message.header.name
                if len(name) > MAX_DATASET_NAME_CHARS:
                    raise InvalidArgument(
                        f"header.name is {len(name)} characters; the limit is "
                        f"{MAX_DATASET_NAME_CHARS} (it is a label: the digest names the dataset)"
                    )
                builder = DatasetBuilder(kind, self.limits)
                continue
            if part != "batch":
                raise InvalidArgument("send the header once, first; then only batches")
            for record in message.batch.records:
                which, fields = record_dict(record)
                if which != builder.kind:
                    raise InvalidArgument(
                        f"record {builder.received + 1}: a {builder.kind} dataset takes "
                        f"{builder.kind} records, not {which or 'an empty record'}"
                    )
                builder.add(fields)
        if builder is None:
            raise InvalidArgument("the upload is empty: send a header, then records")
        dataset = builder.finish()
        await asyncio.to_thread(self.state.save_dataset, dataset, name)
        return pb.UploadDatasetResponse(
            dataset_digest=dataset.digest,
            records=len(dataset.records),
            duplicates_dropped=dataset.duplicates_dropped,
            kind=KIND.value(dataset.kind, "kind"),
        )

    def _job(self, job: Job) -> pb.Job:
        return job_message(job, self.jobs.queue_position(job.id))

    async def SubmitJob(
        self, request: pb.SubmitJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.Job:
        job = await asyncio.to_thread(self.jobs.submit, job_request(request))
        return self._job(job)

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.JobProgress]:
        if not request.job_id:
            raise InvalidArgument("job_id is required")
        async for job in self.jobs.watch(request.job_id):
            yield progress_message(job)

    async def CancelJob(
        self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.Job:
        if not request.job_id:
            raise InvalidArgument("job_id is required")
        return self._job(await self.jobs.cancel(request.job_id))

    async def GetJob(self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        if not request.job_id:
            raise InvalidArgument("job_id is required")
        return self._job(self.jobs.get(request.job_id))


# -- protobuf <-> the job queue's dataclasses ------------------------------------------


def job_request(request: pb.SubmitJobRequest) -> JobRequest:
    """A SubmitJobRequest as the queue checks it; unknown enum values are errors."""
    return JobRequest(
        kind=KIND.parse(request.kind, "kind"),
        dataset_digest=request.dataset_digest,
        role=request.role,
        iteration=request.iteration,
        base_model=request.base_model,
        parent_adapter=request.parent_adapter,
        hyperparameters=hyperparameters_given(request.hyperparameters),
        world_size=request.world_size,
        strategy=STRATEGY.parse(request.strategy, "strategy"),
        idempotency_key=request.idempotency_key,
    )


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


def job_message(job: Job, queue_position: int = 0) -> pb.Job:
    sub = job.submission
    msg = pb.Job(
        id=job.id,
        kind=KIND.value(job.kind, "kind"),
        state=JOB_STATE.value(job.state, "state"),
        request=pb.SubmitJobRequest(
            kind=KIND.value(sub.kind, "kind"),
            dataset_digest=sub.dataset_digest,
            role=sub.role,
            iteration=sub.iteration,
            base_model=sub.base_model,
            parent_adapter=sub.parent_adapter,
            hyperparameters=hyperparameters_message(sub.hyperparameters),
            world_size=sub.world_size,
            strategy=STRATEGY.value(sub.strategy or "", "strategy"),
            idempotency_key=sub.idempotency_key,
        ),
        queue_position=queue_position,
        error=job.error,
        created_at=timestamp(job.created_at),
        progress=progress_fields(job),
    )
    if job.result is not None:
        r = job.result
        msg.result.CopyFrom(
            common_pb2.AdapterVersion(
                name=r.name, digest=r.digest, role=r.role, iteration=r.iteration
            )
        )
    if job.started_at is not None:
        msg.started_at.CopyFrom(timestamp(job.started_at))
    if job.finished_at is not None:
        msg.finished_at.CopyFrom(timestamp(job.finished_at))
    return msg


def progress_fields(job: Job) -> pb.JobProgress:
    """The job's progress, without the job."""
    fields = dataclasses.asdict(job.progress)
    eta_s = fields.pop("eta_s")
    msg = pb.JobProgress(job_id=job.id, state=JOB_STATE.value(job.state, "state"), **fields)
    if eta_s is not None:
        msg.eta.CopyFrom(Duration(seconds=eta_s))
    return msg


def progress_message(job: Job) -> pb.JobProgress:
    """A WatchJob update: the progress, and the whole job once it is final."""
    msg = progress_fields(job)
    if job.state in ("succeeded", "failed", "cancelled"):
        msg.job.CopyFrom(job_message(job))
    return msg


class ArtifactStoreService(pb_grpc.ArtifactStoreServicer):
    """gRPC handlers of ``spar.v1.ArtifactStore``: list, read and fetch published adapter
    versions (a fetch streams the files in ``chunk_bytes`` pieces)."""

    def __init__(self, store: ArtifactStore, chunk_bytes: int) -> None:
        self.store = store
        self.chunk_bytes = chunk_bytes

    async def ListAdapters(
        self, request: pb.ListAdaptersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAdaptersResponse:
        manifests = await asyncio.to_thread(self.store.list, request.role)
        return pb.ListAdaptersResponse(adapters=[manifest_message(m) for m in manifests])

    async def GetManifest(
        self, request: pb.GetManifestRequest, context: grpc.aio.ServicerContext
    ) -> pb.AdapterManifest:
        if not request.name:
            raise InvalidArgument("name is required (e.g. actor-1-0123456789ab)")
        return manifest_message(await asyncio.to_thread(self.store.get, request.name))

    async def FetchAdapter(
        self, request: pb.FetchAdapterRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AdapterChunk]:
        if not request.name:
            raise InvalidArgument("name is required (e.g. actor-1-0123456789ab)")
        manifest = await asyncio.to_thread(self.store.get, request.name)
        yield pb.AdapterChunk(manifest=manifest_message(manifest))
        for entry in manifest["files"]:
            path = self.store.file_path(request.name, entry["path"])
            with path.open("rb") as f:
                offset = 0
                while True:
                    data = await asyncio.to_thread(f.read, self.chunk_bytes)
                    if not data:
                        break
                    yield pb.AdapterChunk(
                        chunk=pb.FileChunk(path=entry["path"], offset=offset, data=data)
                    )
                    offset += len(data)
