"""Jobs over several processes without training: world size, data order, failure reports."""

from __future__ import annotations

import os
import signal
from itertools import chain, pairwise

import pytest

from services.trainer.distributed import (
    COLLECTIVE_TIMEOUT_S,
    Devices,
    Rank,
    RankFailure,
    check_strategy,
    describe_failure,
    micro_batch_index,
    micro_batch_seed,
    rank_failures,
    resolve_world_size,
    torchrun_argv,
)
from spar.errors import FailedPrecondition

GPUS = Devices("cuda", 2, 32)
CPU = Devices("cpu", 0, 2)


def test_world_size_defaults_to_every_gpu_or_one_cpu_process() -> None:
    assert resolve_world_size(0, 0, GPUS) == 2
    assert resolve_world_size(1, 0, GPUS) == 1
    assert resolve_world_size(0, 1, GPUS) == 1, "SPAR_TRAINER__WORLD_SIZE is the default"
    assert resolve_world_size(2, 1, GPUS) == 2, "the request wins over the setting"
    assert resolve_world_size(0, 0, CPU) == 1
    assert resolve_world_size(2, 0, CPU) == 2, "gloo ranks on CPU, for testing"


def test_world_size_beyond_the_devices_is_refused_naming_both_numbers() -> None:
    with pytest.raises(FailedPrecondition, match=r"world_size=4 asks for 4 GPUs .* sees 2"):
        resolve_world_size(4, 0, GPUS)
    with pytest.raises(FailedPrecondition, match=r"SPAR_TRAINER__WORLD_SIZE=8 asks for 8 GPUs"):
        resolve_world_size(0, 8, GPUS)
    with pytest.raises(FailedPrecondition, match=r"asks for 3 processes .* CPU with 2 cores"):
        resolve_world_size(3, 0, CPU)
    with pytest.raises(FailedPrecondition, match="torch sees no GPU"):
        resolve_world_size(0, 0, Devices("cuda", 0, 8))


def test_fsdp_needs_several_processes() -> None:
    check_strategy("fsdp", 2)
    check_strategy("ddp", 1)
    with pytest.raises(FailedPrecondition, match="world_size=1"):
        check_strategy("fsdp", 1)


def test_torchrun_starts_the_worker_module_as_ranks_without_restarts() -> None:
    argv = torchrun_argv(4, "/jobs/j/spec.json")
    assert "--standalone" in argv and "--nproc-per-node=4" in argv
    assert "--max-restarts=0" in argv
    assert argv[-4:] == ["--module", "services.trainer.worker", "--rank", "/jobs/j/spec.json"]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_a_rank_waits_for_its_peers_minutes_not_pytorchs_half_hour(device: str) -> None:
    from services.trainer.training import JobSpec, distributed_args

    spec = JobSpec("dpo", "/m", "/d.jsonl", "/out", {}, world_size=2)
    args = distributed_args(spec, device)
    assert args["ddp_backend"] == ("nccl" if device == "cuda" else "gloo")
    assert args["ddp_timeout"] == COLLECTIVE_TIMEOUT_S <= 600
    assert distributed_args(JobSpec("dpo", "/m", "/d.jsonl", "/out", {}), device) == {}


