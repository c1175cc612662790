"""Every client method reaches its RPC with the request it built, blocking and asyncio
alike: a recording gRPC server made from the proto descriptors (no engine, no service)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory

from spar.client import (
    ActorClient,
    AdapterHostClient,
    AsyncActorClient,
    AsyncAdapterHostClient,
    AsyncCoordinatorClient,
    AsyncRefinerClient,
    AsyncTrainerClient,
    CoordinatorClient,
    RefinerClient,
    TrainerClient,
    search_budget,
    search_options,
)
from spar.errors import InvalidArgument
from spar.v1 import (
    actor_pb2,
    adapter_host_pb2,
    common_pb2,
    coordinator_pb2,
    refiner_pb2,
    trainer_pb2,
)

Calls = list[tuple[str, Any]]


def _handler(method: Any, calls: Calls) -> grpc.RpcMethodHandler:
    name = f"{method.containing_service.name}/{method.name}"
    request = message_factory.GetMessageClass(method.input_type)
    reply = message_factory.GetMessageClass(method.output_type)
    codec = {
        "request_deserializer": request.FromString,
        "response_serializer": reply.SerializeToString,
    }

    if method.client_streaming:

        async def stream_in(requests: AsyncIterator[Any], context: Any) -> Any:
            calls.append((name, [r async for r in requests]))
            return reply()

        return grpc.stream_unary_rpc_method_handler(stream_in, **codec)
    if method.server_streaming:

        async def stream_out(message: Any, context: Any) -> AsyncIterator[Any]:
            calls.append((name, message))
            yield reply()
            yield reply()

        return grpc.unary_stream_rpc_method_handler(stream_out, **codec)

    async def unary(message: Any, context: Any) -> Any:
        calls.append((name, message))
        return reply()

    return grpc.unary_unary_rpc_method_handler(unary, **codec)


@pytest.fixture
async def recorded() -> AsyncIterator[tuple[str, Calls]]:
    calls: Calls = []
    server = grpc.aio.server()
    for module in (actor_pb2, adapter_host_pb2, refiner_pb2, trainer_pb2, coordinator_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            handlers = {m.name: _handler(m, calls) for m in service.methods}
            server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service.full_name, handlers),)
            )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", calls
    await server.stop(None)


async def both(sync: Callable[[], Any], asynchronous: Callable[[], Any]) -> list[Any]:
    """Runs the blocking call in a thread (the server shares this loop), then the async one."""
    return [await asyncio.to_thread(sync), await asynchronous()]


async def test_actor_and_adapter_host(recorded: tuple[str, Calls]) -> None:
    target, calls = recorded
    with ActorClient(target) as s, AdapterHostClient(target) as sh:
        async with AsyncActorClient(target) as a, AsyncAdapterHostClient(target) as ah:
            await both(
                lambda: s.generate("hi", n=2, temperature=0.5, adapter="v1", timeout=5),
                lambda: a.generate("hi", n=2, temperature=0.5, adapter="v1", timeout=5),
            )
            streamed = await both(
                lambda: list(s.generate_stream(messages=[("user", "hi")], seed=7)),
                lambda: _collect(a.generate_stream(messages=[("user", "hi")], seed=7)),
            )
            assert [len(r) for r in streamed] == [2, 2]
            await both(
                lambda: sh.stage_adapter("v2", store_target="store:1", digest="d" * 64),
                lambda: ah.stage_adapter("v2", store_target="store:1", digest="d" * 64),
            )
            await both(lambda: s.activate_adapter("v2"), lambda: ah.activate_adapter("v2"))
            await both(lambda: sh.retire_adapter("v1"), lambda: a.retire_adapter("v1"))
            await both(sh.list_adapters, ah.list_adapters)
    names = [n for n, _ in calls]
    assert names == [
        *["Actor/Generate"] * 2, *["Actor/GenerateStream"] * 2,
        *["AdapterHost/StageAdapter"] * 2, *["AdapterHost/ActivateAdapter"] * 2,
        *["AdapterHost/RetireAdapter"] * 2, *["AdapterHost/ListAdapters"] * 2,
    ]  # fmt: skip
    generate, stream, stage = calls[0][1], calls[2][1], calls[4][1]
    assert calls[1][1] == generate
    assert (generate.prompt, generate.sampling.n, generate.adapter) == ("hi", 2, "v1")
    assert generate.sampling.temperature == pytest.approx(0.5)
    assert not generate.sampling.HasField("top_p")  # unset: the server's default
    assert stream.messages[0].content == "hi" and stream.sampling.seed == 7
    assert (stage.version.name, stage.source.store_target) == ("v2", "store:1")
    assert calls[6][1].name == "v2" and calls[8][1].name == "v1"


async def test_refiner(recorded: tuple[str, Calls]) -> None:
    target, calls = recorded
    constraints = [("punctuation:no_comma", {})]
    with RefinerClient(target) as s:
        async with AsyncRefinerClient(target) as a:
            await both(
                lambda: s.judge("i", "r", constraints=constraints, kind="hybrid", samples=3),
                lambda: a.judge("i", "r", constraints=constraints, kind="hybrid", samples=3),
            )
            options = search_options(strategy="dfs", branch=2)
            budget = search_budget(max_nodes=4, max_wall_time_s=1.5)
            await both(
                lambda: s.refine("i", "r", options=options, budget=budget, judge="llm"),
                lambda: a.refine("i", "r", options=options, budget=budget, judge="llm"),
            )
            events = await both(
                lambda: list(s.refine_stream("i", "r", criteria=["support/greeting"])),
                lambda: _collect(a.refine_stream("i", "r", criteria=["support/greeting"])),
            )
            assert [len(e) for e in events] == [2, 2]
            await both(
                lambda: s.answer("p", max_tokens=9, include_trace=True),
                lambda: a.answer("p", max_tokens=9, include_trace=True),
            )
            with pytest.raises(InvalidArgument, match="judge kind 'llama' is unknown"):
                await a.judge("i", "r", kind="llama")
    names = [n for n, _ in calls]
    assert names == [
        *["Refiner/Judge"] * 2, *["Refiner/Refine"] * 2,
        *["Refiner/RefineStream"] * 2, *["Refiner/Answer"] * 2,
    ]  # fmt: skip
    judge, refine, stream, answer = (calls[i][1] for i in (0, 2, 4, 6))
    assert judge.kind == common_pb2.JUDGE_KIND_HYBRID and judge.samples == 3
    assert judge.constraints[0].instruction_id == "punctuation:no_comma"
    assert refine.judge == common_pb2.JUDGE_KIND_LLM
    assert refine.options.strategy == common_pb2.SEARCH_STRATEGY_DFS
    assert refine.options.branch == 2 and not refine.options.HasField("keep_top")
    assert refine.budget.max_nodes == 4 and refine.budget.max_wall_time.ToMilliseconds() == 1500
    assert list(stream.criteria) == ["support/greeting"]
    assert answer.sampling.max_tokens == 9 and answer.include_trace
    assert not answer.sampling.HasField("temperature")


async def test_trainer_and_store(recorded: tuple[str, Calls]) -> None:
    target, calls = recorded
    pairs = [{"prompt": "p", "chosen": "c", "rejected": "r"}]
    with TrainerClient(target) as s:
        async with AsyncTrainerClient(target) as a:
            await both(
                lambda: s.upload_dataset("dpo", pairs, name="n"),
                lambda: a.upload_dataset("dpo", pairs, name="n"),
            )
            await both(
                lambda: s.submit_job("sft", "d" * 64, iteration=3, strategy="fsdp"),
                lambda: a.submit_job("sft", "d" * 64, iteration=3, strategy="fsdp"),
            )
            progress = await both(
                lambda: list(s.watch_job("j")), lambda: _collect(a.watch_job("j"))
            )
            assert [len(p) for p in progress] == [2, 2]
            await both(lambda: s.get_job("j"), lambda: a.cancel_job("j"))
            await both(lambda: s.list_adapters("actor"), lambda: a.get_manifest("v"))
            await a.wait_job("j")  # no progress carries a job: it asks for the job
    names = [n for n, _ in calls]
    assert names == [
        *["Trainer/UploadDataset"] * 2, *["Trainer/SubmitJob"] * 2, *["Trainer/WatchJob"] * 2,
        "Trainer/GetJob", "Trainer/CancelJob",
        "ArtifactStore/ListAdapters", "ArtifactStore/GetManifest",
        "Trainer/WatchJob", "Trainer/GetJob",
    ]  # fmt: skip
    upload, submit = calls[0][1], calls[2][1]
    assert upload == calls[1][1] and upload[0].header.kind == trainer_pb2.JOB_KIND_DPO
    assert upload[1].batch.records[0].dpo.chosen == "c"
    assert submit.kind == trainer_pb2.JOB_KIND_SFT and submit.iteration == 3
    assert submit.strategy == trainer_pb2.DISTRIBUTED_STRATEGY_FSDP
    assert calls[8][1].role == "actor" and calls[9][1].name == "v"


async def test_coordinator(recorded: tuple[str, Calls]) -> None:
    target, calls = recorded
    with CoordinatorClient(target) as s:
        async with AsyncCoordinatorClient(target) as a:
            await both(lambda: s.start_iteration("p.jsonl", 5), lambda: a.start_iteration())
            events = await both(
                lambda: list(s.watch_iteration(2)), lambda: _collect(a.watch_iteration(2))
            )
            assert [len(e) for e in events] == [2, 2]
            await both(s.get_state, a.get_state)
            await both(
                lambda: s.rollback("actor", "v1", operator="op", reason="bad"),
                lambda: a.list_audit(iteration=2, role="refiner", limit=3),
            )
            await both(
                lambda: s.promote(2, operator="op", reason="ok"),
                lambda: a.reject(3, operator="op", reason="no"),
            )
    names = [n for n, _ in calls]
    assert names == [
        *["Coordinator/StartIteration"] * 2, *["Coordinator/WatchIteration"] * 2,
        *["Coordinator/GetState"] * 2, "Coordinator/Rollback", "Coordinator/ListAudit",
        "Coordinator/Promote", "Coordinator/Reject",
    ]  # fmt: skip
    assert (calls[0][1].prompts_path, calls[0][1].num_prompts) == ("p.jsonl", 5)
    assert calls[2][1].number == 2
    assert (calls[6][1].role, calls[6][1].name, calls[6][1].reason) == ("actor", "v1", "bad")
    assert (calls[7][1].iteration, calls[7][1].limit) == (2, 3)
    assert (calls[8][1].iteration, calls[9][1].iteration) == (2, 3)


async def _collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in stream]
