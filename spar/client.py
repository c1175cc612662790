"""The Python client SDK of spar (sync and async). The CLI uses it too.

Errors come back as :class:`spar.errors.SparError` subclasses carrying the server's
status code and message.

    with ActorClient("127.0.0.1:50051") as actor:
        reply = actor.generate("Write a haiku about rain.", n=3)

Every client takes ``credentials`` (TLS; None: plaintext), ``token`` (sent as
``authorization: Bearer <token>``) and ``server_name``; :func:`spar.security.client_security`
builds them from the ``SPAR_TLS__*`` / ``SPAR_AUTH__*`` settings:

    with ActorClient(target, **client_security(Settings())) as actor: ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Self, TypeVar, Unpack

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from spar.errors import InvalidArgument, SparError, from_status
from spar.security import ClientSecurity, open_aio_channel, open_channel
from spar.v1 import (
    actor_pb2,
    actor_pb2_grpc,
    adapter_host_pb2,
    adapter_host_pb2_grpc,
    common_pb2,
    coordinator_pb2,
    coordinator_pb2_grpc,
    refiner_pb2,
    refiner_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


#: What a TLS client sees from a plaintext server (OpenSSL's "wrong version number").
_PLAINTEXT_SERVER = "WRONG_VERSION_NUMBER"


def _error(exc: grpc.RpcError) -> SparError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE and _PLAINTEXT_SERVER in (details or ""):
        details = (
            f"{details} (the server speaks plaintext, e.g. spar up: connect with "
            "SPAR_TLS__PLAINTEXT=true or --plaintext, or give the server a certificate)"
        )
    return from_status(code, details or "")


class _Client:
    """What every blocking client shares: channel, default deadline, errors, health."""

    def __init__(
        self, target: str, *, timeout: float | None = None, **security: Unpack[ClientSecurity]
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.channel = open_channel(target, CHANNEL_OPTIONS, **security)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _call(self, fn: Callable[..., Any], request: Any, timeout: float | None = None) -> Any:
        try:
            return fn(request, timeout=timeout if timeout is not None else self.timeout)
        except grpc.RpcError as exc:
            raise _error(exc) from None

    def health(self, service: str = "", timeout: float | None = 5.0) -> str:
        """SERVING, NOT_SERVING, ... of the server (or one of its services)."""
        req = health_pb2.HealthCheckRequest(service=service)
        reply = self._call(self.health_stub.Check, req, timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


class _AsyncClient:
    """What every asyncio client shares: channel, default deadline, errors, health."""

    def __init__(
        self, target: str, *, timeout: float | None = None, **security: Unpack[ClientSecurity]
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.channel = open_aio_channel(target, CHANNEL_OPTIONS, **security)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def _call(
        self, fn: Callable[..., Any], request: Any, timeout: float | None = None
    ) -> Any:
        try:
            return await fn(request, timeout=timeout if timeout is not None else self.timeout)
        except grpc.RpcError as exc:
            raise _error(exc) from None

    async def health(self, service: str = "", timeout: float | None = 5.0) -> str:
        """SERVING, NOT_SERVING, ... of the server (or one of its services)."""
        req = health_pb2.HealthCheckRequest(service=service)
        reply = await self._call(self.health_stub.Check, req, timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def generate_request(
    prompt: str = "",
    *,
    messages: Sequence[tuple[str, str]] = (),
    n: int = 1,
    temperature: float | None = None,
    top_p: float | None = None,
    max_tokens: int = 0,
    stop: Sequence[str] = (),
    seed: int | None = None,
    adapter: str = "",
    raw_prompt: bool = False,
    request_id: str = "",
) -> actor_pb2.GenerateRequest:
    sampling = common_pb2.SamplingParams(n=n, max_tokens=max_tokens, stop=list(stop))
    if temperature is not None:
        sampling.temperature = temperature
    if top_p is not None:
        sampling.top_p = top_p
    if seed is not None:
        sampling.seed = seed
    return actor_pb2.GenerateRequest(
        prompt=prompt,
        messages=[common_pb2.ChatMessage(role=r, content=c) for r, c in messages],
        raw_prompt=raw_prompt,
        sampling=sampling,
        adapter=adapter,
        request_id=request_id,
    )


def stage_request(
    name: str, local_path: str = "", *, store_target: str = "", digest: str = ""
) -> adapter_host_pb2.StageAdapterRequest:
    source = (
        adapter_host_pb2.AdapterSource(store_target=store_target)
        if store_target
        else adapter_host_pb2.AdapterSource(local_path=local_path)
    )
    return adapter_host_pb2.StageAdapterRequest(
        version=common_pb2.AdapterVersion(name=name, digest=digest), source=source
    )


class ActorClient(_Client):
    """Blocking client of an actor (``Actor`` + ``AdapterHost`` + health)."""

    def __init__(
        self, target: str, *, timeout: float | None = None, **security: Unpack[ClientSecurity]
    ) -> None:
        super().__init__(target, timeout=timeout, **security)
        self.actor = actor_pb2_grpc.ActorStub(self.channel)
        self.adapters = adapter_host_pb2_grpc.AdapterHostStub(self.channel)

    def generate(
        self, prompt: str = "", *, timeout: float | None = None, **kwargs: Any
    ) -> actor_pb2.GenerateResponse:
        reply: actor_pb2.GenerateResponse = self._call(
            self.actor.Generate, generate_request(prompt, **kwargs), timeout
        )
        return reply

    def generate_stream(
        self, prompt: str = "", *, timeout: float | None = None, **kwargs: Any
    ) -> Iterator[actor_pb2.GenerateStreamResponse]:
        stream = self._call(self.actor.GenerateStream, generate_request(prompt, **kwargs), timeout)
        try:
            yield from stream
        except grpc.RpcError as exc:
            raise _error(exc) from None
        finally:
            stream.cancel()

    def stage_adapter(
        self, name: str, local_path: str = "", *, store_target: str = "", digest: str = ""
    ) -> adapter_host_pb2.StageAdapterResponse:
        req = stage_request(name, local_path, store_target=store_target, digest=digest)
        reply: adapter_host_pb2.StageAdapterResponse = self._call(
            self.adapters.StageAdapter, req, None
        )
        return reply

    def activate_adapter(self, name: str) -> adapter_host_pb2.ActivateAdapterResponse:
        req = adapter_host_pb2.ActivateAdapterRequest(name=name)
        reply: adapter_host_pb2.ActivateAdapterResponse = self._call(
            self.adapters.ActivateAdapter, req, None
        )
        return reply

    def retire_adapter(self, name: str) -> adapter_host_pb2.RetireAdapterResponse:
        req = adapter_host_pb2.RetireAdapterRequest(name=name)
        reply: adapter_host_pb2.RetireAdapterResponse = self._call(
            self.adapters.RetireAdapter, req, None
        )
        return reply

    def list_adapters(self) -> adapter_host_pb2.ListHostedAdaptersResponse:
        req = adapter_host_pb2.ListHostedAdaptersRequest()
        reply: adapter_host_pb2.ListHostedAdaptersResponse = self._call(
            self.adapters.ListAdapters, req, None
        )
        return reply


class AsyncActorClient(_AsyncClient):
    """asyncio client of an actor; same methods as :class:`ActorClient`, awaitable."""

    def __init__(
        self, target: str, *, timeout: float | None = None, **security: Unpack[ClientSecurity]
    ) -> None:
        super().__init__(target, timeout=timeout, **security)
        self.actor = actor_pb2_grpc.ActorStub(self.channel)
        self.adapters = adapter_host_pb2_grpc.AdapterHostStub(self.channel)

    async def generate(
        self, prompt: str = "", *, timeout: float | None = None, **kwargs: Any
    ) -> actor_pb2.GenerateResponse:
        reply: actor_pb2.GenerateResponse = await self._call(
            self.actor.Generate, generate_request(prompt, **kwargs), timeout
        )
        return reply

    async def generate_stream(
        self, prompt: str = "", *, timeout: float | None = None, **kwargs: Any
    ) -> AsyncIterator[actor_pb2.GenerateStreamResponse]:
        call = self.actor.GenerateStream(
            generate_request(prompt, **kwargs),
            timeout=timeout if timeout is not None else self.timeout,
        )
        try:
            async for item in call:
                yield item
        except grpc.RpcError as exc:
            raise _error(exc) from None
        finally:
            call.cancel()

    async def stage_adapter(
        self, name: str, local_path: str = "", *, store_target: str = "", digest: str = ""
    ) -> adapter_host_pb2.StageAdapterResponse:
        req = stage_request(name, local_path, store_target=store_target, digest=digest)
        reply: adapter_host_pb2.StageAdapterResponse = await self._call(
            self.adapters.StageAdapter, req, None
        )
        return reply

    async def activate_adapter(self, name: str) -> adapter_host_pb2.ActivateAdapterResponse:
        req = adapter_host_pb2.ActivateAdapterRequest(name=name)
        reply: adapter_host_pb2.ActivateAdapterResponse = await self._call(
            self.adapters.ActivateAdapter, req, None
        )
        return reply

    async def retire_adapter(self, name: str) -> adapter_host_pb2.RetireAdapterResponse:
        req = adapter_host_pb2.RetireAdapterRequest(name=name)
        reply: adapter_host_pb2.RetireAdapterResponse = await self._call(
            self.adapters.RetireAdapter, req, None
        )
        return reply

    async def list_adapters(self) -> adapter_host_pb2.ListHostedAdaptersResponse:
        req = adapter_host_pb2.ListHostedAdaptersRequest()
        reply: adapter_host_pb2.ListHostedAdaptersResponse = await self._call(
            self.adapters.ListAdapters, req, None
        )
        return reply


# -- refiner -------------------------------------------------------------------------

ConstraintSpec = tuple[str, Mapping[str, Any]] | common_pb2.VerifiableConstraint
_E = TypeVar("_E")

JUDGE_KINDS = {
    "": common_pb2.JUDGE_KIND_UNSPECIFIED,
    "llm": common_pb2.JUDGE_KIND_LLM,
    "verifier": common_pb2.JUDGE_KIND_VERIFIER,
    "hybrid": common_pb2.JUDGE_KIND_HYBRID,
    "external": common_pb2.JUDGE_KIND_EXTERNAL,
}
STRATEGIES = {
    "": common_pb2.SEARCH_STRATEGY_UNSPECIFIED,
    "bfs": common_pb2.SEARCH_STRATEGY_BFS,
    "dfs": common_pb2.SEARCH_STRATEGY_DFS,
}
SELECTIONS = {
    "": common_pb2.NODE_SELECTION_UNSPECIFIED,
    "greedy": common_pb2.NODE_SELECTION_GREEDY,
    "proportional": common_pb2.NODE_SELECTION_PROPORTIONAL,
}
TIE_POLICIES = {
    "": refiner_pb2.TIE_POLICY_UNSPECIFIED,
    "resample": refiner_pb2.TIE_POLICY_RESAMPLE,
    "undecided": refiner_pb2.TIE_POLICY_UNDECIDED,
}


def _choice(table: Mapping[str, _E], value: str, what: str) -> _E:
    if value not in table:
        raise InvalidArgument(
            f"{what} {value!r} is unknown; use one of {sorted(k for k in table if k)}"
        )
    return table[value]


def constraint_messages(
    constraints: Sequence[ConstraintSpec],
) -> list[common_pb2.VerifiableConstraint]:
    """(instruction id, kwargs) pairs as VerifiableConstraint messages."""
    out = []
    for c in constraints:
        if isinstance(c, common_pb2.VerifiableConstraint):
            out.append(c)
            continue
        instruction_id, kwargs = c
        msg = common_pb2.VerifiableConstraint(instruction_id=instruction_id)
        msg.kwargs.update(dict(kwargs))
        out.append(msg)
    return out


def search_options(
    *,
    strategy: str = "",
    selection: str = "",
    branch: int | None = None,
    keep_top: int | None = None,
    max_depth: int | None = None,
    end_gate: float | None = None,
    judge_samples: int | None = None,
) -> common_pb2.SearchOptions:
    o = common_pb2.SearchOptions(
        strategy=_choice(STRATEGIES, strategy, "strategy"),
        selection=_choice(SELECTIONS, selection, "selection"),
    )
    if branch is not None:
        o.branch = branch
    if keep_top is not None:
        o.keep_top = keep_top
    if max_depth is not None:
        o.max_depth = max_depth
    if end_gate is not None:
        o.end_gate = end_gate
    if judge_samples is not None:
        o.judge_samples = judge_samples
    return o


def search_budget(
    *, max_nodes: int = 0, max_generated_tokens: int = 0, max_wall_time_s: float | None = None
) -> common_pb2.SearchBudget:
    b = common_pb2.SearchBudget(max_nodes=max_nodes, max_generated_tokens=max_generated_tokens)
    if max_wall_time_s is not None:
        b.max_wall_time.FromNanoseconds(int(max_wall_time_s * 1e9))
    return b


def judge_request(
    instruction: str,
    response: str,
    *,
    constraints: Sequence[ConstraintSpec] = (),
    criteria: Sequence[str] = (),
    kind: str = "",
    samples: int = 0,
    tie_policy: str = "",
    return_all_samples: bool = False,
) -> refiner_pb2.JudgeRequest:
    return refiner_pb2.JudgeRequest(
        instruction=instruction,
        response=response,
        constraints=constraint_messages(constraints),
        criteria=list(criteria),
        kind=_choice(JUDGE_KINDS, kind, "judge kind"),
        samples=samples,
        tie_policy=_choice(TIE_POLICIES, tie_policy, "tie policy"),
        return_all_samples=return_all_samples,
    )


def refine_request(
    instruction: str,
    response: str,
    *,
    constraints: Sequence[ConstraintSpec] = (),
    criteria: Sequence[str] = (),
    judge: str = "",
    options: common_pb2.SearchOptions | None = None,
    budget: common_pb2.SearchBudget | None = None,
    return_tree: bool = False,
) -> refiner_pb2.RefineRequest:
    return refiner_pb2.RefineRequest(
        instruction=instruction,
        response=response,
        constraints=constraint_messages(constraints),
        criteria=list(criteria),
        judge=_choice(JUDGE_KINDS, judge, "judge kind"),
        options=options,
        budget=budget,
        return_tree=return_tree,
    )


def answer_request(
    prompt: str = "",
    *,
    messages: Sequence[tuple[str, str]] = (),
    constraints: Sequence[ConstraintSpec] = (),
    criteria: Sequence[str] = (),
    judge: str = "",
    temperature: float | None = None,
    max_tokens: int = 0,
    options: common_pb2.SearchOptions | None = None,
    budget: common_pb2.SearchBudget | None = None,
    include_trace: bool = False,
) -> refiner_pb2.AnswerRequest:
    sampling = common_pb2.SamplingParams(max_tokens=max_tokens)
    if temperature is not None:
        sampling.temperature = temperature
    return refiner_pb2.AnswerRequest(
        prompt=prompt,
        messages=[common_pb2.ChatMessage(role=r, content=c) for r, c in messages],
        constraints=constraint_messages(constraints),
        criteria=list(criteria),
        sampling=sampling,
        judge=_choice(JUDGE_KINDS, judge, "judge kind"),
        budget=budget,
        options=options,
        include_trace=include_trace,
    )


class RefinerClient(_Client):
    """Blocking client of a refiner (``Refiner`` + ``AdapterHost`` + health).

    with RefinerClient("127.0.0.1:50052") as refiner:
        reply = refiner.answer("Describe the sea in under 20 words.",
                               constraints=[("punctuation:no_comma", {})])
    """

    def __init__(
        self, target: str, *, timeout: float | None = None, **security: Unpack[ClientSecurity]
    ) -> None:
        super().__init__(target, timeout=timeout, **security)
        self.refiner = refiner_pb2_grpc.RefinerStub(self.channel)
        self.adapters = adapter_host_pb2_grpc.AdapterHostStub(self.channel)

    def judge(
        self, instruction: str, response: str, *, timeout: float | None = None, **kwargs: Any
    ) -> refiner_pb2.JudgeResponse:
        req = judge_request(instruction, response, **kwargs)
        reply: refiner_pb2.JudgeResponse = self._call(self.refiner.Judge, req, timeout)
        return reply

    def refine(
        self, instruction: str, response: str, *, timeout: float | None = None, **kwargs: Any
    ) -> refiner_pb2.RefineResponse:
        req = refine_request(instruction, response, **kwargs)
        reply: refiner_pb2.RefineResponse = self._call(self.refiner.Refine, req, timeout)
        return reply

    def refine_stream(
        self, instruction: str, response: str, *, timeout: float | None = None, **kwargs: Any
    ) -> Iterator[refiner_pb2.RefineEvent]:
        req = refine_request(instruction, response, **kwargs)
        stream = self._call(self.refiner.RefineStream, req, timeout)
        try:
            yield from stream
        except grpc.RpcError as exc:
            raise _error(exc) from None
        finally:
            stream.cancel()

    def answer(
        self, prompt: str = "", *, timeout: float | None = None, **kwargs: Any
    ) -> refiner_pb2.AnswerResponse:
        reply: refiner_pb2.AnswerResponse = self._call(
            self.refiner.Answer, answer_request(prompt, **kwargs), timeout
        )
        return reply


class AsyncRefinerClient(_AsyncClient):
    """asyncio client of a refiner; same methods as :class:`RefinerClient`, awaitable."""

    def __init__(
        self, target: str, *, timeout: float | None = None, **security: Unpack[ClientSecurity]
    ) -> None:
        super().__init__(target, timeout=timeout, **security)
        self.refiner = refiner_pb2_grpc.RefinerStub(self.channel)
        self.adapters = adapter_host_pb2_grpc.AdapterHostStub(self.channel)

    async def judge(
        self, instruction: str, response: str, *, timeout: float | None = None, **kwargs: Any
    ) -> refiner_pb2.JudgeResponse:
        req = judge_request(instruction, response, **kwargs)
        reply: refiner_pb2.JudgeResponse = await self._call(self.refiner.Judge, req, timeout)
        return reply

    async def refine(
        self, instruction: str, response: str, *, timeout: float | None = None, **kwargs: Any
    ) -> refiner_pb2.RefineResponse:
        req = refine_request(instruction, response, **kwargs)
        reply: refiner_pb2.RefineResponse = await self._call(self.refiner.Refine, req, timeout)
        return reply

    async def refine_stream(
        self, instruction: str, response: str, *, timeout: float | None = None, **kwargs: Any
    ) -> AsyncIterator[refiner_pb2.RefineEvent]:
        call = self.refiner.RefineStream(
            refine_request(instruction, response, **kwargs),
            timeout=timeout if timeout is not None else self.timeout,
        )
        try:
            async for item in call:
                yield item
        except grpc.RpcError as exc:
            raise _error(exc) from None
        finally:
            call.cancel()

    async def answer(
        self, prompt: str = "", *, timeout: float | None = None, **kwargs: Any
    ) -> refiner_pb2.AnswerResponse:
        req = answer_request(prompt, **kwargs)
        reply: refiner_pb2.AnswerResponse = await self._call(self.refiner.Answer, req, timeout)
        return reply


# Trainer and artifact store

JOB_KINDS: dict[str, trainer_pb2.JobKind] = {
    "dpo": trainer_pb2.JOB_KIND_DPO,
    "sft": trainer_pb2.JOB_KIND_SFT,
}
#: How a job spreads over several GPUs ("" = the trainer's default, DDP).
TRAINING_STRATEGIES: dict[str, trainer_pb2.DistributedStrategy] = {
    "": trainer_pb2.DISTRIBUTED_STRATEGY_UNSPECIFIED,
    "ddp": trainer_pb2.DISTRIBUTED_STRATEGY_DDP,
    "fsdp": trainer_pb2.DISTRIBUTED_STRATEGY_FSDP,
}
_RECORD_FIELDS = {"dpo": ("prompt", "chosen", "rejected"), "sft": ("prompt", "completion")}


def dataset_record(kind: str, record: Mapping[str, Any], number: int) -> trainer_pb2.DatasetRecord:
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
        return trainer_pb2.DatasetRecord(dpo=trainer_pb2.DpoRecord(**fields))
    messages = record.get("messages", [])
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages
    ):
        raise InvalidArgument(f"{where}: 'messages' must be a list of {{role, content}} strings")
    chat = [common_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in messages]
    return trainer_pb2.DatasetRecord(sft=trainer_pb2.SftRecord(messages=chat, **fields))


def upload_requests(
    kind: str,
    records: Iterable[Mapping[str, Any]],
    name: str = "",
    batch_size: int = 256,
    batch_bytes: int = 4 * 1024 * 1024,
) -> Iterator[trainer_pb2.UploadDatasetRequest]:
    """The UploadDataset stream: a header, then batches of records, each batch well under
    the servers' message size limit."""
    if kind not in JOB_KINDS:
        raise InvalidArgument(f"kind must be one of {', '.join(JOB_KINDS)}, not {kind!r}")
    header = trainer_pb2.DatasetHeader(kind=JOB_KINDS[kind], name=name)
    yield trainer_pb2.UploadDatasetRequest(header=header)
    batch: list[trainer_pb2.DatasetRecord] = []
    size = 0
    for number, record in enumerate(records, start=1):
        message = dataset_record(kind, record, number)
        if batch and (len(batch) >= batch_size or size + message.ByteSize() > batch_bytes):
            yield trainer_pb2.UploadDatasetRequest(batch=trainer_pb2.DatasetBatch(records=batch))
            batch, size = [], 0
        batch.append(message)
        size += message.ByteSize()
    if batch:
        yield trainer_pb2.UploadDatasetRequest(batch=trainer_pb2.DatasetBatch(records=batch))


