"""spar/quality_report.py, the pure parts of bench/quality_run.py: degenerate share,
spread, gains and the RESULT line."""

from __future__ import annotations

from typing import Any

from spar.prompt_sets import PromptRecord
from spar.quality_report import degenerate, gains, report, result_line, spread, tokens_per_point

PROMPT = PromptRecord(
    1, "Write a note to a neighbour who fed your cat.", ("startend:quotation",), ({},)
)


def metrics(loose: float) -> dict[str, float]:
    return {"prompt_level_strict": loose - 0.05, "prompt_level_loose": loose,
            "instruction_level_strict": loose, "instruction_level_loose": loose + 0.05}  # fmt: skip


def row(loose: float, answers: list[str] | None = None, **kw: Any) -> dict[str, Any]:
    bad = {"share": kw.get("bad", 0.0), "quoted_share": 0.0, "rules": {}}
    tokens = {"tokens_per_answer": 100, "generated_tokens_per_answer": kw.get("tokens", 100)}
    return {"metrics": metrics(loose), "answers": answers or ["a", "b"], "degenerate": bad,
            **tokens}  # fmt: skip


def test_degenerate_counts_guardrail_breaks_and_quoted_answers() -> None:
    answers = ['"Thank you for feeding my cat."', "\n".join(["Thanks for feeding the cat."] * 4)]
    d = degenerate([PROMPT, PROMPT], answers)
    assert d == {"share": 0.5, "rules": {"repetition": 1}, "quoted_share": 0.5}


def test_spread_of_two_evaluations_of_the_same_version() -> None:
    s = spread(row(0.30, ["x", "y", "z", "w"]), row(0.32, ["x", "Y", "z", "w"]))
    assert s["answers_differ_share"] == 0.25 and s["main_delta_points"] == 2.0


def test_gains_are_points_of_prompt_level_loose_and_the_result_line_has_them() -> None:
    cost = {"judge": {"completion_tokens": 1000}, "refine": {"completion_tokens": 5000}}
    doc = {
        "iterations": {
            "0": {"greedy": row(0.20), "greedy_repeat": row(0.21), "refined": row(0.30)},
            "1": {"greedy": row(0.26, bad=0.1), "refined": row(0.40, tokens=900),
                  "llm_refined": row(0.27), "iteration": {"search_cost": cost}},
        },
        "spread": spread(row(0.20), row(0.21)),
    }  # fmt: skip
    g = gains(doc)
    assert g == {"iterations": 1, "greedy_gain": 6.0, "refined_gain": 14.0, "llm_refined_gain": 1.0}
    t = tokens_per_point(doc)
    assert t["refined_tokens_per_answer_per_point"] == round(800 / 14, 1)
    assert t["search_tokens_per_greedy_point"] == 1000
    line = result_line(doc)
    assert line.startswith("RESULT quality_run iterations=1 greedy_gain=6.0 refined_gain=14.0 ")
    assert "llm_refined_gain=1.0" in line and "degenerate_greedy_last=0.1" in line
    text = report(doc)
    assert "| 1 | refined (LLM judge) | 0.220 | 0.270 |" in text and "run-to-run spread" in text


def test_a_run_with_no_iteration_yet_reports_zero_iterations() -> None:
    doc = {"iterations": {"0": {"greedy": row(0.2)}}}
    assert result_line(doc).startswith("RESULT quality_run iterations=0")
