"""Evaluation without a server: IFEval scoring of known responses, request scheduling."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from spar.errors import InvalidArgument, NotFound
from spar.evaluation import Response, evaluate_actor, generate_responses, score
from spar.prompt_sets import PromptRecord, load_ifeval
from spar.v1 import actor_pb2, common_pb2

SAMPLE = Path(__file__).parents[1] / "data" / "ifeval_sample.jsonl"


def _records(*keys: int) -> list[PromptRecord]:
    by_key = {r.key: r for r in load_ifeval(SAMPLE)}
    return [by_key[k] for k in keys]


def test_scores_follow_ifeval_definitions() -> None:
    records = _records(1002, 1003, 1004, 1006)
    responses = [
        Response("Warm tea, calm mind."),  # words: yes; no comma: no
        Response("<<Fruits>>\nApple, pear and plum."),  # title: yes
        Response("Stay focused."),  # not quoted, strict or loose
        # Ends with markdown stars: the end phrase fails strict, passes loose.
        Response("**The waves taste of salt. Any other questions?**"),
    ]
    report = score(records, responses, adapter="base", max_tokens=64)
    s = report.scores
    assert (s.prompts, s.instructions) == (4, 6)
    assert s.prompt_level_strict == 1 / 4  # only the title prompt
    assert s.prompt_level_loose == 2 / 4  # + the ocean prompt
    assert s.instruction_level_strict == 3 / 6
    assert s.instruction_level_loose == 4 / 6
    by_id = {b.instruction_id: b for b in report.by_instruction}
    assert [b.instruction_id for b in report.by_instruction] == sorted(by_id)
    end = by_id["startend:end_checker"]
    assert (end.count, end.strict, end.loose) == (1, 0.0, 1.0)
    assert (by_id["punctuation:no_comma"].strict, by_id["detectable_format:title"].strict) == (
        0.0,
        1.0,
    )
    doc = report.to_json()
    assert doc["metrics"]["prompt_level_loose"] == 0.5
    assert doc["results"][3]["strict"] == [True, False]
    assert doc["results"][3]["loose"] == [True, True]
    assert doc["results"][0]["key"] == 1002 and doc["results"][0]["response"].startswith("Warm")


def test_scoring_refuses_what_it_cannot_score() -> None:
    with pytest.raises(InvalidArgument, match="2 prompts but 1 responses"):
        score(_records(1002, 1003), [Response("x")])
    with pytest.raises(InvalidArgument, match=r"keys \['p'\] have no verifiable instruction"):
        score([PromptRecord("p", "Say hi.")], [Response("hi")])
    with pytest.raises(InvalidArgument, match="no prompts to evaluate"):
        score([], [])


class SlowActor:
    """Answers after a pause and records how many requests it held at once."""

    def __init__(self, fail_on: str = "") -> None:
        self.in_flight = 0
        self.peak = 0
        self.calls: list[dict[str, Any]] = []
        self.fail_on = fail_on
        self.finished = 0

    async def generate(
        self, prompt: str = "", *, timeout: float | None = None, **kwargs: Any
    ) -> actor_pb2.GenerateResponse:
        self.calls.append({"prompt": prompt, **kwargs})
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0.05 if prompt != self.fail_on else 0.01)
            if prompt == self.fail_on:
                raise NotFound("NOT_FOUND: adapter 'x' is not loaded on this replica")
            await asyncio.sleep(0.05)
        finally:
            self.in_flight -= 1
        self.finished += 1
        return actor_pb2.GenerateResponse(
            completions=[
                actor_pb2.Completion(
                    text=f"echo: {prompt}",
                    finish_reason=common_pb2.FINISH_REASON_LENGTH,
                    completion_tokens=3,
                )
            ],
            adapter=kwargs.get("adapter", ""),
        )


@pytest.mark.parametrize(("n", "limit"), [(10, 4), (3, 32)])
async def test_requests_run_together_up_to_the_limit(n: int, limit: int) -> None:
    actor = SlowActor()
    prompts = [f"p{i}" for i in range(n)]
    done: list[int] = []
    out = await generate_responses(
        actor, prompts, adapter="actor-1-abc", max_tokens=64, concurrency=limit,
        on_response=done.append,
    )  # fmt: skip
    assert actor.peak == min(n, limit)
    assert [r.text for r in out] == [f"echo: {p}" for p in prompts]  # prompt order kept
    assert sorted(done) == list(range(n))
    assert out[0] == Response("echo: p0", "LENGTH", 3, "actor-1-abc")
    for call in actor.calls:  # greedy, pinned, bounded
        assert (call["temperature"], call["adapter"], call["max_tokens"]) == (
            0.0,
            "actor-1-abc",
            64,
        )


async def test_one_failed_request_fails_the_run_with_its_own_error() -> None:
    actor = SlowActor(fail_on="p2")
    records = [PromptRecord(i, f"p{i}", ("punctuation:no_comma",), ({},)) for i in range(8)]
    with pytest.raises(NotFound, match="adapter 'x' is not loaded"):
        await evaluate_actor(actor, records, adapter="x", concurrency=8)
    await asyncio.sleep(0.1)
    assert actor.finished == 0  # the others were cancelled, not left running


async def test_bad_arguments_fail_before_any_request() -> None:
    actor = SlowActor()
    with pytest.raises(InvalidArgument, match="concurrency=0 must be at least 1"):
        await generate_responses(actor, ["p"], concurrency=0)
    with pytest.raises(InvalidArgument, match="have no verifiable instruction"):
        await evaluate_actor(actor, [PromptRecord(1, "Say hi.")])
    assert actor.calls == []
