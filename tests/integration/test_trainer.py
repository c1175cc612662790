"""The trainer over real gRPC on 127.0.0.1: real TRL training of the default model on CPU.

One module-scoped trainer runs a short DPO job and a short SFT job (queued behind it); the
tests measure what the adapters do with the policy itself, publish and fetch them, stage
the DPO adapter into the session's actor, and check errors, cancel and metrics.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support import JUDGE_RECORDS, PREFERENCE_PAIRS, scrape

from services.trainer.distributed import alive
from services.trainer.server import TrainerServer
from spar.adapter_fetch import fetch_adapter
from spar.adapter_files import folder_digest, version_name
from spar.client import AsyncActorClient, AsyncTrainerClient, Call
from spar.errors import FailedPrecondition, InvalidArgument, NotFound
from spar.v1 import trainer_pb2 as pb
from spar.v1.trainer_pb2_grpc import TrainerStub as Stub

#: Small and fast on two shared cores: 4 examples, one batch, two steps, rank 8.
HP: dict[str, Any] = {
    "lora_rank": 8,
    "lora_alpha": 16,
    "max_length": 64,
    "epochs": 2,
    "batch_size": 4,
    "learning_rate": 5e-4,
    "seed": 0,
}
SFT_HP = {**HP, "learning_rate": 1e-3}


@pytest.fixture
async def client(trainer_server: TrainerServer) -> AsyncIterator[AsyncTrainerClient]:
    async with AsyncTrainerClient(f"127.0.0.1:{trainer_server.port}", timeout=60) as c:
        yield c


# -- bad input (no training) ----------------------------------------------------------


async def test_bad_datasets_are_rejected(client: AsyncTrainerClient) -> None:
    same = {**PREFERENCE_PAIRS[1], "rejected": PREFERENCE_PAIRS[1]["chosen"]}
    with pytest.raises(InvalidArgument, match="record 2: 'chosen' equals 'rejected'"):
        await client.upload_dataset("dpo", [PREFERENCE_PAIRS[0], same])
    with pytest.raises(InvalidArgument, match="the dataset is empty"):
        await client.upload_dataset("dpo", [])
    with pytest.raises(InvalidArgument, match="record 1: 'completion' is empty"):
        await client.upload_dataset("sft", [{"prompt": "p", "completion": " "}])
    with pytest.raises(InvalidArgument, match="record 1: unexpected fields"):
        await client.upload_dataset("dpo", [{**PREFERENCE_PAIRS[0], "score": "1"}])
    with pytest.raises(InvalidArgument, match=r"header\.name is 201 characters; the limit is 200"):
        await client.upload_dataset("dpo", PREFERENCE_PAIRS, name="n" * 201)
    # A header that is not first, and records of the wrong kind, straight at the stub.
    batch = pb.DatasetBatch(records=[pb.DatasetRecord(sft=pb.SftRecord(prompt="p"))])
    with pytest.raises(InvalidArgument, match="first message of an upload must be the header"):
        requests = iter([pb.UploadDatasetRequest(batch=batch)])
        await client.send(Call(Stub, "UploadDataset", requests, pb.UploadDatasetResponse))
    header = pb.UploadDatasetRequest(header=pb.DatasetHeader(kind=pb.JOB_KIND_DPO))
    with pytest.raises(InvalidArgument, match="record 1: a dpo dataset takes dpo records, not sft"):
        requests = iter([header, pb.UploadDatasetRequest(batch=batch)])
        await client.send(Call(Stub, "UploadDataset", requests, pb.UploadDatasetResponse))


async def test_bad_requests_get_clear_statuses(client: AsyncTrainerClient) -> None:
    with pytest.raises(NotFound, match="upload it first"):
        await client.submit_job("dpo", "a" * 64)
    data = await client.upload_dataset("sft", JUDGE_RECORDS)
    with pytest.raises(FailedPrecondition, match="holds sft records; a dpo job needs"):
        await client.submit_job("dpo", data.dataset_digest)
    with pytest.raises(InvalidArgument, match=r"hyperparameters\.lora_rank=0"):
        await client.submit_job("sft", data.dataset_digest, hyperparameters={"lora_rank": 0})
    with pytest.raises(NotFound, match="no job"):
        await client.get_job("job-000000000000")
    with pytest.raises(NotFound, match="no job"):
        await client.cancel_job("../../etc")
    with pytest.raises(NotFound, match="not in the store"):
        await client.get_manifest("actor-1-000000000000")
    with pytest.raises(InvalidArgument, match="is invalid"):
        await client.get_manifest("../state")


# -- training ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def trained(trainer_server: TrainerServer) -> dict[str, Any]:
    """A DPO job and an SFT job queued behind it, watched to the end."""
    async with AsyncTrainerClient(f"127.0.0.1:{trainer_server.port}") as c:
        dpo_data = await c.upload_dataset(
            "dpo", [*PREFERENCE_PAIRS, PREFERENCE_PAIRS[0]], name="pairs"
        )
        sft_data = await c.upload_dataset("sft", JUDGE_RECORDS, name="rft")
        dpo = await c.submit_job("dpo", dpo_data.dataset_digest, iteration=1, hyperparameters=HP)
        sft = await c.submit_job(
            "sft", sft_data.dataset_digest, iteration=1, hyperparameters=SFT_HP
        )
        progress = [p async for p in c.watch_job(dpo.id)]
        sft_done = await c.wait_job(sft.id)
    return {
        "dpo_data": dpo_data,
        "dpo_submitted": dpo,
        "sft_submitted": sft,
        "dpo_progress": progress,
        "dpo": progress[-1].job,
        "sft": sft_done,
    }


@pytest.mark.slow
async def test_jobs_queue_and_report_progress(trained: dict[str, Any]) -> None:
    assert trained["dpo_data"].records == 4 and trained["dpo_data"].duplicates_dropped == 1
    assert trained["sft_submitted"].queue_position >= 1, "the second job must wait visibly"
    dpo, sft = trained["dpo"], trained["sft"]
    assert dpo.state == pb.JOB_STATE_SUCCEEDED, dpo.error
    assert sft.state == pb.JOB_STATE_SUCCEEDED, sft.error
    assert sft.started_at.ToNanoseconds() >= dpo.finished_at.ToNanoseconds(), "one job at a time"
    running = [p for p in trained["dpo_progress"] if p.state == pb.JOB_STATE_RUNNING and p.step]
    assert [p.step for p in running] == [1, 2] and running[-1].total_steps == 2
    assert all(p.loss > 0 and p.tokens_per_second > 0 for p in running)
    assert running[-1].reward_accuracy > 0 and running[-1].reward_margin > 0
    assert running[0].HasField("eta")


def _completion_logps(
    model: Any, tokenizer: Any, prompt: str, completion: str
) -> tuple[float, int]:
    """Sum of log p(completion | prompt) under the chat template, and its token count."""
    import torch

    chat = [{"role": "user", "content": prompt}]
    head = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(
        [*chat, {"role": "assistant", "content": completion}], tokenize=False
    )
    head_ids = tokenizer(head, add_special_tokens=False).input_ids
    ids = tokenizer(full, add_special_tokens=False).input_ids
    assert ids[: len(head_ids)] == head_ids
    tensor = torch.tensor([ids])
    with torch.no_grad():
        logits = model(input_ids=tensor).logits[0, :-1].float()
    logps = logits.log_softmax(-1).gather(1, tensor[0, 1:, None])[:, 0]
    tail = logps[len(head_ids) - 1 :]
    return float(tail.sum()), int(tail.numel())


def _measure(model_path: Path, adapter: Path, fn: Any) -> tuple[Any, Any]:
    """fn(model, tokenizer) with the adapter disabled (the base policy), then enabled."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the shared CI cores; restored for the rest of the session
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, adapter).eval()
        with model.disable_adapter():
            before = fn(model, tokenizer)
        return before, fn(model, tokenizer)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
