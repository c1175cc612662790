"""The refiner's warm-up over scripted services: what it collects, trains and rolls out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.coordinator import inputs
from services.coordinator.audit import AuditLog
from services.coordinator.journal import read_json
from services.coordinator.loop import Iteration, Ports
from services.coordinator.rollout import Hosted, Version
from services.coordinator.state import StateStore
from spar.config import CoordinatorSettings, Settings
from spar.prompt_sets import PromptRecord
from spar.prompt_synthesis import check_split
from spar.v1 import actor_pb2, common_pb2, refiner_pb2, trainer_pb2

ANSWER = "Dear friend, here is my answer. It is short, clear and kind."


class FakeActor:
    def __init__(self) -> None:
        self.calls = 0

    async def generate(self, prompt: str, **kw: Any) -> actor_pb2.GenerateResponse:
        self.calls += 1
        cut = actor_pb2.Completion(
            index=0, text=ANSWER + " And then,", finish_reason=common_pb2.FINISH_REASON_LENGTH
        )
        done = actor_pb2.Completion(
            index=1, text=ANSWER, finish_reason=common_pb2.FINISH_REASON_STOP
        )
        return actor_pb2.GenerateResponse(completions=[cut, done][: kw["n"]])


class FakeRefiner:
    """Refines the first case it gets (a passing child), exhausts every other one."""

    def __init__(self) -> None:
        self.judges: list[str] = []

    async def refine(self, prompt: str, response: str, **kw: Any) -> refiner_pb2.RefineResponse:
        self.judges.append(kw["judge"])
        assert "And then" not in response, "a cut answer is never a case"
        root = refiner_pb2.SearchNode(
            id=0, parent_id=-1, response=response, critique="- 2 commas; none allowed",
            constraints_met=0, constraints_checked=1, hard_fail=True,
        )  # fmt: skip
        if len(self.judges) > 1:
            return refiner_pb2.RefineResponse(
                best_response=response, outcome=common_pb2.SEARCH_OUTCOME_EXHAUSTED, trace=[root]
            )
        child = refiner_pb2.SearchNode(
            id=1, parent_id=0, depth=1, response=response.replace(",", ""),
            constraints_met=1, constraints_checked=1,
        )  # fmt: skip
        return refiner_pb2.RefineResponse(
            best_response=child.response, outcome=common_pb2.SEARCH_OUTCOME_REFINED,
            trace=[root, child],
        )  # fmt: skip


class FakeTrainer:
    def __init__(self) -> None:
        self.datasets: list[list[Any]] = []
        self.jobs: list[dict[str, Any]] = []

    async def upload_dataset(self, kind: str, records: Any, name: str = "") -> Any:
        self.datasets.append(list(records))
        return trainer_pb2.UploadDatasetResponse(dataset_digest="d" * 64)

    async def submit_job(self, kind: str, digest: str, **kw: Any) -> trainer_pb2.Job:
        self.jobs.append({"kind": kind, **kw})
        return trainer_pb2.Job(id="job-1")

    async def wait_job(self, job_id: str) -> trainer_pb2.Job:
        job = trainer_pb2.Job(id=job_id, state=trainer_pb2.JOB_STATE_SUCCEEDED)
        job.result.name, job.result.digest = "refiner-0-cccccccccccc", "c" * 64
        return job


class FakeReplica:
    def __init__(self, target: str) -> None:
        self.target, self.loaded, self.active = target, set[str](), ""

    async def stage(self, version: Version, store_target: str) -> bool:
        self.loaded.add(version.name)
        return True

    async def activate(self, name: str) -> None:
        self.active = name

    async def retire(self, name: str) -> None:
        self.loaded.discard(name)

    async def hosted(self) -> Hosted:
        return Hosted(frozenset(self.loaded), self.active)


async def test_warmup_trains_the_refiner_on_verified_refinements_and_rolls_it_out(
    tmp_path: Path,
) -> None:
    c = CoordinatorSettings(
        state_dir=str(tmp_path / "s"), warmup=True, warmup_prompts=12, warmup_samples=2,
        eval_prompts=16,
    )  # fmt: skip
    settings = Settings(cache_dir=tmp_path, coordinator=c)
    store = StateStore(tmp_path / "s")
    actor, refiner, trainer = FakeActor(), FakeRefiner(), FakeTrainer()
    replicas = [FakeReplica("r1"), FakeReplica("r2")]

    async def replicas_of(role: str) -> list[Any]:
        assert role == "refiner"
        return list(replicas)

    held = inputs.eval_prompts(c)
    ports = Ports(
        actor,
        refiner,
        trainer,
        replicas_of,
        lambda n, p: [],
        lambda: held,
        None,  # type: ignore[arg-type]
    )
    audit = AuditLog(tmp_path / "s" / "audit.jsonl")
    it = Iteration(1, settings, store, ports, lambda *_: None, audit=audit)
    await it.warmup()
    w = it.record.warmup

    prompts = [
        json.loads(line) for line in (tmp_path / "s/warmup/prompts.jsonl").read_text().splitlines()
    ]
    records = [
        PromptRecord(p["key"], p["prompt"], tuple(p["instruction_id_list"]), tuple(p["kwargs"]))
        for p in prompts
    ]
    check_split(records, held, inputs.SPLIT)  # the warm-up trains on the training side
    assert (w.prompts, w.samples) == (12, 24)
    assert w.failing == w.searches >= 2, "one uncut failing answer per prompt"
    assert set(refiner.judges) == {"verifier"}, "the verifier checks every refinement"
    assert w.searches_refined == 1 and w.search_records == 1
    sft = read_json(tmp_path / "s/warmup/sft.json")
    assert len(sft) == w.search_records + w.repair_records == len(trainer.datasets[0])
    assert sft[0]["messages"][-1]["content"] == ANSWER.replace(",", "")
    assert "2 commas; none allowed" in sft[0]["messages"][0]["content"]
    assert sum(w.mix.values()) >= len(sft) and w.repair_records >= 1
    (job,) = trainer.jobs
    assert (job["kind"], job["role"], job["iteration"], job["parent"]) == ("sft", "refiner", 0, "")
    assert job["hyperparameters"]["epochs"] == c.warmup_epochs
    assert w.version.name == "refiner-0-cccccccccccc"
    assert all(r.active == w.version.name for r in replicas)
    assert store.desired("refiner")[0].name == w.version.name  # type: ignore[union-attr]
    (entry,) = audit.records()
    assert (entry["action"], entry["role"], entry["iteration"]) == ("rollout", "refiner", 0)

    # Done once: a second run (a resumed coordinator) calls nothing.
    calls = actor.calls
    again = Iteration(1, settings, store, ports, lambda *_: None, audit=audit)
    await again.warmup()
    assert again.record.warmup == w and actor.calls == calls and len(audit.records()) == 1


def test_repairs_are_balanced_across_constraint_types_and_counted() -> None:
    from services.coordinator.warmup import collect
    from spar import ifeval
    from spar.refine_templates import Prompts

    prompt = "Write a thank-you note to a neighbour who looked after your cat."
    cases: list[dict[str, Any]] = [
        {"prompt": prompt, "response": f"Thanks, Sam, for feeding the cat {n} times.",
         "constraints": [(iid, {})], "failed": [iid]}
        for n in range(3)
        for iid in ("punctuation:no_comma", "startend:quotation")
    ]  # fmt: skip
    got = collect(cases, [], Prompts(), ifeval.check, with_repairs=True, per_type=2)
    assert dict(got.mix) == {"punctuation:no_comma": 2, "startend:quotation": 2}
    assert (got.repair_records, got.repairs_capped, got.search_records) == (4, 2, 0)
    targets = [r["messages"][-1]["content"] for r in got.records]
    assert sum(t.startswith('"') for t in targets) == 2, "quotation repairs are capped too"
