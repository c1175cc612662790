"""Jobs over several processes: the world size a job gets, how torchrun starts its ranks,
what a failed rank means for the job, and the seeds that make an optimizer step's data and
dropout independent of how the step is spread over processes. No gRPC, no torch at import.

A job with world_size W > 1 is a process tree: the trainer starts the worker
(``python -m services.trainer.worker SPEC``), which runs torchrun (PyTorch's launcher,
:func:`torch.distributed.run.main`, in-process) with W ranks of
``python -m services.trainer.worker --rank SPEC``. Ranks train with DDP (or FSDP) over NCCL
on GPUs, gloo on CPU. Rank 0 alone reports progress and writes the adapter; torchrun stops
every rank when one fails (``--max-restarts=0``) and the worker turns its failure report
into the job's error; the trainer publishes only after the whole tree exited cleanly.

Why a W-process job trains the same adapter as one process with the same global batch
(per-device batch B x accumulation G x W), seed and data:

- Order: accelerate replaces the Trainer's sampler by its SeedableRandomSampler, seeded with
  the job's seed, on every world size: one permutation of the dataset. It cuts the
  permutation into batches of B and gives rank r the batches r, r+W, r+2W, ...
  (BatchSamplerShard); each rank accumulates G of its batches per optimizer step. Step s
  therefore trains on batches s*G*W ... (s+1)*G*W - 1 whatever W is: one process with
  G*W accumulation steps runs the same micro-batches, grouped into the same steps.
- Gradients: the Trainer divides each micro-batch's loss by G and sums them; DDP averages
  the sum over the W ranks. Both are the mean over the step's G*W micro-batches.
- Dropout (LoRA dropout of SFT jobs; TRL's DPOTrainer turns dropout off):
  :func:`micro_batch_index` numbers micro-batch a of step s on rank r as (s*G + a)*W + r,
  which is the index of the same batch in the single-process run, and every micro-batch
  reseeds torch from (seed, index): the same masks on any world size (and no two ranks
  share masks, as they would with one seed per rank).
- Loss: DPO's terms are means per micro-batch, averaged as above; SFT's loss is a mean over
  the completion tokens of the whole global batch (the Trainer counts them across the
  accumulation steps and the ranks) on any world size.
- One process with per-device batch W*B (same G) sees the same examples per step as well,
  but its adapter matches only approximately: DPO's SFT term is a mean over each
  micro-batch's tokens (so a batch of W*B weighs tokens differently from W batches of B;
  seen on the default model: 1.6e-3 apart on LoRA weights of 0.04 after 4 steps), and an
  SFT job's dropout masks depend on the batch's shape. Sigmoid DPO alone matches.
- The dataset should hold a multiple of the global batch: otherwise accelerate fills the
  last step of every rank with examples from the start (even_batches), where one process
  takes a short last step.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from spar.errors import FailedPrecondition

Strategy = Literal["ddp", "fsdp"]
WORKER_MODULE = "services.trainer.worker"
#: Flag of the worker's command line that makes it one rank of a torchrun job.
RANK_FLAG = "--rank"
#: How often torchrun looks at its ranks (s): a dead rank fails the job this fast.
MONITOR_INTERVAL_S = 0.2
#: Longest a rank waits in one collective (or for its peers at start and at the end) before
#: it fails: a rank stuck on a peer that is gone then fails the job in minutes, where
#: PyTorch's default (30 min) would hold the job, its GPUs and the caller that long.
COLLECTIVE_TIMEOUT_S = 300


@dataclass(frozen=True)
class Devices:
    """What the trainer can spread a job over."""

    kind: Literal["cpu", "cuda"]
    gpus: int
    cpus: int


def detect_devices(device: str) -> Devices:
    """device: TrainerSettings.device (auto, cpu or cuda). Counts GPUs without creating a
    CUDA context, so the server never holds GPU memory."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if device == "cpu":
        return Devices("cpu", 0, cpus or 1)
    import torch

    gpus = int(torch.cuda.device_count())
    if device == "cuda" or gpus > 0:
        return Devices("cuda", gpus, cpus or 1)
    return Devices("cpu", 0, cpus or 1)


def resolve_world_size(requested: int, configured: int, devices: Devices) -> int:
    """Processes for a job: the request's world_size, else SPAR_TRAINER__WORLD_SIZE, else
    (0) every GPU the trainer sees, or 1 on CPU. More than the devices is refused."""
    world = requested or configured
    source = f"world_size={requested}" if requested else f"SPAR_TRAINER__WORLD_SIZE={configured}"
    if devices.kind == "cuda":
        if devices.gpus == 0:
            raise FailedPrecondition(
                "SPAR_TRAINER__DEVICE=cuda but torch sees no GPU on this trainer; give the pod "
                "GPUs (trainer.gpu in the chart) or set SPAR_TRAINER__DEVICE=auto"
            )
        world = world or devices.gpus
        if world > devices.gpus:
            raise FailedPrecondition(
                f"{source} asks for {world} GPUs but this trainer sees {devices.gpus}; ask for "
                f"at most {devices.gpus} (0 means all of them) or give the trainer more GPUs "
                "(trainer.gpu in the chart)"
            )
        return world
    world = world or 1
    if world > devices.cpus:
        raise FailedPrecondition(
            f"{source} asks for {world} processes but this trainer trains on CPU with "
            f"{devices.cpus} cores; ask for at most {devices.cpus} (on CPU each process is a "
            "gloo rank, meant for testing the multi-GPU path)"
        )
    return world