def submit_request(
    kind: str,
    dataset_digest: str,
    *,
    role: str = "",
    iteration: int = 0,
    parent: str = "",
    base_model: str = "",
    hyperparameters: Mapping[str, Any] | None = None,
    idempotency_key: str = "",
    world_size: int = 0,
    strategy: str = "",
) -> trainer_pb2.SubmitJobRequest:
    """world_size: processes (GPUs) of the job, 0 = the trainer's default (all its GPUs);
    strategy: ddp (default) or fsdp."""
    if kind not in JOB_KINDS:
        raise InvalidArgument(f"kind must be one of {', '.join(JOB_KINDS)}, not {kind!r}")
    hp = trainer_pb2.TrainingHyperparameters()
    for key, value in (hyperparameters or {}).items():
        if not hasattr(hp, key):
            raise InvalidArgument(f"unknown hyperparameter {key!r}")
        if key == "target_modules":
            hp.target_modules.extend(value)
        else:
            setattr(hp, key, value)
    return trainer_pb2.SubmitJobRequest(
        kind=JOB_KINDS[kind],
        dataset_digest=dataset_digest,
        role=role,
        iteration=iteration,
        parent_adapter=parent,
        base_model=base_model,
        hyperparameters=hp,
        idempotency_key=idempotency_key,
        world_size=world_size,
        strategy=_choice(TRAINING_STRATEGIES, strategy, "strategy"),
    )