async def test_dpo_raises_the_preference_margin(
    trained: dict[str, Any], trainer_server: TrainerServer, model_path: Path
) -> None:
    def margins(model: Any, tokenizer: Any) -> list[float]:
        return [
            _completion_logps(model, tokenizer, p["prompt"], p["chosen"])[0]
            - _completion_logps(model, tokenizer, p["prompt"], p["rejected"])[0]
            for p in PREFERENCE_PAIRS
        ]

    files = trainer_server.store.files_dir(trained["dpo"].result.name)
    before, after = await asyncio.to_thread(_measure, model_path, files, margins)
    gains = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(gains) / len(gains) > 2.0, f"margins before {before}, after {after}"
    assert all(g > 0 for g in gains), f"every training pair must gain: {gains}"


@pytest.mark.slow
async def test_sft_lowers_the_loss_on_its_data(
    trained: dict[str, Any], trainer_server: TrainerServer, model_path: Path
) -> None:
    def nll(model: Any, tokenizer: Any) -> float:
        sums = [
            _completion_logps(model, tokenizer, r["prompt"], r["completion"]) for r in JUDGE_RECORDS
        ]
        return -sum(s for s, _ in sums) / sum(n for _, n in sums)

    files = trainer_server.store.files_dir(trained["sft"].result.name)
    before, after = await asyncio.to_thread(_measure, model_path, files, nll)
    assert after < before - 0.2, f"per-token NLL before {before:.3f}, after {after:.3f}"


