"""gRPC handlers of ``spar.v1.Actor``: thin translation between protobuf and the engine."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator

import grpc

from spar.adapter_files import BASE, check_name
from spar.client.enums import FINISH_REASON
from spar.config import Settings
from spar.engine.protocol import GenerationRequest, Usage
from spar.metrics import Metrics
from spar.request_checks import check_token
from spar.runtime import EngineRuntime
from spar.sampling import generation_request, messages_from
from spar.v1 import actor_pb2 as pb
from spar.v1 import actor_pb2_grpc as pb_grpc
from spar.v1 import common_pb2


def usage_message(u: Usage) -> common_pb2.Usage:
    return common_pb2.Usage(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        cached_prompt_tokens=u.cached_prompt_tokens,
    )


class ActorService(pb_grpc.ActorServicer):
    """gRPC handlers of ``spar.v1.Actor``: checks a request, turns it into a
    :class:`spar.engine.protocol.GenerationRequest` on the requested (or active) adapter,
    and its result back into a reply."""

    def __init__(self, runtime: EngineRuntime, settings: Settings, metrics: Metrics) -> None:
        self.runtime = runtime
        self.settings = settings
        self.metrics = metrics

    def _request(self, request: pb.GenerateRequest) -> GenerationRequest:
        limits = self.settings.limits
        check_token(request.request_id, "request_id", limits.max_request_id_chars)
        if request.adapter and request.adapter != BASE:
            check_name(request.adapter)
        return generation_request(
            messages_from(request.prompt, request.messages),
            request.sampling,
            limits=limits,
            defaults=self.settings.sampling,
            raw=request.raw_prompt,
            # The engine's id is always unique: two clients may send the same request_id.
            request_id=f"{request.request_id}-{uuid.uuid4().hex}"
            if request.request_id
            else uuid.uuid4().hex,
        )

    def _count(self, usage: Usage) -> None:
        self.metrics.prompt_tokens.labels(self.metrics.service).inc(usage.prompt_tokens)
        self.metrics.generated_tokens.labels(self.metrics.service).inc(usage.completion_tokens)

    async def Generate(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> pb.GenerateResponse:
        req = self._request(request)
        engine = self.runtime.engine
        async with self.runtime.host.lease(request.adapter) as version:
            req = dataclasses.replace(req, adapter=version.ref if version else None)
            result = await engine.generate(req)
        self._count(result.usage)
        return pb.GenerateResponse(
            completions=[
                pb.Completion(
                    index=s.index,
                    text=s.text,
                    finish_reason=FINISH_REASON.value(s.finish_reason, "finish reason"),
                    completion_tokens=s.completion_tokens,
                )
                for s in result.samples
            ],
            usage=usage_message(result.usage),
            adapter=version.name if version else "",
            request_id=request.request_id or req.request_id,
        )

    async def GenerateStream(
        self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        req = self._request(request)
        engine = self.runtime.engine
        async with self.runtime.host.lease(request.adapter) as version:
            req = dataclasses.replace(req, adapter=version.ref if version else None)
            name = version.name if version else ""
            stream = engine.stream(req)
            try:
                async for delta in stream:
                    if delta.usage is not None:
                        self._count(delta.usage)
                    yield pb.GenerateStreamResponse(
                        index=delta.index,
                        delta=delta.text,
                        finish_reason=FINISH_REASON.value(delta.finish_reason, "finish reason")
                        if delta.finish_reason
                        else None,
                        usage=usage_message(delta.usage) if delta.usage else None,
                        adapter=name,
                        request_id=request.request_id or req.request_id,
                    )
            finally:
                await stream.aclose()  # type: ignore[attr-defined]
