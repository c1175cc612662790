"""Jobs over several processes on CPU: torchrun with gloo ranks behind a real trainer.

The default model, four preference pairs, max_length 64, one torch thread per rank (the CI
box has two shared cores). A 2-process job must train the adapter the single-process job
with the same global batch, seed and data trains; a killed rank must fail the job, publish
nothing and leave no rank behind; a cancelled job likewise.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support import JUDGE_RECORDS, PREFERENCE_PAIRS

from services.trainer.distributed import alive
from services.trainer.server import TrainerServer
from spar.client import AsyncTrainerClient
from spar.errors import FailedPrecondition
from spar.v1 import trainer_pb2 as pb

#: Global batch 2 (per-device batch 1): two optimizer steps over four examples. The paper's
#: DPO losses (sigmoid + 0.1 SFT) stay on; SFT jobs keep LoRA dropout 0.05 (TRL turns
#: dropout off in DPO), so their ranks must draw the single process's masks.
HP: dict[str, Any] = {
    "lora_rank": 8,
    "lora_alpha": 16,
    "max_length": 64,
    "epochs": 1,
    "batch_size": 1,
    "learning_rate": 2e-3,
    "seed": 0,
}


@pytest.fixture
async def client(trainer_server: TrainerServer) -> AsyncIterator[AsyncTrainerClient]:
    async with AsyncTrainerClient(f"127.0.0.1:{trainer_server.port}", timeout=60) as c:
        yield c


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


def _tensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def _ranks(worker: int) -> dict[int, int]:
    """rank -> pid of the processes below the job's worker (torchrun's agent), read from
    /proc: a rank is a process whose environment holds torchrun's RANK."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except (OSError, IndexError):
                continue
    out = {}
    for pid, parent in parents.items():
        if parent != worker:
            continue
        try:
            environ = (Path(f"/proc/{pid}") / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in environ:
            if item.startswith(b"RANK="):
                out[int(item[5:])] = pid
    return out


async def _running_ranks(
    client: AsyncTrainerClient, trainer_server: TrainerServer, job_id: str, world: int
) -> tuple[int, dict[int, int]]:
    """Waits until rank 0 reports the training started; (worker pid, rank -> pid)."""
    async for progress in client.watch_job(job_id):
        assert progress.state in (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING), progress
        if progress.state == pb.JOB_STATE_RUNNING and progress.total_steps > 0:
            break
    worker = int((trainer_server.state.job_dir(job_id) / "worker.pid").read_text())
    ranks = _ranks(worker)
    assert sorted(ranks) == list(range(world)), f"ranks below worker {worker}: {ranks}"
    return worker, ranks


async def _interruptible_job(
    client: AsyncTrainerClient, trainer_server: TrainerServer
) -> tuple[str, int, int, dict[int, int]]:
    """A DPO job on two ranks, long enough (100 epochs) to be interrupted, once it trains:
    (job id, adapters published before it, worker pid, rank -> pid)."""
    data = await client.upload_dataset("dpo", PREFERENCE_PAIRS)
    published = len(trainer_server.store.list())
    job = await client.submit_job(
        "dpo", data.dataset_digest, world_size=2, hyperparameters={**HP, "epochs": 100}
    )
    worker, ranks = await _running_ranks(client, trainer_server, job.id, 2)
    return job.id, published, worker, ranks


async def _gone(pids: list[int], within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return not any(alive(p) for p in pids)


async def test_world_size_beyond_the_cpus_is_refused(client: AsyncTrainerClient) -> None:
    data = await client.upload_dataset("dpo", PREFERENCE_PAIRS)
    cpus = _cpus()
    with pytest.raises(FailedPrecondition) as caught:
        await client.submit_job("dpo", data.dataset_digest, world_size=cpus + 1)
    assert f"world_size={cpus + 1} asks for {cpus + 1} processes" in caught.value.message
    assert f"CPU with {cpus} cores" in caught.value.message
    with pytest.raises(FailedPrecondition, match="FSDP shards the model"):
        await client.submit_job("dpo", data.dataset_digest, world_size=1, strategy="fsdp")


async def _single_process(
    client: AsyncTrainerClient, kind: str, records: list[dict[str, str]]
) -> tuple[str, pb.Job]:
    """The single-process job, global batch 2 as 1 process x 2 accumulation steps:
    (dataset digest, the finished job)."""
    data = await client.upload_dataset(kind, records)
    job = await client.submit_job(
        kind,
        data.dataset_digest,
        world_size=1,
        hyperparameters={**HP, "gradient_accumulation_steps": 2},
    )
    done = await client.wait_job(job.id)
    assert done.state == pb.JOB_STATE_SUCCEEDED, done.error
    return data.dataset_digest, done


@pytest.fixture(scope="module")
async def single(trainer_server: TrainerServer) -> dict[str, Any]:
    """The single-process DPO job's dataset and adapter."""
    async with AsyncTrainerClient(f"127.0.0.1:{trainer_server.port}") as c:
        digest, done = await _single_process(c, "dpo", PREFERENCE_PAIRS)
    tensors = _tensors(trainer_server.store.files_dir(done.result.name))
    moved = max(float(t.abs().max()) for k, t in tensors.items() if "lora_B" in k)
    assert moved > 1e-3, "training must have moved the adapter (lora_B starts at zero)"
    return {"digest": digest, "tensors": tensors}


async def _two_ranks(
    client: AsyncTrainerClient, trainer_server: TrainerServer, digest: str, strategy: str,
    kind: str = "dpo",
) -> tuple[list[pb.JobProgress], dict[str, Any]]:  # fmt: skip
    """The 2-process job with the same global batch: 2 processes x 1 accumulation step."""
    job = await client.submit_job(
        kind,
        digest,
        world_size=2,
        strategy=strategy,
        hyperparameters={**HP, "gradient_accumulation_steps": 1},
    )
    assert job.request.world_size == 2
    progress = [p async for p in client.watch_job(job.id)]
    done = progress[-1].job
    assert done.state == pb.JOB_STATE_SUCCEEDED, done.error
    return progress, _tensors(trainer_server.store.files_dir(done.result.name))


def _assert_same_adapter(got: dict[str, Any], want: dict[str, Any]) -> None:
    import torch

    assert got.keys() == want.keys() and len(want) > 0
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.slow
async def test_two_gloo_ranks_train_the_single_process_adapter(
    client: AsyncTrainerClient, trainer_server: TrainerServer, single: dict[str, Any]
) -> None:
    progress, tensors = await _two_ranks(client, trainer_server, single["digest"], "")
    assert progress[-1].job.request.strategy == pb.DISTRIBUTED_STRATEGY_DDP
    # Rank 0 alone reports: every step once, in order, with the job's global throughput.
    steps = [p.step for p in progress if p.state == pb.JOB_STATE_RUNNING and p.step]
    assert steps == [1, 2] and progress[-2].total_steps == 2
    assert all(p.loss > 0 and p.tokens_per_second > 0 for p in progress if p.step)
    _assert_same_adapter(tensors, single["tensors"])
    manifest = await client.get_manifest(progress[-1].job.result.name)
    assert manifest.hyperparameters["global_batch_size"] == 2


@pytest.mark.slow
async def test_fsdp_ranks_train_the_single_process_adapter(
    client: AsyncTrainerClient, trainer_server: TrainerServer, single: dict[str, Any]
) -> None:
    """Sharded: rank 0 saves the weights gathered from both shards."""
    progress, tensors = await _two_ranks(client, trainer_server, single["digest"], "fsdp")
    assert progress[-1].job.request.strategy == pb.DISTRIBUTED_STRATEGY_FSDP
    _assert_same_adapter(tensors, single["tensors"])


@pytest.mark.slow
async def test_sft_ranks_with_dropout_train_the_single_process_adapter(
    client: AsyncTrainerClient, trainer_server: TrainerServer
) -> None:
    """Dropout draws the same masks for the same batch on any world size (one seed per
    micro-batch), and the loss is a mean over the global batch's completion tokens."""
    digest, done = await _single_process(client, "sft", JUDGE_RECORDS)
    assert done.request.hyperparameters.lora_dropout == pytest.approx(0.05)
    _, tensors = await _two_ranks(client, trainer_server, digest, "", kind="sft")
    _assert_same_adapter(tensors, _tensors(trainer_server.store.files_dir(done.result.name)))


@pytest.mark.slow
async def test_a_killed_rank_fails_the_job_and_publishes_nothing(
    client: AsyncTrainerClient, trainer_server: TrainerServer
) -> None:
    job_id, published, worker, ranks = await _interruptible_job(client, trainer_server)
    os.kill(ranks[1], signal.SIGKILL)
    failed = await asyncio.wait_for(client.wait_job(job_id), timeout=120)

    assert failed.state == pb.JOB_STATE_FAILED and not failed.result.name
    assert f"rank 1 of 2 (pid {ranks[1]}) was killed by signal SIGKILL" in failed.error
    assert "torchrun stopped the other ranks" in failed.error
    assert await _gone([worker, *ranks.values()]), "no rank may outlive the job"
    assert len(trainer_server.store.list()) == published
    assert not list(trainer_server.store.root.glob(".partial-*"))
    assert not (trainer_server.state.job_dir(job_id) / "output").exists()


@pytest.mark.slow
async def test_cancel_ends_every_rank(
    client: AsyncTrainerClient, trainer_server: TrainerServer
) -> None:
    job_id, published, worker, ranks = await _interruptible_job(client, trainer_server)
    cancelled = await client.cancel_job(job_id)
    assert cancelled.state == pb.JOB_STATE_CANCELLED and not cancelled.result.name
    # The trainer_server waits for the ranks before it answers: they are gone already.
    assert not any(alive(p) for p in [worker, *ranks.values()])
    assert len(trainer_server.store.list()) == published
