"""Generated and malformed requests against the live actor (Actor and AdapterHost):
only documented status codes, and the actor still SERVING and still answering after."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spar.v1 import actor_pb2, actor_pb2_grpc, adapter_host_pb2, adapter_host_pb2_grpc, common_pb2
from tests.fuzz.fuzz_support import (
    FUZZ,
    assert_serving,
    call_stream,
    call_unary,
    malformed_bytes_test,
    names,
    odd_text,
    plain_text,
    sampling_params,
)


@pytest.fixture(scope="module")
async def channel(actor_target: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(actor_target) as ch:
        yield ch


@st.composite
def generate_requests(draw: st.DrawFn) -> actor_pb2.GenerateRequest:
    if draw(st.integers(0, 2)) == 0:  # a sane request, so some reach the engine
        return actor_pb2.GenerateRequest(
            prompt=draw(plain_text),
            sampling=draw(sampling_params()),
            adapter=draw(st.sampled_from(["", "base"])),
            request_id=draw(st.sampled_from(["", "same-id", "r-1"])),
        )
    r = actor_pb2.GenerateRequest(
        sampling=draw(sampling_params()),
        raw_prompt=draw(st.booleans()),
        adapter=draw(st.one_of(st.just(""), st.just("base"), names)),
        request_id=draw(st.one_of(st.just(""), st.just("same-id"), names)),
    )
    if draw(st.booleans()):
        r.prompt = draw(st.one_of(plain_text, odd_text))
    else:
        for _ in range(draw(st.one_of(st.integers(0, 3), st.just(65)))):
            r.messages.append(
                common_pb2.ChatMessage(
                    role=draw(st.sampled_from(["user", "system", "assistant", "", "tool", "USER"])),
                    content=draw(odd_text),
                )
            )
    return r


@FUZZ
@given(request=generate_requests(), stream=st.booleans())
async def test_generate_answers_only_documented_codes(
    channel: grpc.aio.Channel, request: actor_pb2.GenerateRequest, stream: bool
) -> None:
    stub = actor_pb2_grpc.ActorStub(channel)
    if stream:
        await call_stream("actor", stub.GenerateStream, request, timeout=20)
    else:
        await call_unary("actor", stub.Generate, request, timeout=20)


@st.composite
def stage_requests(draw: st.DrawFn) -> adapter_host_pb2.StageAdapterRequest:
    r = adapter_host_pb2.StageAdapterRequest(
        version=common_pb2.AdapterVersion(
            name=draw(names),
            digest=draw(st.one_of(st.just(""), st.just("0" * 64), odd_text)),
            role=draw(st.sampled_from(["", "actor", "refiner", "x"])),
            iteration=draw(st.sampled_from([0, 1, 2**32 - 1])),
        )
    )
    which = draw(st.sampled_from(["none", "local", "store"]))
    if which == "local":
        r.source.local_path = draw(
            st.one_of(odd_text, st.sampled_from(["/", "/tmp", "/nonexistent", "/" + "z" * 300]))
        )
    elif which == "store":
        r.source.store_target = draw(st.one_of(odd_text, st.just("127.0.0.1:1")))
    return r


@FUZZ
@given(
    stage=stage_requests(),
    name=names,
    method=st.sampled_from(["stage", "activate", "retire", "list"]),
)
async def test_adapter_host_answers_only_documented_codes(
    channel: grpc.aio.Channel,
    stage: adapter_host_pb2.StageAdapterRequest,
    name: str,
    method: str,
) -> None:
    stub = adapter_host_pb2_grpc.AdapterHostStub(channel)
    if method == "stage":
        await call_unary("adapter_host", stub.StageAdapter, stage, timeout=10)
    elif method == "activate":
        if name == "base":  # the session's actor stays as it is for the other tests
            name = "not-staged"
        req = adapter_host_pb2.ActivateAdapterRequest(name=name)
        await call_unary("adapter_host", stub.ActivateAdapter, req, timeout=10)
    elif method == "retire":
        req2 = adapter_host_pb2.RetireAdapterRequest(name=name)
        await call_unary("adapter_host", stub.RetireAdapter, req2, timeout=10)
    else:
        await call_unary(
            "adapter_host",
            stub.ListAdapters,
            adapter_host_pb2.ListHostedAdaptersRequest(),
            timeout=10,
        )


test_malformed_bytes_get_a_status = malformed_bytes_test("actor", actor_pb2, adapter_host_pb2)


async def test_actor_still_generates_after_fuzzing(channel: grpc.aio.Channel) -> None:
    await assert_serving(channel, ["", "spar.v1.Actor"])
    stub = actor_pb2_grpc.ActorStub(channel)
    reply = await stub.Generate(
        actor_pb2.GenerateRequest(
            prompt="Say hi.", sampling=common_pb2.SamplingParams(max_tokens=2, temperature=0.0)
        ),
        timeout=30,
    )
    assert reply.completions and reply.usage.completion_tokens > 0
