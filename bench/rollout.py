"""Time from "adapter published" to "every replica serving it", for 1, 2 and 4 actor
replicas, with steady client load on every replica during each rollout.

    .venv/bin/python -m bench.rollout [--replicas 1 2 4] [--clients-per-replica 2]
    python -m bench.rollout --processes --engine hf --model FOLDER      # GPU machine

Real actor replicas on loopback, the real artifact store served by a real trainer, the
coordinator's two-phase rollout. By default every replica is a vLLM engine inside this
process (the CPU machine); with ``--processes`` each replica is its own
``spar actor serve`` process (as in a deployment), spread round-robin over the visible
GPUs (``CUDA_VISIBLE_DEVICES`` per process). Each replica count is rolled out
``--repeats`` times, a fresh adapter each time, and its median kept; an untimed warm-up
rollout to every replica comes first (``--no-warmup`` skips it), so that each replica's
once-per-process first adapter load is not timed in whichever rollout first reaches it.
The baseline is the single-replica rollout measured in the same run. Ends with
``RESULT rollout ratio=<worst all-replicas time ÷ single-replica time> failures=<n>``;
targets: ratio ≤ 1.5, failures 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.local_servers import free_port
from services.coordinator.replicas import GrpcReplica
from services.coordinator.rollout import RolloutReport, Version, rollout
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


def gpu_count() -> int:
    try:
        import torch

        return int(torch.cuda.device_count())
    except Exception:
        return 0


@contextlib.asynccontextmanager
async def replica_processes(
    n: int, model: Path, root: Path, args: argparse.Namespace
) -> AsyncIterator[list[str]]:
    """n ``spar actor serve`` processes, each on its own port (and GPU, round-robin)."""
    gpus = args.gpus if args.gpus >= 0 else gpu_count()
    procs: list[subprocess.Popen[bytes]] = []
    targets = []
    try:
        for i in range(n):
            port = free_port()
            env = {
                **os.environ,
                "SPAR_ENGINE__KIND": args.engine,
                "SPAR_ENGINE__MAX_LORA_RANK": "16",
                "SPAR_MODEL": str(model),
                "SPAR_CACHE_DIR": str(root / f"actor{i}"),
                "SPAR_TLS__PLAINTEXT": "true",
                "PYTHONUNBUFFERED": "1",
            }
            if gpus > 0:
                env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
            logs = Path(args.log_dir) if args.log_dir else root
            logs.mkdir(parents=True, exist_ok=True)
            log = (logs / f"actor{i}.log").open("wb")
            cmd = [sys.executable, "-m", "spar_cli", "actor", "serve", "--host", "127.0.0.1"]
            cmd += ["--port", str(port), "--metrics-port", "-1", "--plaintext"]
            procs.append(
                subprocess.Popen(
                    cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
            targets.append(f"127.0.0.1:{port}")
        deadline = time.monotonic() + args.start_timeout
        for target, proc in zip(targets, procs, strict=True):
            async with AsyncActorClient(target, timeout=10) as client:
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(f"replica {target} exited ({proc.returncode})")
                    with contextlib.suppress(Exception):
                        if await client.health() == "SERVING":
                            break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"replica {target} not SERVING after start")
                    await asyncio.sleep(0.5)
        print(f"{n} replica processes SERVING ({gpus} GPUs visible)", flush=True)
        yield targets
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def replica_servers(n: int, base: Settings, root: Path) -> AsyncIterator[list[str]]:
    """n actor servers (each its own engine) inside this process."""
    from services.actor.server import ActorServer

    actors = []
    try:
        for i in range(n):
            server = ActorServer(base.model_copy(update={"cache_dir": root / f"actor{i}"}))
            await server.start()
            actors.append(server)
        yield [f"127.0.0.1:{a.port}" for a in actors]
    finally:
        for a in actors:
            await a.stop()


async def main(args: argparse.Namespace) -> None:
    model = Path(args.model) if args.model else prepare_default_model(Settings().cache_dir).path
    n_max = max(args.replicas)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = Settings(
            cache_dir=root, model=str(model), port=0, metrics_port=-1,
            engine=EngineSettings(kind=args.engine, kv_cache_gib=1.0, max_lora_rank=16),
            tls=TlsSettings(plaintext=True),  # loopback only
        )  # fmt: skip
        trainer = TrainerServer(base)
        await trainer.start()
        store_target = f"127.0.0.1:{trainer.port}"
        replicas_cm: Any = (
            replica_processes(n_max, model, root, args)
            if args.processes
            else replica_servers(n_max, base, root)
        )
        rows = []
        async with replicas_cm as targets:
            replicas = [GrpcReplica(t) for t in targets]
            seed = 100

            async def one_rollout(n: int, timed: bool) -> tuple[RolloutReport, int, int]:
                nonlocal seed
                seed += 1
                folder = make_lora(model, root / f"lora{seed}", seed=seed)
                m = trainer.store.publish(
                    folder, role="actor", iteration=seed, base_model=str(model)
                )
                version = Version(m["version"]["name"], m["version"]["digest"], "actor", seed)
                state = StateStore(root / f"state{seed}")
                stop = asyncio.Event()
                traffic = asyncio.create_task(load(targets[:n], args.clients_per_replica, stop))
                await asyncio.sleep(2 if timed else 0.5)
                report = await rollout(state, "actor", version, replicas[:n], store_target)
                await asyncio.sleep(1 if timed else 0.2)
                stop.set()
                ok, failed = await traffic
                for r in replicas[:n]:  # back to base and unload, so every run starts equal
                    await r.activate("base")
                    await r.retire(version.name)
                return report, ok, failed

            if args.warmup:
                # A replica's first adapter since its start wraps the model's layers for
                # stacked LoRA (and drops its captured decode graphs): a once-per-process
                # cost. Without a warm-up the rollout of n replicas pays it on the replicas
                # that were not in any earlier, smaller rollout, and the comparison measures
                # process age rather than fan-out.
                report, ok, failed = await one_rollout(n_max, timed=False)
                print(f"warm-up rollout to {n_max} replicas: {report.seconds:.2f} s, "
                      f"{ok} requests ok, {failed} failed", flush=True)  # fmt: skip
            for n in args.replicas:
                runs = [await one_rollout(n, timed=True) for _ in range(args.repeats)]
                reports = [r for r, _, _ in runs]
                phases = {
                    p: statistics.median(getattr(r, f"{p}_s") for r in reports)
                    for p in ("stage", "activate", "retire")
                }
                seconds = statistics.median(r.seconds for r in reports)
                ok, failed = sum(o for _, o, _ in runs), sum(f for *_, f in runs)
                rows.append((n, seconds, ok, failed, phases))
                print(f"{n} replicas: " + ", ".join(f"{r.seconds:.2f}" for r in reports) + " s",
                      flush=True)  # fmt: skip
            for r in replicas:
                await r.close()
        await trainer.stop()

    single = next(s for n, s, *_ in rows if n == 1)
    print(f"{'replicas':>8s} {'rollout s':>10s} {'ratio':>6s} {'stage s':>8s} {'activate s':>11s} "
          f"{'retire s':>9s} {'requests ok':>12s} {'failed':>7s}")  # fmt: skip
    for n, s, ok, failed, ph in rows:
        print(f"{n:8d} {s:10.3f} {s / single:6.2f} {ph['stage']:8.3f} {ph['activate']:11.3f} "
              f"{ph['retire']:9.3f} {ok:12d} {failed:7d}")  # fmt: skip
    worst = max(s / single for _, s, *_ in rows)
    failures = sum(f for _, _, _, f, _ in rows)
    mode = "processes" if args.processes else "in-process"
    counts = ",".join(str(n) for n, *_ in rows)
    print(f"RESULT rollout ratio={worst:.2f} failures={failures} single_s={single:.2f} "
          f"replicas={counts} repeats={args.repeats} warmup={int(args.warmup)} mode={mode} "
          f"engine={args.engine}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--clients-per-replica", type=int, default=2)
    parser.add_argument("--engine", choices=["vllm", "hf"], default="vllm")
    parser.add_argument("--processes", action="store_true", help="one process per replica")
    parser.add_argument("--model", default="", help="model folder (default: the default model)")
    parser.add_argument("--gpus", type=int, default=-1, help="GPUs to spread over (-1: all)")
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument("--repeats", type=int, default=3, help="rollouts per replica count")
    parser.add_argument(
        "--no-warmup", dest="warmup", action="store_false",
        help="skip the untimed first rollout to every replica",
    )  # fmt: skip
    parser.add_argument("--log-dir", default="", help="keep replica process logs here")
    asyncio.run(main(parser.parse_args()))
