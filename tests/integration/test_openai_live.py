"""The OpenAI-compatible HTTP endpoint of the session's real refiner (real vLLM engine,
real actor, 127.0.0.1), driven by the real ``openai`` SDK (sync and async, streamed and
not) and by curl.

Generations are short and budgets tiny: the verifier judge (no LLM votes), one
refinement at most, a few dozen tokens per answer.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

import httpx
import openai
import pytest
from support import metric_sum, scrape, streamed, streamed_answer, user

from spar.client import AsyncRefinerClient

pytestmark = pytest.mark.slow

#: A constraint the actor's short answer misses, so the search runs (one node at most).
SEARCH = {
    "constraints": [
        {
            "instruction_id": "length_constraints:number_words",
            "kwargs": {"relation": "less than", "num_words": 3},
        }
    ],
    "judge": "verifier",
    "budget": {"max_nodes": 1, "max_wall_time_s": 120},
    "search": {"branch": 1, "max_depth": 1},
}
#: A constraint any answer meets: no search, the actor's answer as it is.
PASSING = {
    "constraints": [
        {
            "instruction_id": "length_constraints:number_words",
            "kwargs": {"relation": "at least", "num_words": 1},
        }
    ],
    "judge": "verifier",
}
OUTCOMES = {"already_passing", "refined", "unchanged", "exhausted", "budget", "deadline"}


@pytest.fixture
def base_url(refiner_server: Any) -> str:
    return f"http://127.0.0.1:{refiner_server.openai_port}/v1"


def check_usage(usage: Any, extension: dict[str, Any]) -> None:
    """usage is the sum of every phase; the extension gives the outcome and the cost."""
    phases = extension["usage_by_phase"]
    assert usage.prompt_tokens == sum(p["prompt_tokens"] for p in phases.values())
    assert usage.completion_tokens == sum(p["completion_tokens"] for p in phases.values())
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert phases["generate"]["completion_tokens"] > 0
    assert extension["outcome"] in OUTCOMES
    assert extension["wall_time_s"] > 0


async def test_sync_sdk_refined_answer_counts_every_token(
    base_url: str, refiner_server: Any
) -> None:
    before = scrape(refiner_server)

    def call() -> Any:
        with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
            return client.chat.completions.create(
                model="spar-refined",
                messages=user("Describe the sea."),
                max_tokens=24,
                temperature=0.0,
                extra_body={"spar": SEARCH},
            )

    reply = await asyncio.to_thread(call)
    assert reply.choices[0].message.content.strip()
    ext = reply.model_extra["spar"]
    check_usage(reply.usage, ext)
    # The actor's answer fails "under 3 words", so the refiner searched: its tokens count.
    # Whether its refinement became a node (or was unusable: cut, identical to the
    # answer) is sampled; that its generated tokens are counted is not.
    assert ext["outcome"] != "already_passing" and ext["nodes_expanded"] <= 1
    assert ext["usage_by_phase"]["refine"]["completion_tokens"] > 0
    assert reply.usage.completion_tokens > ext["usage_by_phase"]["generate"]["completion_tokens"]
    after = scrape(refiner_server)
    # HTTP answers are refined answers: the search-cost metrics count them.
    assert metric_sum(after, "spar_answers_total") == metric_sum(before, "spar_answers_total") + 1
    http = {"route": "/v1/chat/completions", "model": "spar-refined", "code": "200"}
    assert metric_sum(after, "spar_http_requests_total", **http) == (
        metric_sum(before, "spar_http_requests_total", **http) + 1
    )


async def test_async_sdk_streams_a_refined_answer(base_url: str) -> None:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
        chunks = await streamed(
            client,
            model="spar-refined",
            messages=user("Describe the sea."),
            max_tokens=24,
            temperature=0.0,
            stream_options={"include_usage": True},
            extra_body={"spar": SEARCH},
        )
    assert streamed_answer(chunks).strip()
    assert [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ] == ["stop"]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    check_usage(last.usage, last.model_extra["spar"])


async def test_actor_model_streams_and_samples(base_url: str) -> None:
    def stream() -> list[Any]:
        with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
            return list(
                client.chat.completions.create(
                    model="spar-actor", messages=user("Count to five."), max_tokens=8, stream=True
                )
            )

    chunks = await asyncio.to_thread(stream)
    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(deltas) > 1, "the actor's tokens arrive as they are generated"
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and 0 < usage[0].completion_tokens <= 8
    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
        reply = await client.chat.completions.create(
            model="spar-actor", messages=user("Name a colour."), max_tokens=6, n=2
        )
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 12
    assert reply.model_extra["spar"]["model_kind"] == "actor"


async def test_chat_history_goes_to_the_actor(base_url: str) -> None:
    history = [
        {"role": "system", "content": "You are a terse assistant for sailors."},
        {"role": "user", "content": "What is the sea?"},
        {"role": "assistant", "content": "A large body of salt water covering most of Earth."},
        {"role": "user", "content": "Describe it in a few words."},
    ]
    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
        short, long = [
            await client.chat.completions.create(
                model="spar-refined",
                messages=messages,
                max_tokens=8,
                temperature=0.0,
                extra_body={"spar": PASSING},
            )
            for messages in (history[-1:], history)
        ]
    prompt = [
        r.model_extra["spar"]["usage_by_phase"]["generate"]["prompt_tokens"] for r in (short, long)
    ]
    assert prompt[1] > prompt[0] + 10, prompt  # the system prompt and earlier turns were sent
    assert long.model_extra["spar"]["outcome"] == "already_passing"


async def test_curl_one_call(base_url: str) -> None:
    body = {"model": "spar-refined", "messages": user("Name a fish."), "max_tokens": 8,
            "temperature": 0, "spar": PASSING}  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--fail-with-body", f"{base_url}/chat/completions",
        "-H", "Content-Type: application/json", "-d", json.dumps(body),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode == 0, err.decode() + out.decode()
    reply = json.loads(out)
    assert reply["object"] == "chat.completion" and reply["choices"][0]["message"]["content"]
    assert reply["usage"]["total_tokens"] > 0 and reply["spar"]["outcome"] == "already_passing"


async def test_bad_input_gets_4xx_and_the_refiner_stays_up(
    base_url: str, refiner_target: str
) -> None:
    url = f"{base_url}/chat/completions"
    good = {"model": "spar-refined", "messages": user("Name a bird."), "max_tokens": 6,
            "spar": PASSING}  # fmt: skip
    async with httpx.AsyncClient(timeout=300) as client:
        r = await client.post(url, content=b'{"model": "spar-refined", "messages": [')
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
        r = await client.post(url, json={**good, "spar": {**PASSING, "budgett": {}}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "spar.budgett"
        r = await client.post(url, json={**good, "spar": {**SEARCH, "budget": {"max_nodes": 5000}}})
        error = r.json()["error"]
        assert r.status_code == 400, error
        assert error["param"] == "spar.budget.max_nodes" and "server limit 64" in error["message"]
        r = await client.post(url, json={**good, "max_tokens": 100_000})
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
        huge = {**good, "messages": user("x" * (1024 * 1024 + 10))}
        r = await client.post(url, json=huge)
        assert r.status_code == 413
        r = await client.post(url, json={**good, "model": "spar-refind"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        assert (await client.get(f"{base_url.removesuffix('/v1')}/health")).status_code == 200
        r = await client.post(url, json=good)
        assert r.status_code == 200, r.text
    async with AsyncRefinerClient(refiner_target, timeout=10) as grpc_client:
        assert await grpc_client.health() == "SERVING"


async def test_a_full_refiner_answers_429_with_retry_after(base_url: str) -> None:
    """The session refiner runs 2 searches and queues 1; more get 429."""
    url = f"{base_url}/chat/completions"
    body = {"model": "spar-refined", "messages": user("Describe a long river journey."),
            "max_tokens": 48, "temperature": 0, "spar": PASSING}  # fmt: skip
    async with httpx.AsyncClient(timeout=300) as client:
        replies = await asyncio.gather(*[client.post(url, json=body) for _ in range(5)])
    codes = sorted(r.status_code for r in replies)
    assert 200 in codes and 429 in codes, codes
    busy = next(r for r in replies if r.status_code == 429)
    assert busy.headers["retry-after"] == "2"
    assert busy.json()["error"]["type"] == "rate_limit_error"
