"""The Engine protocol, tested against every engine on CPU with the default model.

vLLM is the session actor's engine (one vLLM per test session); the hf engine
(continuous batching) and its ``model.generate`` fallback are started once here.
Adapters added directly to an engine use engine ids from 9000 on, far from the ids the
actor's AdapterHost hands out.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from support import make_lora

from spar.config import Settings
from spar.engine.protocol import AdapterRef, Engine, GenerationRequest, LoopStop, Message
from spar.errors import FailedPrecondition, InvalidArgument

#: The engines come from fixtures picked at run time, which the conftest hook cannot see.
pytestmark = pytest.mark.needs_engine

PROMPT = "List three fruits."
_ids = itertools.count(9000)


def req(prompt: str = PROMPT, **kwargs: object) -> GenerationRequest:
    kwargs.setdefault("temperature", 0.0)
    kwargs.setdefault("max_tokens", 8)
    return GenerationRequest(messages=[Message("user", prompt)], **kwargs)  # type: ignore[arg-type]


def _running(engine_class: Any, settings: Settings, model_path: Path) -> Iterator[Engine]:
    """An engine of engine_class on the session's settings with the hf engine kind, shut
    down at the end of the session."""
    hf = settings.model_copy(update={"engine": settings.engine.model_copy(update={"kind": "hf"})})
    engine = engine_class.start(hf, model_path)
    yield engine
    engine.shutdown()


@pytest.fixture(scope="session")
def hf_engine(settings: Settings, model_path: Path) -> Iterator[Engine]:
    from spar.engine.hf_engine import HfEngine

    yield from _running(HfEngine, settings, model_path)


@pytest.fixture(scope="session")
def hf_generate_engine(settings: Settings, model_path: Path) -> Iterator[Engine]:
    from spar.engine.hf_generate import HfGenerateEngine

    yield from _running(HfGenerateEngine, settings, model_path)


@pytest.fixture(params=["vllm", "hf", "hf-generate"])
def engine(request: pytest.FixtureRequest) -> Engine:
    if request.param == "hf":
        hf: Engine = request.getfixturevalue("hf_engine")
        return hf
    if request.param == "hf-generate":
        fallback: Engine = request.getfixturevalue("hf_generate_engine")
        return fallback
    actor = request.getfixturevalue("actor_server")
    vllm: Engine = actor.runtime.engine
    return vllm


@pytest.fixture(scope="session")
def lora(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lora(model_path, tmp_path_factory.mktemp("contract") / "lora", seed=11)


async def idle(engine: Engine, timeout: float = 10.0) -> bool:
    for _ in range(int(timeout / 0.05)):
        if await engine.unfinished_requests() == 0:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_n_samples_and_usage(engine: Engine) -> None:
    request = req("Write a short poem about a cat.", n=3, temperature=1.0, max_tokens=6)
    result = await engine.generate(request)
    assert [s.index for s in result.samples] == [0, 1, 2]
    assert all(0 < s.completion_tokens <= 6 for s in result.samples)
    assert len({s.text for s in result.samples}) >= 2
    assert result.usage.completion_tokens == sum(s.completion_tokens for s in result.samples)
    assert result.usage.prompt_tokens == engine.prompt_tokens(request) > 5


async def test_max_tokens_ends_with_length(engine: Engine) -> None:
    result = await engine.generate(req(max_tokens=5))
    [sample] = result.samples
    assert (sample.finish_reason, sample.completion_tokens) == ("length", 5)
    assert sample.text.strip()


async def test_stop_string_truncates(engine: Engine) -> None:
    full = (await engine.generate(req(max_tokens=10))).samples[0].text
    stop = full.split()[2]  # the third word: well inside the text
    cut = full.index(stop)
    result = await engine.generate(req(max_tokens=10, stop=[stop, "zzz-never"]))
    [sample] = result.samples
    assert sample.finish_reason == "stop"
    assert sample.text == full[:cut]
    assert sample.completion_tokens < 10


async def test_a_loop_stop_ends_a_looping_sample_early(engine: Engine) -> None:
    looping = "1 2 3 1 2 3 1 2 3 1 2 3"  # greedy decoding carries the loop on
    plain = req(looping, raw=True, max_tokens=40)
    [free] = (await engine.generate(plain)).samples
    assert free.finish_reason == "length"
    stop = LoopStop(min_pattern=2, max_pattern=8, repeats=3)
    result = await engine.generate(replace(plain, loop_stop=stop))
    [sample] = result.samples
    assert sample.finish_reason == "repetition"
    assert stop.min_pattern * stop.repeats <= sample.completion_tokens < 40
    assert free.text.startswith(sample.text)  # the same text, ended where the loop closed
    # Without a loop in it, the stop changes nothing.
    [other] = (await engine.generate(replace(req(max_tokens=5), loop_stop=stop))).samples
    assert other.finish_reason == "length"


async def test_raw_prompt_skips_the_chat_template(engine: Engine) -> None:
    chat, raw = req("The capital of France is"), req("The capital of France is", raw=True)
    assert engine.prompt_tokens(raw) < engine.prompt_tokens(chat)
    result = await engine.generate(raw)
    assert result.usage.prompt_tokens == engine.prompt_tokens(raw)
    assert result.samples[0].completion_tokens > 0


async def test_assistant_prefill_is_continued_not_returned(engine: Engine) -> None:
    prefill = "Here are three fruits: apple,"
    plain, filled = req(max_tokens=6), req(max_tokens=6, prefill=prefill)
    assert engine.prompt_tokens(filled) > engine.prompt_tokens(plain)
    result = await engine.generate(filled)
    text = result.samples[0].text
    assert text and not text.startswith(prefill)
    assert result.usage.prompt_tokens == engine.prompt_tokens(filled)


async def test_seed(engine: Engine) -> None:
    seeded = req("Write a poem.", n=2, temperature=1.0, max_tokens=8, seed=1234)
    if engine.info.extra.get("engine", "vllm") == "vllm":  # vLLM-CPU (tests run on CPU)
        with pytest.raises(InvalidArgument, match="seed is not supported"):
            await engine.generate(seeded)
        return
    first = await engine.generate(seeded)
    # Same seed, while other requests run next to it: the same samples.
    again, _ = await asyncio.gather(
        engine.generate(seeded), engine.generate(req("Hi", temperature=1.0, n=2))
    )
    other = await engine.generate(req("Write a poem.", n=2, temperature=1.0, max_tokens=8, seed=7))
    assert [s.text for s in again.samples] == [s.text for s in first.samples]
    assert [s.text for s in other.samples] != [s.text for s in first.samples]


async def test_stream_deltas_add_up_to_the_final_text(engine: Engine) -> None:
    request = req("Tell me a story.", max_tokens=10, stop=["zzz-never"])
    expected = (await engine.generate(request)).samples[0].text
    deltas = [d async for d in engine.stream(request)]
    assert len(deltas) > 1, "a stream must arrive in more than one delta"
    assert "".join(d.text for d in deltas) == expected
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["length"]
    assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens == 10


async def test_cancel_aborts_the_work(engine: Engine) -> None:
    task = asyncio.create_task(engine.generate(req("Tell me a very long story.", max_tokens=800)))
    for _ in range(200):
        if await engine.unfinished_requests() == 1:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await idle(engine), "the engine kept generating after the task was cancelled"

    stream = engine.stream(req("Tell me a very long story.", max_tokens=800))
    received = 0
    async for _ in stream:
        received += 1
        if received == 2:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    assert await idle(engine), "the engine kept generating after the stream was closed"


async def test_adapter_add_use_remove(engine: Engine, lora: Path) -> None:
    ref = AdapterRef("contract-lora", next(_ids), lora)
    base = (await engine.generate(req(max_tokens=8))).samples[0].text
    await engine.add_adapter(ref)
    assert ref.engine_id in await engine.list_adapters()
    tuned = (await engine.generate(req(max_tokens=8, adapter=ref))).samples[0].text
    assert tuned != base, "a random LoRA must change the greedy output"
    await engine.remove_adapter(ref)
    assert ref.engine_id not in await engine.list_adapters()
    assert (await engine.generate(req(max_tokens=8))).samples[0].text == base


async def test_unusable_adapter_files(engine: Engine, lora: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "adapter_config.json").write_text((lora / "adapter_config.json").read_text())
    (garbage / "adapter_model.safetensors").write_bytes(b"\x00not safetensors" * 64)
    with pytest.raises(FailedPrecondition, match="could not load"):
        await engine.add_adapter(AdapterRef("contract-garbage", next(_ids), garbage))
    with pytest.raises(FailedPrecondition):
        await engine.add_adapter(AdapterRef("contract-missing", next(_ids), tmp_path / "nope"))
    assert (await engine.generate(req(max_tokens=2))).samples[0].completion_tokens > 0


async def test_context_limits(engine: Engine) -> None:
    limit = engine.info.max_model_len
    with pytest.raises(InvalidArgument, match=f"context is {limit} tokens"):
        await engine.generate(req("word " * (limit + 10)))
    long = req("word " * (limit - 60), max_tokens=200)
    room = limit - engine.prompt_tokens(long)
    assert 0 < room < 200
    with pytest.raises(InvalidArgument, match=f"lower max_tokens to at most {room}"):
        await engine.generate(long)
    stream = engine.stream(long)
    with pytest.raises(InvalidArgument, match="exceeds the model's context"):
        await stream.__anext__()  # type: ignore[attr-defined]


async def test_concurrent_requests_get_their_own_results(engine: Engine, lora: Path) -> None:
    ref = AdapterRef("contract-mixed", next(_ids), lora)
    await engine.add_adapter(ref)
    requests = [
        req(PROMPT, max_tokens=10),
        req("Hi", max_tokens=4, adapter=ref),
        req("Name a color.", max_tokens=8, stop=["\n"]),
        req("Write a poem.", max_tokens=6, temperature=0.8, n=2),
        req("Count to five.", max_tokens=7, adapter=ref),
    ]
    alone = [await engine.generate(r) for r in requests]
    together = await asyncio.gather(*(engine.generate(r) for r in requests))
    await engine.remove_adapter(ref)
    for i, (a, t) in enumerate(zip(alone, together, strict=True)):
        if requests[i].temperature == 0.0:
            assert t.samples == a.samples, f"request {i} differs when batched"
        assert t.usage.prompt_tokens == a.usage.prompt_tokens
        assert len(t.samples) == requests[i].n
        assert all(s.completion_tokens <= requests[i].max_tokens for s in t.samples)
    assert await idle(engine)


# -- the hf engine's continuous batching ---------------------------------------------------


async def test_hf_a_request_joins_the_running_batch(hf_engine: Engine) -> None:
    """A short request sent while a long one runs finishes long before it (the old engine
    made it wait for the whole batch)."""
    long = asyncio.create_task(
        hf_engine.generate(req("Tell me a very long story.", max_tokens=300))
    )
    stats = hf_engine.stats  # type: ignore[attr-defined]
    for _ in range(400):
        if stats()["steps"] > 0 and stats()["rows"] == 1:
            break
        await asyncio.sleep(0.01)
    steps = stats()["steps"]
    short = await hf_engine.generate(req("Hi", max_tokens=4))
    assert short.samples[0].completion_tokens == 4
    assert not long.done(), "the short request waited for the long one"
    assert stats()["steps"] - steps < 60
    result = await long
    assert result.samples[0].completion_tokens > 4


async def test_hf_n_samples_share_one_prefill(hf_engine: Engine) -> None:
    stats = hf_engine.stats  # type: ignore[attr-defined]
    assert await idle(hf_engine)
    before = stats()
    result = await hf_engine.generate(req("Write a poem.", n=4, temperature=1.0, max_tokens=5))
    after = stats()
    assert len(result.samples) == 4
    assert after["prefills"] - before["prefills"] == 1
    assert after["generated_tokens"] - before["generated_tokens"] == 20
    assert after["device_busy_s"] > before["device_busy_s"]


async def test_hf_an_adapter_removed_mid_request_serves_it_to_the_end(
    hf_engine: Engine, lora: Path
) -> None:
    ref = AdapterRef("contract-pinned", next(_ids), lora)
    await hf_engine.add_adapter(ref)
    request = req("Count to twenty.", max_tokens=40, adapter=ref, stop=["zzz-never"])
    expected = (await hf_engine.generate(request)).samples[0].text
    deltas = []
    async for delta in hf_engine.stream(request):
        deltas.append(delta)
        if len(deltas) == 2:
            await hf_engine.remove_adapter(ref)
            assert ref.engine_id not in await hf_engine.list_adapters()
    assert "".join(d.text for d in deltas) == expected
    assert await idle(hf_engine)
