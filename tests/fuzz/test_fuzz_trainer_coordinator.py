"""Generated and malformed requests against a live trainer (Trainer, ArtifactStore) and a
live coordinator, both without engines: only documented status codes, SERVING after."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from hypothesis import given
from hypothesis import strategies as st

from spar.v1 import (
    common_pb2,
    coordinator_pb2,
    coordinator_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)
from tests.fuzz.fuzz_support import (
    FUZZ,
    U32,
    U64,
    assert_serving,
    call_raw,
    call_stream,
    call_unary,
    check,
    enum_values,
    floats64,
    ints_u32,
    method_path,
    names,
    odd_text,
    plain_text,
    raw_bytes,
    rpc_methods,
)


@pytest.fixture(scope="module")
async def trainer_channel(fuzz_trainer: object) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{fuzz_trainer.port}") as ch:  # type: ignore[attr-defined]
        yield ch


@pytest.fixture(scope="module")
async def coordinator_channel(fuzz_coordinator: object) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{fuzz_coordinator.port}") as ch:  # type: ignore[attr-defined]
        yield ch


texts = st.one_of(plain_text, odd_text)


@st.composite
def records(draw: st.DrawFn) -> trainer_pb2.DatasetRecord:
    which = draw(st.sampled_from(["dpo", "sft", "none"]))
    if which == "dpo":
        return trainer_pb2.DatasetRecord(
            dpo=trainer_pb2.DpoRecord(prompt=draw(texts), chosen=draw(texts), rejected=draw(texts))
        )
    if which == "sft":
        sft = trainer_pb2.SftRecord(prompt=draw(texts), completion=draw(texts))
        for _ in range(draw(st.integers(0, 3))):
            sft.messages.append(
                common_pb2.ChatMessage(
                    role=draw(st.sampled_from(["user", "assistant", "system", "x", ""])),
                    content=draw(texts),
                )
            )
        return trainer_pb2.DatasetRecord(sft=sft)
    return trainer_pb2.DatasetRecord()


@st.composite
def uploads(draw: st.DrawFn) -> list[trainer_pb2.UploadDatasetRequest]:
    out = []
    if draw(st.integers(0, 4)):
        out.append(
            trainer_pb2.UploadDatasetRequest(
                header=trainer_pb2.DatasetHeader(kind=draw(enum_values), name=draw(odd_text))
            )
        )
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.integers(0, 5)) == 0:
            out.append(trainer_pb2.UploadDatasetRequest(header=trainer_pb2.DatasetHeader()))
        else:
            batch = trainer_pb2.DatasetBatch(records=draw(st.lists(records(), max_size=4)))
            out.append(trainer_pb2.UploadDatasetRequest(batch=batch))
    return out


@st.composite
def hyperparameters(draw: st.DrawFn) -> trainer_pb2.TrainingHyperparameters:
    h = trainer_pb2.TrainingHyperparameters()
    for f in ("beta", "sft_loss_weight", "lora_dropout", "learning_rate"):
        if draw(st.booleans()):
            setattr(h, f, draw(floats64))
    for f in ("lora_rank", "lora_alpha", "epochs", "batch_size", "gradient_accumulation_steps"):
        if draw(st.booleans()):
            setattr(h, f, draw(ints_u32))
    if draw(st.booleans()):
        h.max_length = draw(st.sampled_from([0, 15, 16, 8192, 8193, U32]))
    if draw(st.booleans()):
        h.seed = draw(st.sampled_from([0, 2**32, U64]))
    h.target_modules.extend(draw(st.lists(odd_text, max_size=3)))
    return h


@st.composite
def submits(draw: st.DrawFn) -> trainer_pb2.SubmitJobRequest:
    return trainer_pb2.SubmitJobRequest(
        kind=draw(enum_values),
        dataset_digest=draw(st.one_of(odd_text, st.just("a" * 64), st.just("a" * 64 + "\n"))),
        role=draw(st.one_of(st.sampled_from(["", "actor", "refiner"]), odd_text)),
        iteration=draw(st.sampled_from([0, 1, U32])),
        base_model=draw(
            st.one_of(
                st.just(""),
                odd_text,
                st.sampled_from(["~nobody-xyz/m", "/etc", "/" + "q" * 300, "a\0b"]),
            )
        ),
        parent_adapter=draw(st.one_of(st.just(""), names)),
        hyperparameters=draw(hyperparameters()),
        world_size=draw(ints_u32),
        strategy=draw(enum_values),
        idempotency_key=draw(st.one_of(st.just(""), names)),
    )


job_ids = st.one_of(
    odd_text, st.just("job-0123456789ab"), st.just("job-0123456789ab\n"), st.just("../job")
)


@FUZZ
@given(parts=uploads())
async def test_upload_answers_only_documented_codes(
    trainer_channel: grpc.aio.Channel, parts: list[trainer_pb2.UploadDatasetRequest]
) -> None:
    stub = trainer_pb2_grpc.TrainerStub(trainer_channel)
    try:
        await stub.UploadDataset(iter(parts), timeout=10)
    except grpc.aio.AioRpcError as exc:
        check("trainer", exc.code(), exc.details() or "")
    else:
        check("trainer", grpc.StatusCode.OK)


@FUZZ
@given(
    submit=submits(),
    job_id=job_ids,
    name=names,
    method=st.sampled_from(["submit", "get", "cancel", "watch", "list", "manifest", "fetch"]),
)
async def test_trainer_and_store_answer_only_documented_codes(
    trainer_channel: grpc.aio.Channel,
    submit: trainer_pb2.SubmitJobRequest,
    job_id: str,
    name: str,
    method: str,
) -> None:
    trainer = trainer_pb2_grpc.TrainerStub(trainer_channel)
    store = trainer_pb2_grpc.ArtifactStoreStub(trainer_channel)
    unary: dict[str, tuple[Any, object]] = {
        "submit": (trainer.SubmitJob, submit),
        "get": (trainer.GetJob, trainer_pb2.GetJobRequest(job_id=job_id)),
        "cancel": (trainer.CancelJob, trainer_pb2.CancelJobRequest(job_id=job_id)),
        "list": (store.ListAdapters, trainer_pb2.ListAdaptersRequest(role=name)),
        "manifest": (store.GetManifest, trainer_pb2.GetManifestRequest(name=name)),
    }
    streaming: dict[str, tuple[Any, object]] = {
        "watch": (trainer.WatchJob, trainer_pb2.WatchJobRequest(job_id=job_id)),
        "fetch": (store.FetchAdapter, trainer_pb2.FetchAdapterRequest(name=name)),
    }
    if method in unary:
        await call_unary("trainer", *unary[method], timeout=10)
    else:
        await call_stream("trainer", *streaming[method], timeout=10)


@FUZZ
@given(
    prompts_path=st.one_of(
        odd_text.filter(bool), st.sampled_from(["/nonexistent", "/" + "p" * 300, "/etc"])
    ),
    num_prompts=ints_u32,
    number=st.one_of(ints_u32, st.just(U32)),
    role=st.one_of(st.sampled_from(["actor", "refiner"]), odd_text),
    name=st.one_of(names, st.just("")),
    method=st.sampled_from(["start", "watch", "state", "rollback", "audit", "promote", "reject"]),
    operator=st.one_of(odd_text, st.just("alice")),
)
async def test_coordinator_answers_only_documented_codes(
    coordinator_channel: grpc.aio.Channel,
    prompts_path: str,
    num_prompts: int,
    number: int,
    role: str,
    name: str,
    method: str,
    operator: str,
) -> None:
    stub = coordinator_pb2_grpc.CoordinatorStub(coordinator_channel)
    if method == "start":
        # A non-empty prompts_path that is no readable file: never starts an iteration.
        req = coordinator_pb2.StartIterationRequest(
            prompts_path=prompts_path, num_prompts=num_prompts
        )
        await call_unary("coordinator", stub.StartIteration, req, 10)
    elif method == "watch":
        req2 = coordinator_pb2.WatchIterationRequest(number=number)
        await call_stream("coordinator", stub.WatchIteration, req2, 3)
    elif method == "state":
        await call_unary("coordinator", stub.GetState, coordinator_pb2.GetStateRequest(), 10)
    elif method == "audit":
        req4 = coordinator_pb2.ListAuditRequest(iteration=number, role=role, limit=num_prompts)
        await call_unary("coordinator", stub.ListAudit, req4, 10)
    elif method in ("promote", "reject"):
        # No iteration of the fuzzed coordinator awaits approval: never a rollout.
        kind = (
            coordinator_pb2.PromoteRequest if method == "promote" else coordinator_pb2.RejectRequest
        )
        call = stub.Promote if method == "promote" else stub.Reject
        req5 = kind(iteration=number, operator=operator, reason=prompts_path)
        await call_unary("coordinator", call, req5, 10)
    else:
        req3 = coordinator_pb2.RollbackRequest(role=role, name=name, operator=operator)
        await call_unary("coordinator", stub.Rollback, req3, 10)


@FUZZ
@given(data=raw_bytes, method=st.sampled_from(rpc_methods(trainer_pb2, coordinator_pb2)))
async def test_malformed_bytes_get_a_status(
    trainer_channel: grpc.aio.Channel,
    coordinator_channel: grpc.aio.Channel,
    data: bytes,
    method: MethodDescriptor,
) -> None:
    path = method_path(method)
    coordinator = method.containing_service.name == "Coordinator"
    channel = coordinator_channel if coordinator else trainer_channel
    service = "coordinator" if coordinator else "trainer"
    if method.name == "StartIteration" and not data:
        return  # empty bytes are a valid request that starts an iteration
    if method.client_streaming:
        try:
            await channel.stream_unary(path)(iter([data]), timeout=3.0)
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
        check(service, code, f"{path} with {data[:40]!r}")
        return
    await call_raw(service, channel, path, data, streaming=method.server_streaming)


async def test_trainer_and_coordinator_serving_after_fuzzing(
    trainer_channel: grpc.aio.Channel, coordinator_channel: grpc.aio.Channel
) -> None:
    await assert_serving(trainer_channel, ["", "spar.v1.Trainer", "spar.v1.ArtifactStore"])
    await assert_serving(coordinator_channel, ["", "spar.v1.Coordinator"])
    store = trainer_pb2_grpc.ArtifactStoreStub(trainer_channel)
    listed = await store.ListAdapters(trainer_pb2.ListAdaptersRequest(), timeout=10)
    assert list(listed.adapters) == []
