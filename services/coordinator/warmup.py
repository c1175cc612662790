"""The refiner's warm-up before iteration 1 (``SPAR_COORDINATOR__WARMUP``).

A small model refines badly at first, and a self-play loop can only learn from the
refinements it finds. So, before iteration 1 samples anything, the refiner is fine-tuned
on refinements that the **verifier** checked:

1. prompts: synthesised from the training side of the held-out split (inputs.SPLIT),
   with a seed of their own;
2. samples: the actor's answers (``warmup_samples`` per prompt); an answer that fails a
   checked constraint and ended by itself (not cut at max_tokens) is a case;
3. searches: one case per prompt goes to the refiner's ``Refine`` with the *verifier*
   judge (program checks plus the guardrails, no LLM votes): what passes is a
   refinement the verifier vouches for. Steps on a path that ended in a pass become SFT
   records (data.refinement_records: the refine template the refiner will use);
4. repairs (``warmup_repairs``): exact programmatic repairs of failing cases
   (repairs.py), at most ``warmup_repairs_per_type`` per constraint type;
5. train: one SFT job for the refiner (iteration 0), then a two-phase rollout of it to
   every refiner replica, recorded in the audit log.

Every step is checkpointed under ``<state_dir>/warmup/`` (journals, then ``report.json``
once done), so a coordinator killed during the warm-up resumes it, and a finished
warm-up never runs again. The :class:`~spar.v1.coordinator_pb2.WarmupReport` says what
was collected, by source and constraint type (the mix).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from services.coordinator import data, inputs, repairs
from services.coordinator.audit import POLICY, AuditEntry, AuditLog
from services.coordinator.iteration_messages import version_message
from services.coordinator.journal import Journal, read_json, write_json
from services.coordinator.rollout import RolloutFailed, Version, rollout
from services.coordinator.stage_items import (
    bounded,
    prompt_record,
    sample_record,
    search_budget,
    search_record,
)
from services.coordinator.state import StateStore
from spar import ifeval
from spar.config import Settings
from spar.errors import FailedPrecondition
from spar.ifeval import Constraint
from spar.prompt_synthesis import check_split
from spar.proto_time import duration
from spar.refine_templates import Prompts
from spar.v1 import coordinator_pb2, trainer_pb2

log = logging.getLogger(__name__)

WARMUP_SEED = 1_000_033
"""Seed of the warm-up's prompts (training side of the split; iterations use 1, 2, …)."""


# -- the data (pure) -------------------------------------------------------------------


@dataclass
class Collected:
    """The warm-up's SFT records and what they are made of."""

    records: list[dict[str, Any]] = field(default_factory=list)
    search_records: int = 0
    repair_records: int = 0
    repairs_capped: int = 0
    mix: Counter[str] = field(default_factory=Counter)
    """Records by the instruction id they fix (a record that fixes two counts twice)."""


def collect(
    cases: Sequence[Mapping[str, Any]],
    searches: Sequence[Mapping[str, Any]],
    templates: Prompts,
    check: data.CheckFn,
    *,
    with_repairs: bool,
    per_type: int,
) -> Collected:
    """SFT records from the passing paths of verifier-judged searches, plus (optionally)
    exact repairs of the cases, at most ``per_type`` repairs per constraint type.

    ``cases``: failing, uncut answers (``prompt``, ``response``, ``constraints`` as
    (id, kwargs) pairs, ``failed``: the ids they fail). ``searches``: the searches
    journal's records, whose ``failed`` field names the ids the root failed.
    """
    out = Collected()
    for s in searches:
        records, _ = data.refinement_records([s], templates)
        out.records += records
        out.search_records += len(records)
        for iid in s.get("failed", []) if records else []:
            out.mix[iid] += len(records)
    if not with_repairs:
        return out
    made: Counter[str] = Counter()
    for case in cases:
        cons = [Constraint(i, kw) for i, kw in case["constraints"]]
        r = repairs.repair(case["prompt"], case["response"], cons, check)
        if r is None:
            continue
        if any(made[i] >= per_type for i in r.fixed):
            out.repairs_capped += 1
            continue
        made.update(r.fixed)
        out.mix.update(r.fixed)
        turns = templates.refine_messages(case["prompt"], case["response"], r.critique)
        out.records.append(
            {
                "messages": [
                    *({"role": m.role, "content": m.content} for m in turns),
                    {"role": "assistant", "content": templates.refine_completion("", r.response)},
                ]
            }
        )
        out.repair_records += 1
    return out