def test_rank_comes_from_torchruns_environment() -> None:
    assert Rank.from_env({}) == Rank(0, 0, 1)
    rank = Rank.from_env({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"})
    assert rank == Rank(3, 1, 4) and not rank.main


def _steps(examples: int, batch: int, accum: int, world: int) -> list[list[list[int]]]:
    """The micro-batches of every optimizer step, as accelerate deals them to the ranks:
    step -> [micro-batches of every rank], in the single-process numbering of batches."""
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler, SequentialSampler

    # The permutation is the same on every world size (one seeded sampler); identity here.
    batches = BatchSampler(SequentialSampler(range(examples)), batch_size=batch, drop_last=False)
    per_rank = [
        list(BatchSamplerShard(batches, num_processes=world, process_index=r, split_batches=False))
        for r in range(world)
    ]
    steps = len(per_rank[0]) // accum
    return [
        sorted(b for r in range(world) for b in per_rank[r][s * accum : (s + 1) * accum])
        for s in range(steps)
    ]


@pytest.mark.parametrize(("accum", "world"), [(1, 2), (2, 2), (1, 4), (3, 2)])
def test_every_world_size_trains_each_step_on_the_same_examples(accum: int, world: int) -> None:
    examples, batch = 48, 2
    single = _steps(examples, batch, accum * world, 1)
    assert _steps(examples, batch, accum, world) == single
    # One process with world x the batch sees the same examples per step too.
    wide = _steps(examples, batch * world, accum, 1)
    assert [sorted(chain(*s)) for s in wide] == [sorted(chain(*s)) for s in single]


@pytest.mark.parametrize(("accum", "world"), [(1, 2), (2, 2), (1, 4), (3, 2)])
def test_micro_batch_index_names_the_same_batch_on_every_world_size(accum: int, world: int) -> None:
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler, SequentialSampler

    batches = list(BatchSampler(SequentialSampler(range(24)), batch_size=2, drop_last=False))
    for r in range(world):
        mine = list(
            BatchSamplerShard(batches, num_processes=world, process_index=r, split_batches=False)
        )
        for j, batch in enumerate(mine):
            step, a = divmod(j, accum)
            index = micro_batch_index(step, a, accum, Rank(r, r, world))
            assert batches[index] == batch, "the index is the batch's single-process number"
            single = micro_batch_index(*divmod(index, accum * world), accum * world, Rank())
            assert single == index
    seeds = {micro_batch_seed(s, i) for s in (0, 1, 2**32 - 1) for i in range(100)}
    assert len(seeds) == 300


def test_a_killed_rank_is_named_before_the_ranks_that_lost_it() -> None:
    failures = [
        RankFailure(0, 100, 1, "RuntimeError: [gloo] Connection reset by peer"),
        RankFailure(2, 102, -signal.SIGTERM),
        RankFailure(1, 101, -signal.SIGKILL),
    ]
    message = describe_failure(failures, 3)
    assert message.startswith("rank 1 of 3 (pid 101) was killed by signal SIGKILL")
    assert "rank(s) 0 failed too" in message
    assert message.endswith("torchrun stopped the other ranks")


def test_a_rank_error_is_reported_with_its_message() -> None:
    class Failure:  # torchrun's ProcessFailure, as far as we read it
        def __init__(self, pid: int, exitcode: int, message: object) -> None:
            self.pid, self.exitcode, self.message = pid, exitcode, message

    failures = rank_failures(
        {
            1: Failure(11, 1, {"message": "ValueError: no example fits", "extraInfo": {}}),
            0: Failure(10, -signal.SIGTERM, "Signal 15 (SIGTERM) received by PID 10"),
        }
    )
    assert failures[1].message == ""
    assert describe_failure(failures, 2) == (
        "rank 1 of 2 (pid 11) failed: ValueError: no example fits; torchrun stopped the other ranks"
    )
    plain = rank_failures({0: Failure(10, 3, "To enable traceback see: https://...")})
    assert describe_failure(plain, 2) == "rank 0 of 2 (pid 10) exited with code 3"


def test_a_one_process_job_sees_one_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several visible GPUs would make the Trainer use nn.DataParallel, which TRL refuses."""
    from services.trainer.worker import _one_gpu

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    _one_gpu()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    _one_gpu()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"


def test_steps_stay_in_order() -> None:
    """The helper itself: steps cover the data once, in order of the first batch."""
    steps = _steps(16, 2, 2, 2)
    assert len(steps) == 2
    assert sorted(chain(*chain(*steps))) == list(range(16))
    assert all(a[0] < b[0] for a, b in pairwise(steps))
