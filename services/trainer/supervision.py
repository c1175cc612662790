"""The training worker's process: start it, read its events, kill it with all its ranks.

Each job trains in its own process (:mod:`services.trainer.worker`), in a session of its
own, so cancelling kills it outright and the server's event loop stays responsive. A job
over several GPUs is the same worker running torchrun (:mod:`services.trainer.distributed`);
killing the worker's process group kills torchrun's agent, and every rank dies with it
(the kernel's parent-death signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.trainer.distributed import alive, descendants
from services.trainer.training import JobSpec
from services.trainer.worker import PARENT_PID_ENV

RANKS_EXIT_S = 10.0
"""How long a killed job's ranks may take to go after its worker (they die with it)."""


@dataclass
class Worker:
    """A running worker process of one job."""

    job_id: str
    process: asyncio.subprocess.Process
    cancelled: bool = False
    """Set before a kill, so the exit reads as a cancellation, not a failure."""
    done: asyncio.Event = field(default_factory=asyncio.Event)
    killed: list[int] = field(default_factory=list)
    """Processes below the worker (torchrun's ranks) seen when it was killed."""


@dataclass(frozen=True)
class WorkerExit:
    """How a worker ended: its exit code, the error it reported, its final metrics."""

    code: int
    error: str
    metrics: dict[str, float] | None
    """The training metrics of its ``done`` event (None: it never finished)."""
    seconds: float


async def start(job_id: str, folder: Path, spec: JobSpec) -> Worker:
    """Writes the job's spec and starts its worker (stderr goes to ``worker.log``)."""
    (folder / "spec.json").write_text(spec.to_json())
    env = dict(os.environ, **{PARENT_PID_ENV: str(os.getpid()), "HF_HUB_OFFLINE": "1"})
    with (folder / "worker.log").open("ab") as worker_log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.trainer.worker", str(folder / "spec.json"),
            stdout=asyncio.subprocess.PIPE, stderr=worker_log, env=env,
            start_new_session=True, limit=1 << 20,
        )  # fmt: skip
    (folder / "worker.pid").write_text(str(process.pid))
    return Worker(job_id, process)


async def follow(worker: Worker, on_progress: Callable[[dict[str, Any]], None]) -> WorkerExit:
    """Reads the worker's JSON events until it exits; progress events go to on_progress."""
    assert worker.process.stdout is not None
    error, metrics = "", None
    t0 = time.monotonic()
    async for line in worker.process.stdout:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("event") == "progress":
            on_progress(event)
        elif event.get("event") == "error":
            error = str(event.get("message", ""))
        elif event.get("event") == "done":
            metrics = {k: float(v) for k, v in event.get("metrics", {}).items()}
    code = await worker.process.wait()
    return WorkerExit(code, error, metrics, time.monotonic() - t0)


def failure(log_path: Path, code: int, error: str) -> str:
    """Why a worker failed, in words, with where its log is."""
    if code < 0:
        why = f"the training worker was killed by signal {-code}"
        if -code == signal.SIGKILL:
            why += " (out of memory?)"
    else:
        why = f"training failed: {error}" if error else f"the worker exited with code {code}"
    return f"{why}; worker log: {log_path}"


def kill(worker: Worker) -> None:
    """The worker's process group and every process below it (torchrun's ranks run in
    sessions of their own; they would also die with the worker, a moment later)."""
    worker.killed = descendants(worker.process.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.process.pid, signal.SIGKILL)
    for pid in worker.killed:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


async def ranks_gone(worker: Worker) -> None:
    """Waits until a killed job's ranks are gone, so the next job finds the GPUs free."""
    deadline = time.monotonic() + RANKS_EXIT_S
    while any(alive(pid) for pid in worker.killed) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
