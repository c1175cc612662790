"""Client of a trainer: datasets and jobs (``Trainer``), trained adapters (``ArtifactStore``).

Records are TRL-style mappings: ``{prompt, chosen, rejected}`` for DPO, ``{prompt,
completion}`` or ``{messages}`` for SFT; a wrong field is an InvalidArgument that names
the record before anything is sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypedDict, Unpack

from spar.client.base import AsyncClient, Call, Client, server_stream, unary
from spar.client.enums import DISTRIBUTED_STRATEGY, JOB_KIND
from spar.errors import InvalidArgument
from spar.v1 import common_pb2, trainer_pb2_grpc
from spar.v1 import trainer_pb2 as pb

Stub = trainer_pb2_grpc.TrainerStub
StoreStub = trainer_pb2_grpc.ArtifactStoreStub

_RECORD_FIELDS = {"dpo": ("prompt", "chosen", "rejected"), "sft": ("prompt", "completion")}


def _job_kind(kind: str) -> pb.JobKind:
    if kind not in JOB_KIND.names:
        raise InvalidArgument(f"kind must be one of {', '.join(JOB_KIND.names)}, not {kind!r}")
    return JOB_KIND.value(kind, "kind")


def dataset_record(kind: str, record: Mapping[str, Any], number: int) -> pb.DatasetRecord:
    """One TRL-style record as a message; wrong field names or types name the record."""
    where = f"record {number}"
    allowed = {*_RECORD_FIELDS[kind], *(("messages",) if kind == "sft" else ())}
    extra = set(record) - allowed
    if extra:
        raise InvalidArgument(
            f"{where}: unexpected fields {sorted(extra)}; {kind} records have "
            f"{', '.join(sorted(allowed))}"
        )
    fields: dict[str, Any] = {}
    for key in _RECORD_FIELDS[kind]:
        value = record.get(key, "")
        if not isinstance(value, str):
            raise InvalidArgument(f"{where}: {key!r} must be a string")
        fields[key] = value
    if kind == "dpo":
        return pb.DatasetRecord(dpo=pb.DpoRecord(**fields))
    messages = record.get("messages", [])
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages
    ):
        raise InvalidArgument(f"{where}: 'messages' must be a list of {{role, content}} strings")
    chat = [common_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in messages]
    return pb.DatasetRecord(sft=pb.SftRecord(messages=chat, **fields))


def upload_requests(
    kind: str,
    records: Iterable[Mapping[str, Any]],
    name: str = "",
    batch_size: int = 256,
    batch_bytes: int = 4 * 1024 * 1024,
) -> Iterator[pb.UploadDatasetRequest]:
    """The UploadDataset stream: a header, then batches of records, each batch well under
    the servers' message size limit."""
    header = pb.DatasetHeader(kind=_job_kind(kind), name=name)
    yield pb.UploadDatasetRequest(header=header)
    batch: list[pb.DatasetRecord] = []
    size = 0
    for number, record in enumerate(records, start=1):
        message = dataset_record(kind, record, number)
        if batch and (len(batch) >= batch_size or size + message.ByteSize() > batch_bytes):
            yield pb.UploadDatasetRequest(batch=pb.DatasetBatch(records=batch))
            batch, size = [], 0
        batch.append(message)
        size += message.ByteSize()
    if batch:
        yield pb.UploadDatasetRequest(batch=pb.DatasetBatch(records=batch))


class JobOptions(TypedDict, total=False):
    """Options of a training job; each one left out takes the trainer's default."""

    role: str
    """actor or refiner; by default the kind's (dpo: actor, sft: refiner)."""
    iteration: int
    """The iteration the job trains for (its version name carries it)."""
    parent: str
    """The adapter version to continue training; by default a new LoRA adapter."""
    base_model: str
    """The base model the adapter is for; by default the trainer's."""
    hyperparameters: Mapping[str, Any]
    """Fields of TrainingHyperparameters; those left out take the trainer's defaults."""
    idempotency_key: str
    """Submitting a key again returns its job while that is queued, running or succeeded."""
    world_size: int
    """Processes (GPUs) of the job; 0 (the default): all the trainer's GPUs."""
    strategy: str
    """How a job spreads over several GPUs: ddp (the default) or fsdp."""


