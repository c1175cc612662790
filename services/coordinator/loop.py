"""One SPaR iteration, stage by stage, checkpointed so a killed coordinator resumes.

prompts → actor samples → judge → negatives → tree search → DPO pairs + RFT data →
train both → stage + evaluate the candidate → activate (or drop) → record.

Each stage writes its output to the iteration's folder before the iteration record
moves on; per-item stages (sample, judge, search) append one journal record per item
as it finishes, so a resumed stage only does the items that are missing
(:mod:`services.coordinator.stage_items`). Evaluation, the decision and the rollout are
in :mod:`services.coordinator.release`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from services.coordinator import data
from services.coordinator.audit import AuditLog
from services.coordinator.iteration_messages import (
    search_cost,
    state_name,
    warmup_report,
)
from services.coordinator.iteration_record import (
    STAGES,
    IterationRecord,
    Stage,
    StageTiming,
    now,
)
from services.coordinator.journal import Journal, read_json, write_json
from services.coordinator.release import AwaitingApproval, Release
from services.coordinator.rollout import Version
from services.coordinator.stage_items import (
    bounded,
    prompt_record,
    sample_record,
    search_budget,
    search_record,
    sum_costs,
)
from services.coordinator.state import StateStore
from services.coordinator.warmup import Warmup
from spar import criteria
from spar.client.enums import VERDICT
from spar.config import Settings
from spar.errors import FailedPrecondition, SparError
from spar.external_judge import ExternalJudge, Requirement, SelfDecisions
from spar.ifeval import Constraint
from spar.refine_templates import Prompts
from spar.v1 import common_pb2, coordinator_pb2, refiner_pb2, trainer_pb2

log = logging.getLogger(__name__)

Notify = Callable[[IterationRecord, str], None]


@dataclass
class Ports:
    """What the loop needs from the other services (the async SDK clients in production)."""

    actor: Any
    """AsyncActorClient of the actor service."""
    refiner: Any
    """AsyncRefinerClient of the refiner service."""
    trainer: Any
    """AsyncTrainerClient of the trainer service (and its artifact store)."""
    replicas: Callable[[str], Awaitable[list[Any]]]
    """role → connected ReplicaOps of every replica of the role."""
    prompts: Callable[[int, str], list[Any]]
    """(iteration, path) → prompt records for training (IFEval-format fields)."""
    eval_prompts: Callable[[], list[Any]]
    """Held-out prompt records."""
    evaluate: Callable[[list[Any], str], Awaitable[coordinator_pb2.EvalMetrics]]
    """(records, adapter) → IFEval's four metrics of the actor with that adapter."""
    external: ExternalJudge | None = None
    """The outside judge a sampled share of the judge stage's judgements also goes to."""


