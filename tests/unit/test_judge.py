"""Judge parsing, majority vote, tie policy, verifier and hybrid judges (scripted engine)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from services.refiner.cost import Budget, Meter
from services.refiner.judge import Judge, JudgeConfig, JudgeKind, JudgeSample, count_votes
from spar.errors import InvalidArgument
from spar.ifeval import Constraint, ConstraintCheck
from spar.refine_templates import Prompts, parse_judgement, parse_refinement
from tests.unit.refiner_script import PROMPTS, Script, no, yes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The response is fine.\nFinal Judgement: Yes", True),
        ("It misses the title.\nFinal Judgement: No", False),
        ("**Final Judgment:** yes.", True),
        ("final judgement - [No]", False),
        ("Final Judgement: Yes ... wait. Final Judgement: No", False),
        ("Some critique.\n\nNo.", False),
        ("YES", True),
        ("The answer is yes, probably", None),
        ("Final Judgement: maybe", None),
        ("", None),
        ("Final Judgement: Yesterday it rained", None),
    ],
)
def test_parse_judgement(text: str, expected: bool | None) -> None:
    assert parse_judgement(text) is expected


def test_parse_refinement() -> None:
    r = parse_refinement("Add a title.\nFinal Refined Output: [[start]] <<T>> body ", "stop")
    assert r is not None and r.response == "<<T>> body" and r.reflection == "Add a title."
    r = parse_refinement("Final Refined Output: [[ START ]]x[[end]] trailing", "stop")
    assert r is not None and r.response == "x"
    r = parse_refinement("reflect. Final Refined Output: just text", "stop")
    assert r is not None and r.response == "just text"
    assert parse_refinement("[[start]] cut off mid", "length") is None
    r = parse_refinement("  just a new response  ", "stop")
    assert r is not None and (r.reflection, r.response) == ("", "just a new response")
    assert parse_refinement("no markers, cut off by max_tokens", "length") is None
    assert parse_refinement("  \n ", "stop") is None
    assert parse_refinement("Final Refined Output: [[start]]   ", "stop") is None


def test_templates_are_validated() -> None:
    with pytest.raises(InvalidArgument, match="judge template"):
        Prompts(judge="no fields here")
    with pytest.raises(InvalidArgument, match="refine template"):
        Prompts(refine="uses {critique}")
    msgs = PROMPTS.refine_messages("i", "r", "crit")
    assert [m.role for m in msgs] == ["user", "assistant", "user"]
    assert msgs[1].content == "crit"


def test_vote_counts() -> None:
    v = count_votes([JudgeSample("", True), JudgeSample("", False), JudgeSample("", None)])
    assert (v.yes, v.no, v.unparseable, v.verdict, v.value) == (1, 1, 1, "undecided", 0.5)
    assert count_votes([JudgeSample("", None)]).value == 0.0


def make_judge(
    script: Script,
    kind: JudgeKind = "llm",
    constraints: Sequence[Constraint] = (),
    checks: Sequence[ConstraintCheck] = (),
    **config: object,
) -> tuple[Judge, Meter]:
    meter = Meter(script, Budget.unlimited())
    judge = Judge(
        kind,
        "inst",
        constraints,
        prompts=PROMPTS,
        config=JudgeConfig(**config),  # type: ignore[arg-type]
        generate=meter.for_phase("judge"),
        check=lambda _i, _r, _c: list(checks),
    )
    return judge, meter


async def test_majority_vote_one_request_with_k_samples() -> None:
    script = Script(judge={"r": [yes("good"), no("bad one"), yes("good 2"), "garbage", no()]})
    judge, meter = make_judge(script, samples=5)
    j = await judge.judge("r")
    # The first request (n=5) gives 2 Yes, 2 No, 1 unreadable: a tie. The resample
    # policy draws 2 more ("r" cycles: yes, no): still tied; then 2 more (yes,
    # garbage): 4 Yes vs 3 No.
    assert [c.n for c in script.calls] == [5, 2, 2]
    assert (j.vote.yes, j.vote.no, j.vote.unparseable) == (4, 3, 2)
    assert j.verdict == "pass"
    assert j.value == pytest.approx(4 / 7)
    assert j.critique.startswith("good")
    assert meter.cost.judge_samples == 9
    assert j.vote.unparseable == 2


async def test_tie_undecided_policy_does_not_resample() -> None:
    script = Script(judge={"r": [yes(), no()]})
    judge, _ = make_judge(script, samples=2, tie_policy="undecided")
    j = await judge.judge("r")
    assert j.verdict == "undecided" and j.value == 0.5 and len(script.calls) == 1


async def test_tie_resample_is_bounded() -> None:
    script = Script(judge={"r": ["unreadable"]})
    judge, meter = make_judge(script, samples=3, tie_resample_rounds=2, tie_resample_samples=2)
    j = await judge.judge("r")
    assert j.verdict == "undecided" and j.value == 0.0
    assert j.vote.unparseable == 7 and meter.cost.judge_samples == 7
    assert len(script.calls) == 3


async def test_fail_critique_is_from_the_no_side() -> None:
    script = Script(judge={"r": [no("lacks a title"), yes(), no("too long")]})
    judge, _ = make_judge(script, samples=3)
    j = await judge.judge("r")
    assert j.verdict == "fail" and j.critique.startswith("lacks a title")
    assert j.value == pytest.approx(1 / 3)


FAILED = ConstraintCheck("punctuation:no_comma", False, False, "Do not use commas.")
PASSED = ConstraintCheck("length_constraints:number_words", True, True, "Less than 50 words.")


async def test_hybrid_fails_a_failed_constraint_without_asking_the_llm() -> None:
    script = Script(judge={"r": [yes()]})
    constraints = [Constraint("punctuation:no_comma"), Constraint("x")]
    judge, meter = make_judge(script, "hybrid", constraints, [FAILED, PASSED], samples=3)
    j = await judge.judge("r, with a comma")
    # Verifier first: a failed check decides; votes could not change that, so none are drawn.
    assert script.calls == [] and not j.voted and meter.cost.judge_samples == 0
    assert j.verdict == "fail" and j.hard_fail and not j.passes(0.0)
    assert j.value == pytest.approx(0.5)  # share of constraints met
    # The critique is the verifier's exact complaint, measured on the response.
    assert j.critique == "- 1 comma; none allowed"


async def test_hybrid_votes_always_keeps_the_old_behaviour_for_comparison() -> None:
    script = Script(judge={"r": [yes()]})
    judge, _ = make_judge(
        script, "hybrid", [Constraint("punctuation:no_comma"), Constraint("x")], [FAILED, PASSED],
        samples=3, votes="always",
    )  # fmt: skip
    j = await judge.judge("r")
    assert j.voted and j.vote.yes == 3
    assert j.verdict == "fail" and j.hard_fail and j.value == pytest.approx(0.5)


async def test_hybrid_full_verifier_pass_is_a_pass_whatever_the_llm_would_say() -> None:
    script = Script(judge={"r": [no("I dislike it")]})
    judge, meter = make_judge(script, "hybrid", [Constraint("x")], [PASSED], samples=3)
    j = await judge.judge("r")
    assert j.verdict == "pass" and j.passes(0.5) and not j.voted
    assert script.calls == [] and meter.cost.judge_samples == 0


async def test_hybrid_llm_veto_is_a_setting_and_judges_only_the_rest() -> None:
    script = Script(judge={"r": [no("the tone is rude")]})
    judge, _ = make_judge(script, "hybrid", [Constraint("x")], [PASSED], samples=3, llm_veto=True)
    j = await judge.judge("r")
    assert j.voted and j.verdict == "fail" and not j.passes(0.5) and not j.hard_fail
    # The judge prompt says which requirement the program checked, so the LLM skips it.
    prompt = PROMPTS.judge_messages("inst", "r", ["Less than 50 words."])[0].content
    assert "already checked" in prompt and "Less than 50 words." in prompt
    script = Script(judge={"r": [yes()]})
    judge, _ = make_judge(script, "hybrid", [Constraint("x")], [PASSED], samples=3, llm_veto=True)
    j = await judge.judge("r")
    assert j.verdict == "pass" and j.value == 1.0 and j.passes(0.5)


async def test_guardrails_fail_the_gate_in_every_judge_kind() -> None:
    looping = "The sea is big and blue.\n" * 4
    for kind, constraints, checks in (
        ("llm", [], []),
        ("hybrid", [Constraint("x")], [PASSED]),
        ("verifier", [Constraint("x")], [PASSED]),
    ):
        script = Script(judge={looping: [yes()]})
        judge, _ = make_judge(script, kind, constraints, checks, samples=3)  # type: ignore[arg-type]
        j = await judge.judge(looping)
        assert j.hard_fail and not j.passes(0.0), kind
        assert [g.rule for g in j.guardrails] == ["repetition"]
        assert "repeats itself" in j.critique
        assert script.calls == []  # no vote can rescue it
    script = Script(judge={looping: [yes()]})
    judge, _ = make_judge(script, "llm", samples=3, guardrails=False)
    assert (await judge.judge(looping)).passes(0.5)


async def test_verifier_needs_no_engine_and_needs_constraints() -> None:
    script = Script()
    judge, _ = make_judge(script, "verifier", [Constraint("x"), Constraint("y")], [FAILED, PASSED])
    j = await judge.judge("r")
    assert script.calls == []
    assert j.verdict == "fail" and j.value == 0.5 and j.hard_fail
    with pytest.raises(InvalidArgument, match="at least one verifiable constraint"):
        make_judge(script, "verifier")


async def test_llm_judge_ignores_constraints() -> None:
    script = Script(judge={"r": [yes()]})
    judge, _ = make_judge(script, "llm", [Constraint("x")], [FAILED], samples=1)
    j = await judge.judge("r")
    assert j.verdict == "pass" and j.constraints == ()
