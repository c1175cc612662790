"""What the refiner's HTTP endpoint needs of the refiner (:class:`AnswerBackend`), and
that interface over the replica's RefinerService (:class:`ServicerBackend`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, cast

from spar.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    SparError,
    Unavailable,
)
from spar.v1 import actor_pb2, common_pb2
from spar.v1 import refiner_pb2 as pb


class AnswerBackend(Protocol):
    """What the HTTP layer needs of the refiner: the Answer use case and the actor."""

    def ready(self) -> bool:
        """The engine is warm and the replica serves."""
        ...

    async def answer(self, request: pb.AnswerRequest, timeout_s: float) -> pb.AnswerResponse:
        """A refined answer (the Answer RPC's use case)."""
        ...

    async def generate(
        self,
        messages: Sequence[tuple[str, str]],
        sampling: common_pb2.SamplingParams,
        timeout_s: float,
    ) -> actor_pb2.GenerateResponse:
        """The actor's plain samples."""
        ...

    def generate_stream(
        self,
        messages: Sequence[tuple[str, str]],
        sampling: common_pb2.SamplingParams,
        timeout_s: float,
    ) -> AsyncIterator[actor_pb2.GenerateStreamResponse]:
        """The actor's plain samples, as deltas."""
        ...


class LocalContext:
    """What the Answer use case asks of a gRPC context, for an in-process call."""

    def __init__(self, timeout_s: float) -> None:
        self.deadline = time.monotonic() + timeout_s

    def time_remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)


class ServicerBackend:
    """:class:`AnswerBackend` over the replica's RefinerService: Answer in-process (same
    admission, adapter leases and metrics as the RPC), and its actor client."""

    def __init__(self, service: Any, runtime: Any) -> None:
        self.service = service
        self.runtime = runtime

    def ready(self) -> bool:
        return bool(self.runtime.ready)

    async def answer(self, request: pb.AnswerRequest, timeout_s: float) -> pb.AnswerResponse:
        async with asyncio.timeout(timeout_s):
            reply: pb.AnswerResponse = await self.service.Answer(
                request, cast(Any, LocalContext(timeout_s))
            )
        return reply

    def _actor_failure(self, exc: SparError) -> SparError:
        if isinstance(exc, InvalidArgument | FailedPrecondition | NotFound | DeadlineExceeded):
            return exc
        return Unavailable(
            f"the actor at {self.service.actor.target} could not answer: {exc.detail} "
            "(SPAR_REFINER__ACTOR_TARGET)"
        )

    async def generate(
        self,
        messages: Sequence[tuple[str, str]],
        sampling: common_pb2.SamplingParams,
        timeout_s: float,
    ) -> actor_pb2.GenerateResponse:
        try:
            reply: actor_pb2.GenerateResponse = await self.service.actor.client().generate(
                messages=list(messages), timeout=timeout_s, **_sampling_kwargs(sampling)
            )
        except SparError as exc:
            raise self._actor_failure(exc) from None
        return reply

    async def generate_stream(
        self,
        messages: Sequence[tuple[str, str]],
        sampling: common_pb2.SamplingParams,
        timeout_s: float,
    ) -> AsyncIterator[actor_pb2.GenerateStreamResponse]:
        stream = self.service.actor.client().generate_stream(
            messages=list(messages), timeout=timeout_s, **_sampling_kwargs(sampling)
        )
        try:
            async for item in stream:
                yield item
        except SparError as exc:
            raise self._actor_failure(exc) from None
        finally:
            await stream.aclose()


def _sampling_kwargs(s: common_pb2.SamplingParams) -> dict[str, Any]:
    return {
        "n": s.n or 1,
        "temperature": s.temperature if s.HasField("temperature") else None,
        "top_p": s.top_p if s.HasField("top_p") else None,
        "max_tokens": s.max_tokens,
        "stop": list(s.stop),
        "seed": s.seed if s.HasField("seed") else None,
    }
