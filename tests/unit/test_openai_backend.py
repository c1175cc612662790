"""The HTTP endpoint's side of the refiner: the in-process Answer call (deadline as a gRPC
context would give it) and errors as HTTP statuses, without servers."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from services.refiner.openai_backend import ServicerBackend
from services.refiner.openai_http import http_error
from spar import errors
from spar.v1 import common_pb2
from spar.v1 import refiner_pb2 as pb


class FakeActor:
    def __init__(self, error: errors.SparError | None = None) -> None:
        self.error = error
        self.calls: list[dict[str, Any]] = []
        self.target = "actor:50051"

    def client(self) -> FakeActor:
        return self

    async def generate(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        if self.error:
            raise self.error
        return "reply"


class FakeServicer:
    """What ServicerBackend uses of RefinerService."""

    def __init__(self, actor: FakeActor, delay: float = 0.0) -> None:
        self.actor = actor
        self.delay = delay
        self.remaining: list[float] = []

    async def Answer(self, request: pb.AnswerRequest, context: Any) -> pb.AnswerResponse:
        self.remaining.append(context.time_remaining())
        await asyncio.sleep(self.delay)
        self.remaining.append(context.time_remaining())
        return pb.AnswerResponse(answer="ok")


class Ready:
    ready = True


async def test_answer_runs_in_process_with_the_request_deadline() -> None:
    servicer = FakeServicer(FakeActor(), delay=0.2)
    backend = ServicerBackend(servicer, Ready())
    reply = await backend.answer(pb.AnswerRequest(prompt="x"), timeout_s=5.0)
    assert reply.answer == "ok" and backend.ready()
    first, second = servicer.remaining
    assert 4.5 < first <= 5.0 and first - second >= 0.15  # a search sees its deadline shrink


async def test_answer_past_its_deadline_is_a_504() -> None:
    backend = ServicerBackend(FakeServicer(FakeActor(), delay=5), Ready())
    with pytest.raises(TimeoutError) as info:
        await backend.answer(pb.AnswerRequest(prompt="x"), timeout_s=0.1)
    error = http_error(info.value, 2)
    assert error.status == 504 and error.body["error"]["code"] == "deadline_exceeded"


async def test_actor_calls_map_sampling_and_failures() -> None:
    actor = FakeActor()
    backend = ServicerBackend(FakeServicer(actor), Ready())
    sampling = common_pb2.SamplingParams(n=2, max_tokens=9, stop=["."], temperature=0.5)
    assert await backend.generate([("user", "hi")], sampling, 3.0) == "reply"
    call = actor.calls[-1]
    assert (call["n"], call["max_tokens"], call["stop"], call["timeout"]) == (2, 9, ["."], 3.0)
    assert call["temperature"] == 0.5 and call["top_p"] is None and call["seed"] is None
    assert call["messages"] == [("user", "hi")]

    down = ServicerBackend(
        FakeServicer(FakeActor(errors.from_status(grpc.StatusCode.UNAVAILABLE, "refused"))), Ready()
    )
    with pytest.raises(errors.Unavailable, match="actor at actor:50051 could not answer: refused"):
        await down.generate([("user", "hi")], sampling, 3.0)
    bad = errors.from_status(
        grpc.StatusCode.INVALID_ARGUMENT, "sampling.max_tokens=5000 exceeds the limit"
    )
    refusing = ServicerBackend(FakeServicer(FakeActor(bad)), Ready())
    with pytest.raises(errors.InvalidArgument) as info:
        await refusing.generate([("user", "hi")], sampling, 3.0)
    error = http_error(info.value, 2)
    assert error.status == 400 and error.body["error"]["param"] == "max_tokens"
    assert error.body["error"]["message"] == "max_tokens=5000 exceeds the limit"


def test_statuses_and_headers_of_spar_errors() -> None:
    busy = http_error(errors.ResourceExhausted("4 searches run and 16 wait"), 3)
    assert busy.status == 429 and busy.headers == {"Retry-After": "3"}
    assert busy.body["error"]["type"] == "rate_limit_error"
    down = http_error(errors.Unavailable("the refiner is starting"), 3)
    assert down.status == 503 and down.headers["Retry-After"] == "3"
    denied = http_error(errors.Unauthenticated("invalid bearer token"), 3)
    assert denied.status == 401 and denied.headers["WWW-Authenticate"] == "Bearer"
    crash = http_error(ValueError("boom"), 3)
    assert crash.status == 500 and "ValueError: boom" in crash.body["error"]["message"]