class TrainerClient(_Client):
    """Blocking client of a trainer (``Trainer`` + ``ArtifactStore`` + health).

    with TrainerClient("127.0.0.1:50053") as trainer:
        data = trainer.upload_dataset("dpo", [{"prompt": ..., "chosen": ..., "rejected": ...}])
        job = trainer.submit_job("dpo", data.dataset_digest, iteration=1)
        for progress in trainer.watch_job(job.id):
            print(progress.step, progress.loss)
    """

    def __init__(
        self, target: str, *, timeout: float | None = None, **security: Unpack[ClientSecurity]
    ) -> None:
        super().__init__(target, timeout=timeout, **security)
        self.trainer = trainer_pb2_grpc.TrainerStub(self.channel)
        self.store = trainer_pb2_grpc.ArtifactStoreStub(self.channel)

    def upload_dataset(
        self, kind: str, records: Iterable[Mapping[str, Any]], *, name: str = ""
    ) -> trainer_pb2.UploadDatasetResponse:
        reply: trainer_pb2.UploadDatasetResponse = self._call(
            self.trainer.UploadDataset, upload_requests(kind, records, name), None
        )
        return reply

    def submit_job(self, kind: str, dataset_digest: str, **kwargs: Any) -> trainer_pb2.Job:
        req = submit_request(kind, dataset_digest, **kwargs)
        reply: trainer_pb2.Job = self._call(self.trainer.SubmitJob, req, None)
        return reply

    def watch_job(self, job_id: str) -> Iterator[trainer_pb2.JobProgress]:
        """Progress until the job's final state (the last message carries the job)."""
        stream = self.trainer.WatchJob(trainer_pb2.WatchJobRequest(job_id=job_id))
        try:
            yield from stream
        except grpc.RpcError as exc:
            raise _error(exc) from None
        finally:
            stream.cancel()

    def get_job(self, job_id: str) -> trainer_pb2.Job:
        reply: trainer_pb2.Job = self._call(
            self.trainer.GetJob, trainer_pb2.GetJobRequest(job_id=job_id), None
        )
        return reply

    def cancel_job(self, job_id: str) -> trainer_pb2.Job:
        reply: trainer_pb2.Job = self._call(
            self.trainer.CancelJob, trainer_pb2.CancelJobRequest(job_id=job_id), None
        )
        return reply

    def list_adapters(self, role: str = "") -> trainer_pb2.ListAdaptersResponse:
        reply: trainer_pb2.ListAdaptersResponse = self._call(
            self.store.ListAdapters, trainer_pb2.ListAdaptersRequest(role=role), None
        )
        return reply

    def get_manifest(self, name: str) -> trainer_pb2.AdapterManifest:
        reply: trainer_pb2.AdapterManifest = self._call(
            self.store.GetManifest, trainer_pb2.GetManifestRequest(name=name), None
        )
        return reply


