"""Approval mode and the audit trail of the coordinator, over scripted replicas.

An iteration is set up as it stands after training (candidates named, evaluation saved),
then resumed: the loop's own evaluate and rollout stages run against fake replicas.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.coordinator.controller import Coordinator
from services.coordinator.iteration_record import IterationRecord
from services.coordinator.journal import write_json
from services.coordinator.metrics import CoordinatorMetrics
from services.coordinator.rollout import Hosted, Version
from spar.config import CoordinatorSettings, DiscoverySettings, Settings
from spar.errors import FailedPrecondition, InvalidArgument, NotFound
from spar.metrics import Metrics
from spar.v1 import coordinator_pb2 as pb

ACTOR = Version("actor-1-aaaaaaaaaaaa", "a" * 64, "actor", 1)
REFINER = Version("refiner-1-bbbbbbbbbbbb", "b" * 64, "refiner", 1)


class FakeReplica:
    def __init__(self, target: str) -> None:
        self.target = target
        self.loaded: set[str] = set()
        self.active = ""

    async def stage(self, version: Version, store_target: str) -> bool:
        new = version.name not in self.loaded
        self.loaded.add(version.name)
        return new

    async def activate(self, name: str) -> None:
        self.active = "" if name == "base" else name

    async def retire(self, name: str) -> None:
        self.loaded.discard(name)

    async def hosted(self) -> Hosted:
        return Hosted(frozenset(self.loaded), self.active)

    async def close(self) -> None:
        pass


def metrics(strict: float) -> dict[str, Any]:
    return {"prompt_level_strict": strict, "prompt_level_loose": strict, "prompts": 10}


def make(tmp_path: Path, *, approval: bool) -> tuple[Coordinator, dict[str, list[FakeReplica]]]:
    settings = Settings(
        cache_dir=tmp_path,
        coordinator=CoordinatorSettings(
            state_dir=str(tmp_path / "state"),
            require_approval=approval,
            actor=DiscoverySettings(targets=["a1:1", "a2:1"]),
            refiner=DiscoverySettings(targets=["r1:1"]),
            reconcile_interval_s=0,
        ),
    )
    registry = Metrics("coordinator")
    c = Coordinator(settings, CoordinatorMetrics(registry))
    c.metrics_registry = registry.registry  # type: ignore[attr-defined]
    fakes = {
        "actor": [FakeReplica("a1"), FakeReplica("a2")],
        "refiner": [FakeReplica("r1")],
    }

    async def replicas(role: str) -> list[Any]:
        return list(fakes[role])

    c.replicas = replicas  # type: ignore[method-assign]
    return c, fakes


def trained(c: Coordinator, number: int = 1, *, candidate: float = 0.6) -> None:
    """An iteration that finished training, with its evaluation on disk."""
    it = IterationRecord(
        number=number,
        state="running",
        stage="evaluate",
        actor_candidate=ACTOR,
        refiner_candidate=REFINER,
    )
    c.store.save_iteration(it)
    write_json(
        c.store.iteration_dir(number) / "eval.json",
        {"baseline": metrics(0.5), "candidate": metrics(candidate)},
    )


async def run(c: Coordinator) -> IterationRecord:
    assert c._task is not None
    await c._task
    it = c.current()
    assert it is not None
    return it


async def first_stop(
    tmp_path: Path, *, approval: bool, candidate: float = 0.6
) -> tuple[Coordinator, dict[str, list[FakeReplica]], IterationRecord]:
    """A coordinator resumed on a trained iteration (candidate: its strict score against
    the baseline's 0.5), and the iteration where the loop stopped: rolled out, rejected
    or awaiting approval."""
    c, fakes = make(tmp_path, approval=approval)
    trained(c, candidate=candidate)
    c.start()
    return c, fakes, await run(c)


def sample(c: Coordinator, name: str, **labels: str) -> float:
    """A sample of the coordinator's registry, as Prometheus would scrape it."""
    value = c.metrics_registry.get_sample_value(name, {"service": "coordinator", **labels})
    return float(value or 0.0)


async def test_without_approval_mode_the_candidate_rolls_out_and_is_audited(
    tmp_path: Path,
) -> None:
    c, fakes, it = await first_stop(tmp_path, approval=False)
    assert it.state == "succeeded" and it.decided_by == "policy"
    assert all(r.active == ACTOR.name for r in fakes["actor"])
    records = c.audit.records()
    assert [(r["action"], r["role"]) for r in records] == [
        ("rollout", "actor"),
        ("rollout", "refiner"),
    ]
    actor = records[0]
    assert actor["decided_by"] == "policy" and actor["decision"] == "promote"
    assert actor["iteration"] == 1 and actor["version"]["digest"] == "a" * 64
    assert actor["previous"] is None, "the base model served before"
    assert actor["replicas"] == ["a1", "a2"] and actor["result"] == "ok"
    assert actor["evidence"]["candidate"]["prompt_level_strict"] == 0.6
    assert "improves prompt_level_strict" in actor["reason"]
    await c.close()


async def test_a_policy_rejection_is_audited_and_nothing_rolls_out(tmp_path: Path) -> None:
    c, fakes, it = await first_stop(tmp_path, approval=True, candidate=0.3)
    assert it.state == "rejected", "a worse candidate never waits"
    assert all(r.active == "" for r in fakes["actor"])
    records = c.audit.records()
    assert {(r["action"], r["decided_by"]) for r in records} == {("reject", "policy")}
    await c.close()


async def test_approval_mode_waits_then_promote_rolls_out(tmp_path: Path) -> None:
    c, fakes, it = await first_stop(tmp_path, approval=True)
    assert it.state == "awaiting_approval"
    assert all(r.active == "" for r in fakes["actor"]), "nothing switched while waiting"
    assert sample(c, "spar_iteration_awaiting_approval") == 1
    state = await c.state()
    assert state.approval_required and state.awaiting_approval == 1
    with pytest.raises(FailedPrecondition, match="spar promote 1"):
        c.start()
    assert [r["action"] for r in c.audit.records()] == ["await_approval"] * 2

    c.decide(1, "promote", "operator:alice (ipv4:10.0.0.9:1)", "checked the samples")
    it = await run(c)
    assert it.state == "succeeded"
    assert it.decided_by.startswith("operator:alice")
    assert "approved by operator:alice" in it.decision and "checked the samples" in it.decision
    assert all(r.active == ACTOR.name for r in fakes["actor"])
    assert fakes["refiner"][0].active == REFINER.name
    rollouts = [r for r in c.audit.records() if r["action"] == "rollout"]
    assert {r["role"] for r in rollouts} == {"actor", "refiner"}
    assert all(r["decided_by"].startswith("operator:alice") for r in rollouts)
    assert sample(c, "spar_iteration_awaiting_approval") == 0
    assert sample(c, "spar_audit_records_total", action="rollout", result="ok") == 2
    assert (await c.state()).awaiting_approval == 0
    assert c.audit.verify() == (True, "")
    await c.close()


async def test_reject_drops_the_candidate(tmp_path: Path) -> None:
    c, fakes = make(tmp_path, approval=True)
    trained(c)
    for r in fakes["actor"]:
        r.loaded.add(ACTOR.name)  # staged for evaluation
    c.start()
    await run(c)
    c.decide(1, "reject", "operator:bob", "answers got terse")
    it = await run(c)
    assert it.state == "rejected"
    assert "rejected by operator:bob: answers got terse" in it.decision
    assert all(ACTOR.name not in r.loaded and r.active == "" for r in fakes["actor"])
    rejects = [r for r in c.audit.records() if r["action"] == "reject"]
    assert {r["role"] for r in rejects} == {"actor", "refiner"}
    assert all(r["decided_by"] == "operator:bob" for r in rejects)
    # The next iteration may start now.
    with pytest.raises(FailedPrecondition, match="does not await approval"):
        c.decide(1, "promote", "operator:bob", "")
    await c.close()


async def test_a_decision_needs_an_iteration_that_waits(tmp_path: Path) -> None:
    c, _ = make(tmp_path, approval=True)
    with pytest.raises(NotFound):
        c.decide(3, "promote", "operator:x", "")
    with pytest.raises(InvalidArgument):
        c.decide(1, "ship-it", "operator:x", "")
    await c.close()


async def test_a_restarted_coordinator_still_waits(tmp_path: Path) -> None:
    c, _, _ = await first_stop(tmp_path, approval=True)
    await c.close()
    again, _ = make(tmp_path, approval=True)
    again.resume_unfinished()
    assert again._task is None, "a waiting iteration is not resumed by itself"
    assert sample(again, "spar_iteration_awaiting_approval") == 1
    again.decide(1, "promote", "operator:carol", "")
    assert (await run(again)).state == "succeeded"
    await again.close()


async def test_rollbacks_are_audited_with_who_and_replicas(tmp_path: Path) -> None:
    c, _, _ = await first_stop(tmp_path, approval=False)
    version, n = await c.rollback("actor", "base", "operator:dave (ipv4:1.2.3.4:5)", "incident")
    assert version.name == "base" and n == 2
    record = c.audit.records(role="actor")[-1]
    assert record["action"] == "rollback" and record["decided_by"].startswith("operator:dave")
    assert record["previous"]["name"] == ACTOR.name and record["version"]["name"] == "base"
    assert record["replicas"] == ["a1", "a2"] and record["reason"] == "incident"
    with pytest.raises(FailedPrecondition):
        await c.rollback("refiner", "", "operator:dave", "")  # no previous refiner version
    await c.close()


async def test_audit_records_reach_the_rpc_and_the_cli(tmp_path: Path) -> None:
    from services.coordinator.service import audit_message
    from spar_cli.commands.coordinator import audit_lines

    c, _, _ = await first_stop(tmp_path, approval=False)
    records, intact, error = c.audit_records(role="actor")
    assert intact and error == ""
    reply = pb.ListAuditResponse(records=[audit_message(r) for r in records], chain_intact=intact)
    (msg,) = reply.records
    assert msg.sequence == 1 and msg.action == "rollout" and msg.iteration == 1
    assert msg.version.name == ACTOR.name and msg.version.digest == "a" * 64
    assert msg.candidate_eval.prompt_level_strict == pytest.approx(0.6)
    assert msg.time.seconds > 0 and list(msg.replicas) == ["a1", "a2"]
    text = "\n".join(audit_lines(reply))
    assert f"rollout actor {ACTOR.name}" in text and "decided by policy" in text
    assert "0.500 → 0.600" in text
    broken = pb.ListAuditResponse(chain_intact=False, chain_error="line 2: edited")
    assert "hash chain is broken: line 2: edited" in "\n".join(audit_lines(broken))
    with pytest.raises(InvalidArgument):
        c.audit_records(role="trainer")
    await c.close()


def test_the_iteration_summary_shows_pass_rate_per_criterion() -> None:
    from spar_cli.commands.coordinator import summary

    it = pb.Iteration(number=2, state=pb.ITERATION_STATE_AWAITING_APPROVAL)
    it.baseline_eval.CopyFrom(
        pb.EvalMetrics(prompts=4, criteria=[pb.CriterionScore(id="support/greeting", strict=0.25)])
    )
    it.candidate_eval.CopyFrom(
        pb.EvalMetrics(
            prompts=4,
            criteria=[
                pb.CriterionScore(id="support/greeting", count=4, strict=0.75),
                pb.CriterionScore(id="punctuation:no_comma", count=2, strict=1.0),
            ],
        )
    )
    text = summary(it)
    assert "support/greeting           0.250 → 0.750  (4 prompts)" in text
    assert "punctuation:no_comma" not in text.split("per criterion")[1]
    assert "`spar promote 2` rolls the candidate out" in text