def check_strategy(strategy: Strategy, world_size: int) -> None:
    if strategy == "fsdp" and world_size < 2:
        raise FailedPrecondition(
            f"strategy FSDP shards the model over several processes; this job has "
            f"world_size={world_size} (ask for world_size >= 2, or DDP)"
        )


def torchrun_argv(world_size: int, spec_path: str) -> list[str]:
    """Arguments of torchrun for a job's ranks on this machine. ``--standalone`` runs the
    rendezvous on a free local port; ``--max-restarts=0``: a failed rank fails the job."""
    return [
        "--standalone",
        f"--nproc-per-node={world_size}",
        "--max-restarts=0",
        f"--monitor-interval={MONITOR_INTERVAL_S}",
        "--module",
        WORKER_MODULE,
        RANK_FLAG,
        spec_path,
    ]


@dataclass(frozen=True)
class Rank:
    """This process's place in the job, from torchrun's environment (1 process without)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Rank:
        env = os.environ if env is None else env
        if "LOCAL_RANK" not in env:
            return cls()
        return cls(int(env["RANK"]), int(env["LOCAL_RANK"]), int(env["WORLD_SIZE"]))

    @property
    def main(self) -> bool:
        return self.rank == 0


def micro_batch_index(step: int, accumulated: int, grad_accum: int, rank: Rank) -> int:
    """The global number of micro-batch ``accumulated`` of optimizer step ``step`` on
    ``rank``: equal for the same batch of data on every world size (module docstring)."""
    return (step * grad_accum + accumulated) * rank.world_size + rank.rank


def micro_batch_seed(seed: int, index: int) -> int:
    """torch seed of a micro-batch (dropout); distinct for distinct (seed, index)."""
    return (seed << 32 | index) % (1 << 63)


def descendants(pid: int) -> list[int]:
    """Processes below ``pid`` (children first), from /proc; [] where there is no /proc.
    torchrun starts every rank in a session of its own, so the ranks are not in the
    worker's process group: whoever kills a job's worker kills these too."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        below = children.get(todo.pop(0), [])
        out.extend(below)
        todo.extend(below)
    return out


def alive(pid: int) -> bool:
    """Running (a zombie holds no memory or GPU and counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass(frozen=True)
class RankFailure:
    """One torchrun rank that failed."""

    rank: int
    pid: int
    exitcode: int
    """Negative: the signal that ended it."""
    message: str = ""
    """Its error, as torchrun reported it."""

    @property
    def stopped_by_torchrun(self) -> bool:
        """torchrun ends the other ranks with SIGTERM once one failed: victims, not causes."""
        return self.exitcode == -signal.SIGTERM


def rank_failures(failures: Mapping[int, Any]) -> list[RankFailure]:
    """torchrun's ChildFailedError.failures (global rank -> ProcessFailure), in its order:
    the ranks it saw fail first, then those it stopped."""
    out = []
    for rank, f in failures.items():
        raw = getattr(f, "message", "") or ""
        # Some torch versions keep the error file's whole record: {"message": ..., ...}.
        message = str(raw.get("message", "") if isinstance(raw, dict) else raw)
        if message.startswith(("To enable traceback", "Signal ")):
            message = ""  # torchrun's stand-ins when the rank left no error of its own
        out.append(RankFailure(int(rank), int(f.pid), int(f.exitcode), message))
    return out


def describe_failure(failures: list[RankFailure], world_size: int) -> str:
    """The job's error when torchrun stopped the job, the root cause first: a rank killed by
    a signal before ranks that raised (typically a collective that lost its peer), those
    before the ranks torchrun stopped itself, otherwise torchrun's order."""
    if not failures:
        return f"a training process of the {world_size} failed; torchrun stopped the others"
    ordered = sorted(failures, key=lambda f: (f.stopped_by_torchrun, f.exitcode >= 0))
    first = ordered[0]
    who = f"rank {first.rank} of {world_size} (pid {first.pid})"
    if first.exitcode < 0:
        try:
            name = signal.Signals(-first.exitcode).name
        except ValueError:
            name = str(-first.exitcode)
        what = f"{who} was killed by signal {name}"
        if -first.exitcode == signal.SIGKILL:
            what += " (out of memory?)"
    elif first.message:
        what = f"{who} failed: {first.message}"
    else:
        what = f"{who} exited with code {first.exitcode}"
    also = [str(f.rank) for f in ordered[1:] if not f.stopped_by_torchrun]
    if also:
        what += f"; rank(s) {', '.join(also)} failed too"
    if any(f.stopped_by_torchrun for f in ordered[1:]):
        what += "; torchrun stopped the other ranks"
    return what
