"""The refiner over real gRPC on 127.0.0.1: real vLLM engine, real actor, real refiner.

Budgets are tiny (the CPU engine does ~15 tok/s per stream, ~85 batched) and the
session refiner is configured with 3 judge samples of at most 64 tokens.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support import metric_sum, scrape

from spar.client import AsyncRefinerClient, search_budget, search_options
from spar.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted
from spar.refine_templates import parse_judgement
from spar.v1 import common_pb2
from spar.v1 import refiner_pb2 as pb

PROMPT = "Write one sentence about the sea, in under 12 words, without any commas."
CONSTRAINTS: list[tuple[str, dict[str, Any]]] = [
    ("punctuation:no_comma", {}),
    ("length_constraints:number_words", {"relation": "less than", "num_words": 12}),
]
FAILING = "The sea, which is vast, deep and blue, covers most of the planet we live on."


@pytest.fixture
async def refiner(refiner_target: str) -> AsyncIterator[AsyncRefinerClient]:
    async with AsyncRefinerClient(refiner_target, timeout=240) as client:
        yield client


def independent_check(text: str) -> bool:
    """lm-eval's own IFEval strict check, without spar's wrapper."""
    from lm_eval.tasks.ifeval import utils as lm_eval_ifeval  # type: ignore[import-untyped]

    inp = lm_eval_ifeval.InputExample(
        key=0,
        instruction_id_list=[c[0] for c in CONSTRAINTS],
        prompt=PROMPT,
        kwargs=[c[1] for c in CONSTRAINTS],
    )
    return bool(lm_eval_ifeval.test_instruction_following_strict(inp, text).follow_all_instructions)


async def engines_idle(*servers: Any, timeout: float = 10.0) -> bool:
    for _ in range(int(timeout / 0.1)):
        counts = [await s.runtime.engine.unfinished_requests() for s in servers]
        if not any(counts):
            return True
        await asyncio.sleep(0.1)
    return False


def generated(cost: common_pb2.SearchCost) -> int:
    return cost.judge.completion_tokens + cost.refine.completion_tokens


async def test_llm_judge_votes_in_one_request(refiner: AsyncRefinerClient) -> None:
    reply = await refiner.judge(PROMPT, FAILING, kind="llm", samples=3, return_all_samples=True)
    assert reply.kind == common_pb2.JUDGE_KIND_LLM
    assert len(reply.samples) >= 3  # more when a tie was re-sampled
    assert reply.yes_votes + reply.no_votes + reply.unparseable == len(reply.samples)
    for s in reply.samples:  # every sample's verdict is what its text says
        decision = parse_judgement(s.text)
        expected = {True: "VERDICT_PASS", False: "VERDICT_FAIL", None: "VERDICT_UNDECIDED"}
        assert common_pb2.Verdict.Name(s.verdict) == expected[decision]
    decided = reply.yes_votes + reply.no_votes
    assert reply.value == pytest.approx(reply.yes_votes / decided if decided else 0.0)
    assert reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 0
    assert reply.constraint_results == []


async def test_verifier_judge_checks_by_program(refiner: AsyncRefinerClient) -> None:
    reply = await refiner.judge(PROMPT, FAILING, kind="verifier", constraints=CONSTRAINTS)
    assert reply.verdict == common_pb2.VERDICT_FAIL
    assert [(c.instruction_id, c.strict_pass) for c in reply.constraint_results] == [
        ("punctuation:no_comma", False),
        ("length_constraints:number_words", False),
    ]
    assert reply.value == 0.0 and reply.usage.completion_tokens == 0
    assert "commas" in reply.critique
    ok = await refiner.judge(
        PROMPT, "The sea is calm today.", kind="verifier", constraints=CONSTRAINTS
    )
    assert ok.verdict == common_pb2.VERDICT_PASS and ok.value == 1.0


async def test_hybrid_judge_is_verifier_first(refiner: AsyncRefinerClient) -> None:
    reply = await refiner.judge(PROMPT, FAILING, kind="hybrid", constraints=CONSTRAINTS, samples=2)
    assert reply.kind == common_pb2.JUDGE_KIND_HYBRID
    assert reply.verdict == common_pb2.VERDICT_FAIL
    # A failed check decides; the LLM is not asked (its vote could not change that).
    assert reply.yes_votes + reply.no_votes + reply.unparseable == 0
    assert reply.usage.completion_tokens == 0
    # The critique is the verifier's exact complaint, measured on the response.
    commas = FAILING.count(",")
    assert f"{commas} comma" in reply.critique and "none allowed" in reply.critique
    complaints = {c.instruction_id: c.complaint for c in reply.constraint_results}
    assert complaints["punctuation:no_comma"].endswith("none allowed")
    # A response that passes every check passes, whatever the LLM might think of it.
    ok = await refiner.judge(PROMPT, "The sea is calm today.", kind="hybrid",
                             constraints=CONSTRAINTS)  # fmt: skip
    assert ok.verdict == common_pb2.VERDICT_PASS and ok.yes_votes + ok.no_votes == 0


async def test_a_refine_request_that_cannot_fit_never_fails_the_call(
    refiner: AsyncRefinerClient,
) -> None:
    # ~2,160 tokens of instruction: the refine prompt (instruction + response + problems)
    # cannot fit the 2,048-token context, so every refinement is unusable for that reason
    # and the original comes back, instead of an INVALID_ARGUMENT.
    long_prompt = PROMPT + " Context: " + "the waves roll onto the shore " * 360
    reply = await refiner.refine(
        long_prompt, FAILING, judge="verifier",
        constraints=[("punctuation:no_comma", {})], budget=search_budget(max_nodes=3),
    )  # fmt: skip
    assert reply.outcome == common_pb2.SEARCH_OUTCOME_UNCHANGED
    assert reply.best_response == FAILING
    assert reply.cost.unusable.over_context == 3 and reply.cost.refine.requests == 0


async def test_answer_verdict_agrees_with_independent_check(
    refiner: AsyncRefinerClient, refiner_server: Any, actor_server: Any
) -> None:
    before_refiner, before_actor = scrape(refiner_server), scrape(actor_server)
    reply = await refiner.answer(
        PROMPT,
        constraints=CONSTRAINTS,
        judge="verifier",
        max_tokens=48,
        options=search_options(branch=3, max_depth=2),
        budget=search_budget(max_nodes=4),
        include_trace=True,
    )
    after_refiner, after_actor = scrape(refiner_server), scrape(actor_server)
    assert reply.original
    assert reply.verdict == (
        common_pb2.VERDICT_PASS if independent_check(reply.answer) else common_pb2.VERDICT_FAIL
    )
    if reply.outcome == common_pb2.SEARCH_OUTCOME_ALREADY_PASSING:
        assert reply.answer == reply.original and reply.cost.nodes_expanded == 0
    else:
        assert reply.cost.refine.requests >= 1
        assert reply.cost.nodes_expanded <= 4
    assert reply.trace[0].response == reply.original and reply.trace[-1].response == reply.answer
    # The reported cost is exactly what the two engines generated for this call.
    refiner_generated = metric_sum(after_refiner, "spar_generated_tokens_total") - metric_sum(
        before_refiner, "spar_generated_tokens_total"
    )
    actor_generated = metric_sum(after_actor, "spar_generated_tokens_total") - metric_sum(
        before_actor, "spar_generated_tokens_total"
    )
    assert refiner_generated == generated(reply.cost)
    assert actor_generated == reply.cost.generate.completion_tokens > 0
    assert reply.cost.judge.completion_tokens == 0  # the verifier needs no model
    outcome = common_pb2.SearchOutcome.Name(reply.outcome).removeprefix("SEARCH_OUTCOME_").lower()
    answers = metric_sum(after_refiner, "spar_answers_total", outcome=outcome) - metric_sum(
        before_refiner, "spar_answers_total", outcome=outcome
    )
    assert answers == 1
    search_tokens = metric_sum(after_refiner, "spar_search_tokens_total") - metric_sum(
        before_refiner, "spar_search_tokens_total"
    )
    c = reply.cost
    assert search_tokens == sum(
        p.prompt_tokens + p.completion_tokens for p in (c.generate, c.judge, c.refine)
    )


async def test_hybrid_answer_and_cost_of_every_phase(
    refiner: AsyncRefinerClient, refiner_server: Any
) -> None:
    before = scrape(refiner_server)
    reply = await refiner.answer(
        PROMPT,
        constraints=CONSTRAINTS,
        judge="hybrid",
        max_tokens=48,
        options=search_options(branch=2, max_depth=1, judge_samples=2),
        budget=search_budget(max_nodes=2),
    )
    after = scrape(refiner_server)
    if not independent_check(reply.answer):
        assert reply.verdict == common_pb2.VERDICT_FAIL
    if reply.verdict == common_pb2.VERDICT_PASS:
        assert independent_check(reply.answer)
    # Verifier first: with every requirement checkable and no LLM veto (the default), no
    # judgement needs an LLM vote, so none is drawn.
    assert reply.cost.judgements >= 1
    assert reply.cost.votes_skipped == reply.cost.judgements
    assert reply.cost.judge.completion_tokens == 0 and reply.cost.judge_samples == 0
    skipped = metric_sum(after, "spar_search_votes_skipped_total", judge="hybrid") - metric_sum(
        before, "spar_search_votes_skipped_total", judge="hybrid"
    )
    assert skipped == reply.cost.votes_skipped
    delta = metric_sum(after, "spar_generated_tokens_total") - metric_sum(
        before, "spar_generated_tokens_total"
    )
    assert delta == generated(reply.cost)
    nodes = metric_sum(after, "spar_search_nodes_total", judge="hybrid") - metric_sum(
        before, "spar_search_nodes_total", judge="hybrid"
    )
    assert nodes == reply.cost.nodes_expanded


async def test_refine_stream_reports_every_node(refiner: AsyncRefinerClient) -> None:
    events = [
        e
        async for e in refiner.refine_stream(
            PROMPT,
            FAILING,
            constraints=CONSTRAINTS,
            judge="verifier",
            options=search_options(branch=2, max_depth=1),
            budget=search_budget(max_nodes=2),
            return_tree=True,
        )
    ]
    assert events[-1].kind == pb.REFINE_EVENT_KIND_RESULT
    assert all(e.kind != pb.REFINE_EVENT_KIND_RESULT for e in events[:-1])
    first = events[0]
    assert first.kind == pb.REFINE_EVENT_KIND_NODE_JUDGED and first.node.id == 0
    result = events[-1].result
    expanded = {e.node.id for e in events if e.kind == pb.REFINE_EVENT_KIND_NODE_EXPANDED}
    judged = {e.node.id for e in events if e.kind == pb.REFINE_EVENT_KIND_NODE_JUDGED}
    assert expanded == {n.id for n in result.tree if n.id != 0}
    assert judged == {n.id for n in result.tree}  # the verifier judges every node
    assert result.cost.nodes_expanded == len(expanded) <= 2
    for n in result.tree:
        assert n.verdict == (
            common_pb2.VERDICT_PASS if independent_check(n.response) else common_pb2.VERDICT_FAIL
        )


async def test_token_budget_bounds_the_search(refiner: AsyncRefinerClient) -> None:
    # One LLM judgement reserves 3 samples x 64 tokens; 200 leaves no room for anything else.
    reply = await refiner.refine(
        PROMPT, FAILING, judge="llm", budget=search_budget(max_nodes=10, max_generated_tokens=200)
    )
    assert generated(reply.cost) <= 200
    assert reply.cost.nodes_expanded == 0 and reply.cost.refine.requests == 0
    assert reply.outcome in (
        common_pb2.SEARCH_OUTCOME_BUDGET,
        common_pb2.SEARCH_OUTCOME_ALREADY_PASSING,
    )
    assert reply.best_response == FAILING


async def test_over_limit_and_bad_requests_are_refused(refiner: AsyncRefinerClient) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"budget": search_budget(max_nodes=5000)},
            "budget.max_nodes=5000 exceeds the server limit 64",
        ),
        ({"budget": search_budget(max_generated_tokens=10**7)}, "budget.max_generated_tokens"),
        ({"budget": search_budget(max_wall_time_s=10_000)}, "exceeds the server limit 600s"),
        ({"options": search_options(branch=99)}, "options.branch=99 exceeds the server limit 8"),
        ({"options": search_options(judge_samples=99)}, "options.judge_samples=99 exceeds"),
        ({"options": search_options(end_gate=1.5)}, "options.end_gate=1.5"),
        ({"constraints": [("nope:nothing", {})]}, "constraints[0]: unknown instruction id"),
        ({"constraints": [("length_constraints:number_words", {"num_words": 5})]}, "relation"),
        ({"judge": "verifier"}, "at least one verifiable constraint"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InvalidArgument, match=message.replace("[", r"\[").replace("]", r"\]")):
            await refiner.refine(PROMPT, FAILING, **kwargs)
    with pytest.raises(InvalidArgument, match="response is empty"):
        await refiner.refine(PROMPT, "   ")
    with pytest.raises(InvalidArgument, match="prompt is empty"):
        await refiner.answer("")
    with pytest.raises(InvalidArgument, match="samples=99 exceeds the server limit 16"):
        await refiner.judge(PROMPT, FAILING, samples=99)


async def test_wall_time_budget_returns_best_so_far(
    refiner: AsyncRefinerClient, refiner_server: Any
) -> None:
    start = time.monotonic()
    reply = await refiner.refine(
        PROMPT, FAILING, judge="llm",
        budget=search_budget(max_nodes=30, max_wall_time_s=1.5),
        options=search_options(max_depth=3),
    )  # fmt: skip
    assert time.monotonic() - start < 5
    assert reply.outcome == common_pb2.SEARCH_OUTCOME_DEADLINE
    assert reply.best_response == FAILING  # nothing was judged better in 1.5 s
    assert await engines_idle(refiner_server)


async def test_client_deadline_cancels_all_engine_work(
    refiner: AsyncRefinerClient, refiner_server: Any, actor_server: Any
) -> None:
    # The actor's answer alone takes far longer than the deadline: the actor call is
    # cancelled with the request, and its engine work is aborted.
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await refiner.answer(
            "Count from 1 to 300, one number per line.", max_tokens=600, timeout=2.0
        )
    assert time.monotonic() - start < 4
    assert await engines_idle(refiner_server, actor_server)
    # A search that would outlive the deadline ends just before it with what it has.
    reply = await refiner.refine(
        PROMPT, FAILING, judge="llm", budget=search_budget(max_nodes=30), timeout=3.0
    )
    assert reply.outcome == common_pb2.SEARCH_OUTCOME_DEADLINE
    assert await engines_idle(refiner_server, actor_server)


async def test_queue_overflow_is_resource_exhausted(
    refiner: AsyncRefinerClient, refiner_server: Any
) -> None:
    # 2 searches run and 1 waits (the session's limits); the 4th is refused at once.
    async def search() -> pb.RefineResponse:
        return await refiner.refine(
            PROMPT, FAILING, judge="llm", budget=search_budget(max_nodes=30), timeout=4.0
        )

    running = [asyncio.create_task(search()) for _ in range(3)]
    await asyncio.sleep(0.5)
    samples = scrape(refiner_server)
    assert metric_sum(samples, "spar_searches_in_flight") == 2
    assert metric_sum(samples, "spar_search_queue_length") == 1
    start = time.monotonic()
    with pytest.raises(ResourceExhausted, match="MAX_QUEUE"):
        await search()
    assert time.monotonic() - start < 1.0
    results = await asyncio.gather(*running, return_exceptions=True)
    for r in results:  # each ran until its deadline, or waited past it
        assert isinstance(r, DeadlineExceeded) or (
            isinstance(r, pb.RefineResponse) and r.outcome == common_pb2.SEARCH_OUTCOME_DEADLINE
        ), r
    assert await engines_idle(refiner_server)
    assert metric_sum(scrape(refiner_server), "spar_searches_in_flight") == 0


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spar_cli", *args], capture_output=True, text=True, timeout=120
    )


async def test_cli_judge_and_refine(refiner_target: str) -> None:
    proc = await asyncio.to_thread(
        run_cli, "judge", PROMPT, FAILING, "--judge", "verifier", "--target", refiner_target,
        "--constraint", "punctuation:no_comma",
        "--constraint", "length_constraints:number_words:" + json.dumps(CONSTRAINTS[1][1]),
        "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["verdict"] == "VERDICT_FAIL" and len(doc["constraint_results"]) == 2
    proc = await asyncio.to_thread(
        run_cli, "refine", PROMPT, "--response", FAILING, "--judge", "verifier",
        "--constraint", "punctuation:no_comma", "--budget-tokens", "10", "--target", refiner_target,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "outcome: budget" in proc.stdout and f"answer: {FAILING}" in proc.stdout
    proc = await asyncio.to_thread(
        run_cli, "refine", PROMPT, "--response", "x", "--budget-nodes", "5000",
        "--target", refiner_target,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "budget.max_nodes=5000 exceeds the server limit 64" in proc.stderr