class Iteration:
    """One SPaR iteration, run stage by stage (see the module docstring) and checkpointed in
    its folder of the :class:`StateStore`; :meth:`run` starts it or resumes it at the stage
    its record (:class:`IterationRecord`) names. ``ports`` are the other services;
    ``notify`` hears each saved step (the watchers' events)."""

    def __init__(
        self,
        number: int,
        settings: Settings,
        store: StateStore,
        ports: Ports,
        notify: Notify,
        prompts_path: str = "",
        audit: AuditLog | None = None,
    ) -> None:
        self.number = number
        self.audit = audit or AuditLog(store.root / "audit.jsonl")
        self.settings = settings
        self.c = settings.coordinator
        self.store = store
        self.ports = ports
        self.notify = notify
        self.prompts_path = prompts_path or self.c.prompts_path
        self.dir = store.iteration_dir(number)
        self.templates = Prompts.from_settings(
            settings.refiner.judge_template,
            settings.refiner.refine_template,
            settings.refiner.refine_style,
            settings.refiner.refine_prefill,
        )
        self.record = store.load_iteration(number) or IterationRecord(
            number=number, state="running", stage="prompts", started_at=now()
        )
        self.release = Release(self.record, settings.coordinator, store, ports, self.audit)

    def _save(self, message: str) -> None:
        self.store.save_iteration(self.record)
        self.notify(self.record, message)

    async def run(self) -> IterationRecord:
        it = self.record
        it.state = "running"
        it.error = ""
        runners: dict[Stage, Callable[[], Awaitable[None]]] = {
            "prompts": self.prompts,
            "sample": self.sample,
            "judge": self.judge,
            "search": self.search,
            "build_data": self.build_data,
            "train": self.train,
            "evaluate": self.release.evaluate,
            "rollout": self.release.rollout,
            "record": self.finish,
        }
        start = STAGES.index(it.stage) if it.stage in STAGES else 0
        try:
            if self.number == 1 and self.c.warmup and it.warmup is None:
                await self.warmup()
            for stage in STAGES[start:]:
                it.stage = stage
                self._save(f"iteration {self.number}: {stage}")
                t0 = time.perf_counter()
                await runners[stage]()
                it.timings.append(StageTiming(stage, time.perf_counter() - t0))
            it.stage = "done"
            it.finished_at = now()
            self._save(f"iteration {self.number}: done ({state_name(it.state)})")
        except AwaitingApproval:
            it.state = "awaiting_approval"
            self._save(
                f"iteration {self.number}: the candidate awaits approval: "
                f"spar promote {self.number} or spar reject {self.number}"
            )
        except asyncio.CancelledError:
            self.store.save_iteration(it)  # resumable: state stays RUNNING
            raise
        except Exception as exc:
            log.exception("iteration %d failed in %s", self.number, it.stage)
            it.state = "failed"
            it.error = f"{it.stage}: {exc}"
            it.finished_at = now()
            self._save(f"iteration {self.number} failed: {it.error}")
        return it

    # -- stages -------------------------------------------------------------------------

    async def warmup(self) -> None:
        """The refiner's warm-up (warmup.py), before iteration 1's first stage."""

        def say(message: str) -> None:
            self._save(f"iteration {self.number}: {message}")

        report = await Warmup(
            self.settings, self.store, self.ports, self.templates, self.audit, say
        ).run()
        self.record.warmup = warmup_report(report)
        say(
            f"refiner warm-up done: {report.version.name or report.skipped} "
            f"({report.search_records} search records, {report.repair_records} repairs)"
        )

    def _journal(self, name: str) -> Journal:
        return Journal(self.dir / f"{name}.jsonl")

    def _prompt_records(self) -> dict[str, dict[str, Any]]:
        return self._journal("prompts").read()

    async def prompts(self) -> None:
        journal = self._journal("prompts")
        if not journal.read():
            records = self.ports.prompts(self.number, self.prompts_path)[: self.c.num_prompts]
            if not records:
                raise FailedPrecondition("the prompt source gave no prompts")
            journal.append(prompt_record(r) for r in records)
        self.record.counts.prompts = len(journal.read())

    async def sample(self) -> None:
        journal = self._journal("samples")
        done = journal.read()
        todo = [p for k, p in self._prompt_records().items() if k not in done]

        async def one(p: Mapping[str, Any]) -> None:
            reply = await self.ports.actor.generate(
                p["prompt"],
                n=self.c.samples_per_prompt,
                temperature=self.c.sample_temperature,
                top_p=self.c.sample_top_p,
                max_tokens=self.c.sample_max_tokens,
            )
            journal.append([sample_record(p["key"], reply)])

        await bounded(self.c.concurrency, todo, one)
        self.record.counts.samples = sum(len(s["responses"]) for s in journal.read().values())

    def _constraints(self, p: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        return [
            (i, {k: v for k, v in (kw or {}).items() if v is not None})
            for i, kw in zip(p["instruction_id_list"], p["kwargs"], strict=False)
        ]

    async def judge(self) -> None:
        journal = self._journal("judgments")
        done = journal.read()
        prompts = self._prompt_records()
        items = [
            (prompts[key], i, response)
            for key, s in self._journal("samples").read().items()
            for i, response in enumerate(s["responses"])
            if f"{key}#{i}" not in done
        ]

        async def one(item: tuple[Mapping[str, Any], int, str]) -> None:
            p, i, response = item
            reply = await self.ports.refiner.judge(
                p["prompt"],
                response,
                constraints=self._constraints(p),
                kind=self.c.judge,
                samples=self.c.judge_samples,
            )
            self._shadow(p, response, reply)
            journal.append(
                [
                    {
                        "key": f"{p['key']}#{i}",
                        "prompt_key": p["key"],
                        "index": i,
                        "prompt": p["prompt"],
                        "response": response,
                        "verdict": VERDICT.get(reply.verdict, "undecided"),
                        "value": reply.value,
                        "yes_votes": reply.yes_votes,
                        "no_votes": reply.no_votes,
                        "critique": reply.critique,
                    }
                ]
            )

        await bounded(self.c.concurrency, items, one)
        if self.ports.external is not None:
            await self.ports.external.drain()

    def _shadow(
        self, p: Mapping[str, Any], response: str, reply: refiner_pb2.JudgeResponse
    ) -> None:
        """Sends a sampled judgement to the outside judge too (in the background; it never
        holds the stage up or fails it) to count the agreement per criterion."""
        external = self.ports.external
        if external is None or self.c.judge == "external":
            return
        if not external.wants(p["prompt"], response):
            return
        registry = criteria.registry()
        constraints = [Constraint(i, kw) for i, kw in self._constraints(p)]
        try:
            descriptions = registry.validate(constraints, p["prompt"])
        except SparError as exc:  # the packs changed since the prompts were loaded
            log.warning("not shadowing %s: %s", p["key"], exc.message)
            return
        _, rubric = registry.split(constraints)
        requirements = [
            Requirement(c.instruction_id, d) for c, d in zip(constraints, descriptions, strict=True)
        ]
        decided = {r.instruction_id: r.strict_pass for r in reply.constraint_results}
        if reply.yes_votes != reply.no_votes:
            decided |= {c.instruction_id: reply.yes_votes > reply.no_votes for c in rubric}
        overall = {common_pb2.VERDICT_PASS: True, common_pb2.VERDICT_FAIL: False}.get(reply.verdict)
        external.compare_soon(p["prompt"], response, requirements, SelfDecisions(overall, decided))

    def _negatives(self) -> dict[str, Mapping[str, Any]]:
        by_prompt: dict[str, list[Mapping[str, Any]]] = {}
        for j in self._journal("judgments").read().values():
            by_prompt.setdefault(j["prompt_key"], []).append(j)
        out = {}
        for key, judged in by_prompt.items():
            negative = data.pick_negative(judged)
            if negative is not None:
                out[key] = negative
        return out

    async def search(self) -> None:
        journal = self._journal("searches")
        done = journal.read()
        prompts = self._prompt_records()
        negatives = self._negatives()
        self.record.counts.negatives = len(negatives)
        todo = [(prompts[k], n) for k, n in negatives.items() if k not in done]
        budget = search_budget(self.c)
        options = common_pb2.SearchOptions(
            strategy=common_pb2.SEARCH_STRATEGY_DFS
            if self.c.strategy == "dfs"
            else common_pb2.SEARCH_STRATEGY_BFS,
            judge_samples=self.c.judge_samples,
        )

        async def one(item: tuple[Mapping[str, Any], Mapping[str, Any]]) -> None:
            p, negative = item
            reply: refiner_pb2.RefineResponse = await self.ports.refiner.refine(
                p["prompt"],
                negative["response"],
                constraints=self._constraints(p),
                judge=self.c.judge,
                options=options,
                budget=budget,
            )
            journal.append(
                [
                    {
                        **search_record(p["key"], p["prompt"], negative["response"], reply),
                        "value": reply.value,
                        "edit_distance": reply.edit_distance,
                        "constraint_results": [
                            {
                                "instruction_id": c.instruction_id,
                                "strict": c.strict_pass,
                                "complaint": c.complaint,
                            }
                            for c in reply.constraint_results
                        ],
                        "cost": json_format.MessageToDict(
                            reply.cost, preserving_proto_field_name=True
                        ),
                    }
                ]
            )

        await bounded(self.c.concurrency, todo, one)
        searches = list(journal.read().values())
        self.record.counts.searches = len(searches)
        self.record.counts.refined = sum(s["outcome"] == "refined" for s in searches)
        outcomes: dict[str, int] = {}
        for s in searches:
            outcomes[s["outcome"]] = outcomes.get(s["outcome"], 0) + 1
        self.record.counts.search_outcomes = outcomes
        self.record.search_cost = search_cost(sum_costs(s["cost"] for s in searches))

    def _verifiable(
        self, registry: criteria.CriteriaRegistry, p: Mapping[str, Any]
    ) -> list[Constraint]:
        """The constraints whose verdict a program gives, when that is the whole verdict:
        a prompt with rubric criteria (or criteria no longer loaded) keeps the LLM's vote."""
        constraints = [Constraint(i, kw) for i, kw in self._constraints(p)]
        try:
            checkable, rubric = registry.split(constraints)
        except SparError:
            return []
        return [] if rubric else checkable

    async def build_data(self) -> None:
        searches = list(self._journal("searches").read().values())
        judgments = list(self._journal("judgments").read().values())
        registry = criteria.registry()
        constraints = {
            key: self._verifiable(registry, p) for key, p in self._prompt_records().items()
        }
        pairs, pc = data.dpo_pairs(searches, self.c.dpo_max_edit_distance)
        refine, rc = data.refinement_records(searches, self.templates)
        judge, jc = await asyncio.to_thread(
            data.judgment_records, judgments, self.templates, constraints, registry.check
        )
        sft = refine + judge
        write_json(self.dir / "dpo.json", pairs)
        write_json(self.dir / "sft.json", sft)
        c = self.record.counts
        c.dpo_pairs = pc.pairs
        c.dpo_pairs_dropped_rewrite = pc.rewrites
        c.dpo_pairs_dropped_no_gain = pc.no_gain
        c.dpo_pairs_dropped_echo = pc.echoes
        c.refine_records = rc.records
        c.refine_steps_failed_search = rc.steps_failed_search
        c.refine_steps_dropped = rc.steps_dropped
        c.judge_records = jc.records
        c.judge_agreed = jc.agreed
        c.judge_relabelled = jc.relabelled
        c.judge_verifier_only = jc.verifier
        c.judge_unchecked = jc.unchecked
        c.judge_capped = jc.capped
        c.sft_records = len(sft)

    async def train(self) -> None:
        state: dict[str, Any] = read_json(self.dir / "train.json", {})
        jobs = [
            ("actor", "dpo", "dpo.json", self.c.learning_rate_dpo),
            ("refiner", "sft", "sft.json", self.c.learning_rate_sft),
        ]
        for role, kind, file, lr in jobs:
            entry = state.get(role, {})
            if entry.get("version") or entry.get("skipped"):
                continue
            records = read_json(self.dir / file, [])
            if not records:
                state[role] = {"skipped": f"no {kind} data"}
                write_json(self.dir / "train.json", state)
                continue
            if not entry.get("job_id"):
                parent, _ = self.store.desired(role)
                dataset = await self.ports.trainer.upload_dataset(
                    kind, records, name=f"iteration-{self.number}-{role}"
                )
                job = await self.ports.trainer.submit_job(
                    kind,
                    dataset.dataset_digest,
                    role=role,
                    iteration=self.number,
                    parent=parent.name if parent else "",
                    idempotency_key=f"spar-iteration-{self.number}-{role}",
                    hyperparameters={
                        "epochs": self.c.epochs,
                        "lora_rank": self.c.lora_rank,
                        "lora_alpha": 2 * self.c.lora_rank,
                        "learning_rate": lr,
                        "max_length": self.c.max_length,
                    },
                )
                entry = {"job_id": job.id}
                state[role] = entry
                write_json(self.dir / "train.json", state)
                self._save(f"iteration {self.number}: {role} {kind} job {job.id} submitted")
            final = await self.ports.trainer.wait_job(entry["job_id"])
            if final.state != trainer_pb2.JOB_STATE_SUCCEEDED:
                # A failed job is retried by a resumed iteration with a fresh submission.
                state.pop(role, None)
                write_json(self.dir / "train.json", state)
                raise FailedPrecondition(
                    f"{role} {kind} job {final.id} ended {trainer_pb2.JobState.Name(final.state)}: "
                    f"{final.error}"
                )
            v = final.result
            entry["version"] = {
                "name": v.name, "digest": v.digest, "role": role, "iteration": self.number
            }  # fmt: skip
            write_json(self.dir / "train.json", state)
        for role, field in (("actor", "actor_candidate"), ("refiner", "refiner_candidate")):
            v = state.get(role, {}).get("version")
            if v:
                setattr(self.record, field, Version(**v))

    async def finish(self) -> None:
        if self.record.state == "running":
            self.record.state = "succeeded"