@pytest.mark.slow
async def test_published_versions_are_content_addressed(
    trained: dict[str, Any],
    client: AsyncTrainerClient,
    trainer_server: TrainerServer,
    tmp_path: Path,
) -> None:
    dpo = trained["dpo"]
    manifest = await client.get_manifest(dpo.result.name)
    files = trainer_server.store.files_dir(dpo.result.name)
    digest = folder_digest(files)
    assert manifest.version.digest == digest == dpo.result.digest
    assert manifest.version.name == version_name("actor", 1, digest)
    assert manifest.job_id == dpo.id and manifest.parent == ""
    assert manifest.dataset_digest == trained["dpo_data"].dataset_digest
    assert manifest.hyperparameters["beta"] == pytest.approx(0.1)
    assert manifest.hyperparameters["sft_loss_weight"] == pytest.approx(0.1)
    assert manifest.hyperparameters["lora_rank"] == 8
    assert manifest.metrics["steps"] == 2 and "train_loss" in manifest.metrics
    assert sorted(f.path for f in manifest.files) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    listed = await client.list_adapters()
    names = [m.version.name for m in listed.adapters]
    assert names == [trained["sft"].result.name, dpo.result.name], "newest first"
    assert [m.version.role for m in (await client.list_adapters("refiner")).adapters] == ["refiner"]
    fetched = await fetch_adapter(client.target, dpo.result.name, tmp_path)
    assert folder_digest(fetched.path) == digest
    assert not list(trainer_server.store.root.glob(".partial-*"))


@pytest.mark.slow
async def test_dpo_adapter_stages_from_the_store_into_the_actor(
    trained: dict[str, Any], trainer_server: TrainerServer, actor_target: str
) -> None:
    name = trained["dpo"].result.name
    # Every prompt the adapter was trained on: two DPO steps move some greedy answers and
    # not others (by how close their top tokens were; in bfloat16, rounding hides the
    # smallest moves), and the test asks that the adapter is applied, not how strongly.
    prompts = [pair["prompt"] for pair in PREFERENCE_PAIRS]
    async with AsyncActorClient(actor_target, timeout=180) as actor:

        async def greedy(adapter: str) -> list[str]:
            # One request at a time: the same batch shape in every round, so the rounds'
            # greedy answers differ by the adapter alone, never by the batch they shared.
            replies = [await actor.generate(p, max_tokens=24, temperature=0.0) for p in prompts]
            assert {r.adapter for r in replies} == {adapter}  # empty: the base model
            return [r.completions[0].text for r in replies]

        # On the base model whatever an earlier test left active.
        await actor.activate_adapter("base")
        base = await greedy("")
        staged = await actor.stage_adapter(name, store_target=f"127.0.0.1:{trainer_server.port}")
        assert staged.loaded and staged.version.digest == trained["dpo"].result.digest
        assert staged.version.role == "actor" and staged.version.iteration == 1
        try:
            await actor.activate_adapter(name)
            tuned = await greedy(name)
        finally:
            await actor.activate_adapter("base")
            await actor.retire_adapter(name)
        assert tuned != base, "the DPO adapter must change the actor's greedy output"
        assert await greedy("") == base


