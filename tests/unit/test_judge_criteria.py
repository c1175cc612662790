"""Criteria packs in the judge: rubrics reach the LLM's prompt and decide beside the
verifier; the external judge kind; the observer that shadows judgements (scripted engine)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from services.refiner.cost import Budget, Meter
from services.refiner.judge import Judge, JudgeConfig, JudgeKind, Judgement, OutsideFn
from spar.criteria import CriteriaRegistry
from spar.errors import FailedPrecondition, InvalidArgument, Unavailable
from spar.external_judge import ExternalVerdict, Requirement
from spar.ifeval import Constraint
from tests.unit.refiner_script import PROMPTS, Script, no, yes

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "criteria" / "support.yaml"
GOOD = (
    "Hello Sam,\n\nThank you for writing about case 48213. A replacement ships today and "
    "arrives before Friday.\n\nBest regards, the support team"
)


@pytest.fixture
def registry(tmp_path: Path) -> CriteriaRegistry:
    (tmp_path / "support.yaml").write_text(EXAMPLE.read_text())
    reg = CriteriaRegistry(tmp_path)
    reg.load()
    return reg


def make(
    registry: CriteriaRegistry,
    script: Script,
    kind: JudgeKind = "hybrid",
    refs: Sequence[str] = ("support",),
    outside: OutsideFn | None = None,
    seen: list[tuple[str, Judgement]] | None = None,
    **config: object,
) -> Judge:
    """A judge as the refiner builds one: checkable criteria to the program, rubric texts
    to the LLM."""
    checkable, rubric = registry.split(registry.expand(refs))
    return Judge(
        kind,
        "Customer email, case 48213: my screen is cracked.",
        checkable,
        prompts=PROMPTS,
        config=JudgeConfig(**config),  # type: ignore[arg-type]
        generate=Meter(script, Budget.unlimited()).for_phase("judge"),
        check=registry.check,
        rubrics=registry.rubrics(rubric),
        outside=outside,
        observe=(lambda r, j: seen.append((r, j))) if seen is not None else None,
    )


async def test_rubrics_reach_the_llm_prompt_and_its_vote_decides(
    registry: CriteriaRegistry,
) -> None:
    script = Script(judge={GOOD: [no("it apologises for the courier")]})
    j = await make(registry, script, samples=3).judge(GOOD)
    # Every checkable criterion passed by program; the rubric vote is still drawn and decides.
    assert all(c.strict for c in j.constraints) and len(j.constraints) == 8
    assert j.voted and j.verdict == "fail" and not j.passes(0.5) and not j.hard_fail
    prompt = PROMPTS.judge_messages(
        "i", GOOD, [c.description for c in j.constraints], registry.rubrics(
            registry.expand(["support/polite_no_apology"]))
    )[0].content  # fmt: skip
    assert "does not apologise for things that are not the company's fault" in prompt
    assert "Start with a greeting" in prompt  # told what the program checked
    script = Script(judge={GOOD: [yes()]})
    assert (await make(registry, script, samples=3).judge(GOOD)).passes(0.5)


async def test_a_failed_checkable_criterion_fails_without_a_vote(
    registry: CriteriaRegistry,
) -> None:
    script = Script(judge={"Obviously you should have read it.": [yes()]})
    j = await make(registry, script, samples=3).judge("Obviously you should have read it.")
    assert j.hard_fail and not j.voted and script.calls == []
    assert "not met: Never blame the customer." in j.critique
    assert "not met: Start with a greeting (Hello, Hi or Dear)." in j.critique


async def test_only_checkable_criteria_need_no_llm(registry: CriteriaRegistry) -> None:
    script = Script(judge={GOOD: [no()]})
    j = await make(registry, script, refs=["support/greeting", "support/short"]).judge(GOOD)
    assert j.verdict == "pass" and not j.voted and script.calls == []


def test_the_verifier_refuses_rubrics(registry: CriteriaRegistry) -> None:
    with pytest.raises(InvalidArgument, match="cannot decide rubric criteria"):
        make(registry, Script(), "verifier")


async def test_external_kind_asks_the_outside_model_about_the_rubrics(
    registry: CriteriaRegistry,
) -> None:
    asked: list[list[Requirement]] = []

    async def outside(
        instruction: str, response: str, reqs: Sequence[Requirement]
    ) -> ExternalVerdict:
        asked.append(list(reqs))
        return ExternalVerdict(True, {"rubric-1": True, "rubric-2": False})

    script = Script()
    j = await make(registry, script, "external", outside=outside).judge(GOOD)
    assert script.calls == [], "the refiner's own LLM is not asked"
    assert [r.text for r in asked[0]][1].startswith("Tells the customer exactly")
    assert j.verdict == "fail" and j.voted and (j.vote.yes, j.vote.no) == (0, 1)
    assert "not met: Tells the customer exactly what happens next" in j.critique
    # The program still decides the checkable criteria first.
    j = await make(registry, script, "external", outside=outside).judge("Obviously.")
    assert j.hard_fail and len(asked) == 1


async def test_external_kind_needs_the_outside_judge_and_says_when_it_is_down(
    registry: CriteriaRegistry,
) -> None:
    with pytest.raises(FailedPrecondition, match="SPAR_EXTERNAL_JUDGE__URL"):
        make(registry, Script(), "external")

    async def down(instruction: str, response: str, reqs: Sequence[Requirement]) -> ExternalVerdict:
        raise Unavailable("connection refused")

    with pytest.raises(Unavailable, match="external judge could not judge: connection refused"):
        await make(registry, Script(), "external", outside=down).judge(GOOD)


async def test_every_judgement_reaches_the_observer(registry: CriteriaRegistry) -> None:
    seen: list[tuple[str, Judgement]] = []
    script = Script(judge={GOOD: [yes()]})
    judge = make(registry, script, seen=seen, samples=1)
    await judge.judge(GOOD)
    await judge.judge("Obviously.")
    assert [r for r, _ in seen] == [GOOD, "Obviously."]
    assert seen[0][1].verdict == "pass" and seen[1][1].verdict == "fail"


def test_constraint_ids_are_the_criteria(registry: CriteriaRegistry) -> None:
    checkable, rubric = registry.split(registry.expand(["support"]))
    assert checkable[0] == Constraint("support/greeting", {})
    assert [c.instruction_id for c in rubric] == ["support/polite_no_apology", "support/next_step"]
