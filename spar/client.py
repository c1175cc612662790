"""The Python client SDK of spar (sync and async). The CLI uses it too.

Errors come back as :class:`spar.errors.SparError` subclasses carrying the server's
status code and message.

    with ActorClient("127.0.0.1:50051") as actor:
        reply = actor.generate("Write a haiku about rain.", n=3)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from spar.errors import SparError, from_status
from spar.v1 import actor_pb2, actor_pb2_grpc, adapter_host_pb2, adapter_host_pb2_grpc, common_pb2

T = TypeVar("T")

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def _error(exc: grpc.RpcError) -> SparError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return from_status(code, details or "")


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


class ActorClient:
    """Blocking client of an actor (``Actor`` + ``AdapterHost`` + health)."""

    def __init__(self, target: str, *, timeout: float | None = None) -> None:
        self.target = target
        self.timeout = timeout
        self.channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        self.actor = actor_pb2_grpc.ActorStub(self.channel)
        self.adapters = adapter_host_pb2_grpc.AdapterHostStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)

    def __enter__(self) -> ActorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _call(self, fn: Callable[..., T], request: Any, timeout: float | None) -> T:
        try:
            return fn(request, timeout=timeout if timeout is not None else self.timeout)
        except grpc.RpcError as exc:
            raise _error(exc) from None

    def generate(
        self, prompt: str = "", *, timeout: float | None = None, **kwargs: Any
    ) -> actor_pb2.GenerateResponse:
        return self._call(self.actor.Generate, generate_request(prompt, **kwargs), timeout)

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
        return self._call(self.adapters.StageAdapter, req, None)

    def activate_adapter(self, name: str) -> adapter_host_pb2.ActivateAdapterResponse:
        req = adapter_host_pb2.ActivateAdapterRequest(name=name)
        return self._call(self.adapters.ActivateAdapter, req, None)

    def retire_adapter(self, name: str) -> adapter_host_pb2.RetireAdapterResponse:
        req = adapter_host_pb2.RetireAdapterRequest(name=name)
        return self._call(self.adapters.RetireAdapter, req, None)

    def list_adapters(self) -> adapter_host_pb2.ListHostedAdaptersResponse:
        req = adapter_host_pb2.ListHostedAdaptersRequest()
        return self._call(self.adapters.ListAdapters, req, None)

    def health(self, service: str = "", timeout: float | None = 5.0) -> str:
        """SERVING, NOT_SERVING, ... of the server (or one of its services)."""
        req = health_pb2.HealthCheckRequest(service=service)
        reply = self._call(self.health_stub.Check, req, timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


class AsyncActorClient:
    """asyncio client of an actor; same methods as :class:`ActorClient`, awaitable."""

    def __init__(self, target: str, *, timeout: float | None = None) -> None:
        self.target = target
        self.timeout = timeout
        self.channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        self.actor = actor_pb2_grpc.ActorStub(self.channel)
        self.adapters = adapter_host_pb2_grpc.AdapterHostStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)

    async def __aenter__(self) -> AsyncActorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def _call(self, fn: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        try:
            return await fn(request, timeout=timeout if timeout is not None else self.timeout)
        except grpc.RpcError as exc:
            raise _error(exc) from None

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

    async def health(self, service: str = "", timeout: float | None = 5.0) -> str:
        req = health_pb2.HealthCheckRequest(service=service)
        reply = await self._call(self.health_stub.Check, req, timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
