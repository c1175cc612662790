"""The outside judge client over a scripted HTTP transport: request shape, parsing,
agreement per criterion, sampling, and carrying on when the outside judge is down."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from spar.config import ExternalJudgeSettings
from spar.errors import FailedPrecondition, InvalidArgument, Unavailable
from spar.external_judge import (
    ExternalJudge,
    ExternalJudgeMetrics,
    ExternalVerdict,
    Requirement,
    SelfDecisions,
    agreement,
    answer_schema,
    parse_answer,
    sampled,
)
from spar.metrics import Metrics

MIXED = json.dumps(
    {"requirements": {"support/greeting": True, "punctuation:no_comma": False}, "overall": False}
)
REQS = [
    Requirement("support/greeting", "Start with a greeting."),
    Requirement("punctuation:no_comma", "No commas."),
]


def reply(content: str, status: int = 200) -> httpx.Response:
    body = {"model": "judge-1", "choices": [{"message": {"role": "assistant", "content": content}}]}
    return httpx.Response(status, json=body)


class Endpoint:
    """A scripted /chat/completions: records requests, answers what it is told."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def body(self, i: int = -1) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.requests[i].content)
        return doc


def judge(endpoint: Endpoint, **settings: Any) -> tuple[ExternalJudge, Metrics]:
    metrics = Metrics("refiner")
    s = ExternalJudgeSettings(url="http://judge.example/v1/", model="judge-1", **settings)
    client = ExternalJudge(
        s, ExternalJudgeMetrics(metrics), transport=httpx.MockTransport(endpoint)
    )
    return client, metrics


def value(metrics: Metrics, name: str, **labels: str) -> float:
    got = metrics.registry.get_sample_value(name, {"service": "refiner", **labels})
    return float(got or 0.0)


