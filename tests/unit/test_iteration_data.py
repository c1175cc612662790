from __future__ import annotations

from services.coordinator.data import (
    dpo_pairs,
    judgment_records,
    pick_negative,
    refinement_records,
)
from services.refiner.prompts import Prompts, parse_refinement


def test_pick_negative_takes_the_worst_failing_sample() -> None:
    judged = [
        {"index": 0, "verdict": "pass", "value": 1.0},
        {"index": 1, "verdict": "fail", "value": 0.4},
        {"index": 2, "verdict": "undecided", "value": 0.5},
        {"index": 3, "verdict": "fail", "value": 0.2},
    ]
    assert pick_negative(judged)["index"] == 3  # type: ignore[index]
    assert pick_negative([{"index": 0, "verdict": "undecided", "value": 0.5}]) is None


def search(outcome: str, root: str = "bad", best: str = "good") -> dict[str, object]:
    return {
        "prompt": "Write without commas.",
        "root": root,
        "best_response": best,
        "outcome": outcome,
        "trace": [
            {"response": root, "reflection": "", "critique": "It has commas.", "value": 0.0},
            {"response": best, "reflection": "Removed commas.", "critique": "ok", "value": 1.0},
        ],
    }


def test_dpo_pairs_only_from_refined_searches() -> None:
    pairs, rewrites = dpo_pairs(
        [search("refined"), search("exhausted"), search("refined", best="bad")]
    )
    assert pairs == [{"prompt": "Write without commas.", "chosen": "good", "rejected": "bad"}]
    assert rewrites == 0


def test_dpo_pairs_drop_rewrites_but_keep_repairs() -> None:
    root = "The sea is wide, deep, and blue under the summer sky."
    repair = "The sea is wide deep and blue under the summer sky."
    rewrite = "Oceans cover most of our planet and hold countless creatures."
    pairs, rewrites = dpo_pairs(
        [search("refined", root, repair), search("refined", root, rewrite)], 0.6
    )
    assert [p["chosen"] for p in pairs] == [repair] and rewrites == 1


def test_refinement_records_direct_style_target_is_the_new_response() -> None:
    records = refinement_records([search("refined")], Prompts())
    msgs = records[0]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant"]
    assert "It has commas." in msgs[0]["content"] and msgs[1]["content"] == "good"


def test_refinement_records_continue_the_judge_conversation() -> None:
    records = refinement_records([search("refined")], Prompts.from_settings("", "", "paper"))
    assert len(records) == 1
    msgs = records[0]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert msgs[1]["content"] == "It has commas."
    parsed = parse_refinement(msgs[-1]["content"], "stop")
    assert parsed is not None and parsed.response.strip() == "good"


def test_judgment_records_only_split_decided_votes() -> None:
    base = {"prompt": "p", "response": "r", "critique": "c"}
    records = judgment_records(
        [
            {**base, "yes_votes": 3, "no_votes": 2},
            {**base, "yes_votes": 5, "no_votes": 0},
            {**base, "yes_votes": 2, "no_votes": 2},
        ],
        Prompts(),
    )
    assert len(records) == 1 and records[0]["messages"][-1]["content"] == "c"
