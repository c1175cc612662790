"""Time from "adapter published" to "every replica serving it", for 1, 2 and 4 actor
replicas, with steady client load on every replica during each rollout.

    .venv/bin/python -m bench.rollout [--replicas 1 2 4] [--clients-per-replica 2]

Real actor replicas (each its own vLLM engine) on loopback, the real artifact store
served by a real trainer, the coordinator's two-phase rollout. The baseline is the
single-replica rollout measured in the same run. Ends with
``RESULT rollout ratio=<worst all-replicas time ÷ single-replica time> failures=<n>``;
targets: ratio ≤ 1.5, failures 0.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from services.actor.server import ActorServer
from services.coordinator.loop import roll_out
from services.coordinator.replicas import GrpcReplica
from services.coordinator.rollout import Version
from services.coordinator.state import StateStore
from services.trainer.server import TrainerServer
from spar.client import AsyncActorClient
from spar.config import EngineSettings, Settings, TlsSettings
from spar.model import prepare_default_model


def make_lora(model_path: Path, out: Path, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    config = LoraConfig(r=16, lora_alpha=32, target_modules=modules, init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(str(out))
    return out


async def load(targets: list[str], per_replica: int, stop: asyncio.Event) -> tuple[int, int]:
    ok = failed = 0

    async def client(target: str) -> None:
        nonlocal ok, failed
        async with AsyncActorClient(target, timeout=300) as actor:
            while not stop.is_set():
                try:
                    await actor.generate("Name a fruit.", max_tokens=8, temperature=0.0)
                    ok += 1
                except Exception:
                    failed += 1

    await asyncio.gather(*(client(t) for t in targets for _ in range(per_replica)))
    return ok, failed


async def main(args: argparse.Namespace) -> None:
    model = prepare_default_model(Settings().cache_dir).path
    n_max = max(args.replicas)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = Settings(
            cache_dir=root, model=str(model), port=0, metrics_port=-1,
            engine=EngineSettings(kv_cache_gib=1.0, max_lora_rank=16),
            tls=TlsSettings(plaintext=True),  # loopback only
        )  # fmt: skip
        trainer = TrainerServer(base)
        await trainer.start()
        store_target = f"127.0.0.1:{trainer.port}"
        actors = []
        for i in range(n_max):
            server = ActorServer(base.model_copy(update={"cache_dir": root / f"actor{i}"}))
            await server.start()
            actors.append(server)
        targets = [f"127.0.0.1:{a.port}" for a in actors]
        replicas = [GrpcReplica(t) for t in targets]
        rows = []
        for k, n in enumerate(args.replicas):
            folder = make_lora(model, root / f"lora{k}", seed=100 + k)
            m = trainer.store.publish(folder, role="actor", iteration=k + 1, base_model=str(model))
            version = Version(m["version"]["name"], m["version"]["digest"], "actor", k + 1)
            state = StateStore(root / f"state{k}")
            stop = asyncio.Event()
            traffic = asyncio.create_task(load(targets[:n], args.clients_per_replica, stop))
            await asyncio.sleep(2)
            t0 = time.perf_counter()
            await roll_out(state, "actor", version, replicas[:n], store_target)
            seconds = time.perf_counter() - t0
            await asyncio.sleep(1)
            stop.set()
            ok, failed = await traffic
            rows.append((n, seconds, ok, failed))
            for r in replicas[:n]:  # back to base and unload, so every run starts equal
                await r.activate("base")
                await r.retire(version.name)
        for r in replicas:
            await r.close()
        for a in actors:
            await a.stop()
        await trainer.stop()

    single = next(s for n, s, _, _ in rows if n == 1)
    print(f"{'replicas':>8s} {'rollout s':>10s} {'ratio':>6s} {'requests ok':>12s} {'failed':>7s}")
    for n, s, ok, failed in rows:
        print(f"{n:8d} {s:10.2f} {s / single:6.2f} {ok:12d} {failed:7d}")
    worst = max(s / single for _, s, _, _ in rows)
    failures = sum(f for *_, f in rows)
    print(f"RESULT rollout ratio={worst:.2f} failures={failures} single_s={single:.2f} "
          f"replicas={','.join(str(n) for n, *_ in rows)}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--clients-per-replica", type=int, default=2)
    asyncio.run(main(parser.parse_args()))