def failing_cases(
    prompts: Mapping[str, Mapping[str, Any]],
    samples: Mapping[str, Mapping[str, Any]],
    check: data.CheckFn,
) -> list[dict[str, Any]]:
    """Answers that fail a checked constraint and ended by themselves, in prompt order."""
    out = []
    for key, p in prompts.items():
        s = samples.get(key)
        if s is None:
            continue
        cons = list(zip(p["instruction_id_list"], p["kwargs"], strict=True))
        constraints = [Constraint(i, kw) for i, kw in cons]
        for i, (text, cut) in enumerate(zip(s["responses"], s["cut"], strict=True)):
            if cut or not text.strip():
                continue
            checks = check(p["prompt"], text, constraints)
            failed = [c.instruction_id for c in checks if not c.strict]
            if failed:
                out.append(
                    {"key": f"{key}#{i}", "prompt_key": key, "prompt": p["prompt"],
                     "response": text, "constraints": cons, "failed": failed}
                )  # fmt: skip
    return out


# -- the stage (I/O over the loop's ports) ----------------------------------------------


class Warmup:
    """Runs (or resumes) the warm-up; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        ports: Any,
        templates: Prompts,
        audit: AuditLog,
        say: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.c = settings.coordinator
        self.store = store
        self.ports = ports
        self.templates = templates
        self.audit = audit
        self.say = say
        self.dir: Path = store.root / "warmup"

    def done(self) -> coordinator_pb2.WarmupReport | None:
        saved = read_json(self.dir / "report.json")
        if saved is None:
            return None
        report = coordinator_pb2.WarmupReport()
        json_format.ParseDict(saved, report)
        return report

    def _journal(self, name: str) -> Journal:
        return Journal(self.dir / f"{name}.jsonl")

    async def run(self) -> coordinator_pb2.WarmupReport:
        finished = self.done()
        if finished is not None:
            return finished
        t0 = time.perf_counter()
        report = coordinator_pb2.WarmupReport()
        prompts = self._prompts()
        report.prompts = len(prompts)
        self.say(f"refiner warm-up: sampling {len(prompts)} prompts")
        samples = self._journal("samples")
        done = samples.read()

        async def sample(p: Mapping[str, Any]) -> None:
            reply = await self.ports.actor.generate(
                p["prompt"], n=self.c.warmup_samples, temperature=self.c.sample_temperature,
                top_p=self.c.sample_top_p, max_tokens=self.c.sample_max_tokens,
            )  # fmt: skip
            samples.append([sample_record(p["key"], reply)])

        await bounded(self.c.concurrency, [p for k, p in prompts.items() if k not in done], sample)
        sampled = samples.read()
        report.samples = sum(len(s["responses"]) for s in sampled.values())
        cases = await asyncio.to_thread(failing_cases, prompts, sampled, ifeval.check)
        report.failing = len(cases)
        searches = await self._search(cases)
        report.searches = len(searches)
        report.searches_refined = sum(s["outcome"] == "refined" for s in searches)
        got = await asyncio.to_thread(
            collect, cases, searches, self.templates, ifeval.check,
            with_repairs=self.c.warmup_repairs, per_type=self.c.warmup_repairs_per_type,
        )  # fmt: skip
        report.search_records = got.search_records
        report.repair_records = got.repair_records
        report.repairs_capped = got.repairs_capped
        for iid, n in sorted(got.mix.items()):
            report.mix[iid] = n
        write_json(self.dir / "sft.json", got.records)
        self.say(
            f"refiner warm-up: {got.search_records} records from {report.searches_refined} of "
            f"{report.searches} searches, {got.repair_records} repairs; training"
        )
        if got.records:
            version = await self._train(got.records)
            report.version.CopyFrom(version_message(version))
            state = read_json(self.dir / "train.json", {})
            if not state.get("rolled_out"):
                await self._roll_out(version, report)
                write_json(self.dir / "train.json", {**state, "rolled_out": True})
        else:
            report.skipped = "no successful refinement or repair to train on"
        report.duration.CopyFrom(duration(time.perf_counter() - t0))
        write_json(
            self.dir / "report.json",
            json_format.MessageToDict(report, preserving_proto_field_name=True),
        )
        return report

    def _prompts(self) -> dict[str, dict[str, Any]]:
        journal = self._journal("prompts")
        if not journal.read():
            held = self.ports.eval_prompts()
            records = inputs.SPLIT.synthesize(
                "train", self.c.warmup_prompts, WARMUP_SEED, [r.prompt for r in held],
                first_key=2_000_000,
            )  # fmt: skip
            if not self.c.eval_path:
                check_split(records, held, inputs.SPLIT)
            journal.append(prompt_record(r) for r in records)
        return journal.read()

    async def _search(self, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
        journal = self._journal("searches")
        done = journal.read()
        first: dict[str, dict[str, Any]] = {}
        for case in cases:  # one case per prompt: the searches cover more prompts
            first.setdefault(case["prompt_key"], case)
        todo = [c for k, c in first.items() if k not in done]
        budget = search_budget(self.c)
        self.say(f"refiner warm-up: {len(first)} verifier-judged searches")

        async def one(case: Mapping[str, Any]) -> None:
            reply = await self.ports.refiner.refine(
                case["prompt"], case["response"], constraints=case["constraints"],
                judge="verifier", budget=budget,
            )  # fmt: skip
            record = search_record(case["prompt_key"], case["prompt"], case["response"], reply)
            journal.append([{**record, "failed": case["failed"]}])

        await bounded(self.c.concurrency, todo, one)
        return list(journal.read().values())

    async def _train(self, records: list[dict[str, Any]]) -> Version:
        state: dict[str, Any] = read_json(self.dir / "train.json", {})
        if state.get("version"):
            return Version(**state["version"])
        trainer = self.ports.trainer
        if not state.get("job_id"):
            dataset = await trainer.upload_dataset("sft", records, name="warmup-refiner")
            job = await trainer.submit_job(
                "sft", dataset.dataset_digest, role="refiner", iteration=0, parent="",
                idempotency_key="spar-warmup-refiner",
                hyperparameters={
                    "epochs": self.c.warmup_epochs, "lora_rank": self.c.lora_rank,
                    "lora_alpha": 2 * self.c.lora_rank,
                    "learning_rate": self.c.learning_rate_sft, "max_length": self.c.max_length,
                },
            )  # fmt: skip
            state = {"job_id": job.id}
            write_json(self.dir / "train.json", state)
            self.say(f"refiner warm-up: sft job {job.id} submitted ({len(records)} records)")
        final = await trainer.wait_job(state["job_id"])
        if final.state != trainer_pb2.JOB_STATE_SUCCEEDED:
            write_json(self.dir / "train.json", {})  # a resumed warm-up submits again
            raise FailedPrecondition(
                f"refiner warm-up: sft job {final.id} ended "
                f"{trainer_pb2.JobState.Name(final.state)}: {final.error}"
            )
        v = final.result
        version = Version(v.name, v.digest, "refiner", 0)
        write_json(self.dir / "train.json", {**state, "version": asdict(version)})
        return version

    async def _roll_out(self, version: Version, report: coordinator_pb2.WarmupReport) -> None:
        replicas = await self.ports.replicas("refiner")
        active, _ = self.store.desired("refiner")
        entry = AuditEntry(
            action="rollout", role="refiner", decision="promote", decided_by=POLICY,
            iteration=0, version=asdict(version), previous=asdict(active) if active else None,
            reason="refiner warm-up before iteration 1 (SPAR_COORDINATOR__WARMUP)",
            evidence={"warmup": json_format.MessageToDict(
                report, preserving_proto_field_name=True)},
            replicas=[r.target for r in replicas],
        )  # fmt: skip
        target = self.c.store_address()
        try:
            await rollout(self.store, "refiner", version, replicas, target)
        except RolloutFailed as exc:
            self.audit.append(AuditEntry(**{**asdict(entry), "result": "failed",
                                            "error": str(exc)}))  # fmt: skip
            raise
        self.audit.append(entry)
        self.say(f"refiner warm-up: {version.name} rolled out to {len(replicas)} replica(s)")