async def test_asks_every_requirement_with_a_json_schema_and_the_key(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("sk-test\n")
    endpoint = Endpoint(reply(MIXED))
    client, _ = judge(endpoint, api_key_file=str(key))
    verdict = await client.judge("Greet Sam.", "Hi, Sam.", REQS)
    assert verdict == ExternalVerdict(
        False, {"support/greeting": True, "punctuation:no_comma": False}, verdict.text, "judge-1"
    )
    request = endpoint.requests[0]
    assert str(request.url) == "http://judge.example/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    body = endpoint.body()
    assert body["model"] == "judge-1" and body["temperature"] == 0.0
    assert "[support/greeting] Start with a greeting." in body["messages"][1]["content"]
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema == answer_schema(REQS)
    assert schema["properties"]["requirements"]["required"] == [r.id for r in REQS]
    await client.close()


async def test_response_format_can_be_json_object_or_none() -> None:
    endpoint = Endpoint(reply('{"requirements": {}, "overall": true}'))
    client, _ = judge(endpoint, response_format="json_object")
    await client.judge("x", "y", [])
    assert endpoint.body()["response_format"] == {"type": "json_object"}
    plain, _ = judge(endpoint, response_format="none")
    await plain.judge("x", "y", [])
    assert "response_format" not in endpoint.body()
    await client.close()
    await plain.close()


def test_parse_reads_json_in_prose_and_never_guesses() -> None:
    doc = '{"requirements": {"support/greeting": true, "x": false}, "overall": true}'
    text = f"Sure! ```json\n{doc}\n```"
    v = parse_answer(text, REQS)
    assert v.overall is True and v.requirements == {"support/greeting": True}
    assert parse_answer("Yes, it is fine.", REQS).overall is None
    assert parse_answer('{"overall": "yes"}', REQS).overall is None
    half = parse_answer('{"requirements": {"support/greeting": "yes"}, "overall": false}', REQS)
    assert half.overall is False and half.requirements == {}


def test_agreement_per_criterion_and_overall() -> None:
    own = SelfDecisions(True, {"support/greeting": True, "punctuation:no_comma": True})
    outside = ExternalVerdict(False, {"support/greeting": True, "punctuation:no_comma": False})
    assert agreement(own, outside) == {
        "overall": False, "support/greeting": True, "punctuation:no_comma": False,
    }  # fmt: skip
    assert agreement(SelfDecisions(None), outside) == {}


def test_sampling_is_deterministic_and_near_the_fraction() -> None:
    keys = [(f"instruction {i}", f"response {i}") for i in range(4000)]
    share = sum(sampled(0.05, *k) for k in keys) / len(keys)
    assert 0.035 < share < 0.065
    assert [sampled(0.05, *k) for k in keys[:200]] == [sampled(0.05, *k) for k in keys[:200]]
    assert not sampled(0.0, "a", "b") and sampled(1.0, "a", "b")


async def test_compare_counts_agreement_per_criterion() -> None:
    endpoint = Endpoint(reply(MIXED))
    client, metrics = judge(endpoint, sample_fraction=1.0)
    own = SelfDecisions(True, {"support/greeting": True, "punctuation:no_comma": True})
    assert client.compare_soon("Greet Sam.", "Hi, Sam.", REQS, own)
    await client.drain()
    agree = "spar_external_judge_agreement_total"
    assert value(metrics, agree, criterion="support/greeting", agreement="agree") == 1
    assert value(metrics, agree, criterion="punctuation:no_comma", agreement="disagree") == 1
    assert value(metrics, agree, criterion="overall", agreement="disagree") == 1
    assert value(metrics, "spar_external_judgements_total", result="ok") == 1
    assert value(metrics, "spar_external_judge_up") == 1
    await client.close()


async def test_a_down_judge_is_counted_logged_and_skipped_for_a_while(
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint = Endpoint(httpx.ConnectError("connection refused"))
    client, metrics = judge(endpoint, sample_fraction=1.0, retry_after_failure_s=60)
    own = SelfDecisions(True)
    with caplog.at_level(logging.WARNING):
        assert await client.compare("x", "y", [], own) is None
    assert "outside judge failed, judgements carry on without it" in caplog.text
    assert "connection refused" in caplog.text
    assert value(metrics, "spar_external_judge_up") == 0
    assert value(metrics, "spar_external_judgements_total", result="failed") == 1
    assert await client.compare("x", "y", [], own) is None
    assert len(endpoint.requests) == 1, "no call while it is marked down"
    assert value(metrics, "spar_external_judgements_total", result="skipped_down") == 1
    await client.close()


async def test_errors_say_what_to_fix() -> None:
    client, _ = judge(Endpoint(reply("no", status=401)))
    with pytest.raises(FailedPrecondition, match="refused the API key"):
        await client.judge("x", "y", [])
    client, _ = judge(Endpoint(reply("overloaded", status=503)))
    with pytest.raises(Unavailable, match="HTTP 503"):
        await client.judge("x", "y", [])
    client, _ = judge(Endpoint(httpx.ReadTimeout("slow")), timeout_s=2)
    with pytest.raises(Unavailable, match="did not answer within 2 s"):
        await client.judge("x", "y", [])
    client, _ = judge(Endpoint(httpx.Response(200, text="<html>")))
    with pytest.raises(Unavailable, match="sent no chat completion"):
        await client.judge("x", "y", [])
    with pytest.raises(InvalidArgument, match="URL"):
        ExternalJudge(ExternalJudgeSettings(model="m"))
    assert ExternalJudge.from_settings(ExternalJudgeSettings()) is None


async def test_unreadable_answers_are_counted_not_guessed() -> None:
    client, metrics = judge(Endpoint(reply("I think it is good.")), sample_fraction=1.0)
    assert await client.compare("x", "y", REQS, SelfDecisions(True)) is None
    assert value(metrics, "spar_external_judgements_total", result="unreadable") == 1
    assert (
        value(
            metrics, "spar_external_judge_agreement_total", criterion="overall", agreement="agree"
        )
        == 0
    )
    await client.close()


async def test_more_than_max_in_flight_are_dropped_not_queued() -> None:
    gate = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        return reply('{"requirements": {}, "overall": true}')

    metrics = Metrics("refiner")
    client = ExternalJudge(
        ExternalJudgeSettings(url="http://j/v1", model="m", sample_fraction=1.0, max_in_flight=2),
        ExternalJudgeMetrics(metrics),
        transport=httpx.MockTransport(slow),
    )
    for i in range(4):
        client.compare_soon(f"x{i}", "y", [], SelfDecisions(True))
    await asyncio.sleep(0.05)
    gate.set()
    await client.drain()
    assert value(metrics, "spar_external_judgements_total", result="ok") == 2
    assert value(metrics, "spar_external_judgements_total", result="dropped") == 2
    await client.close()
