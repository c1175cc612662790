"""Criteria packs in the coordinator: prompt sets that name criteria, evaluation pass rate
per criterion, and the judge stage's sampled judgements sent to the outside judge."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from spar import criteria
from spar.config import ExternalJudgeSettings
from spar.errors import InvalidArgument
from spar.evaluation import Response, score
from spar.external_judge import ExternalJudge, ExternalJudgeMetrics
from spar.metrics import Metrics
from spar.prompt_sets import load_ifeval, parse_jsonl
from spar.v1 import common_pb2, refiner_pb2

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "criteria"
GOOD = (
    "Hello Sam,\n\nThank you for writing about case 48213. A replacement ships today and "
    "arrives before Friday.\n\nBest regards, the support team"
)


@pytest.fixture(autouse=True)
def packs() -> Iterator[criteria.CriteriaRegistry]:
    yield criteria.configure(EXAMPLE)
    criteria.configure(None)


def test_prompt_lines_name_criteria() -> None:
    records = parse_jsonl((EXAMPLE / "support-prompts.jsonl").read_text().splitlines(), "p")
    assert len(records) == 8
    ids = records[0].instruction_id_list
    assert ids[0] == "support/greeting" and len(ids) == 10
    assert records[0].kwargs == tuple({} for _ in ids)
    mixed = json.dumps({
        "key": 1, "prompt": "Reply.", "instruction_id_list": ["punctuation:no_comma"],
        "kwargs": [{}], "criteria": ["support/greeting", "support/short"],
    })  # fmt: skip
    (record,) = parse_jsonl([mixed], "p")
    assert record.instruction_id_list == (
        "punctuation:no_comma", "support/greeting", "support/short",
    )  # fmt: skip


def test_bad_criteria_name_the_line() -> None:
    with pytest.raises(InvalidArgument, match=r"p:2: criteria: unknown criteria pack 'billing'"):
        parse_jsonl(['{"prompt": "a"}', '{"prompt": "b", "criteria": ["billing"]}'], "p")
    with pytest.raises(InvalidArgument, match=r"p:1: criteria must be a list of strings"):
        parse_jsonl(['{"prompt": "a", "criteria": "support"}'], "p")
    bad_id = '{"key": 1, "prompt": "a", "instruction_id_list": ["support/nope"], "kwargs": [{}]}'
    with pytest.raises(InvalidArgument, match=r"p:1: constraints\[0\]: pack 'support' has no"):
        parse_jsonl([bad_id], "p")


def test_evaluation_scores_each_checkable_criterion(tmp_path: Path) -> None:
    path = tmp_path / "eval.jsonl"
    path.write_text((EXAMPLE / "support-prompts.jsonl").read_text())
    records = load_ifeval(path)[:2]
    report = score(records, [Response(GOOD), Response("Obviously you should have read it.")])
    by_id = {s.instruction_id: s for s in report.by_instruction}
    assert "support/polite_no_apology" not in by_id, "rubrics need an LLM: not scored here"
    assert by_id["support/no_blame"].strict == 0.5 and by_id["support/no_blame"].count == 2
    assert by_id["support/greeting"].strict == 0.5
    assert report.scores.prompt_level_strict == 0.5
    assert report.to_json()["results"][0]["checked"][0] == "support/greeting"


async def test_the_judge_stage_shadows_a_sample_to_the_outside_judge(tmp_path: Path) -> None:
    from services.coordinator.loop import Iteration, Ports
    from services.coordinator.state import StateStore
    from spar.config import CoordinatorSettings, Settings

    bodies: list[dict[str, Any]] = []

    def endpoint(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        answer = {"requirements": {"support/greeting": True, "support/next_step": False},
                  "overall": False}  # fmt: skip
        content = json.dumps(answer)
        return httpx.Response(200, json={"choices": [{"message": {"content": content}}]})

    metrics = Metrics("coordinator")
    external = ExternalJudge(
        ExternalJudgeSettings(url="http://judge/v1", model="m", sample_fraction=1.0),
        ExternalJudgeMetrics(metrics),
        transport=httpx.MockTransport(endpoint),
    )
    settings = Settings(
        cache_dir=tmp_path, coordinator=CoordinatorSettings(state_dir=str(tmp_path))
    )
    ports = Ports(None, None, None, None, None, None, None, external=external)  # type: ignore[arg-type]
    it = Iteration(1, settings, StateStore(tmp_path), ports, lambda *_: None)
    (record,) = parse_jsonl([(EXAMPLE / "support-prompts.jsonl").read_text().splitlines()[0]], "p")
    p = {"key": "k", **record.to_json()}
    reply = refiner_pb2.JudgeResponse(
        verdict=common_pb2.VERDICT_PASS, yes_votes=5, no_votes=0,
        constraint_results=[refiner_pb2.ConstraintResult(instruction_id="support/greeting",
                                                         strict_pass=True)],
    )  # fmt: skip
    it._shadow(p, GOOD, reply)
    await external.drain()
    asked = bodies[0]["messages"][1]["content"]
    assert "[support/greeting] Start with a greeting" in asked
    assert "[support/next_step] Tells the customer exactly" in asked

    def agreement(criterion: str, verdict: str) -> float:
        labels = {"service": "coordinator", "criterion": criterion, "agreement": verdict}
        return metrics.registry.get_sample_value("spar_external_judge_agreement_total", labels) or 0

    assert agreement("support/greeting", "agree") == 1
    assert agreement("support/next_step", "disagree") == 1, "the LLM's yes covers the rubrics"
    assert agreement("overall", "disagree") == 1
    await external.close()