def submit_request(
    kind: str, dataset_digest: str, **options: Unpack[JobOptions]
) -> pb.SubmitJobRequest:
    """A training job of ``kind`` (dpo or sft) over an uploaded dataset."""
    job_kind = _job_kind(kind)
    hp = pb.TrainingHyperparameters()
    for key, value in options.get("hyperparameters", {}).items():
        if not hasattr(hp, key):
            raise InvalidArgument(f"unknown hyperparameter {key!r}")
        if key == "target_modules":
            hp.target_modules.extend(value)
        else:
            setattr(hp, key, value)
    return pb.SubmitJobRequest(
        kind=job_kind,
        dataset_digest=dataset_digest,
        role=options.get("role", ""),
        iteration=options.get("iteration", 0),
        parent_adapter=options.get("parent", ""),
        base_model=options.get("base_model", ""),
        hyperparameters=hp,
        idempotency_key=options.get("idempotency_key", ""),
        world_size=options.get("world_size", 0),
        strategy=DISTRIBUTED_STRATEGY.value(options.get("strategy", ""), "strategy"),
    )


class TrainerMethods:
    """The trainer's and its artifact store's RPCs, written once for both clients."""

    @unary
    def upload_dataset(
        self, kind: str, records: Iterable[Mapping[str, Any]], *, name: str = ""
    ) -> Call[pb.UploadDatasetResponse]:
        """Uploads a dataset ("dpo" or "sft" records); the reply names its digest."""
        requests = upload_requests(kind, records, name)
        return Call(Stub, "UploadDataset", requests, pb.UploadDatasetResponse)

    @unary
    def submit_job(
        self, kind: str, dataset_digest: str, **options: Unpack[JobOptions]
    ) -> Call[pb.Job]:
        """Queues a training job of ``kind`` (dpo or sft) over an uploaded dataset."""
        request = submit_request(kind, dataset_digest, **options)
        return Call(Stub, "SubmitJob", request, pb.Job)

    @server_stream
    def watch_job(self, job_id: str) -> Call[pb.JobProgress]:
        """Progress until the job's final state (the last message carries the job)."""
        request = pb.WatchJobRequest(job_id=job_id)
        return Call(Stub, "WatchJob", request, pb.JobProgress, deadline=False)

    @unary
    def get_job(self, job_id: str) -> Call[pb.Job]:
        """The job as it is now."""
        return Call(Stub, "GetJob", pb.GetJobRequest(job_id=job_id), pb.Job)

    @unary
    def cancel_job(self, job_id: str) -> Call[pb.Job]:
        """Cancels a queued or running job; nothing is published for it."""
        return Call(Stub, "CancelJob", pb.CancelJobRequest(job_id=job_id), pb.Job)

    @unary
    def list_adapters(self, role: str = "") -> Call[pb.ListAdaptersResponse]:
        """The store's published adapter versions (of one role, or all)."""
        request = pb.ListAdaptersRequest(role=role)
        return Call(StoreStub, "ListAdapters", request, pb.ListAdaptersResponse)

    @unary
    def get_manifest(self, name: str) -> Call[pb.AdapterManifest]:
        """The manifest of a published version: files, digests, lineage."""
        request = pb.GetManifestRequest(name=name)
        return Call(StoreStub, "GetManifest", request, pb.AdapterManifest)


class TrainerClient(TrainerMethods, Client):
    """Blocking client of a trainer (``Trainer`` + ``ArtifactStore`` + health).

    with TrainerClient("127.0.0.1:50053") as trainer:
        data = trainer.upload_dataset("dpo", [{"prompt": ..., "chosen": ..., "rejected": ...}])
        job = trainer.submit_job("dpo", data.dataset_digest, iteration=1)
        for progress in trainer.watch_job(job.id):
            print(progress.step, progress.loss)
    """


class AsyncTrainerClient(TrainerMethods, AsyncClient):
    """asyncio client of a trainer; same methods as :class:`TrainerClient`, awaitable."""

    async def wait_job(self, job_id: str) -> pb.Job:
        """Watches the job to its final state and returns it."""
        last: pb.Job | None = None
        async for progress in self.watch_job(job_id):
            if progress.HasField("job"):
                last = progress.job
        return last if last is not None else await self.get_job(job_id)
