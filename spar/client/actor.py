"""Client of an actor: generation (``Actor``) and its adapters (``AdapterHost``)."""

from __future__ import annotations

from collections.abc import Sequence

from spar.client.adapter_host import AdapterHostMethods
from spar.client.base import AsyncClient, Call, Client, server_stream, unary
from spar.v1 import actor_pb2 as pb
from spar.v1 import actor_pb2_grpc, common_pb2

Stub = actor_pb2_grpc.ActorStub


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
) -> pb.GenerateRequest:
    """A prompt (or chat ``messages`` as (role, content) pairs) and its sampling; unset
    sampling fields take the server's defaults."""
    sampling = common_pb2.SamplingParams(n=n, max_tokens=max_tokens, stop=list(stop))
    if temperature is not None:
        sampling.temperature = temperature
    if top_p is not None:
        sampling.top_p = top_p
    if seed is not None:
        sampling.seed = seed
    return pb.GenerateRequest(
        prompt=prompt,
        messages=[common_pb2.ChatMessage(role=r, content=c) for r, c in messages],
        raw_prompt=raw_prompt,
        sampling=sampling,
        adapter=adapter,
        request_id=request_id,
    )


class ActorMethods(AdapterHostMethods):
    """The actor's RPCs, written once for the blocking and the asyncio client."""

    @unary
    def generate(
        self,
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
        timeout: float | None = None,
    ) -> Call[pb.GenerateResponse]:
        """``n`` completions of a prompt (see :func:`generate_request`)."""
        request = generate_request(
            prompt, messages=messages, n=n, temperature=temperature, top_p=top_p,
            max_tokens=max_tokens, stop=stop, seed=seed, adapter=adapter,
            raw_prompt=raw_prompt, request_id=request_id,
        )  # fmt: skip
        return Call(Stub, "Generate", request, pb.GenerateResponse, timeout)

    @server_stream
    def generate_stream(
        self,
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
        timeout: float | None = None,
    ) -> Call[pb.GenerateStreamResponse]:
        """As :meth:`generate`, the text arriving in pieces as it is generated."""
        request = generate_request(
            prompt, messages=messages, n=n, temperature=temperature, top_p=top_p,
            max_tokens=max_tokens, stop=stop, seed=seed, adapter=adapter,
            raw_prompt=raw_prompt, request_id=request_id,
        )  # fmt: skip
        return Call(Stub, "GenerateStream", request, pb.GenerateStreamResponse, timeout)


class ActorClient(ActorMethods, Client):
    """Blocking client of an actor (``Actor`` + ``AdapterHost`` + health).

    with ActorClient("127.0.0.1:50051") as actor:
        reply = actor.generate("Write a haiku about rain.", n=3)
    """


class AsyncActorClient(ActorMethods, AsyncClient):
    """asyncio client of an actor; same methods as :class:`ActorClient`, awaitable."""
