"""Generated and malformed requests against the live refiner: only documented status
codes, and the refiner still SERVING after. Budgets hold at most 8 generated tokens, so a
valid search ends at once (outcome EXHAUSTED) and costs no engine time; Judge calls that
reach the LLM judge are cut by a short deadline."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spar.v1 import common_pb2, refiner_pb2, refiner_pb2_grpc
from tests.fuzz.fuzz_support import (
    FUZZ,
    assert_serving,
    call_stream,
    call_unary,
    constraints,
    enum_values,
    ints_u32,
    malformed_bytes_test,
    odd_text,
    plain_text,
    sampling_params,
    search_budget,
    search_options,
)


@pytest.fixture(scope="module")
async def channel(refiner_target: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(refiner_target) as ch:
        yield ch


texts = st.one_of(plain_text, odd_text)
#: Criteria references: packs the session refiner does not have, odd text, IFEval's pack.
criteria_refs = st.lists(
    st.one_of(odd_text, st.sampled_from(["support", "support/greeting", "ifeval", "ifeval/x", ""])),
    max_size=3,
)


#: What a Judge and a Refine request judge: a response to an instruction, by constraints
#: and criteria.
JUDGED = {
    "instruction": texts,
    "response": texts,
    "constraints": constraints(),
    "criteria": criteria_refs,
}
judge_requests = st.builds(
    refiner_pb2.JudgeRequest,
    **JUDGED,
    kind=enum_values,
    samples=ints_u32,
    tie_policy=enum_values,
    return_all_samples=st.booleans(),
)


@st.composite
def refine_requests(draw: st.DrawFn) -> refiner_pb2.RefineRequest:
    if draw(st.integers(0, 2)) == 0:  # a sane request: a search that ends at once
        return refiner_pb2.RefineRequest(
            instruction=draw(plain_text),
            response=draw(plain_text),
            budget=common_pb2.SearchBudget(max_generated_tokens=draw(st.integers(1, 8))),
        )
    return draw(
        st.builds(
            refiner_pb2.RefineRequest,
            **JUDGED,
            judge=enum_values,
            options=search_options(),
            budget=search_budget(),
            return_tree=st.booleans(),
        )
    )


@st.composite
def answer_requests(draw: st.DrawFn) -> refiner_pb2.AnswerRequest:
    if draw(st.integers(0, 2)) == 0:  # a sane request: an actor answer, no search
        return refiner_pb2.AnswerRequest(
            prompt=draw(plain_text),
            sampling=common_pb2.SamplingParams(max_tokens=draw(st.integers(1, 4))),
            budget=common_pb2.SearchBudget(max_generated_tokens=draw(st.integers(1, 8))),
        )
    return refiner_pb2.AnswerRequest(
        prompt=draw(texts),
        constraints=draw(constraints()),
        criteria=draw(criteria_refs),
        sampling=draw(sampling_params()),
        judge=draw(enum_values),
        budget=draw(search_budget()),
        options=draw(search_options()),
        include_trace=draw(st.booleans()),
    )


@FUZZ
@given(request=judge_requests)
async def test_judge_answers_only_documented_codes(
    channel: grpc.aio.Channel, request: refiner_pb2.JudgeRequest
) -> None:
    stub = refiner_pb2_grpc.RefinerStub(channel)
    await call_unary("refiner", stub.Judge, request, timeout=2)


@FUZZ
@given(request=refine_requests(), stream=st.booleans())
async def test_refine_answers_only_documented_codes(
    channel: grpc.aio.Channel, request: refiner_pb2.RefineRequest, stream: bool
) -> None:
    stub = refiner_pb2_grpc.RefinerStub(channel)
    if stream:
        events = await call_stream("refiner", stub.RefineStream, request, timeout=5)
        if events and events[-1].kind == refiner_pb2.REFINE_EVENT_KIND_RESULT:  # type: ignore[attr-defined]
            assert events[-1].result.best_response  # type: ignore[attr-defined]
    else:
        reply = await call_unary("refiner", stub.Refine, request, timeout=5)
        if reply is not None:
            assert reply.best_response  # type: ignore[attr-defined]


@FUZZ
@given(request=answer_requests())
async def test_answer_answers_only_documented_codes(
    channel: grpc.aio.Channel, request: refiner_pb2.AnswerRequest
) -> None:
    stub = refiner_pb2_grpc.RefinerStub(channel)
    reply = await call_unary("refiner", stub.Answer, request, timeout=10)
    if reply is not None:
        assert reply.outcome != common_pb2.SEARCH_OUTCOME_UNSPECIFIED  # type: ignore[attr-defined]


test_malformed_bytes_get_a_status = malformed_bytes_test("refiner", refiner_pb2)


async def test_refiner_is_serving_after_fuzzing(channel: grpc.aio.Channel) -> None:
    await assert_serving(channel, ["", "spar.v1.Refiner"])
    stub = refiner_pb2_grpc.RefinerStub(channel)
    reply = await stub.Judge(
        refiner_pb2.JudgeRequest(
            instruction="Say hi without commas.",
            response="hi there",
            constraints=[common_pb2.VerifiableConstraint(instruction_id="punctuation:no_comma")],
            kind=common_pb2.JUDGE_KIND_VERIFIER,
        ),
        timeout=30,
    )
    assert reply.verdict == common_pb2.VERDICT_PASS