class AsyncTrainerClient(_AsyncClient):
    """asyncio client of a trainer; same methods as :class:`TrainerClient`, awaitable."""

    def __init__(
        self, target: str, *, timeout: float | None = None, **security: Unpack[ClientSecurity]
    ) -> None:
        super().__init__(target, timeout=timeout, **security)
        self.trainer = trainer_pb2_grpc.TrainerStub(self.channel)
        self.store = trainer_pb2_grpc.ArtifactStoreStub(self.channel)

    async def upload_dataset(
        self, kind: str, records: Iterable[Mapping[str, Any]], *, name: str = ""
    ) -> trainer_pb2.UploadDatasetResponse:
        requests = list(upload_requests(kind, records, name))
        reply: trainer_pb2.UploadDatasetResponse = await self._call(
            self.trainer.UploadDataset, iter(requests), None
        )
        return reply

    async def submit_job(self, kind: str, dataset_digest: str, **kwargs: Any) -> trainer_pb2.Job:
        req = submit_request(kind, dataset_digest, **kwargs)
        reply: trainer_pb2.Job = await self._call(self.trainer.SubmitJob, req, None)
        return reply

    async def watch_job(self, job_id: str) -> AsyncIterator[trainer_pb2.JobProgress]:
        call = self.trainer.WatchJob(trainer_pb2.WatchJobRequest(job_id=job_id))
        try:
            async for item in call:
                yield item
        except grpc.RpcError as exc:
            raise _error(exc) from None
        finally:
            call.cancel()

    async def wait_job(self, job_id: str) -> trainer_pb2.Job:
        """Watches the job to its final state and returns it."""
        last: trainer_pb2.Job | None = None
        async for progress in self.watch_job(job_id):
            if progress.HasField("job"):
                last = progress.job
        return last if last is not None else await self.get_job(job_id)

    async def get_job(self, job_id: str) -> trainer_pb2.Job:
        reply: trainer_pb2.Job = await self._call(
            self.trainer.GetJob, trainer_pb2.GetJobRequest(job_id=job_id), None
        )
        return reply

    async def cancel_job(self, job_id: str) -> trainer_pb2.Job:
        reply: trainer_pb2.Job = await self._call(
            self.trainer.CancelJob, trainer_pb2.CancelJobRequest(job_id=job_id), None
        )
        return reply

    async def list_adapters(self, role: str = "") -> trainer_pb2.ListAdaptersResponse:
        reply: trainer_pb2.ListAdaptersResponse = await self._call(
            self.store.ListAdapters, trainer_pb2.ListAdaptersRequest(role=role), None
        )
        return reply

    async def get_manifest(self, name: str) -> trainer_pb2.AdapterManifest:
        reply: trainer_pb2.AdapterManifest = await self._call(
            self.store.GetManifest, trainer_pb2.GetManifestRequest(name=name), None
        )
        return reply