@pytest.mark.slow
async def test_cli_trains_the_same_adapter_for_the_same_seed(
    trained: dict[str, Any], trainer_server: TrainerServer, tmp_path: Path
) -> None:
    """`spar train sft` with a progress bar; on CPU the same seed gives the same bytes."""
    data = tmp_path / "rft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in JUDGE_RECORDS))
    flags = [
        "--lora-rank", "8", "--lora-alpha", "16", "--max-length", "64", "--epochs", "2",
        "--batch-size", "4", "--lr", "1e-3", "--seed", "0", "--iteration", "1",
    ]  # fmt: skip
    target = f"127.0.0.1:{trainer_server.port}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spar_cli", "train", "sft", "--data", str(data), *flags,
        "--target", target,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=dict(os.environ),
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=600)
    assert proc.returncode == 0, err.decode()
    assert f"adapter: {trained['sft'].result.name}" in out.decode()
    assert "2/2" in err.decode(), "the progress bar reaches the last step"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spar_cli", "adapters", "list", "--json", "--target", target,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    assert len(json.loads(out)["adapters"]) == 2, "the same content is not a new version"


@pytest.mark.slow
async def test_cancel_a_running_job_publishes_nothing(
    trained: dict[str, Any], client: AsyncTrainerClient, trainer_server: TrainerServer
) -> None:
    data = await client.upload_dataset("sft", JUDGE_RECORDS)
    job = await client.submit_job("sft", data.dataset_digest, hyperparameters={**HP, "epochs": 100})
    async for progress in client.watch_job(job.id):
        if progress.state == pb.JOB_STATE_RUNNING:
            break
    pid = int((trainer_server.state.job_dir(job.id) / "worker.pid").read_text())
    cancelled = await client.cancel_job(job.id)
    assert cancelled.state == pb.JOB_STATE_CANCELLED and not cancelled.result.name
    assert not alive(pid), "the worker must be gone"
    assert len(trainer_server.store.list()) == 2
    assert not list(trainer_server.store.root.glob(".partial-*"))
    with pytest.raises(FailedPrecondition, match="already finished"):
        await client.cancel_job(trained["dpo"].id)


@pytest.mark.slow
async def test_queued_job_cancel_and_metrics(
    trained: dict[str, Any], client: AsyncTrainerClient, trainer_server: TrainerServer
) -> None:
    data = await client.upload_dataset("dpo", PREFERENCE_PAIRS)
    first = await client.submit_job(
        "dpo", data.dataset_digest, hyperparameters={**HP, "epochs": 100}
    )
    second = await client.submit_job("dpo", data.dataset_digest, hyperparameters=HP)
    assert second.queue_position >= 1
    assert (await client.cancel_job(second.id)).state == pb.JOB_STATE_CANCELLED
    assert (await client.cancel_job(first.id)).state == pb.JOB_STATE_CANCELLED

    samples = scrape(trainer_server)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted({"service": "trainer", **labels}.items()))), -1.0)

    assert value("spar_train_jobs_total", kind="dpo", state="succeeded") == 1
    assert value("spar_train_jobs_total", kind="dpo", state="cancelled") == 2
    assert value("spar_train_jobs_total", kind="sft", state="succeeded") == 2
    assert value("spar_adapters_published_total", role="actor") == 1
    assert value("spar_train_queue_length") == 0
    assert value("spar_train_job_running", kind="dpo") == 0
    assert value("spar_train_step", kind="dpo") >= 0
    assert value("spar_train_loss", kind="sft") > 0
    assert value("spar_train_reward_accuracy") >= 0 and value("spar_train_reward_margin") > -1
    assert value("spar_train_tokens_per_second", kind="dpo") > 0
    assert value("spar_requests_total", method="SubmitJob", code="OK") >= 1
