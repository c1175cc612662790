"""Tree search against a scripted engine: order, batching, selection, gate, budgets, cache."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import replace

import pytest

from services.refiner.cost import Budget, Meter
from services.refiner.judge import Judge, JudgeConfig, Judgement
from services.refiner.search import (
    Node,
    SearchConfig,
    SearchEvent,
    SearchResult,
    TreeSearch,
    growth_capped,
    rank,
)
from spar.engine.protocol import GenerationRequest, LoopStop
from spar.ifeval import Constraint, ConstraintCheck
from tests.unit.refiner_script import DIRECT, PROMPTS, Script, no, yes


def votes(k_yes: int, k: int = 5) -> list[str]:
    """Judge samples whose vote has value k_yes / k."""
    return [yes()] * k_yes + [no()] * (k - k_yes)


def make_search(
    script: Script,
    *,
    budget: Budget | None = None,
    events: list[SearchEvent] | None = None,
    judge_max_tokens: int = 16,
    **config: object,
) -> TreeSearch:
    meter = Meter(script, budget or Budget.unlimited())
    judge = Judge(
        "llm",
        "inst",
        (),
        prompts=PROMPTS,
        config=JudgeConfig(samples=5, max_tokens=judge_max_tokens, tie_resample_rounds=0),
        generate=meter.for_phase("judge"),
        check=lambda _i, _r, _c: [],
    )
    options = {"refine_max_tokens": 16, **config}
    return TreeSearch(
        "inst",
        "r",
        judge=judge,
        meter=meter,
        prompts=PROMPTS,
        config=SearchConfig(**options),  # type: ignore[arg-type]
        on_event=events.append if events is not None else None,
    )


def names(nodes: list[Node]) -> list[str]:
    return [n.response for n in nodes]


async def test_bfs_level_by_level_keep_top_and_end_gate() -> None:
    script = Script(judge={"r.1": votes(2), "r.2": votes(1), "r.2.2": votes(4)})
    events: list[SearchEvent] = []
    result = await make_search(script, events=events).run()
    assert result.outcome == "refined"
    assert names(result.trace) == ["r", "r.2", "r.2.2"]
    assert result.best.value == pytest.approx(0.8)
    # Level 1 expands the root; level 2 expands the two best children (r.1, r.2), not r.3.
    assert script.refined() == ["r", "r.1", "r.2"]
    # The whole second level went to the engine together: both refine requests were in
    # flight at once, and so were all six judge requests of their children.
    level2 = [c for c in script.calls if c.kind == "refine" and c.subject != "r"]
    assert level2[1].in_flight_at_start >= 1
    assert script.max_in_flight >= 6
    assert result.cost.nodes_expanded == 9
    kinds = [(e.kind, e.node.response) for e in events]
    assert kinds.count(("judged", "r")) == 1
    for node in result.tree[1:]:
        assert kinds.index(("expanded", node.response)) < kinds.index(("judged", node.response))


async def test_bfs_never_sends_one_call_at_a_time() -> None:
    script = Script(delay=0.05)
    result = await make_search(script, max_depth=2).run()
    assert result.outcome == "exhausted"
    # root judge + (refine + 3 judges) + 2 x (refine + 3 judges) run in 4 waves, not 13.
    # A wave's calls start together; the next starts a call's delay (50 ms) later. (Rounding
    # the start times to 10 ms split a wave that straddled a 10 ms boundary into two.)
    starts = sorted(c.started for c in script.calls)
    waves = 1 + sum(later - earlier > 0.025 for earlier, later in itertools.pairwise(starts))
    assert len(script.calls) == 13
    assert waves <= 5


async def test_exhausted_returns_the_original() -> None:
    # r.1.3 is the best node found (value 0.4) but it does not pass: the original stays.
    script = Script(judge={"r.1.3": votes(2)})
    result = await make_search(script, max_depth=2).run()
    assert result.outcome == "exhausted"
    assert names(result.trace) == ["r"] and result.best.id == 0 and not result.changed
    script = Script()
    result = await make_search(script, max_depth=1).run()
    assert result.outcome == "exhausted" and result.best.id == 0 and names(result.trace) == ["r"]


async def test_already_passing_searches_nothing() -> None:
    script = Script(judge={"r": votes(3)})
    result = await make_search(script).run()
    assert result.outcome == "already_passing"
    assert script.refined() == [] and result.cost.nodes_expanded == 0
    assert result.cost.judge_samples == 5


async def test_end_gate_is_strict_and_configurable() -> None:
    script = Script(judge={"r.1": votes(2)})  # value 0.4
    result = await make_search(script, max_depth=1, end_gate=0.4).run()
    assert result.outcome == "exhausted"
    script = Script(judge={"r.1": votes(2)})
    result = await make_search(script, max_depth=1, end_gate=0.3).run()
    assert result.outcome == "refined" and result.best.response == "r.1"


async def test_dfs_visits_best_child_first() -> None:
    script = Script(judge={"r.1": votes(1), "r.2": votes(2), "r.1.3": votes(5)})
    result = await make_search(script, strategy="dfs", max_depth=2).run()
    # r's children ranked r.2 (0.4) > r.1 (0.2) > r.3: r.2's subtree first, then r.1's,
    # whose third child passes; r.3 is never expanded.
    assert script.refined() == ["r", "r.2", "r.1"]
    assert result.outcome == "refined"
    assert names(result.trace) == ["r", "r.1", "r.1.3"]


async def test_the_root_gets_root_branch_refinements_and_the_rest_branch() -> None:
    # r.4 (the fourth child of the root, which branch=3 alone would never draw) passes;
    # without it the search goes on with 3 refinements per node.
    script = Script(judge={"r.4": votes(4)})
    result = await make_search(script, root_branch=5).run()
    assert result.outcome == "refined" and result.best.response == "r.4"
    assert [c.n for c in script.calls if c.kind == "refine"] == [5]
    script = Script()
    result = await make_search(script, root_branch=5, max_depth=2).run()
    assert [c.n for c in script.calls if c.kind == "refine"] == [5, 3, 3]
    assert result.cost.nodes_expanded == 11 and result.outcome == "exhausted"
    # root_branch 0 (the SearchConfig default) is branch at the root too.
    script = Script()
    await make_search(script, max_depth=1).run()
    assert [c.n for c in script.calls if c.kind == "refine"] == [3]


async def test_node_budget_bounds_expansion() -> None:
    script = Script()
    result = await make_search(script, budget=Budget(4, 10**9, 60.0)).run()
    assert result.cost.nodes_expanded == 4
    assert result.outcome == "budget" and result.best.id == 0
    # Level 2: the first kept child gets the one node left; the other is not expanded.
    assert script.refined() == ["r", "r.1"]
    assert [c.n for c in script.calls if c.kind == "refine"] == [3, 1]


async def test_token_budget_is_never_exceeded() -> None:
    for limit in (0, 79, 80, 150, 200, 333, 1000):
        script = Script(tokens_per_sample=4)
        result = await make_search(script, budget=Budget(100, limit, 60.0)).run()
        assert script.generated == result.cost.generated_tokens
        # Reservations are worst cases (n x max_tokens = 5 x 16 per judge request), so the
        # spent tokens stay within the budget even with concurrent requests.
        assert script.generated <= limit
        if limit < 80:
            assert result.outcome == "budget" and script.calls == []
        assert result.outcome in {"budget", "exhausted", "refined"}


async def test_wall_time_budget_ends_with_deadline_and_cancels_work() -> None:
    script = Script(delay=0.2)
    result = await make_search(script, budget=Budget(100, 10**9, 0.5)).run()
    assert result.outcome == "deadline"
    assert result.wall_time_s < 0.9
    assert result.best.id == 0
    await asyncio.sleep(0.05)
    assert script.in_flight == 0  # nothing left running


async def test_identical_responses_are_judged_once() -> None:
    script = Script(refine={"r": lambda k: "Final Refined Output: [[start]] same [[end]]"})
    result = await make_search(script, max_depth=1).run()
    # The first "same" is a node; its copies are unusable duplicates and cost no node.
    assert names(result.tree) == ["r", "same"]
    assert result.cost.unusable == {"duplicate": 4}
    assert script.judged().count("same") == 1
    assert all(n.judgement is not None for n in result.tree)
    assert result.cost.judge_samples == 10


async def test_unparseable_refinements_are_retried_and_counted() -> None:
    outputs = {1: "  ", 2: "Final Refined Output: [[start]] [[end]]", 3: "ok [[start]] r.a"}

    def refine(k: int) -> str:
        return outputs.get(k, f"[[start]] r.{k}")

    script = Script(refine={"r": refine})
    result = await make_search(script, max_depth=1).run()
    assert names(result.tree) == ["r", "r.a", "r.4", "r.5"]
    assert result.cost.unparseable_refinements == 2
    assert result.cost.unusable == {"empty": 2}
    assert [c.n for c in script.calls if c.kind == "refine"] == [3, 2]

    script = Script(refine={"r": lambda k: "Final Refined Output: "})
    result = await make_search(script, max_depth=3, parse_retries=2).run()
    assert result.cost.nodes_expanded == 0 and result.cost.unparseable_refinements == 9
    assert result.outcome == "unchanged" and len(script.refined()) == 3
    assert result.best.id == 0


async def test_unparseable_judge_samples_are_counted() -> None:
    script = Script(judge={"r": ["hmm", no()]})
    result = await make_search(script, max_depth=1).run()
    assert result.cost.unparseable_judgements >= 2
    assert result.tree[0].judgement is not None
    assert result.tree[0].judgement.vote.unparseable == 3


def run_proportional(seed: int) -> list[str]:
    search = make_search(Script(), selection="proportional", seed=seed)
    nodes = [Node(i, 0, 1, f"n{i}") for i in range(3)]
    for node, value in zip(nodes, (0.9, 0.05, 0.0), strict=True):
        node.judgement = _judgement(value)
    return names(search._select(nodes, 1))


def _judgement(value: float) -> object:
    from services.refiner.judge import Judgement

    return Judgement(kind="llm", verdict="fail", value=value, critique="")


def test_proportional_selection_is_seeded_and_value_weighted() -> None:
    picks = [run_proportional(seed)[0] for seed in range(200)]
    assert picks == [run_proportional(seed)[0] for seed in range(200)]
    assert picks.count("n0") > 150
    assert picks.count("n1") >= 1  # not greedy


async def test_cost_matches_what_the_engine_generated() -> None:
    script = Script(judge={"r.2.1": votes(5)}, tokens_per_sample=3)
    result: SearchResult = await make_search(script).run()
    cost = result.cost
    assert cost.judge.completion_tokens + cost.refine.completion_tokens == script.generated
    assert cost.judge.requests + cost.refine.requests == len(script.calls)
    assert cost.judge_samples == sum(c.n for c in script.calls if c.kind == "judge")
    assert cost.nodes_expanded == len(result.tree) - 1


# -- never worse: the gate, the rank, the original (cases that once went wrong) ---------

CONSTRAINTS = [Constraint("a"), Constraint("b"), Constraint("c")]


def checks_by_response(table: dict[str, int]) -> Callable[..., list[ConstraintCheck]]:
    """A scripted verifier: response -> how many of the three constraints it meets."""

    def check(_i: str, response: str, _c: object) -> list[ConstraintCheck]:
        met = table.get(response, 0)
        return [ConstraintCheck(c.instruction_id, i < met, i < met, c.instruction_id)
                for i, c in enumerate(CONSTRAINTS)]  # fmt: skip

    return check


def hybrid_search(
    script: Script,
    met: dict[str, int],
    *,
    budget: Budget | None = None,
    context: object = None,
    refine_max_tokens: int = 16,
    response: str = "r",
    **judge_config: object,
) -> TreeSearch:
    meter = Meter(script, budget or Budget.unlimited())
    judge = Judge(
        "hybrid", "inst", CONSTRAINTS, prompts=DIRECT,
        config=JudgeConfig(samples=5, max_tokens=16, tie_resample_rounds=0, **judge_config),  # type: ignore[arg-type]
        generate=meter.for_phase("judge"), check=checks_by_response(met),
    )  # fmt: skip
    return TreeSearch(
        "inst", response, judge=judge, meter=meter, prompts=DIRECT,
        config=SearchConfig(refine_max_tokens=refine_max_tokens),
        context=context,  # type: ignore[arg-type]
    )  # fmt: skip


async def test_a_passing_child_beats_a_failing_one_with_a_higher_llm_value() -> None:
    # The demo's failure: r.1 fails one of three checks with 5/5 LLM yes (0.667 under the old
    # rank), r.2 passes all three with 3/5 yes (0.6). Even with the LLM asked about every
    # response and holding a veto, only r.2 may replace the original.
    script = Script(judge={"r.1": votes(5), "r.2": votes(3), "r.3": votes(5)})
    met = {"r": 1, "r.1": 2, "r.2": 3, "r.3": 2}
    for config in ({}, {"votes": "always", "llm_veto": True}):
        result = await hybrid_search(Script(judge=dict(script.judge)), met, **config).run()
        assert result.outcome == "refined", config
        assert result.best.response == "r.2"
        assert result.trace[-1].judgement is not None
        assert result.trace[-1].judgement.constraint_share == 1.0


async def test_every_passing_child_counts_not_only_the_top_ranked() -> None:
    # r.1 and r.3 pass; r.2 fails a check but the LLM loves it. The best *passing* one wins,
    # and among equals the smaller edit from the original wins.
    script = Script(
        refine={"r": lambda k: {1: "r tidy", 2: "r else", 3: "completely different words"}[k]},
        judge={"r else": votes(5)},
    )
    met = {"r": 1, "r tidy": 3, "r else": 2, "completely different words": 3}
    result = await hybrid_search(script, met).run()
    assert result.outcome == "refined" and result.best.response == "r tidy"
    assert result.best.edit_distance == pytest.approx(0.5)


async def test_an_original_that_passes_every_check_is_kept_whatever_the_llm_says() -> None:
    script = Script(judge={"r": votes(0)})
    result = await hybrid_search(script, {"r": 3}).run()
    assert result.outcome == "already_passing" and result.best.id == 0
    assert script.calls == [] and result.cost.votes_skipped == 1


async def test_a_node_whose_children_are_all_worse_is_refined_again() -> None:
    # r meets 2 of 3; its first three refinements meet 1, 0 and 2-with-a-loop (a guardrail
    # broken). The second level draws new refinements of r, not of its worse children, and
    # one of those (r.5) passes. Refining only the worse children never got there.
    loop = "same words here again " * 5
    script = Script(refine={"r": lambda k: loop if k == 3 else f"r.{k}"})
    met = {"r": 2, "r.1": 1, "r.2": 0, loop: 2, "r.5": 3}
    result = await hybrid_search(script, met).run()
    assert result.outcome == "refined" and result.best.response == "r.5"
    assert script.refined().count("r") == 2
    assert [n.response for n in result.trace] == ["r", "r.5"]


async def test_a_child_as_good_as_its_parent_takes_the_next_level() -> None:
    # r.1 meets as many constraints as r: the search goes on from the children only.
    script = Script()
    result = await hybrid_search(script, {"r": 1, "r.1": 1}).run()
    assert script.refined().count("r") == 1 and "r.1" in script.refined()
    assert result.outcome == "exhausted" and result.best.id == 0


async def test_a_passing_child_ends_its_level_and_cancels_the_slower_expansions() -> None:
    # Level 2 expands r.1 and r.2; r.1's refinements come back at once and r.1.1 passes,
    # while r.2's are still generating (a runaway sample). The search answers with r.1.1
    # without waiting, and r.2's request is cancelled (aborted in the engine).
    script = Script(delays={"r.2": 30.0})
    met = {"r": 1, "r.1": 2, "r.2": 2, "r.3": 0, "r.1.1": 3}
    result = await hybrid_search(script, met, budget=Budget(100, 10**9, 10.0)).run()
    assert result.outcome == "refined" and result.best.response == "r.1.1"
    assert result.wall_time_s < 1.0
    assert sorted(script.refined()) == ["r", "r.1", "r.2"]
    await asyncio.sleep(0.05)
    assert script.in_flight == 0


async def test_a_child_that_passed_before_the_deadline_is_the_answer() -> None:
    # r.1 passes every check and is judged at once; its sibling r.2's LLM vote is still
    # running when the wall time ends. What passed by then is a refinement, not nothing.
    script = Script(delays={"r.2": 30.0})
    met = {"r": 1, "r.1": 3, "r.2": 3}
    search = hybrid_search(script, met, budget=Budget(100, 10**9, 0.5), votes="always")
    result = await search.run()
    assert result.outcome == "refined" and result.best.response == "r.1"
    assert result.wall_time_s < 0.9
    await asyncio.sleep(0.05)
    assert script.in_flight == 0


async def test_all_children_worse_than_the_original_return_the_original() -> None:
    met = {"r": 2}  # every refinement meets fewer (0) constraints than the original
    result = await hybrid_search(Script(), met).run()
    assert result.outcome == "exhausted"
    assert result.best.id == 0 and result.best.response == "r" and not result.changed
    # No LLM votes were needed: every node failed a check.
    assert result.cost.judge_samples == 0 and result.cost.votes_skipped == len(result.tree)


async def test_ties_go_to_the_smaller_edit_then_the_earlier_node() -> None:
    a = Node(1, 0, 1, "a", edit_distance=0.2)
    b = Node(2, 0, 1, "b", edit_distance=0.1)
    c = Node(3, 0, 1, "c", edit_distance=0.1)
    for n in (a, b, c):
        n.judgement = Judgement("hybrid", "pass", 1.0, "")
    assert max([a, b, c], key=rank) is b
    failing = Node(4, 0, 1, "d")
    failing.judgement = Judgement("hybrid", "fail", 0.9, "", hard_fail=True)
    assert sorted([failing, a], key=rank, reverse=True) == [a, failing]


async def test_guardrail_breaking_child_never_replaces_the_original() -> None:
    meta = "This response meets all the requirements of the instruction."
    script = Script(refine={"r": lambda k: meta if k == 1 else f"<cut>r.{k}"})
    met = {"r": 1, meta: 3}
    result = await hybrid_search(script, met).run()
    assert result.best.id == 0 and result.outcome != "refined"
    assert set(result.cost.guardrail_failures) == {"meta"}
    assert result.cost.unusable["cut_at_max_tokens"] >= 2


async def test_unusable_refinements_are_counted_by_reason() -> None:
    outputs = {1: "r", 2: "<cut>half of a", 3: "   ", 4: "r.x", 5: "r.x", 6: "<loop>a a a"}
    script = Script(refine={"r": lambda k: outputs.get(k, f"r.{k}")})
    result = await hybrid_search(script, {"r": 1}, budget=Budget(3, 10**6, 60.0)).run()
    u = result.cost.unusable
    assert u["identical_to_parent"] == 1 and u["cut_at_max_tokens"] == 1 and u["empty"] == 1
    assert u["duplicate"] == 1 and u["loop"] == 1
    assert result.cost.nodes_expanded == 3  # unusable refinements cost no node


async def test_refine_requests_carry_the_loop_stop_and_a_looping_child_is_never_a_node() -> None:
    stop = LoopStop(6, 64, 3)
    script = Script(refine={"r": lambda k: "<loop>r fixed" if k == 1 else f"<cut>r.{k}"})
    search = hybrid_search(script, {"r": 1, "r fixed": 3})
    search.config = replace(search.config, loop_stop=stop)
    result = await search.run()
    refine_requests = [c.request for c in script.calls if c.kind == "refine"]
    assert refine_requests and all(r.loop_stop == stop for r in refine_requests)
    # The looping sample would pass every check, yet it is unusable, not a node.
    assert result.best.id == 0 and result.cost.unusable["loop"] >= 1
    assert all(n.response != "r fixed" for n in result.tree)


class Context:
    """A scripted token counter: 1 token per character, a small context."""

    def __init__(self, max_model_len: int) -> None:
        self.max_model_len = max_model_len
        self.requests: list[GenerationRequest] = []

    def prompt_tokens(self, request: GenerationRequest) -> int:
        self.requests.append(request)
        return sum(len(m.content) for m in request.messages)


async def test_refine_requests_are_made_to_fit_the_context() -> None:
    # The critique has three complaints (a 52-token prompt); in 80 tokens of context the
    # request fits only with the first complaint (26 tokens) and 54 instead of 100 tokens,
    # which still hold a whole rewrite.
    script = Script()
    ctx = Context(max_model_len=80)
    result = await hybrid_search(script, {"r": 0}, context=ctx, refine_max_tokens=100).run()
    refine = [c for c in script.calls if c.kind == "refine"]
    assert refine[0].max_tokens == 54
    assert ctx.requests[-1].messages[0].content.count("not met") == 1
    assert result.cost.unusable.get("over_context", 0) == 0
    # With no room at all, the refinement is unusable for that reason; nothing fails.
    script = Script()
    result = await hybrid_search(script, {"r": 0}, context=Context(max_model_len=10)).run()
    assert result.outcome == "unchanged" and result.best.id == 0
    assert result.cost.unusable["over_context"] == 3  # the 3 wanted; no hopeless retry
    assert [c for c in script.calls if c.kind == "refine"] == []
    # A node budget below the root branch grants fewer; still nothing usable: unchanged.
    script = Script()
    search = hybrid_search(
        script, {"r": 0}, context=Context(max_model_len=10), budget=Budget(3, 10**9, 60.0)
    )
    search.config = replace(search.config, root_branch=5)
    result = await search.run()
    assert result.outcome == "unchanged" and result.cost.unusable["over_context"] == 3


async def test_refinements_of_a_short_answer_are_held_to_its_growth() -> None:
    # One token per character. A 100-token answer that fails checks asking for no length:
    # its refinements may run to 2 x 100 + 64 = 264 tokens, not 400; a 10-token one to
    # half of 400 (the floor), not 84; with refine_growth 0, to 400.
    for response, growth, expected in (("x" * 100, 2.0, 264), ("y" * 10, 2.0, 200),
                                       ("x" * 100, 0.0, 400)):  # fmt: skip
        script = Script()
        search = hybrid_search(script, {}, context=Context(max_model_len=10_000),
                               refine_max_tokens=400, response=response)  # fmt: skip
        search.config = replace(search.config, refine_growth=growth, max_depth=1)
        await search.run()
        assert [c.max_tokens for c in script.calls if c.kind == "refine"] == [expected]


def test_the_growth_cap_holds_only_where_the_program_decided_and_no_length_is_asked() -> None:
    def judged(*checks: tuple[str, bool], hard_fail: bool = True, vote: bool = False) -> Judgement:
        return Judgement(
            "hybrid", "fail", 0.0, "", hard_fail=hard_fail, vote_decides=vote,
            constraints=tuple(ConstraintCheck(i, ok, ok) for i, ok in checks),
        )  # fmt: skip

    assert growth_capped(judged(("punctuation:no_comma", False)))
    # A length requirement that already holds does not lift the cap; a failed one does.
    assert growth_capped(judged(("length_constraints:number_words", True), ("x", False)))
    assert not growth_capped(judged(("length_constraints:number_words", False)))
    assert not growth_capped(judged(("combination:two_responses", False)))
    assert not growth_capped(judged(("combination:repeat_prompt", False), ("x", True)))
    # A structure to rebuild the answer into: the one success a one-shot run saw cut.
    assert not growth_capped(judged(("detectable_format:multiple_sections", False)))
    assert not growth_capped(judged(("detectable_format:number_bullet_lists", False)))
    assert growth_capped(judged(("detectable_format:number_highlighted_sections", False)))
    # An LLM-decided failure may be "too short": no cap.
    assert not growth_capped(judged(("x", True), hard_fail=False))
    assert not growth_capped(judged(("x", False), vote=True))
