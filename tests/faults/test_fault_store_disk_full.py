"""The artifact store's disk fills up while a job publishes its adapter (a real ENOSPC).

The store lives on a small tmpfs mounted for the test (needs root, as in the CI
container); a filler file leaves too little room for the adapter. The job must end
FAILED with a message that names the store and the lack of space, nothing partial may be
listed or left on disk, the trainer stays SERVING, and once space is freed the same job,
resubmitted, publishes.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import started_trainer

from services.trainer.server import TrainerServer
from spar.client import AsyncTrainerClient
from spar.config import Settings
from spar.v1 import trainer_pb2 as pb

pytestmark = [pytest.mark.slow, pytest.mark.needs_root]

RECORDS = [{"prompt": "Say yes.", "completion": "yes"}, {"prompt": "Say no.", "completion": "no"}]
#: One step of rank 8 on q_proj and v_proj: an adapter of about 2 MB.
HP: dict[str, Any] = {
    "lora_rank": 8,
    "lora_alpha": 16,
    "max_length": 64,
    "epochs": 1,
    "batch_size": 2,
}
STORE_MIB = 16
#: What the filler leaves free: room for a manifest, not for the adapter's weights.
LEFT_FREE = 64 * 1024


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of STORE_MIB MiB, unmounted afterwards."""
    mount = tmp_path / "volume"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={STORE_MIB}m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(volume: Path, leave: int) -> Path:
    filler = volume / "filler"
    stat = os.statvfs(volume)
    filler.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - leave))
    return filler


@pytest.fixture
async def trainer(settings: Settings, tmp_path: Path, small_volume: Path) -> AsyncIterator[Any]:
    async with started_trainer(
        settings, tmp_path, store_dir=str(small_volume / "store"), device="auto"
    ) as server:
        yield server


async def test_disk_full_while_publishing_fails_the_job_and_publishes_nothing(
    trainer: TrainerServer, small_volume: Path
) -> None:
    store = small_volume / "store"
    filler = fill(small_volume, LEFT_FREE)
    async with AsyncTrainerClient(f"127.0.0.1:{trainer.port}", timeout=60) as client:
        data = await client.upload_dataset("sft", RECORDS)
        t0 = time.monotonic()
        job = await client.submit_job("sft", data.dataset_digest, hyperparameters=HP)
        failed = await client.wait_job(job.id)
        failed_after = time.monotonic() - t0
        assert failed.state == pb.JOB_STATE_FAILED, failed
        assert "no space left" in failed.error.lower(), failed.error
        assert str(store) in failed.error and "nothing was published" in failed.error
        assert not failed.result.name
        assert list((await client.list_adapters()).adapters) == []
        assert [p.name for p in store.iterdir()] == [], "a partial version was left behind"
        assert await client.health() == "SERVING"

        filler.unlink()
        t1 = time.monotonic()
        again = await client.submit_job("sft", data.dataset_digest, hyperparameters=HP)
        done = await client.wait_job(again.id)
        recovered = time.monotonic() - t1
        assert done.state == pb.JOB_STATE_SUCCEEDED, done.error
        listed = (await client.list_adapters()).adapters
        assert [m.version.name for m in listed] == [done.result.name]
    trainer.store.verify(done.result.name)
    print(
        f"\nFAULT disk-full: job FAILED {failed_after:.1f} s after submit ({failed.error!r}); "
        f"after freeing space the resubmitted job published in {recovered:.1f} s"
    )
