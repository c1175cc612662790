from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.coordinator.data import (
    dpo_pairs,
    judgment_records,
    pick_negative,
    refinement_records,
)
from spar.ifeval import Constraint, ConstraintCheck
from spar.refine_templates import Prompts, parse_judgement, parse_refinement

PROMPT = "Write about the sea. In your entire response, refrain from the use of any commas."
NO_COMMA = Constraint("punctuation:no_comma", {})


def check(
    instruction: str, response: str, constraints: Sequence[Constraint]
) -> list[ConstraintCheck]:
    """A scripted verifier: only the no-comma check, measured like IFEval's."""
    return [
        ConstraintCheck(c.instruction_id, "," not in response, "," not in response)
        for c in constraints
    ]


def test_pick_negative_takes_the_worst_failing_sample() -> None:
    judged = [
        {"index": 0, "verdict": "pass", "value": 1.0},
        {"index": 1, "verdict": "fail", "value": 0.4},
        {"index": 2, "verdict": "undecided", "value": 0.5},
        {"index": 3, "verdict": "fail", "value": 0.2},
    ]
    assert pick_negative(judged)["index"] == 3  # type: ignore[index]
    assert pick_negative([{"index": 0, "verdict": "undecided", "value": 0.5}]) is None


def node(
    response: str, met: int, *, critique: str = "", value: float = 0.0, **kw: Any
) -> dict[str, Any]:
    return {
        "response": response, "reflection": kw.get("reflection", ""), "critique": critique,
        "value": value, "constraints_met": met, "constraints_checked": kw.get("checked", 1),
        "hard_fail": kw.get("hard_fail", met < kw.get("checked", 1)),
        "guardrails": kw.get("guardrails", []), "edit_distance": 0.0,
    }  # fmt: skip


ROOT, REPAIR = "The sea is wide, deep and blue.", "The sea is wide deep and blue."


