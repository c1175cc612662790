"""Does the continuous-batching hf engine generate what the model.generate one does?

For machines where the engine contract tests cannot run (the GPU machine has no pytest
plugins and no default checkpoint): both engines on the same random-weight model in
float32, greedy, the same prompts sent together, then the contract's behaviours that
differ most between the two designs — a seeded request next to other traffic, streaming,
stop strings, n samples, a LoRA adapter. Prints one line per check and
``RESULT hf_engine_check greedy_match=<share of identical greedy samples> failed=<n>``.

    python -m bench.hf_engine_check --tokenizer .gpu/smollm2 [--device cuda]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from bench.hf_engine import make_random_lora
from bench.train_gpu import materialise
from spar.config import EngineSettings, Settings
from spar.engine.hf_engine import HfEngine
from spar.engine.hf_generate import HfGenerateEngine
from spar.engine.hf_requests import HfEngineBase
from spar.engine.protocol import AdapterRef, GenerationRequest, Message

PROMPTS = [
    "List three fruits.", "Write a haiku about rain.", "Count to ten.", "Name a colour.",
    "Describe a cat in one sentence.", "What is two plus two?", "Say hello.", "Tell a joke.",
]  # fmt: skip


def req(prompt: str, **kwargs: object) -> GenerationRequest:
    kwargs.setdefault("temperature", 0.0)
    kwargs.setdefault("max_tokens", 24)
    return GenerationRequest(messages=[Message("user", prompt)], **kwargs)  # type: ignore[arg-type]


async def checks(new: HfEngineBase, old: HfEngineBase, lora: Path) -> tuple[float, list[str]]:
    failed: list[str] = []

    def check(name: str, ok: bool, detail: str = "") -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}", flush=True)
        if not ok:
            failed.append(name)

    requests = [req(p) for p in PROMPTS]
    a = await asyncio.gather(*(new.generate(r) for r in requests))
    b = await asyncio.gather(*(old.generate(r) for r in requests))
    same = sum(x.samples[0].text == y.samples[0].text for x, y in zip(a, b, strict=True))
    share = same / len(PROMPTS)
    check("greedy matches model.generate", share >= 0.75, f"{same}/{len(PROMPTS)}")
    alone = [await new.generate(r) for r in requests[:3]]
    check("greedy alone == batched", [x.samples for x in alone] == [x.samples for x in a[:3]])

    seeded = req("Write a poem.", n=3, temperature=1.0, top_p=0.9, seed=42)
    first = await new.generate(seeded)
    again, *_ = await asyncio.gather(
        new.generate(seeded), *(new.generate(req(p, temperature=1.0)) for p in PROMPTS)
    )
    check("seeded request repeats next to traffic", again.samples == first.samples)
    check("n samples differ", len({s.text for s in first.samples}) >= 2)

    stream_req = req("Tell me a story.", max_tokens=20, stop=["zzz-never"])
    full = (await new.generate(stream_req)).samples[0].text
    deltas = [d async for d in new.stream(stream_req)]
    check("stream adds up to the result", "".join(d.text for d in deltas) == full)
    words = full.split()
    if len(words) > 3:
        stop = words[2]
        cut = (await new.generate(req("Tell me a story.", max_tokens=20, stop=[stop]))).samples[0]
        check("stop string cuts", cut.text == full[: full.index(stop)], repr(cut.text))

    ref = AdapterRef("check-lora", 1, lora)
    await new.add_adapter(ref)
    await old.add_adapter(ref)
    tuned = await asyncio.gather(*(new.generate(req(p, adapter=ref)) for p in PROMPTS[:4]))
    tuned_old = await asyncio.gather(*(old.generate(req(p, adapter=ref)) for p in PROMPTS[:4]))
    same = sum(x.samples == y.samples for x, y in zip(tuned, tuned_old, strict=True))
    check("LoRA greedy matches peft", same >= 3, f"{same}/4")
    check(
        "LoRA changes the output",
        any(t.samples != x.samples for t, x in zip(tuned, a, strict=False)),
    )
    await new.remove_adapter(ref)
    check("idle after all", await new.unfinished_requests() == 0)
    return share, failed


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = work / "model"
        materialise(args.model, Path(args.tokenizer), folder, args.device)
        lora = make_random_lora(folder, work / "lora", rank=8)
        settings = Settings(
            cache_dir=work / "cache",
            model=str(folder),
            engine=EngineSettings(
                kind="hf", device=args.device, dtype="float32", max_model_len=512,
                max_batch_sequences=64, max_lora_rank=16,
            ),
        )  # fmt: skip
        new = await asyncio.to_thread(HfEngine.start, settings)
        old = await asyncio.to_thread(HfGenerateEngine.start, settings)
        try:
            share, failed = await checks(new, old, lora)
            stats: dict[str, float] = getattr(new, "stats", dict)()
            print(f"new engine: {new.info.extra} {stats}")
        finally:
            new.shutdown()
            old.shutdown()
    print(
        f"RESULT hf_engine_check greedy_match={share:.2f} failed={len(failed)} {','.join(failed)}"
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokenizer", required=True, help="default model folder (config + tokenizer)")
    p.add_argument("--model", default="default", help="architecture (bench.train_gpu)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    asyncio.run(main(p.parse_args()))
