"""The training worker process: ``python -m services.trainer.worker SPEC.json``.

The server starts one per job, so cancelling (or SIGKILL of the server) ends the training
cleanly and the server's event loop never runs torch. The worker writes one JSON event a
line to its stdout (``progress``, then ``done`` or ``error``); everything libraries print
goes to stderr, the job's log. It asks the kernel to kill it when its parent dies, so a
killed trainer leaves no orphan training on.

A job with world_size > 1 runs torchrun here (:mod:`services.trainer.distributed`): this
process becomes torchrun's agent and starts the ranks, ``python -m services.trainer.worker
--rank SPEC.json``, which inherit its stdout. Rank 0 writes the events; the other ranks
write none. Every rank dies with the agent (torchrun starts each in its own session, so a
signal to the agent's process group does not reach them; the kernel does). When a rank
fails, torchrun stops the others and this process reports which rank failed and how.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

PARENT_PID_ENV = "SPAR_TRAINER_PARENT_PID"
#: Longest event line a rank's error may take (the server reads lines up to 1 MiB).
MAX_MESSAGE_CHARS = 4000


def _die_with_parent() -> None:
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    expected = os.environ.get(PARENT_PID_ENV)
    # The parent may have died before prctl took effect: then nobody is waiting for us.
    if expected and os.getppid() != int(expected):
        os._exit(1)


def _event_stream() -> TextIO:
    """Our own handle on stdout; fd 1 itself is pointed at stderr for libraries' prints."""
    events = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return events


def _quiet_stdout() -> None:
    """A rank other than 0 reports nothing: its prints go to the log."""
    os.dup2(2, 1)
    sys.stdout = sys.stderr


def _reporter(events: TextIO) -> Callable[[dict[str, Any]], None]:
    def report(event: dict[str, Any]) -> None:
        events.write(json.dumps(event) + "\n")
        events.flush()

    return report


def _discard(event: dict[str, Any]) -> None:
    pass


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_MESSAGE_CHARS]


def _one_gpu() -> None:
    """A job of one process trains on one GPU: with several visible, the Trainer would wrap
    the model in nn.DataParallel (which TRL refuses). Runs before CUDA initialises."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = "0" if visible is None else visible.split(",")[0]


def _train(spec_path: Path) -> int:
    """One process trains (world_size 1, no torchrun)."""
    report = _reporter(_event_stream())
    _one_gpu()
    from services.trainer.training import JobSpec, run_job

    try:
        metrics = run_job(JobSpec.from_json(spec_path.read_text()), report)
    except Exception as exc:
        traceback.print_exc()
        report({"event": "error", "message": _error(exc)})
        return 1
    report({"event": "done", "metrics": metrics})
    return 0


def _train_rank(spec_path: Path) -> int:
    """One rank of a torchrun job. An exception goes to torchrun's error file (``record``),
    from which the agent reads the message; the rank reports no error event itself."""
    from torch.distributed.elastic.multiprocessing.errors import record

    from services.trainer.distributed import Rank
    from services.trainer.training import JobSpec, run_job

    rank = Rank.from_env()
    if rank.main:
        report = _reporter(_event_stream())
    else:
        _quiet_stdout()
        report = _discard

    def train() -> dict[str, float]:
        return run_job(JobSpec.from_json(spec_path.read_text()), report)

    try:
        metrics = record(train)()
    except Exception:
        traceback.print_exc()
        return 1
    if rank.main:
        report({"event": "done", "metrics": metrics})
    # The adapter is saved and the process group gone: leave without the interpreter's
    # teardown, where a collective backend's destructor can still wait on a peer.
    sys.stderr.flush()
    os._exit(0)


def _launch(spec_path: Path, world_size: int) -> int:
    """This process becomes torchrun's agent for the job's ranks. stdout stays the event
    pipe (the ranks inherit it); our own prints go to stderr."""
    events = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    sys.stdout = sys.stderr
    report = _reporter(events)
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    from services.trainer.distributed import describe_failure, rank_failures, torchrun_argv

    os.environ[PARENT_PID_ENV] = str(os.getpid())  # the ranks' parent: they die with us
    # NVLink multicast (NVLS) can take a shared host's GPUs out of service; LoRA's small
    # all-reduces gain little from it. Off unless the operator sets it explicitly.
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    try:
        torchrun(torchrun_argv(world_size, str(spec_path)))
    except ChildFailedError as exc:
        message = describe_failure(rank_failures(exc.failures), world_size)
        report({"event": "error", "message": message[:MAX_MESSAGE_CHARS]})
        return 1
    except Exception as exc:
        traceback.print_exc()
        report({"event": "error", "message": f"torchrun failed: {_error(exc)}"})
        return 1
    return 0


def main(argv: list[str]) -> int:
    args = argv[1:]
    as_rank = bool(args) and args[0] == "--rank"
    if as_rank:
        args = args[1:]
    if len(args) != 1:
        print("usage: python -m services.trainer.worker [--rank] SPEC.json", file=sys.stderr)
        return 2
    _die_with_parent()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    spec_path = Path(args[0])
    if as_rank:
        return _train_rank(spec_path)
    try:
        world_size = int(json.loads(spec_path.read_text()).get("world_size", 1))
    except (OSError, ValueError) as exc:
        _reporter(_event_stream())({"event": "error", "message": f"bad job spec: {_error(exc)}"})
        return 1
    if world_size > 1:
        return _launch(spec_path, world_size)
    return _train(spec_path)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