def search(
    outcome: str, root: str = ROOT, best: str = REPAIR,
    *, best_met: int = 1, trace: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    if trace is None:
        trace = [
            node(root, 0, critique="- 1 comma; none allowed"),
            node(best, best_met, critique="Every checked requirement is met."),
        ]
    return {"key": "1", "prompt": PROMPT, "root": root, "best_response": best,
            "outcome": outcome, "trace": trace}  # fmt: skip


def test_dpo_pairs_only_from_refined_searches_that_meet_more_constraints() -> None:
    pairs, counts = dpo_pairs(
        [
            search("refined"),
            search("exhausted"),
            search("refined", best="The sea is wide, deep and blue."),  # same as the root
            # passed the gate (e.g. an LLM-decided pass) but meets no more than the root
            search("refined", best="The sea is wide, deep and very blue.", best_met=0),
        ]
    )
    assert pairs == [
        {"prompt": PROMPT, "chosen": "The sea is wide deep and blue.",
         "rejected": "The sea is wide, deep and blue."}
    ]  # fmt: skip
    assert (counts.pairs, counts.no_gain, counts.rewrites) == (1, 1, 0)


def test_dpo_pairs_need_the_constraint_counts_in_the_record() -> None:
    """A search record without node constraint counts (kept before issue 17) cannot show
    a gain, so it gives no pair."""
    old = search("refined")
    old["trace"] = [{"response": old["root"], "critique": "c", "value": 0.0},
                    {"response": old["best_response"], "critique": "", "value": 1.0}]  # fmt: skip
    pairs, counts = dpo_pairs([old])
    assert pairs == [] and counts.no_gain == 1


def test_dpo_pairs_drop_rewrites_but_keep_repairs() -> None:
    root = "The sea is wide, deep, and blue under the summer sky."
    repair = "The sea is wide deep and blue under the summer sky."
    rewrite = "Oceans cover most of our planet and hold countless creatures."
    pairs, counts = dpo_pairs(
        [search("refined", root, repair), search("refined", root, rewrite)], 0.6
    )
    assert [p["chosen"] for p in pairs] == [repair] and counts.rewrites == 1


def test_refinement_records_direct_style_target_is_the_new_response() -> None:
    records, counts = refinement_records([search("refined")], Prompts())
    msgs = records[0]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant"]
    assert "1 comma; none allowed" in msgs[0]["content"]
    assert msgs[1]["content"] == "The sea is wide deep and blue."
    assert counts.records == 1 and counts.steps_failed_search == 0


def test_a_value_raising_step_of_a_failed_search_is_not_a_record() -> None:
    """The case that once went wrong: the LLM's value rose from 0.2 to 0.8 on a step of
    a search that never passed; that step was trained on as a good refinement."""
    failed = search(
        "exhausted",
        trace=[
            node("The sea, the sea.", 0, critique="- 1 comma; none allowed", value=0.2),
            node("The sea, oh, the sea.", 0, critique="- 2 commas; none allowed", value=0.8),
        ],
    )
    records, counts = refinement_records([failed], Prompts())
    assert records == [] and counts.steps_failed_search == 1


def test_refinement_records_drop_steps_that_lose_a_constraint_or_break_a_guardrail() -> None:
    trace = [
        node("a, b", 1, checked=2, critique="- needs a title"),
        node("a b", 0, checked=2, critique="- 0 commas fine; needs a title"),  # lost one
        node("<<T>> a b", 2, checked=2, critique="ok", hard_fail=False),
    ]
    records, counts = refinement_records([search("refined", trace=trace)], Prompts())
    assert counts.steps_dropped == 1 and counts.records == 1
    assert records[0]["messages"][-1]["content"] == "<<T>> a b"
    meta = [
        node("a, b", 0, critique="- 1 comma"),
        node("The revised response.", 1, guardrails=["meta"]),
    ]
    records, counts = refinement_records([search("refined", trace=meta)], Prompts())
    assert records == [] and counts.steps_dropped == 1


def test_refinement_records_strip_the_verdict_line_and_continue_the_judge_conversation() -> None:
    trace = [
        node("The sea, so blue.", 0, critique="It has a comma.\nFinal Judgement: No"),
        node("The sea so blue.", 1, reflection="Removed the comma."),
    ]
    records, _ = refinement_records(
        [search("refined", trace=trace)], Prompts.from_settings("", "", "paper")
    )
    msgs = records[0]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert msgs[1]["content"] == "It has a comma."
    parsed = parse_refinement(msgs[-1]["content"], "stop")
    assert parsed is not None and parsed.response.strip() == "The sea so blue."


def judgment(
    response: str, yes: int, no: int, key: str = "1", critique: str = "c"
) -> dict[str, Any]:
    return {"prompt_key": key, "prompt": PROMPT, "response": response,
            "yes_votes": yes, "no_votes": no, "critique": critique}  # fmt: skip


def test_a_judgement_the_llm_got_wrong_is_relabelled_with_the_verifier_verdict() -> None:
    """The case that once went wrong: the LLM voted Yes (4–1) on an answer with a comma,
    and its own "Yes" critique became a training target."""
    records, counts = judgment_records(
        [judgment(ROOT, 4, 1, critique="All good.\nFinal Judgement: Yes")],
        Prompts(), {"1": [NO_COMMA]}, check,
    )  # fmt: skip
    assert counts.relabelled == 1 and counts.agreed == 0 and counts.records == 1
    target = records[0]["messages"][-1]["content"]
    assert parse_judgement(target) is False
    assert "1 comma; none allowed" in target and "All good" not in target
    # The judge prompt is the plain one (no "already checked" notes): what the LLM judge
    # sees when no constraints are supplied.
    assert "already checked" not in records[0]["messages"][0]["content"]


def test_judgement_records_count_agreed_unvoted_and_cap_per_verdict() -> None:
    records, counts = judgment_records(
        [
            judgment("The sea is wide, deep and blue.", 0, 5),  # agreed (both fail)
            judgment("The sea is wide, and deep.", 5, 0),  # relabelled, wins the fail slot
            judgment("The sea is wide and deep and blue.", 0, 0),  # no vote: verifier
            judgment("The sea is calm and blue.", 0, 0),  # a second pass: capped
        ],
        Prompts(), {"1": [NO_COMMA]}, check,
    )  # fmt: skip
    assert (counts.agreed, counts.relabelled, counts.verifier, counts.capped) == (1, 1, 2, 2)
    assert counts.records == len(records) == 2
    verdicts = [parse_judgement(r["messages"][-1]["content"]) for r in records]
    assert sorted(v is True for v in verdicts) == [False, True] and None not in verdicts
    fail = next(r for r in records if parse_judgement(r["messages"][-1]["content"]) is False)
    assert "The sea is wide, and deep." in fail["messages"][0]["content"]


def test_judgement_records_without_constraints_keep_split_decided_votes() -> None:
    records, counts = judgment_records(
        [judgment("r", 3, 2), judgment("r", 5, 0), judgment("r", 2, 2)], Prompts(), {}, check
    )
    assert len(records) == 1 and records[0]["messages"][-1]["content"] == "c"
    assert counts.unchecked == 1


def test_an_answer_made_of_the_problem_list_is_neither_a_record_nor_a_pair() -> None:
    """Seen in the first GPU warm-up: asked to fix "2 uses of 'virus'; fewer than 2
    allowed" and "5 commas", the model wrote the complaints back; that text passed both
    checks and the guardrails, and became a training target."""
    critique = "- 2 uses of 'virus'; fewer than 2 allowed\n- 5 commas; none allowed"
    echo = "- 2 uses of virus; fewer than 2 allowed\n- 5 issues to fix"
    trace = [node(ROOT, 0, critique=critique), node(echo, 1)]
    records, counts = refinement_records([search("refined", best=echo, trace=trace)], Prompts())
    assert records == [] and counts.steps_dropped == 1
    pairs, pc = dpo_pairs([search("refined", best=echo, trace=trace)])
    assert pairs == [] and pc.echoes == 1
    # A repair that shares a word or two with a complaint is not an echo.
    fine = [node(ROOT, 0, critique=critique), node("A virus is small.", 1)]
    records, _ = refinement_records([search("refined", trace=fine)], Prompts())
    assert len(records) == 1