class CoordinatorClient(_Client):
    """Blocking client of the coordinator.

    with CoordinatorClient("127.0.0.1:50054") as coordinator:
        it = coordinator.start_iteration()
        for event in coordinator.watch_iteration(it.number):
            print(event.message)
    """

    def __init__(
        self, target: str, *, timeout: float | None = None, **security: Unpack[ClientSecurity]
    ) -> None:
        super().__init__(target, timeout=timeout, **security)
        self.stub = coordinator_pb2_grpc.CoordinatorStub(self.channel)

    def start_iteration(
        self, prompts_path: str = "", num_prompts: int = 0
    ) -> coordinator_pb2.Iteration:
        req = coordinator_pb2.StartIterationRequest(
            prompts_path=prompts_path, num_prompts=num_prompts
        )
        reply: coordinator_pb2.Iteration = self._call(self.stub.StartIteration, req)
        return reply

    def watch_iteration(self, number: int = 0) -> Iterator[coordinator_pb2.IterationEvent]:
        stream = self.stub.WatchIteration(coordinator_pb2.WatchIterationRequest(number=number))
        try:
            yield from stream
        except grpc.RpcError as exc:
            raise _error(exc) from None
        finally:
            stream.cancel()

    def get_state(self) -> coordinator_pb2.CoordinatorState:
        reply: coordinator_pb2.CoordinatorState = self._call(
            self.stub.GetState, coordinator_pb2.GetStateRequest()
        )
        return reply

    def rollback(
        self, role: str, name: str = "", *, operator: str = "", reason: str = ""
    ) -> coordinator_pb2.RollbackResponse:
        req = coordinator_pb2.RollbackRequest(
            role=role, name=name, operator=operator, reason=reason
        )
        reply: coordinator_pb2.RollbackResponse = self._call(self.stub.Rollback, req)
        return reply

    def list_audit(
        self, iteration: int = 0, role: str = "", limit: int = 0
    ) -> coordinator_pb2.ListAuditResponse:
        req = coordinator_pb2.ListAuditRequest(iteration=iteration, role=role, limit=limit)
        reply: coordinator_pb2.ListAuditResponse = self._call(self.stub.ListAudit, req)
        return reply

    def promote(
        self, iteration: int, *, operator: str = "", reason: str = ""
    ) -> coordinator_pb2.Iteration:
        req = coordinator_pb2.PromoteRequest(iteration=iteration, operator=operator, reason=reason)
        reply: coordinator_pb2.Iteration = self._call(self.stub.Promote, req)
        return reply

    def reject(
        self, iteration: int, *, operator: str = "", reason: str = ""
    ) -> coordinator_pb2.Iteration:
        req = coordinator_pb2.RejectRequest(iteration=iteration, operator=operator, reason=reason)
        reply: coordinator_pb2.Iteration = self._call(self.stub.Reject, req)
        return reply


