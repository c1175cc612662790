"""Client of an actor: generation (``Actor``) and its adapters (``AdapterHost``)."""

from __future__ import annotations

from collections.abc import Sequence

from spar.client.adapter_host import AdapterHostMethods
from spar.client.base import AsyncClient, Call, Client, streamed, unary, with_given
from spar.v1 import actor_pb2 as pb
from spar.v1 import actor_pb2_grpc, common_pb2

Stub = actor_pb2_grpc.ActorStub


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
        """``n`` completions of a prompt (or of chat ``messages``, (role, content) pairs);
        sampling left unset takes the server's defaults."""
        sampling = with_given(
            common_pb2.SamplingParams(n=n, max_tokens=max_tokens, stop=list(stop)),
            temperature=temperature, top_p=top_p, seed=seed,
        )  # fmt: skip
        request = pb.GenerateRequest(
            prompt=prompt,
            messages=[common_pb2.ChatMessage(role=r, content=c) for r, c in messages],
            raw_prompt=raw_prompt,
            sampling=sampling,
            adapter=adapter,
            request_id=request_id,
        )
        return Call(Stub, "Generate", request, pb.GenerateResponse, timeout)

    generate_stream = streamed(generate, "GenerateStream", pb.GenerateStreamResponse)


class ActorClient(ActorMethods, Client):
    """Blocking client of an actor (``Actor`` + ``AdapterHost`` + health).

    with ActorClient("127.0.0.1:50051") as actor:
        reply = actor.generate("Write a haiku about rain.", n=3)
    """


class AsyncActorClient(ActorMethods, AsyncClient):
    """asyncio client of an actor; same methods as :class:`ActorClient`, awaitable."""
