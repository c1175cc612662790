"""The last stages of an iteration: ``evaluate`` the actor candidate against the active
version on the held-out prompts and decide by the promotion policy; ``rollout`` the
candidates (after an operator's decision in approval mode) or retire them. Every decision
goes to the audit log once, also when a resumed iteration runs the stage again.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from services.coordinator.audit import POLICY, AuditEntry, AuditLog
from services.coordinator.iteration_messages import eval_evidence, eval_metrics
from services.coordinator.iteration_record import IterationRecord
from services.coordinator.journal import Journal, read_json, write_json
from services.coordinator.promotion import PromotionPolicy, decide
from services.coordinator.rollout import RolloutFailed, Version, rollout, stage_all
from services.coordinator.state import StateStore
from spar.config import CoordinatorSettings
from spar.v1 import coordinator_pb2

if TYPE_CHECKING:
    from services.coordinator.loop import Ports

APPROVAL_FILE = "approval.json"
"""An operator's decision on a candidate that awaits approval (written by the controller)."""


class AwaitingApproval(Exception):
    """The iteration stops at its rollout until an operator promotes or rejects it."""


class Release:
    """Evaluation, decision and rollout of one iteration's candidates (its ``record``)."""

    def __init__(
        self,
        record: IterationRecord,
        c: CoordinatorSettings,
        store: StateStore,
        ports: Ports,
        audit: AuditLog,
    ) -> None:
        self.record = record
        self.number = record.number
        self.c = c
        self.store = store
        self.ports = ports
        self.audit = audit
        self.dir = store.iteration_dir(record.number)

    async def evaluate(self) -> None:
        it = self.record
        if it.actor_candidate is None:
            it.decision = "no actor candidate this iteration (no DPO pairs)"
            it.decided_by = POLICY
            return
        saved = read_json(self.dir / "eval.json")
        if saved is None:
            candidate = Version(it.actor_candidate.name, it.actor_candidate.digest, "actor")
            replicas = await self.ports.replicas("actor")
            await stage_all(replicas, candidate, self.c.store_address())
            active, _ = self.store.desired("actor")
            records = self.ports.eval_prompts()
            baseline = await self.ports.evaluate(records, active.name if active else "base")
            cand = await self.ports.evaluate(records, candidate.name)
            saved = {
                "baseline": json_format.MessageToDict(baseline, preserving_proto_field_name=True),
                "candidate": json_format.MessageToDict(cand, preserving_proto_field_name=True),
            }
            write_json(self.dir / "eval.json", saved)
        baseline_eval = eval_metrics(
            json_format.ParseDict(saved["baseline"], coordinator_pb2.EvalMetrics())
        )
        candidate_eval = eval_metrics(
            json_format.ParseDict(saved["candidate"], coordinator_pb2.EvalMetrics())
        )
        it.baseline_eval, it.candidate_eval = baseline_eval, candidate_eval
        decision = decide(
            baseline_eval,
            candidate_eval,
            PromotionPolicy(self.c.promote_metric, self.c.promote_margin),
        )
        it.decision = decision.reason
        it.decided_by = POLICY
        if not decision.promote:
            it.state = "rejected"

    def _candidates(self) -> list[tuple[str, Version]]:
        it = self.record
        return [
            (role, Version(c.name, c.digest, role, self.number))
            for role, c in (("actor", it.actor_candidate), ("refiner", it.refiner_candidate))
            if c is not None
        ]

    def _evidence(self) -> dict[str, Any]:
        it = self.record
        out = {}
        for key, metrics in (("baseline", it.baseline_eval), ("candidate", it.candidate_eval)):
            if metrics is not None:
                out[key] = eval_evidence(metrics)
        return out

    def _record(self, key: str, entry: AuditEntry) -> None:
        """Appends entry to the audit log once per iteration and key (a resumed rollout
        stage does not repeat the decisions it recorded)."""
        journal = Journal(self.dir / "audit.jsonl")
        if key in journal.read():
            return
        self.audit.append(entry)
        journal.append([{"key": key}])

    def _entry(self, action: str, role: str, version: Version, **fields: Any) -> AuditEntry:
        active, _ = self.store.desired(role)
        return AuditEntry(
            action=action,
            role=role,
            iteration=self.number,
            version=asdict(version),
            previous=asdict(active) if active else None,
            evidence=self._evidence(),
            reason=self.record.decision,
            decided_by=self.record.decided_by or POLICY,
            **fields,
        )

    def _apply_approval(self) -> bool:
        """Takes an operator's decision into the record; False while none was made."""
        it = self.record
        approval = read_json(self.dir / APPROVAL_FILE)
        if approval is None:
            return False
        it.decided_by = approval["decided_by"]
        verb = "approved" if approval["decision"] == "promote" else "rejected"
        note = f"{verb} by {approval['decided_by']}"
        if approval.get("reason"):
            note += f": {approval['reason']}"
        if note not in it.decision:
            it.decision = f"{it.decision}; {note}" if it.decision else note
        if approval["decision"] == "reject":
            it.state = "rejected"
        return True

    async def rollout(self) -> None:
        it = self.record
        candidates = self._candidates()
        if it.state != "rejected" and candidates:
            decided = self._apply_approval()
            if not decided and self.c.require_approval:
                for role, version in candidates:
                    self._record(
                        f"await:{role}",
                        self._entry("await_approval", role, version, decision="await"),
                    )
                raise AwaitingApproval
        if it.state == "rejected":
            replicas = await self.ports.replicas("actor")
            if it.actor_candidate is not None:
                name = it.actor_candidate.name
                await asyncio.gather(*(r.retire(name) for r in replicas), return_exceptions=True)
            for role, version in candidates:
                self._record(
                    f"reject:{role}", self._entry("reject", role, version, decision="reject")
                )
            return
        for role, version in candidates:
            replicas = await self.ports.replicas(role)
            entry = self._entry(
                "rollout", role, version, decision="promote", replicas=[r.target for r in replicas]
            )
            try:
                await rollout(self.store, role, version, replicas, self.c.store_address())
            except RolloutFailed as exc:
                self.audit.append(replace(entry, result="failed", error=str(exc)))
                raise
            self._record(f"rollout:{role}", entry)