class AsyncCoordinatorClient(_AsyncClient):
    """asyncio client of the coordinator; same methods as :class:`CoordinatorClient`."""

    def __init__(
        self, target: str, *, timeout: float | None = None, **security: Unpack[ClientSecurity]
    ) -> None:
        super().__init__(target, timeout=timeout, **security)
        self.stub = coordinator_pb2_grpc.CoordinatorStub(self.channel)

    async def start_iteration(
        self, prompts_path: str = "", num_prompts: int = 0
    ) -> coordinator_pb2.Iteration:
        req = coordinator_pb2.StartIterationRequest(
            prompts_path=prompts_path, num_prompts=num_prompts
        )
        reply: coordinator_pb2.Iteration = await self._call(self.stub.StartIteration, req)
        return reply

    async def watch_iteration(
        self, number: int = 0
    ) -> AsyncIterator[coordinator_pb2.IterationEvent]:
        call = self.stub.WatchIteration(coordinator_pb2.WatchIterationRequest(number=number))
        try:
            async for item in call:
                yield item
        except grpc.RpcError as exc:
            raise _error(exc) from None
        finally:
            call.cancel()

    async def get_state(self) -> coordinator_pb2.CoordinatorState:
        reply: coordinator_pb2.CoordinatorState = await self._call(
            self.stub.GetState, coordinator_pb2.GetStateRequest()
        )
        return reply

    async def rollback(
        self, role: str, name: str = "", *, operator: str = "", reason: str = ""
    ) -> coordinator_pb2.RollbackResponse:
        req = coordinator_pb2.RollbackRequest(
            role=role, name=name, operator=operator, reason=reason
        )
        reply: coordinator_pb2.RollbackResponse = await self._call(self.stub.Rollback, req)
        return reply

    async def list_audit(
        self, iteration: int = 0, role: str = "", limit: int = 0
    ) -> coordinator_pb2.ListAuditResponse:
        req = coordinator_pb2.ListAuditRequest(iteration=iteration, role=role, limit=limit)
        reply: coordinator_pb2.ListAuditResponse = await self._call(self.stub.ListAudit, req)
        return reply

    async def promote(
        self, iteration: int, *, operator: str = "", reason: str = ""
    ) -> coordinator_pb2.Iteration:
        req = coordinator_pb2.PromoteRequest(iteration=iteration, operator=operator, reason=reason)
        reply: coordinator_pb2.Iteration = await self._call(self.stub.Promote, req)
        return reply

    async def reject(
        self, iteration: int, *, operator: str = "", reason: str = ""
    ) -> coordinator_pb2.Iteration:
        req = coordinator_pb2.RejectRequest(iteration=iteration, operator=operator, reason=reason)
        reply: coordinator_pb2.Iteration = await self._call(self.stub.Reject, req)
        return reply
