"""What `spar up --demo` prints: the refined answer with its word diff, outcome and cost,
and the iteration's before/after table."""

from __future__ import annotations

from support import refined_answer

from spar.v1 import common_pb2, refiner_pb2
from spar.v1 import coordinator_pb2 as pb
from spar_cli.commands.demo import answer_lines, cost_line, iteration_lines


def sea_answer() -> refiner_pb2.AnswerResponse:
    a = refined_answer(
        "The sea is vast, deep and blue.\nWaves roll in.",
        "The sea is vast deep and blue.\nWaves roll in.",
    )
    a.cost.nodes_expanded = 3
    a.cost.generate.completion_tokens = 20
    a.cost.judge.completion_tokens = 100
    a.cost.refine.completion_tokens = 60
    a.cost.wall_time.FromMilliseconds(12_340)
    return a


def test_a_refined_answer_shows_the_original_the_diff_and_the_cost() -> None:
    lines = answer_lines(sea_answer())
    text = "\n".join(lines)
    assert lines[0] == "actor:    The sea is vast, deep and blue.\n          Waves roll in."
    assert "refined:  The sea is vast deep and blue." in text
    assert "changes:  The sea is vast[-,-] deep and blue.\n          Waves roll in." in text
    assert "(1 words changed" in text
    assert lines[-1].startswith("cost:     refined · verdict pass · value 1.00 · 3 nodes")
    assert "180 generated tokens · 12.3 s" in lines[-1]


def test_an_unchanged_answer_says_so_instead_of_an_empty_diff() -> None:
    a = sea_answer()
    a.answer = a.original
    a.outcome = common_pb2.SEARCH_OUTCOME_DEADLINE
    text = "\n".join(answer_lines(a))
    assert "refined:  (the same" in text and "changes:" not in text
    assert cost_line(a).startswith("deadline · ")


def test_colour_is_used_only_when_asked() -> None:
    assert "\x1b[" not in "\n".join(answer_lines(sea_answer()))
    assert "\x1b[31m" in "\n".join(answer_lines(sea_answer(), colour=True))


def fields_of(message: object) -> set[str]:
    return set(message.DESCRIPTOR.fields_by_name)  # type: ignore[attr-defined]


def test_newer_cost_fields_are_shown_when_the_refiner_sends_them() -> None:
    a = sea_answer()
    if {"actor_time", "search_time", "unusable"} <= fields_of(a.cost):
        a.cost.actor_time.FromMilliseconds(2_000)
        a.cost.search_time.FromMilliseconds(10_300)
        a.cost.unusable.cut_at_max_tokens = 2
        line = cost_line(a)
        assert "12.3 s (actor 2.0 s, search 10.3 s)" in line
        assert "unusable refinements: 2 cut at max tokens" in line
    else:  # stubs before those fields: the line is the same without them
        assert "(actor" not in cost_line(a)


def test_the_iteration_ends_with_its_before_after_table_and_adapters() -> None:
    it = pb.Iteration(
        number=1,
        state=pb.ITERATION_STATE_SUCCEEDED,
        decision="candidate improves prompt_level_strict; promote",
        counts=pb.IterationCounts(
            prompts=4, samples=12, negatives=3, searches=3, refined=2, dpo_pairs=2, sft_records=5
        ),
        actor_candidate=common_pb2.AdapterVersion(name="actor-1-0123456789ab", digest="f" * 64),
        baseline_eval=pb.EvalMetrics(prompt_level_strict=0.25, prompts=8),
        candidate_eval=pb.EvalMetrics(prompt_level_strict=0.5, prompts=8),
    )
    it.search_cost.judge.completion_tokens = 1500
    it.search_cost.refine.completion_tokens = 500
    lines = iteration_lines(it)
    assert lines[0] == "iteration 1: succeeded — candidate improves prompt_level_strict; promote"
    table = "\n".join(lines)
    assert "IFEval on 8 held-out prompts   before   after  change" in table
    assert "  prompt_level_strict             25.0%   50.0%  +25.0 pp" in table
    assert "80 search tokens per point of prompt_level_strict" in table
    assert "actor:   actor-1-0123456789ab (rolled out; sha256 ffffffffffffffff…)" in table


def test_checked_constraints_show_before_and_after_with_the_verifiers_complaint() -> None:
    a = sea_answer()
    a.original_constraint_results.add(
        instruction_id="punctuation:no_comma", strict_pass=False, complaint="1 comma; none allowed"
    )
    a.constraint_results.add(instruction_id="punctuation:no_comma", strict_pass=True)
    assert "checks:   punctuation:no_comma failed → passed (1 comma; none allowed)" in answer_lines(
        a
    )
    del a.constraint_results[:]
    a.constraint_results.add(
        instruction_id="punctuation:no_comma", strict_pass=False, complaint="2 commas; none allowed"
    )
    assert "checks:   punctuation:no_comma failed (2 commas; none allowed)" in answer_lines(a)


def test_an_iteration_without_an_actor_says_why_there_is_no_table() -> None:
    it = pb.Iteration(number=2, state=pb.ITERATION_STATE_SUCCEEDED)
    assert "  IFEval:  not evaluated: no actor was trained this iteration" in iteration_lines(it)
