"""Runs an actor and a refiner with the hf engine while ``import vllm`` fails.

Used by test_hf_engine_e2e.py as ``python hf_actor_script.py MODEL LORA CACHE``; prints
one JSON line of what it saw. A finder in front of sys.meta_path makes vLLM look not
installed, as on the GPU machine that has torch/transformers/peft only.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import json
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import ClassVar


class BlockVllm(importlib.abc.MetaPathFinder):
    attempts: ClassVar[list[str]] = []

    def find_spec(
        self, name: str, path: object = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name == "vllm" or name.startswith("vllm."):
            self.attempts.append(name)
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None


sys.meta_path.insert(0, BlockVllm())


async def main(model: str, lora: str, cache: str) -> dict[str, object]:
    from services.actor.server import ActorServer
    from services.refiner.server import RefinerServer
    from spar.client import AsyncActorClient
    from spar.config import EngineSettings, Settings

    settings = Settings(
        cache_dir=cache,
        model=model,
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        engine=EngineSettings(kind="hf", device="cpu", max_lora_rank=16),
        grace_period_s=1.0,
    )
    out: dict[str, object] = {}
    actor = ActorServer(settings)
    await actor.start()
    try:
        async with AsyncActorClient(f"127.0.0.1:{actor.port}", timeout=120) as client:
            await client.stage_adapter("actor-1-0123456789ab", lora)
            kwargs = {"max_tokens": 8, "temperature": 0.0}
            base = await client.generate("List three fruits.", **kwargs)
            tuned = await client.generate(
                "List three fruits.", adapter="actor-1-0123456789ab", **kwargs
            )
            streamed = [
                m.delta
                async for m in client.generate_stream(
                    "List three fruits.", adapter="actor-1-0123456789ab", **kwargs
                )
            ]
            out.update(
                base=base.completions[0].text,
                tuned=tuned.completions[0].text,
                tuned_adapter=tuned.adapter,
                tuned_tokens=tuned.usage.completion_tokens,
                streamed="".join(streamed),
                device=actor.runtime.engine.info.device,
                engine=actor.runtime.engine.info.extra.get("engine", ""),
            )
        refiner_settings = settings.model_copy(
            update={
                "refiner": settings.refiner.model_copy(
                    update={"actor_target": f"127.0.0.1:{actor.port}"}
                )
            }
        )
        refiner = RefinerServer(refiner_settings)
        await refiner.start()
        out["refiner_ready"] = refiner.runtime.ready
        await refiner.stop()
    finally:
        await actor.stop()
    out["vllm_imported"] = any(m == "vllm" or m.startswith("vllm.") for m in sys.modules)
    out["vllm_attempts"] = sorted(set(BlockVllm.attempts))
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:4]))))
