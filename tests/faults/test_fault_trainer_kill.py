"""SIGKILL of a real `spar trainer serve` process in the middle of a job.

Nothing may be published for the killed job, its worker must die with the trainer, and
after a restart on the same folders the job reads FAILED and the queue goes on.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.trainer.distributed import alive
from services.trainer.store import ArtifactStore
from spar.client import TrainerClient
from spar.v1 import trainer_pb2 as pb

PAIRS = [
    {"prompt": "Name a colour. Answer in lowercase.", "chosen": "blue.", "rejected": "BLUE!"},
    {"prompt": "Name a fruit. Answer in lowercase.", "chosen": "apple.", "rejected": "APPLE!"},
]
RECORDS = [{"prompt": "Say yes.", "completion": "yes"}, {"prompt": "Say no.", "completion": "no"}]
SMALL = {"lora_rank": 8, "lora_alpha": 16, "max_length": 48, "epochs": 1, "batch_size": 2}


class Trainer:
    """`python -m spar_cli trainer serve` on a free port, logging into a file."""

    def __init__(self, root: Path, model_path: Path, name: str) -> None:
        self.log = root / f"{name}.log"
        env = {
            **os.environ,
            "SPAR_MODEL": str(model_path),
            "SPAR_TRAINER__THREADS": "1",
            "SPAR_GRACE_PERIOD_S": "2",
        }
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "spar_cli", "trainer", "serve", "--port", "0",
                    "--metrics-port", "-1", "--store", str(root / "store"),
                    "--state-dir", str(root / "state"),
                ],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        self.target = f"127.0.0.1:{self._port()}"

    def _port(self) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            match = re.search(r"trainer listening on [\d.]+:(\d+)", self.log.read_text())
            if match:
                return int(match.group(1))
            assert self.process.poll() is None, self.log.read_text()
            time.sleep(0.2)
        raise AssertionError(f"the trainer did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def trainers(tmp_path: Path, model_path: Path) -> Iterator[list[Trainer]]:
    started: list[Trainer] = []
    yield started
    for t in started:
        t.stop()


@pytest.mark.slow
def test_sigkill_mid_job_publishes_nothing_and_the_queue_continues(
    tmp_path: Path, model_path: Path, trainers: list[Trainer]
) -> None:
    first = Trainer(tmp_path, model_path, "first")
    trainers.append(first)
    with TrainerClient(first.target, timeout=60) as client:
        pairs = client.upload_dataset("dpo", PAIRS)
        records = client.upload_dataset("sft", RECORDS)
        long_job = client.submit_job(
            "dpo", pairs.dataset_digest, hyperparameters={**SMALL, "epochs": 100}
        )
        queued = client.submit_job("sft", records.dataset_digest, hyperparameters=SMALL)
        assert queued.queue_position == 1
        # Mid-job: the worker has loaded the model and reported its first progress.
        for progress in client.watch_job(long_job.id):
            if progress.state == pb.JOB_STATE_RUNNING and progress.total_steps > 0:
                break
    worker = int((tmp_path / "state" / "jobs" / long_job.id / "worker.pid").read_text())
    assert alive(worker)
    first.process.kill()
    first.process.wait()

    deadline = time.monotonic() + 20
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(worker), "the training worker must die with its trainer"
    assert ArtifactStore(tmp_path / "store").list() == []
    assert [p.name for p in (tmp_path / "store").iterdir()] == []

    second = Trainer(tmp_path, model_path, "second")
    trainers.append(second)
    with TrainerClient(second.target, timeout=60) as client:
        failed = client.get_job(long_job.id)
        assert failed.state == pb.JOB_STATE_FAILED
        assert "trainer restarted during the job" in failed.error
        assert not failed.result.name
        final = [p for p in client.watch_job(queued.id)][-1].job
        assert final.state == pb.JOB_STATE_SUCCEEDED, final.error
        listed = client.list_adapters().adapters
        assert [m.version.name for m in listed] == [final.result.name]
        assert listed[0].job_id == queued.id and listed[0].version.role == "refiner"
