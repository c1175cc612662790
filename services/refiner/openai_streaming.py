"""The server-sent events of streamed chat completions (``"stream": true``), in OpenAI's
chunk format: a refined answer, sent once its search ends with keep-alive comments while
it runs, and the actor's samples, delta by delta.

The HTTP layer (:mod:`services.refiner.openai_http`) wraps these in its streaming
response; the chunks themselves are made by :mod:`services.refiner.openai_completions`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any, cast

from services.refiner import openai_completions as oc
from spar.client.enums import FINISH_REASON
from spar.v1 import actor_pb2
from spar.v1 import refiner_pb2 as pb


def sse(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


KEEPALIVE = b": keep-alive\n\n"


async def refined_events(
    task: asyncio.Task[pb.AnswerResponse],
    model: str,
    *,
    trace: bool,
    include_usage: bool,
    keepalive_s: float,
) -> AsyncIterator[bytes]:
    """The events of a streamed refined answer: the role first, keep-alive comments while
    the search runs, then the answer in pieces, its finish and its usage. The search
    (``task``) is cancelled when the stream ends early."""
    id, created = oc.completion_id(), int(time.time())
    try:
        yield sse(oc.chunk(id, created, model, [oc.delta(0, role="assistant", content="")]))
        while not task.done():
            await asyncio.wait({task}, timeout=keepalive_s)
            if not task.done():
                yield KEEPALIVE  # the search still runs; proxies keep the connection
        reply = task.result()
        for piece in oc.pieces(reply.answer):
            yield sse(oc.chunk(id, created, model, [oc.delta(0, content=piece)]))
        completion = oc.answer_completion(reply, model, trace=trace)
        tail = {"usage": completion["usage"], "spar": completion["spar"]}
        finish = [oc.delta(0, finish_reason="stop")]
        if include_usage:
            yield sse(oc.chunk(id, created, model, finish))
            yield sse(oc.chunk(id, created, model, [], **tail))
        else:
            yield sse(oc.chunk(id, created, model, finish, **tail))
        yield sse("[DONE]")
    finally:
        await cancel(task)  # the client went away: stop the search's engine work


async def actor_events(
    stream: AsyncIterator[actor_pb2.GenerateStreamResponse],
    first: actor_pb2.GenerateStreamResponse | None,
    model: str,
    *,
    n: int,
    include_usage: bool,
    start: float,
) -> AsyncIterator[bytes]:
    """The events of the actor's streamed samples (``first`` already read from
    ``stream``): the roles, the deltas, each sample's finish and the usage. The stream is
    closed when the events end."""
    id, created = oc.completion_id(), int(time.time())
    try:
        yield sse(
            oc.chunk(
                id,
                created,
                model,
                [oc.delta(i, role="assistant", content="") for i in range(n)],
            )
        )

        async def items() -> AsyncIterator[actor_pb2.GenerateStreamResponse]:
            if first is not None:
                yield first
            async for item in stream:
                yield item

        # The last finish chunk is held back: without include_usage it carries the usage.
        held: dict[str, Any] | None = None
        async for item in items():
            if held is not None and (item.delta or item.finish_reason):
                yield sse(held)
                held = None
            if item.delta:
                yield sse(oc.chunk(id, created, model, [oc.delta(item.index, content=item.delta)]))
            if item.finish_reason:
                reason = FINISH_REASON.get(item.finish_reason, "stop")
                held = oc.chunk(id, created, model, [oc.delta(item.index, finish_reason=reason)])
            if item.HasField("usage"):
                extension = oc.actor_extension(
                    item.adapter, item.usage, time.perf_counter() - start
                )
                tail = {"usage": oc.usage_of(extension["usage_by_phase"]), "spar": extension}
                if include_usage or held is None:
                    if held is not None:
                        yield sse(held)
                    held = oc.chunk(id, created, model, [], **tail)
                else:
                    held.update(tail)
        if held is not None:
            yield sse(held)
        yield sse("[DONE]")
    finally:
        await cast(Any, stream).aclose()


async def cancel(task: asyncio.Task[Any]) -> None:
    """Cancels the task if it still runs and waits until it has stopped."""
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
