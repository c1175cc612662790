"""The job queue without training: submit checks, queue order, restart recovery, and job
records of older trainers (protobuf JSON) read through the migration."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from google.protobuf import json_format

from services.trainer.datasets import DatasetBuilder
from services.trainer.distributed import Devices
from services.trainer.jobs import RESTARTED, JobManager
from services.trainer.metrics import TrainerMetrics
from services.trainer.records import JOB_SCHEMA, Published
from services.trainer.service import job_message, job_request
from services.trainer.state import TrainerState
from services.trainer.store import ArtifactStore
from services.trainer.submission import JobRequest
from spar.config import Settings, TrainerSettings
from spar.errors import FailedPrecondition, InvalidArgument, NotFound
from spar.metrics import Metrics
from spar.v1 import trainer_pb2 as pb

PAIR = {"prompt": "Say hi.", "chosen": "hi", "rejected": "HI"}
STATE_V0 = Path(__file__).resolve().parents[1] / "data" / "state_v0"


def manager(tmp_path: Path) -> JobManager:
    (tmp_path / "model").mkdir(exist_ok=True)
    (tmp_path / "model" / "config.json").write_text("{}")
    settings = Settings(
        cache_dir=tmp_path,
        model=str(tmp_path / "model"),
        trainer=TrainerSettings(max_queued_jobs=2),
    )
    return JobManager(
        settings,
        ArtifactStore(settings.store_dir()),
        TrainerState(settings.trainer_state_dir()),
        TrainerMetrics(Metrics("trainer")),
    )


def upload(jobs: JobManager, kind: str = "dpo") -> str:
    builder = DatasetBuilder(kind)  # type: ignore[arg-type]
    builder.add(PAIR if kind == "dpo" else {"prompt": "p", "completion": "c"})
    data = builder.finish()
    jobs.state.save_dataset(data, "test")
    return data.digest


def request(digest: str, given: dict[str, object] | None = None, **kwargs: object) -> JobRequest:
    """A DPO SubmitJobRequest as the servicer hands it to the queue (given: the
    hyperparameters the caller set)."""
    message = pb.SubmitJobRequest(kind=pb.JOB_KIND_DPO, dataset_digest=digest, **kwargs)  # type: ignore[arg-type]
    for key, value in (given or {}).items():
        setattr(message.hyperparameters, key, value)
    return job_request(message)


def test_submit_fills_defaults_and_queues_in_order(tmp_path: Path) -> None:
    jobs = manager(tmp_path)
    digest = upload(jobs)
    a = jobs.submit(request(digest, iteration=3))
    b = jobs.submit(request(digest, {"lora_rank": 8}, idempotency_key="k"))
    assert a.submission.role == "actor"
    assert a.submission.base_model == str((tmp_path / "model").resolve())
    assert a.submission.hyperparameters.beta == pytest.approx(0.1)
    assert a.submission.hyperparameters.sft_loss_weight == pytest.approx(0.1)
    assert b.submission.hyperparameters.lora_rank == 8
    assert [jobs.queue_position(a.id), jobs.queue_position(b.id)] == [0, 1]
    message = job_message(a)  # what GetJob answers
    assert message.request.role == "actor" and message.request.iteration == 3
    assert message.request.hyperparameters.beta == pytest.approx(0.1)
    assert message.state == pb.JOB_STATE_QUEUED and not message.HasField("finished_at")
    assert jobs.submit(request(digest, idempotency_key="k")).id == b.id
    with pytest.raises(Exception, match="the limit"):
        jobs.submit(request(digest))


def test_submit_rejects_bad_requests(tmp_path: Path) -> None:
    jobs = manager(tmp_path)
    digest = upload(jobs)
    sft_digest = upload(jobs, "sft")
    with pytest.raises(NotFound, match="upload it first"):
        jobs.submit(request("a" * 64))
    with pytest.raises(InvalidArgument, match="dataset_digest must be"):
        jobs.submit(request("../../etc/passwd"))
    with pytest.raises(FailedPrecondition, match="holds sft records"):
        jobs.submit(request(sft_digest))
    with pytest.raises(InvalidArgument, match="kind is required"):
        jobs.submit(job_request(pb.SubmitJobRequest(dataset_digest=digest)))
    with pytest.raises(InvalidArgument, match="role='critic'"):
        jobs.submit(request(digest, role="critic"))
    with pytest.raises(InvalidArgument, match="not a model this trainer may load"):
        jobs.submit(request(digest, base_model="/etc"))
    (tmp_path / "model" / "config.json").unlink()
    with pytest.raises(FailedPrecondition, match="run `spar model prepare`"):
        jobs.submit(request(digest))
    (tmp_path / "model" / "config.json").write_text("{}")
    jobs.submissions.devices = Devices("cuda", 2, 16)
    with pytest.raises(FailedPrecondition, match=r"world_size=4 asks for 4 GPUs .* sees 2"):
        jobs.submit(request(digest, world_size=4))
    with pytest.raises(FailedPrecondition, match="FSDP shards the model"):
        jobs.submit(request(digest, world_size=1, strategy=pb.DISTRIBUTED_STRATEGY_FSDP))
    with pytest.raises(NotFound, match="not in the store"):
        jobs.submit(request(digest, parent_adapter="actor-1-000000000000"))
    with pytest.raises(InvalidArgument, match="lora_rank=999"):
        jobs.submit(request(digest, {"lora_rank": 999}))
    with pytest.raises(NotFound):
        jobs.get("job-000000000000")
    with pytest.raises(NotFound):
        jobs.get("../../x")


def test_world_size_is_resolved_at_submit(tmp_path: Path) -> None:
    jobs = manager(tmp_path)
    digest = upload(jobs)
    jobs.submissions.devices = Devices("cuda", 2, 16)
    every = jobs.submit(request(digest))
    assert every.submission.world_size == 2, "0 means every GPU the trainer sees"
    assert job_message(every).request.strategy == pb.DISTRIBUTED_STRATEGY_DDP
    one = jobs.submit(request(digest, world_size=1))
    assert one.submission.world_size == 1
    assert job_message(one).request.strategy == pb.DISTRIBUTED_STRATEGY_UNSPECIFIED
    jobs.queue.clear()
    sharded = jobs.submit(request(digest, strategy=pb.DISTRIBUTED_STRATEGY_FSDP))
    assert sharded.submission.world_size == 2
    assert job_message(sharded).request.strategy == pb.DISTRIBUTED_STRATEGY_FSDP
    jobs.settings.trainer.world_size = 1
    assert jobs.submit(request(digest)).submission.world_size == 1
    jobs.queue.clear()
    jobs.submissions.devices = Devices("cpu", 0, 2)
    assert jobs.submit(request(digest)).submission.world_size == 1, "the setting, on CPU too"
    jobs.settings.trainer.world_size = 0
    assert jobs.submit(request(digest)).submission.world_size == 1, "one CPU process"


def test_parent_keeps_its_lora_shape(tmp_path: Path) -> None:
    jobs = manager(tmp_path)
    digest = upload(jobs)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 4}))
    base = str((tmp_path / "model").resolve())
    hp = {"lora_rank": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}
    parent = jobs.store.publish(
        adapter, role="actor", iteration=1, base_model=base, hyperparameters=hp
    )["version"]["name"]
    job = jobs.submit(request(digest, parent_adapter=parent))
    assert job.submission.hyperparameters.lora_rank == 4
    assert list(job.submission.hyperparameters.target_modules) == ["q_proj"]
    with pytest.raises(InvalidArgument, match="keeps its parent's LoRA shape"):
        jobs.submit(request(digest, {"lora_rank": 8}, parent_adapter=parent))
    with pytest.raises(FailedPrecondition, match="is a actor adapter"):
        jobs.submit(request(digest, role="refiner", parent_adapter=parent))


def test_restart_fails_the_running_job_and_keeps_the_queue(tmp_path: Path) -> None:
    jobs = manager(tmp_path)
    digest = upload(jobs)
    running = jobs.submit(request(digest))
    queued = jobs.submit(request(digest))
    record = jobs.jobs[running.id]
    record.state = "running"  # as a trainer killed mid-job left it
    jobs.state.save_job(record)
    output = jobs.state.job_dir(running.id) / "output"
    output.mkdir()
    (output / "adapter_model.safetensors").write_bytes(b"half")

    after = manager(tmp_path)
    after.recover()
    failed = after.get(running.id)
    assert failed.state == "failed" and failed.error == RESTARTED
    assert failed.finished_at is not None and not output.exists()
    assert after.get(queued.id).state == "queued" and after.queue == [queued.id]
    assert after.store.list() == []


def test_a_failed_jobs_idempotency_key_trains_again_after_a_restart(tmp_path: Path) -> None:
    """A coordinator resuming an iteration resubmits with the same key; the trainer that
    was stopped mid-job must queue a new job, not hand back the failed one forever."""
    jobs = manager(tmp_path)
    digest = upload(jobs)
    first = jobs.submit(request(digest, idempotency_key="spar-iteration-1-actor"))
    record = jobs.jobs[first.id]
    record.state = "running"
    jobs.state.save_job(record)

    after = manager(tmp_path)
    after.recover()
    assert after.get(first.id).state == "failed"
    retried = after.submit(request(digest, idempotency_key="spar-iteration-1-actor"))
    assert retried.id != first.id and retried.state == "queued"
    # The key now names the new job, also after another restart.
    again = manager(tmp_path)
    again.recover()
    assert again.submit(request(digest, idempotency_key="spar-iteration-1-actor")).id == (
        retried.id
    )
    assert again.queue == [retried.id]


def test_a_restart_skips_damaged_records_and_unfinished_writes(tmp_path: Path) -> None:
    jobs = manager(tmp_path)
    digest = upload(jobs)
    kept = jobs.submit(request(digest, idempotency_key="kept"))
    damaged = jobs.submit(request(digest))
    (jobs.state.job_dir(damaged.id) / "job.json").write_text('{"id": "job-')
    torn = [
        jobs.state.job_dir(kept.id) / ".job.json.0123456789abcdef.tmp",
        jobs.state.datasets / f".{digest}.jsonl.0123456789abcdef.tmp",
    ]
    for path in torn:
        path.write_bytes(b"half a rec")

    after = manager(tmp_path)
    after.recover()
    assert after.queue == [kept.id] and set(after.jobs) == {kept.id}
    assert after.get(kept.id).submission.idempotency_key == "kept"
    with pytest.raises(NotFound):
        after.get(damaged.id)
    assert not any(path.exists() for path in torn)


def test_a_dataset_damaged_on_disk_is_written_again_on_upload(tmp_path: Path) -> None:
    jobs = manager(tmp_path)
    builder = DatasetBuilder("dpo")
    builder.add(PAIR)
    data = builder.finish()
    jobs.state.save_dataset(data, "test")
    path = jobs.state.dataset_path(data.digest, "dpo")
    path.write_bytes(b"")  # damaged while the trainer was down

    after = manager(tmp_path)
    after.state.save_dataset(data, "test")
    assert path.read_bytes() == data.canonical


def test_a_record_is_written_in_spars_schema_and_read_back(tmp_path: Path) -> None:
    jobs = manager(tmp_path)
    digest = upload(jobs)
    job = jobs.submit(request(digest, {"lora_rank": 8}, idempotency_key="k", iteration=2))
    doc = json.loads((jobs.state.job_dir(job.id) / "job.json").read_text())
    assert doc["schema"] == JOB_SCHEMA and doc["state"] == "queued"
    assert doc["submission"]["hyperparameters"]["lora_rank"] == 8
    (loaded,) = jobs.state.load_jobs()
    assert loaded == jobs.jobs[job.id]


def test_an_older_trainers_records_are_migrated(tmp_path: Path) -> None:
    """Job records in protobuf JSON, as trainers before spar's job schema wrote them
    (tests/data/state_v0): a trainer that starts on them keeps every job."""
    jobs = manager(tmp_path)
    for folder in (STATE_V0 / "trainer" / "jobs").iterdir():
        target = jobs.state.job_dir(folder.name)
        target.mkdir()
        (target / "job.json").write_bytes((folder / "job.json").read_bytes())
    jobs.recover()
    assert set(jobs.jobs) == {"job-0123456789ab", "job-fedcba987654", "job-00000000cafe"}
    assert jobs.queue == ["job-00000000cafe"]
    done = jobs.get("job-0123456789ab")
    assert done.state == "succeeded" and done.kind == "dpo"
    assert done.result == Published("actor-2-bbbbbbbbbbbb", "b" * 64, "actor", 2)
    sub = done.submission
    assert (sub.role, sub.iteration, sub.world_size, sub.strategy) == ("actor", 2, 2, "ddp")
    assert (sub.parent_adapter, sub.idempotency_key) == (
        "actor-1-aaaaaaaaaaaa",
        "spar-iteration-2-actor",
    )
    assert sub.hyperparameters.lora_rank == 16 and sub.hyperparameters.seed == 0
    assert done.progress.step == 40 and done.progress.reward_accuracy == 0.875
    assert done.progress.eta_s == 0
    assert done.finished_at is not None and done.finished_at.isoformat().startswith(
        "2025-12-06T05:55:00.123456"
    )
    failed = jobs.get("job-fedcba987654")
    assert failed.state == "failed" and failed.error.startswith("trainer restarted")
    assert failed.submission.strategy is None and failed.progress.eta_s == 42
    assert failed.created_at.isoformat() == "2025-12-06T05:56:40.123456+00:00"
    # What clients see of a migrated job is what the older trainer answered (times to the
    # microsecond: a record keeps no nanoseconds).
    for folder in (STATE_V0 / "trainer" / "jobs").iterdir():
        old = re.sub(r"(\.\d{6})\d{3}Z", r"\1Z", (folder / "job.json").read_text())
        message = json_format.MessageToDict(
            job_message(jobs.get(folder.name)), preserving_proto_field_name=True
        )
        assert message == json.loads(old), folder.name
    # The next change writes the record in spar's schema.
    jobs.state.save_job(jobs.jobs[failed.id])
    doc = json.loads((jobs.state.job_dir(failed.id) / "job.json").read_text())
    assert doc["schema"] == JOB_SCHEMA
    assert jobs.jobs[failed.id] in jobs.state.load_jobs()
