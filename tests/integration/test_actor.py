"""The actor over real gRPC on 127.0.0.1, with the real vLLM engine and default model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support import make_lora, scrape

from spar.client import AsyncActorClient
from spar.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)

PROMPT = "List three fruits."


@pytest.fixture
async def actor(actor_target: str) -> AsyncIterator[AsyncActorClient]:
    async with AsyncActorClient(actor_target, timeout=120) as client:
        yield client


async def greedy(actor: AsyncActorClient, adapter: str = "", n_tokens: int = 24) -> str:
    reply = await actor.generate(PROMPT, max_tokens=n_tokens, temperature=0.0, adapter=adapter)
    return reply.completions[0].text


async def test_unary_generation(actor: AsyncActorClient) -> None:
    reply = await actor.generate(PROMPT, max_tokens=16, temperature=0.0)
    assert len(reply.completions) == 1
    c = reply.completions[0]
    assert c.text.strip()
    assert 0 < c.completion_tokens <= 16
    assert reply.usage.completion_tokens == c.completion_tokens
    assert reply.usage.prompt_tokens > 5
    assert reply.request_id
    assert reply.adapter == ""


async def test_stream_matches_unary_greedy(actor: AsyncActorClient) -> None:
    expected = await greedy(actor)
    parts, finals, usage = [], [], None
    async for msg in actor.generate_stream(PROMPT, max_tokens=24, temperature=0.0):
        parts.append(msg.delta)
        if msg.finish_reason:
            finals.append(msg.finish_reason)
        if msg.HasField("usage"):
            usage = msg.usage
    assert len(parts) > 1, "a stream must arrive in more than one message"
    assert "".join(parts) == expected
    assert len(finals) == 1
    assert usage is not None and 0 < usage.completion_tokens <= 24


async def test_n_distinct_samples(actor: AsyncActorClient) -> None:
    reply = await actor.generate(
        "Write a short poem about a cat.", n=4, max_tokens=24, temperature=1.0, top_p=1.0
    )
    assert [c.index for c in reply.completions] == [0, 1, 2, 3]
    assert len({c.text for c in reply.completions}) >= 3
    assert reply.usage.completion_tokens == sum(c.completion_tokens for c in reply.completions)


async def _engine_idle(actor_server: object, timeout: float = 10.0) -> bool:
    engine = actor_server.runtime.engine  # type: ignore[attr-defined]
    for _ in range(int(timeout / 0.1)):
        if await engine.unfinished_requests() == 0:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_cancelled_stream_aborts_engine_work(
    actor: AsyncActorClient, actor_server: object
) -> None:
    engine = actor_server.runtime.engine  # type: ignore[attr-defined]
    stream = actor.generate_stream("Tell me a very long story.", max_tokens=800, temperature=1.0)
    received = 0
    async for _ in stream:
        received += 1
        if received == 3:
            assert await engine.unfinished_requests() == 1
            break
    await stream.aclose()  # the client cancels the RPC
    assert await _engine_idle(actor_server), "the engine kept generating after cancel"


async def test_deadline_aborts_engine_work(actor: AsyncActorClient, actor_server: object) -> None:
    with pytest.raises(DeadlineExceeded):
        await actor.generate("Tell me a very long story.", max_tokens=800, timeout=1.5)
    assert await _engine_idle(actor_server), "the engine kept generating past the deadline"


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"prompt": ""}, InvalidArgument, "prompt is empty"),
        ({"prompt": "word " * 3000}, InvalidArgument, "context is 2048 tokens"),
        ({"prompt": "hi", "max_tokens": 2000, "n": 1}, InvalidArgument, "max_tokens=2000"),
        ({"prompt": "hi", "n": 17}, InvalidArgument, "sampling.n=17 exceeds the server limit 16"),
        ({"prompt": "hi", "adapter": "nope-1"}, NotFound, "not loaded on this replica"),
        ({"prompt": "hi", "seed": 7}, InvalidArgument, "seed"),
        ({"prompt": "hi", "messages": [("user", "x")]}, InvalidArgument, "not both"),
        ({"prompt": "hi", "temperature": -1.0}, InvalidArgument, "temperature"),
    ],
)
async def test_bad_generate_requests(
    actor: AsyncActorClient, kwargs: dict[str, object], error: type[Exception], needle: str
) -> None:
    prompt = str(kwargs.pop("prompt"))
    with pytest.raises(error, match=needle):
        await actor.generate(prompt, **kwargs)  # type: ignore[arg-type]


async def test_prompt_plus_max_tokens_over_context(actor: AsyncActorClient) -> None:
    with pytest.raises(InvalidArgument, match="lower max_tokens to at most"):
        await actor.generate("word " * 1500, max_tokens=1000)


async def test_health_transitions_to_serving(actor: AsyncActorClient, actor_server: object) -> None:
    assert actor_server.startup_health == "NOT_SERVING"  # type: ignore[attr-defined]
    assert isinstance(actor_server.startup_generate_error, Unavailable)  # type: ignore[attr-defined]
    assert await actor.health() == "SERVING"
    assert await actor.health("spar.v1.Actor") == "SERVING"
    assert await actor.health("spar.v1.AdapterHost") == "SERVING"


async def test_metrics_scrape(actor: AsyncActorClient, actor_server: object) -> None:
    await actor.generate("hi", max_tokens=4)
    with pytest.raises(InvalidArgument):
        await actor.generate("")
    samples = scrape(actor_server)

    def value(name: str, **labels: str) -> float:
        key = (name, tuple(sorted({"service": "actor", **labels}.items())))
        return samples.get(key, 0.0)

    assert value("spar_requests_total", method="Generate", code="OK") >= 1
    assert value("spar_requests_total", method="Generate", code="INVALID_ARGUMENT") >= 1
    assert value("spar_request_duration_seconds_count", method="Generate") >= 2
    assert value("spar_generated_tokens_total") > 0
    assert value("spar_prompt_tokens_total") > 0
    assert value("spar_engine_ready") == 1
    active = [k for k, v in samples.items() if k[0] == "spar_active_adapter_info" and v == 1]
    assert len(active) == 1


# -- adapters -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loras(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loras")
    return {
        "v1": make_lora(model_path, root / "v1", seed=1),
        "v2": make_lora(model_path, root / "v2", seed=2),
        "big": make_lora(model_path, root / "big", seed=3, rank=32),
    }


async def test_adapter_swap_without_restart_and_pinning(
    actor: AsyncActorClient, loras: dict[str, Path]
) -> None:
    base = await greedy(actor)
    staged = await actor.stage_adapter("test-v1", str(loras["v1"]))
    assert staged.loaded and len(staged.version.digest) == 64
    again = await actor.stage_adapter("test-v1", str(loras["v1"]))
    assert not again.loaded and again.version.digest == staged.version.digest
    await actor.stage_adapter("test-v2", str(loras["v2"]))
    out1 = await greedy(actor, adapter="test-v1")
    out2 = await greedy(actor, adapter="test-v2")
    assert out1 != base and out2 != out1, "the adapters must change the outputs"
    assert await greedy(actor) == base, "staging alone must not change the default"

    assert (await actor.activate_adapter("test-v1")).active == "test-v1"
    assert await greedy(actor) == out1

    # A stream that started on v1 finishes on v1 while the alias moves to v2.
    stream = actor.generate_stream(PROMPT, max_tokens=24, temperature=0.0)
    parts, served_by = [], set()
    async for msg in stream:
        if not parts:
            switched = await actor.activate_adapter("test-v2")
            assert (switched.previous, switched.active) == ("test-v1", "test-v2")
        parts.append(msg.delta)
        served_by.add(msg.adapter)
    assert "".join(parts) == out1 and served_by == {"test-v1"}

    reply = await actor.generate(PROMPT, max_tokens=24, temperature=0.0)
    assert reply.adapter == "test-v2" and reply.completions[0].text == out2
    assert await greedy(actor, adapter="test-v1") == out1, "pinned requests keep the old version"
    assert await greedy(actor, adapter="base") == base

    listed = await actor.list_adapters()
    assert listed.active == "test-v2"
    assert {a.version.name for a in listed.adapters} >= {"test-v1", "test-v2"}

    with pytest.raises(FailedPrecondition, match="active"):
        await actor.retire_adapter("test-v2")
    assert (await actor.retire_adapter("test-v1")).retired
    with pytest.raises(NotFound):
        await greedy(actor, adapter="test-v1")
    await actor.activate_adapter("base")
    assert (await actor.retire_adapter("test-v2")).retired
    assert await greedy(actor) == base
    assert not (await actor.retire_adapter("test-v2")).retired


async def test_retire_waits_for_in_flight_requests(
    actor: AsyncActorClient, loras: dict[str, Path]
) -> None:
    await actor.stage_adapter("test-inflight", str(loras["v1"]))
    expected = await greedy(actor, adapter="test-inflight", n_tokens=32)
    parts = []
    async for msg in actor.generate_stream(
        PROMPT, max_tokens=32, temperature=0.0, adapter="test-inflight"
    ):
        if not parts:
            assert (await actor.retire_adapter("test-inflight")).retired
        parts.append(msg.delta)
    assert "".join(parts) == expected
    names = {a.version.name for a in (await actor.list_adapters()).adapters}
    assert "test-inflight" not in names


async def test_bad_adapters(
    actor: AsyncActorClient, loras: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        await actor.stage_adapter("test-missing", str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FailedPrecondition, match=r"adapter_config\.json is missing"):
        await actor.stage_adapter("test-empty", str(empty))
    with pytest.raises(FailedPrecondition, match="exceeds the server's max LoRA rank"):
        await actor.stage_adapter("test-big", str(loras["big"]))
    with pytest.raises(InvalidArgument, match="invalid"):
        await actor.stage_adapter("../escape", str(loras["v1"]))
    with pytest.raises(FailedPrecondition, match="does not match"):
        await actor.stage_adapter("test-digest", str(loras["v1"]), digest="0" * 64)
    with pytest.raises(FailedPrecondition, match="StageAdapter first"):
        await actor.activate_adapter("test-never-staged")

    # Weights that are not a safetensors file: the engine refuses, and keeps serving.
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "adapter_config.json").write_text((loras["v1"] / "adapter_config.json").read_text())
    (garbage / "adapter_model.safetensors").write_bytes(b"\x00not safetensors" * 64)
    with pytest.raises(FailedPrecondition, match="could not load"):
        await actor.stage_adapter("test-garbage", str(garbage))
    bad_json = tmp_path / "badjson"
    bad_json.mkdir()
    (bad_json / "adapter_config.json").write_text(json.dumps({"r": "eight"}))
    (bad_json / "adapter_model.safetensors").write_bytes(b"x")
    with pytest.raises(FailedPrecondition, match="positive integer"):
        await actor.stage_adapter("test-badjson", str(bad_json))
    names = {a.version.name for a in (await actor.list_adapters()).adapters}
    assert not any(n.startswith(("test-garbage", "test-digest", "test-big")) for n in names)
    assert (await actor.generate("hi", max_tokens=2)).completions[0].completion_tokens > 0
