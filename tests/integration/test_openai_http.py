"""The refiner's OpenAI-compatible HTTP endpoint over real HTTP on 127.0.0.1 (uvicorn),
driven by the real ``openai`` SDK, httpx and curl, in front of a scripted backend: what
the transport does (routes, SSE, keep-alives, errors, limits, tokens, TLS), fast and
without an engine. tests/integration/test_openai_live.py runs it on the real refiner.

The scripted backend reads the last user message: ``sleep S`` answers after S seconds,
``raise CODE`` fails with that gRPC code, ``late CODE`` fails after half a second (after
the stream has started: it starts after at most keepalive_s).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import metric_samples, refined_answer, streamed, streamed_answer, user
from test_tls_services import _cert, _key, _pem_key

from services.refiner.openai_http import OpenAIEndpoint
from spar import errors
from spar.config import AuthSettings, OpenAISettings, Settings, TlsSettings
from spar.metrics import Metrics
from spar.v1 import actor_pb2, common_pb2
from spar.v1 import refiner_pb2 as pb

TOKEN = "tok-http-5e1f0a9c"


class ScriptedBackend:
    """An AnswerBackend that answers from a script and records every request."""

    def __init__(self) -> None:
        self.answers: list[pb.AnswerRequest] = []
        self.generated: list[tuple[list[tuple[str, str]], common_pb2.SamplingParams]] = []
        self.cancelled = 0

    def ready(self) -> bool:
        return True

    async def _script(self, text: str) -> None:
        word, _, arg = text.partition(" ")
        if word == "sleep":
            await asyncio.sleep(float(arg))
        if word in ("raise", "late"):
            if word == "late":
                await asyncio.sleep(0.5)
            cls = {
                "INVALID_ARGUMENT": errors.InvalidArgument,
                "NOT_FOUND": errors.NotFound,
                "RESOURCE_EXHAUSTED": errors.ResourceExhausted,
                "UNAVAILABLE": errors.Unavailable,
                "DEADLINE_EXCEEDED": errors.DeadlineExceeded,
            }[arg.split()[0]]
            raise cls("budget.max_nodes=5000 exceeds the server limit 64" if arg.startswith(
                "INVALID") else f"scripted {arg}")  # fmt: skip

    async def answer(self, request: pb.AnswerRequest, timeout_s: float) -> pb.AnswerResponse:
        self.answers.append(request)
        try:
            await self._script(request.messages[-1].content)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        cost = common_pb2.SearchCost(
            nodes_expanded=1,
            judge_samples=3,
            generate=common_pb2.PhaseTokens(prompt_tokens=12, completion_tokens=6, requests=1),
            judge=common_pb2.PhaseTokens(prompt_tokens=200, completion_tokens=90, requests=2),
            refine=common_pb2.PhaseTokens(prompt_tokens=50, completion_tokens=20, requests=1),
        )
        cost.wall_time.FromNanoseconds(1_250_000_000)
        answer = "refined: " + " ".join(f"word{i}" for i in range(20))
        return refined_answer("original answer", answer, cost=cost)

    async def generate(
        self,
        messages: Sequence[tuple[str, str]],
        sampling: common_pb2.SamplingParams,
        timeout_s: float,
    ) -> actor_pb2.GenerateResponse:
        self.generated.append((list(messages), sampling))
        await self._script(messages[-1][1])
        return actor_pb2.GenerateResponse(
            completions=[
                actor_pb2.Completion(index=i, text=f"plain {i}") for i in range(sampling.n)
            ],
            usage=common_pb2.Usage(prompt_tokens=8, completion_tokens=4 * sampling.n),
        )

    async def generate_stream(
        self,
        messages: Sequence[tuple[str, str]],
        sampling: common_pb2.SamplingParams,
        timeout_s: float,
    ) -> AsyncIterator[actor_pb2.GenerateStreamResponse]:
        self.generated.append((list(messages), sampling))
        await self._script(messages[-1][1])
        for i in range(sampling.n):
            for word in ("plain ", "stream"):
                yield actor_pb2.GenerateStreamResponse(index=i, delta=word)
            yield actor_pb2.GenerateStreamResponse(
                index=i, finish_reason=common_pb2.FINISH_REASON_STOP
            )
        yield actor_pb2.GenerateStreamResponse(
            usage=common_pb2.Usage(prompt_tokens=8, completion_tokens=2 * sampling.n)
        )


def endpoint_settings(
    tls: TlsSettings | None = None, auth: AuthSettings | None = None, **openai_fields: Any
) -> Settings:
    fields = {"enabled": True, "port": 0, "keepalive_s": 0.2, "max_body_bytes": 8192}
    return Settings(
        host="127.0.0.1",
        grace_period_s=1.0,
        tls=tls or TlsSettings(plaintext=True),
        auth=auth or AuthSettings(),
        openai=OpenAISettings(**{**fields, **openai_fields}),
    )


class Running:
    def __init__(self, endpoint: OpenAIEndpoint, backend: ScriptedBackend, metrics: Metrics):
        self.endpoint, self.backend, self.metrics = endpoint, backend, metrics
        self.url = f"http://127.0.0.1:{endpoint.port}"


@pytest.fixture
async def start() -> AsyncIterator[Any]:
    running: list[OpenAIEndpoint] = []

    async def start(settings: Settings) -> Running:
        backend, metrics = ScriptedBackend(), Metrics("refiner")
        endpoint = OpenAIEndpoint(backend, settings, metrics)
        await endpoint.start("127.0.0.1", 0)
        running.append(endpoint)
        return Running(endpoint, backend, metrics)

    yield start
    for endpoint in running:
        await endpoint.stop()


@pytest.fixture
async def server(start: Any) -> Running:
    running: Running = await start(endpoint_settings())
    return running


def sdk(server: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def async_sdk(server: Running, api_key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=api_key, max_retries=0)


def tls_sdk(server: Running, verify: str | ssl.SSLContext) -> openai.AsyncOpenAI:
    """The async SDK over HTTPS; verify: the CA file to trust, or a context that also
    presents a client certificate."""
    return openai.AsyncOpenAI(
        base_url=f"https://127.0.0.1:{server.endpoint.port}/v1",
        api_key="x",
        max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(verify=verify),
    )


SPAR = {
    "constraints": [{"instruction_id": "punctuation:no_comma"}],
    "judge": "verifier",
    "budget": {"max_nodes": 2, "max_wall_time_s": 5},
    "search": {"strategy": "dfs"},
}


# -- the openai SDK ----------------------------------------------------------------------


async def test_models_lists_the_refined_and_the_actor_model(server: Running) -> None:
    async with async_sdk(server) as client:
        models = await client.models.list()
        assert [m.id for m in models.data] == ["spar-refined", "spar-actor"]
        assert (await client.models.retrieve("spar-actor")).id == "spar-actor"
        with pytest.raises(openai.NotFoundError, match="not served here"):
            await client.models.retrieve("gpt-4o")


async def test_sync_sdk_gets_a_refined_answer_with_honest_usage(server: Running) -> None:
    def call() -> Any:
        with sdk(server) as client:
            return client.chat.completions.create(
                model="spar-refined",
                messages=[
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Describe rain."},
                    {"role": "assistant", "content": "Rain, soft, falls."},
                    {"role": "user", "content": "Again, without commas."},
                ],
                max_tokens=32,
                temperature=0.0,
                extra_body={"spar": SPAR},
            )

    reply = await asyncio.to_thread(call)
    assert reply.choices[0].message.content.startswith("refined: word0")
    assert reply.choices[0].finish_reason == "stop" and reply.model == "spar-refined"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (262, 116)
    ext = reply.model_extra["spar"]
    assert ext["outcome"] == "refined" and ext["nodes_expanded"] == 1
    assert ext["wall_time_s"] == 1.25 and ext["original"] == "original answer"
    phases = ext["usage_by_phase"]
    assert sum(p["total_tokens"] for p in phases.values()) == reply.usage.total_tokens
    sent = server.backend.answers[-1]
    assert (sent.messages[0].role, sent.messages[0].content) == ("system", "Be brief.")
    assert len(sent.messages) == 4 and sent.sampling.max_tokens == 32
    assert sent.judge == common_pb2.JUDGE_KIND_VERIFIER
    assert sent.budget.max_nodes == 2 and sent.options.strategy == common_pb2.SEARCH_STRATEGY_DFS
    assert sent.constraints[0].instruction_id == "punctuation:no_comma"


async def test_async_sdk_streams_role_then_content_then_finish_and_usage(server: Running) -> None:
    async with async_sdk(server) as client:
        chunks = await streamed(
            client,
            model="spar-refined",
            messages=user("sleep 0.5"),  # keep-alives (every 0.2 s) come between chunks
            stream_options={"include_usage": True},
            extra_body={"spar": SPAR},
        )
    assert streamed_answer(chunks) == "refined: " + " ".join(f"word{i}" for i in range(20))
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finish] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 378
    assert [c for c in chunks if c.usage is not None] == [chunks[-1]]
    assert chunks[-1].model_extra["spar"]["outcome"] == "refined"


async def test_sync_sdk_stream_without_include_usage_puts_usage_on_the_finish_chunk(
    server: Running,
) -> None:
    def call() -> list[Any]:
        with sdk(server) as client:
            return list(
                client.chat.completions.create(
                    model="spar-refined",
                    messages=user("Describe rain."),
                    stream=True,
                )
            )

    chunks = await asyncio.to_thread(call)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 378


async def test_keepalive_comments_hold_the_stream_while_the_search_runs(start: Any) -> None:
    server = await start(endpoint_settings(keepalive_s=0.1))
    lines: list[str] = []
    async with (
        httpx.AsyncClient(timeout=30) as client,
        client.stream(
            "POST",
            f"{server.url}/v1/chat/completions",
            json={"model": "spar-refined", "stream": True,
                  "messages": user("sleep 1")},
        ) as response,
    ):  # fmt: skip
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            lines.append(line)
    events = [line for line in lines if line]
    assert events[0].startswith("data: ") and '"role":"assistant"' in events[0]
    keepalives = [i for i, line in enumerate(events) if line.startswith(":")]
    content = [i for i, line in enumerate(events) if '"content":"refined' in line]
    assert len(keepalives) >= 4, events  # every 0.1 s for about 1 s
    assert max(keepalives) < content[0], "keep-alives come while the search runs, not after"
    assert events[-1] == "data: [DONE]"


async def test_actor_model_streams_the_actor_samples(server: Running) -> None:
    async with async_sdk(server) as client:
        chunks = await streamed(client, model="spar-actor", messages=user("Count."), n=2)
        plain = await client.chat.completions.create(
            model="spar-actor", messages=user("Count."), n=3, seed=4
        )
    by_index: dict[int, str] = {}
    for c in chunks:
        for choice in c.choices:
            by_index[choice.index] = by_index.get(choice.index, "") + (choice.delta.content or "")
    assert by_index == {0: "plain stream", 1: "plain stream"}
    # Without include_usage the usage rides on the last finish chunk, as for refined answers.
    assert chunks[-1].usage.completion_tokens == 4 and chunks[-1].choices[0].finish_reason
    assert [c for c in chunks if c.usage is not None] == [chunks[-1]]
    async with async_sdk(server) as client:
        with_usage = await streamed(
            client,
            model="spar-actor",
            messages=user("Count."),
            stream_options={"include_usage": True},
        )
    assert with_usage[-1].choices == [] and with_usage[-1].usage.completion_tokens == 2
    assert [c.message.content for c in plain.choices] == ["plain 0", "plain 1", "plain 2"]
    assert plain.model_extra["spar"]["model_kind"] == "actor"
    assert [s.seed for _, s in server.backend.generated if s.HasField("seed")] == [4]


async def test_an_error_after_the_stream_started_reaches_the_sdk(server: Running) -> None:
    async with async_sdk(server) as client:
        stream = await client.chat.completions.create(
            model="spar-refined",
            messages=user("late UNAVAILABLE"),
            stream=True,
        )
        with pytest.raises(openai.APIError, match="scripted UNAVAILABLE"):
            async for _ in stream:
                pass


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "status", "sdk_error"),
    [
        ("raise INVALID_ARGUMENT", 400, openai.BadRequestError),
        ("raise NOT_FOUND", 404, openai.NotFoundError),
        ("raise RESOURCE_EXHAUSTED", 429, openai.RateLimitError),
        ("raise UNAVAILABLE", 503, openai.InternalServerError),
        ("raise DEADLINE_EXCEEDED", 504, openai.InternalServerError),
    ],
)
async def test_grpc_codes_become_http_codes_with_openai_error_objects(
    server: Running, script: str, status: int, sdk_error: type[Exception]
) -> None:
    for stream in (False, True):
        async with async_sdk(server) as client:
            with pytest.raises(sdk_error) as info:
                await client.chat.completions.create(
                    model="spar-refined",
                    messages=user(script),
                    stream=stream,
                )
        response = info.value.response  # type: ignore[attr-defined]
        assert response.status_code == status
        error = response.json()["error"]
        assert error["code"] == script.split()[1].lower() and error["type"]
        if status in (429, 503):
            assert response.headers["retry-after"] == "2"
        if status == 400:
            assert error["param"] == "spar.budget.max_nodes"
            assert error["message"].startswith("spar.budget.max_nodes=5000")


async def test_a_request_past_its_deadline_is_504(start: Any) -> None:
    server = await start(endpoint_settings(request_timeout_s=0.5))

    class Slow(ScriptedBackend):
        async def answer(self, request: pb.AnswerRequest, timeout_s: float) -> Any:
            async with asyncio.timeout(timeout_s):
                await asyncio.sleep(5)

    server.endpoint.backend = Slow()
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(
            f"{server.url}/v1/chat/completions",
            json={"model": "spar-refined", "messages": user("x")},
        )
    assert r.status_code == 504 and r.json()["error"]["code"] == "deadline_exceeded"


async def test_bad_input_gets_the_right_4xx_and_the_server_stays_up(server: Running) -> None:
    url = f"{server.url}/v1/chat/completions"
    good = {"model": "spar-refined", "messages": user("x")}
    async with httpx.AsyncClient(timeout=10) as client:
        cases: list[tuple[dict[str, Any], int, str | None, str]] = [
            ({"content": b"{not json", "headers": {"content-type": "application/json"}},
             400, None, "not valid JSON"),
            ({"content": b'{"model": NaN}'}, 400, None, "not valid JSON"),
            ({"content": b"[]"}, 400, None, "JSON object"),
            ({"json": {**good, "spar": {"budget": {"max_nodes": 2, "nodez": 1}}}},
             400, "spar.budget.nodez", "unknown field 'nodez'"),
            ({"json": {**good, "spar": {"judge": "oracle"}}}, 400, "spar.judge", "llm"),
            ({"json": {**good, "model": "gpt-4o"}}, 404, "model", "not served here"),
            ({"json": {**good, "logprobs": True}}, 400, "logprobs", "not supported"),
            ({"json": {**good, "n": 2}}, 400, "n", "one refined answer"),
            ({"json": {**good, "messages": user("x" * 9000)}},
             413, None, "8192 bytes"),
        ]  # fmt: skip
        for kwargs, status, param, message in cases:
            r = await client.post(url, **kwargs)
            assert r.status_code == status, (kwargs, r.text)
            error = r.json()["error"]
            assert error["param"] == param and message in error["message"], error

        async def chunked() -> AsyncIterator[bytes]:  # no content-length: counted as it comes
            yield b'{"model": "spar-refined", "messages": [{"role": "user", "content": "'
            for _ in range(20):
                yield b"x" * 1000
            yield b'"}]}'

        r = await client.post(url, content=chunked())
        assert r.status_code == 413
        assert (await client.get(f"{server.url}/v1/nope")).status_code == 404
        assert (await client.get(f"{server.url}/v1/chat/completions")).status_code == 405
        assert (await client.get(f"{server.url}/health")).json() == {"status": "serving"}
        assert (await client.post(url, json=good)).status_code == 200


async def curl(*args: str) -> str:
    """curl in a subprocess (the server under test runs on this event loop)."""
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--fail-with-body", *args,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode() + out.decode()
    return out.decode()


async def test_curl_gets_a_refined_answer(server: Running) -> None:
    body = {"model": "spar-refined", "messages": user("Describe rain."),
            "spar": SPAR}  # fmt: skip
    out = await curl(
        f"{server.url}/v1/chat/completions", "-H", "Content-Type: application/json",
        "-d", json.dumps(body),
    )  # fmt: skip
    reply = json.loads(out)
    assert reply["object"] == "chat.completion" and reply["usage"]["total_tokens"] == 378


async def test_metrics_count_http_requests_by_route_model_and_code(server: Running) -> None:
    async with async_sdk(server) as client:
        await client.chat.completions.create(model="spar-refined", messages=user("x"))
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="someone-else", messages=user("x"))
        await client.models.list()
    from prometheus_client import generate_latest

    samples = metric_samples(generate_latest(server.metrics.registry).decode())

    def count(route: str, model: str, code: str) -> float:
        labels = {"service": "refiner", "route": route, "model": model, "code": code}
        return samples.get(("spar_http_requests_total", tuple(sorted(labels.items()))), 0.0)

    assert count("/v1/chat/completions", "spar-refined", "200") == 1
    assert count("/v1/chat/completions", "other", "404") == 1
    assert count("/v1/models", "", "200") == 1


# -- tokens and TLS ----------------------------------------------------------------------


async def test_bearer_tokens_guard_the_api_but_not_health(start: Any, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKEN + "\n")
    server = await start(endpoint_settings(auth=AuthSettings(tokens_file=str(tokens))))
    async with async_sdk(server, api_key="wrong-token") as client:
        with pytest.raises(openai.AuthenticationError, match="invalid bearer token") as info:
            await client.models.list()
        assert info.value.response.headers["www-authenticate"] == "Bearer"
    async with httpx.AsyncClient() as client:  # no Authorization header at all
        r = await client.post(f"{server.url}/v1/chat/completions", content=b"not even json")
        assert r.status_code == 401 and "missing bearer token" in r.json()["error"]["message"]
    async with async_sdk(server, api_key=TOKEN) as client:
        reply = await client.chat.completions.create(model="spar-refined", messages=user("x"))
        assert reply.choices[0].message.content
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{server.url}/health")).status_code == 200


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("http-pki")
    ca_key = _key()
    ca = _cert("spar http test CA", ca_key, None, ca=True)
    key = _key()
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]  # fmt: skip
    cert = _cert("spar", key, (ca, ca_key), sans=sans)
    files = {
        "ca": ca.public_bytes(serialization.Encoding.PEM),
        "cert": cert.public_bytes(serialization.Encoding.PEM),
        "key": _pem_key(key),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    return {name: str(root / name) for name in files}


async def test_tls_and_mutual_tls_use_the_grpc_settings(start: Any, certs: dict[str, str]) -> None:
    tls = TlsSettings(cert_file=certs["cert"], key_file=certs["key"])
    server = await start(endpoint_settings(tls=tls))
    async with tls_sdk(server, certs["ca"]) as client:
        assert len((await client.models.list()).data) == 2
    async with httpx.AsyncClient() as plain:
        with pytest.raises(httpx.TransportError):
            await plain.get(f"http://127.0.0.1:{server.endpoint.port}/health")

    mutual = await start(endpoint_settings(tls=TlsSettings(ca_file=certs["ca"], **tls.model_dump(
        include={"cert_file", "key_file"}))))  # fmt: skip
    async with tls_sdk(mutual, certs["ca"]) as client:
        with pytest.raises(openai.APIConnectionError):
            await client.models.list()
    context = ssl.create_default_context(cafile=certs["ca"])
    context.load_cert_chain(certs["cert"], certs["key"])  # what the chart's pods present
    async with tls_sdk(mutual, context) as client:
        assert len((await client.models.list()).data) == 2


def test_the_endpoint_refuses_to_start_where_grpc_would(certs: dict[str, str]) -> None:
    with pytest.raises(errors.FailedPrecondition, match="no TLS certificate"):
        OpenAIEndpoint(ScriptedBackend(), endpoint_settings(tls=TlsSettings()), Metrics("r"))
    with pytest.raises(errors.FailedPrecondition, match="not a PEM certificate and its"):
        OpenAIEndpoint(
            ScriptedBackend(),
            endpoint_settings(tls=TlsSettings(cert_file=certs["ca"], key_file=certs["key"])),
            Metrics("r"),
        )


async def test_a_busy_port_is_a_clear_error(server: Running) -> None:
    other = OpenAIEndpoint(ScriptedBackend(), endpoint_settings(), Metrics("refiner"))
    with pytest.raises(OSError, match="SPAR_OPENAI__PORT"):
        await other.start("127.0.0.1", server.endpoint.port)
    with socket.socket() as s:  # the first endpoint still serves
        s.connect(("127.0.0.1", server.endpoint.port))


async def test_stop_lets_in_flight_requests_finish(start: Any) -> None:
    server = await start(endpoint_settings())
    async with httpx.AsyncClient(timeout=10) as client:
        pending = asyncio.ensure_future(
            client.post(
                f"{server.url}/v1/chat/completions",
                json={
                    "model": "spar-refined",
                    "messages": user("sleep 0.5"),
                },
            )
        )
        while not server.backend.answers:  # the request is in flight
            await asyncio.sleep(0.02)
        await server.endpoint.stop()
        assert (await pending).status_code == 200
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{server.url}/health")


async def test_a_client_that_goes_away_cancels_the_search(server: Running) -> None:
    async with httpx.AsyncClient(timeout=0.5) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(
                f"{server.url}/v1/chat/completions",
                json={
                    "model": "spar-refined",
                    "messages": user("sleep 30"),
                },
            )
    for _ in range(50):
        if server.backend.cancelled:
            break
        await asyncio.sleep(0.1)
    assert server.backend.cancelled == 1


async def test_spar_health_asks_the_http_endpoint_with_the_tls_settings(
    start: Any, certs: dict[str, str]
) -> None:
    """What the chart's readiness probe runs with TLS on (spar health --http-port)."""
    from spar_cli.commands.up import http_health

    plain = await start(endpoint_settings())
    ask = asyncio.to_thread
    assert await ask(
        http_health, "127.0.0.1", plain.endpoint.port, TlsSettings(plaintext=True)
    ) == ("serving")
    tls = TlsSettings(cert_file=certs["cert"], key_file=certs["key"], ca_file=certs["ca"])
    mutual = await start(endpoint_settings(tls=tls))
    port = mutual.endpoint.port
    assert await ask(http_health, "127.0.0.1", port, tls) == "serving"
    no_cert = TlsSettings(ca_file=certs["ca"])
    assert (await ask(http_health, "127.0.0.1", port, no_cert)).startswith("unreachable")
    mutual.endpoint.draining = True  # what stop() sets first
    assert await ask(http_health, "127.0.0.1", port, tls) == "not_serving"


# -- generated bodies --------------------------------------------------------------------

JSON_SCALARS = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
)  # fmt: skip
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _bodies() -> st.SearchStrategy[Any]:
    known = ["model", "messages", "max_tokens", "temperature", "top_p", "n", "stop", "seed",
             "stream", "stream_options", "logprobs", "tools", "user", "spar"]  # fmt: skip
    spar_keys = ["constraints", "judge", "budget", "search", "include_trace", "budgett"]
    messages = st.sampled_from(
        [
            user("Describe rain."),
            [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}],
            [{"role": "user", "content": [{"type": "text", "text": "z"}]}],
        ]
    )
    value = {
        "model": st.sampled_from(["spar-refined", "spar-actor", "gpt"]) | JSON,
        "messages": messages | JSON,
        "spar": st.dictionaries(st.sampled_from(spar_keys), JSON, max_size=3) | JSON,
        "stream": st.booleans(),
    }
    return st.one_of(
        JSON,
        st.dictionaries(st.sampled_from(known), st.deferred(lambda: JSON), max_size=6).flatmap(
            lambda d: st.fixed_dictionaries(
                {k: value.get(k, JSON) for k in d}
                | {"model": value["model"], "messages": value["messages"]}
            )
        ),
    )


async def test_generated_bodies_get_a_reply_or_a_4xx_never_a_crash(server: Running) -> None:
    url = f"{server.url}/v1/chat/completions"

    @settings(
        max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    @given(body=_bodies())
    def check(client: httpx.Client, body: Any) -> None:
        content = json.dumps(body).encode()  # NaN and Infinity too: not valid JSON
        r = client.post(url, content=content, headers={"content-type": "application/json"})
        assert r.status_code in {200, 400, 404, 413}, (body, r.status_code, r.text)
        if r.status_code != 200:
            error = r.json()["error"]
            assert error["message"] and error["type"], error

    # One client (a client's TLS context costs ~30 ms to build), a new connection per body.
    no_reuse = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(timeout=30, limits=no_reuse) as client:
        await asyncio.to_thread(check, client)
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{server.url}/health")).json() == {"status": "serving"}
