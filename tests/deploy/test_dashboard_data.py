"""Every dashboard query returns data from a real Prometheus that scrapes real spar services
after real traffic. The services are the test session's: a service counts once a fixture
`<service>_server` exists (tests/conftest.py; tests/deploy/conftest.py adds the trainer
and the coordinator) and it has a traffic driver below.

Queries that need a service not covered yet are named in an expected failure, never
skipped silently; with every service covered the test passes or fails on data alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from dashboard_queries import load_dashboard, queries, substitute
from deploy_tools import RULES, Tools
from metric_contract import SERVICES, exporters_needed, load_families, series_index
from support import answers_ok, free_port

NAMESPACE = "spar-e2e"
SCRAPE_INTERVAL_S = 1

pytestmark = pytest.mark.slow


# -- traffic drivers: real requests that exercise what the dashboard shows ---------------


async def drive_actor(server: Any, model_path: Path, workdir: Path, prime: bool) -> None:
    """Generations (unary, n>1, streamed) and a full adapter rollout on the replica:
    stage a real LoRA, activate it, serve with it, go back to base, retire it."""
    from spar.client import AsyncActorClient

    async with AsyncActorClient(f"127.0.0.1:{server.port}", timeout=120) as actor:
        await actor.generate("Name a colour.", max_tokens=8, temperature=0.0)
        if prime:
            return
        await actor.generate("Name a fruit.", n=2, max_tokens=8)
        async for _ in actor.generate_stream("Count to three.", max_tokens=8, temperature=0.0):
            pass
        lora = await asyncio.to_thread(_make_lora, model_path, workdir / "lora")
        name = "e2e-dashboard-1"
        await actor.stage_adapter(name, str(lora))
        await actor.activate_adapter(name)
        await actor.generate("Name a tree.", max_tokens=8, temperature=0.0)
        await actor.activate_adapter("base")
        await actor.retire_adapter(name)


class OutsideJudgeStub:
    """A minimal OpenAI-compatible /v1/chat/completions that finds every requirement met:
    the outside judge the refiner samples its judgements to while the dashboard is fed."""

    def __init__(self) -> None:
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                schema = body.get("response_format", {}).get("json_schema", {}).get("schema", {})
                ids = schema.get("properties", {}).get("requirements", {}).get("required", [])
                answer = {"requirements": dict.fromkeys(ids, True), "overall": True}
                out = json.dumps({"choices": [{"message": {"content": json.dumps(answer)}}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(out.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


_outside: list[OutsideJudgeStub] = []


def _sample_to_outside_judge(server: Any) -> None:
    """Every judgement of the session refiner also goes to the stub outside judge while
    this test drives it (from the priming round to the end of the counted one)."""
    from spar.config import ExternalJudgeSettings
    from spar.external_judge import ExternalJudge

    if not _outside:
        _outside.append(OutsideJudgeStub())
        server.service.core.external = ExternalJudge(
            ExternalJudgeSettings(url=_outside[0].url, model="stub", sample_fraction=1.0),
            server.service.core.external_metrics,
        )


async def _after_round(server: Any, prime: bool) -> None:
    """Waits for the outside judge's answers; after the counted round, detaches it."""
    service = server.service.core
    if service.external is not None:
        await service.external.drain()
        if not prime:
            await service.external.close()
            service.external = None
    if not prime and _outside:
        _outside.pop().close()


async def drive_refiner(server: Any, model_path: Path, workdir: Path, prime: bool) -> None:
    """Refined answers through the public Answer RPC (the proto contract), with the LLM
    judge and with a verifier constraint the first answer is sure to miss (a search); then
    chat completions on the OpenAI-compatible HTTP endpoint (refined and plain). Every
    judgement also goes to a stub outside judge (agreement per criterion)."""
    _sample_to_outside_judge(server)
    import grpc
    from google.protobuf.struct_pb2 import Struct

    from spar.v1 import common_pb2, refiner_pb2, refiner_pb2_grpc

    too_short = Struct()
    too_short.update({"relation": "less than", "num_words": 3})
    requests = [
        refiner_pb2.AnswerRequest(
            prompt="Describe the sea in one short sentence, all in lowercase letters.",
            judge=common_pb2.JUDGE_KIND_LLM,
        ),
        refiner_pb2.AnswerRequest(
            prompt="Describe a forest.",
            constraints=[
                common_pb2.VerifiableConstraint(
                    instruction_id="length_constraints:number_words", kwargs=too_short
                )
            ],
            judge=common_pb2.JUDGE_KIND_VERIFIER,
        ),
    ]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = refiner_pb2_grpc.RefinerStub(channel)
        for request in requests:
            request.sampling.max_tokens = 48
            request.options.branch = 2
            request.options.max_depth = 1
            request.options.judge_samples = 3
            request.budget.max_nodes = 1 if prime else 2
            await stub.Answer(request, timeout=300)
    await _chat_completions(server.openai_port, prime)
    await _after_round(server, prime)


async def _chat_completions(port: int, prime: bool) -> None:
    import httpx

    passing = {"instruction_id": "length_constraints:number_words",
               "kwargs": {"relation": "at least", "num_words": 1}}  # fmt: skip
    bodies = [
        {"model": "spar-refined", "max_tokens": 16,
         "messages": [{"role": "user", "content": "Name a river."}],
         "spar": {"constraints": [passing], "judge": "verifier"}},
        {"model": "spar-actor", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi."}]},
    ]  # fmt: skip
    async with httpx.AsyncClient(timeout=300) as client:
        for body in bodies:
            r = await client.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
        if not prime:
            await client.get(f"http://127.0.0.1:{port}/v1/models")


async def drive_trainer(server: Any, model_path: Path, workdir: Path, prime: bool) -> None:
    """One small real DPO job (4 pairs, one step): loss, reward margin, throughput, the
    job's final state and a published adapter version (which the coordinator rolls out).
    One job is enough: the training gauges keep their last values."""
    from support import PREFERENCE_PAIRS

    from spar.client import AsyncTrainerClient

    if not prime:
        return
    hyperparameters = {"lora_rank": 4, "lora_alpha": 8, "max_length": 48, "epochs": 1,
                       "batch_size": 4, "learning_rate": 5e-4, "seed": 0}  # fmt: skip
    async with AsyncTrainerClient(f"127.0.0.1:{server.port}", timeout=60) as trainer:
        data = await trainer.upload_dataset("dpo", PREFERENCE_PAIRS, name="dashboard")
        job = await trainer.submit_job(
            "dpo", data.dataset_digest, iteration=1, hyperparameters=hyperparameters
        )
        done = await asyncio.wait_for(trainer.wait_job(job.id), timeout=600)
        assert done.error == "", done.error


async def drive_coordinator(server: Any, model_path: Path, workdir: Path, prime: bool) -> None:
    """Rollouts through the public Rollback RPC: the adapter the trainer published goes to
    every actor replica (stage, then activate), the coordinator reports each replica's
    version, and everything goes back to the base model."""
    from spar.client import AsyncActorClient, AsyncCoordinatorClient, AsyncTrainerClient

    async with AsyncTrainerClient(server.settings.coordinator.trainer_target) as trainer:
        published = (await trainer.list_adapters("actor")).adapters
    assert published, "the trainer driver publishes an actor adapter first"
    version = published[-1].version.name
    async with AsyncCoordinatorClient(f"127.0.0.1:{server.port}", timeout=300) as coordinator:
        rolled = await coordinator.rollback("actor", version)
        assert rolled.active.name == version and rolled.replicas >= 1
        await coordinator.get_state()
        await coordinator.rollback("actor", "base")
    if not prime:  # leave the session's actors as other tests expect them
        for target in server.settings.coordinator.actor.targets:
            async with AsyncActorClient(target) as actor:
                for hosted in (await actor.list_adapters()).adapters:
                    await actor.retire_adapter(hosted.version.name)


def _make_lora(model_path: Path, out: Path) -> Path:
    """A small real PEFT LoRA adapter (random, non-zero weights)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(out)
    return out


#: (server, model path, scratch folder, prime) -> None. A priming round runs before
#: Prometheus starts: a counter or histogram series is born at its first increment, which
#: rate() cannot see, so each label set the queries rate() over must exist before the
#: first scrape and grow after it.
Driver = Callable[[Any, Path, Path, bool], Awaitable[None]]
#: Services whose traffic this test can drive, run in this order (the coordinator rolls
#: out what the trainer published).
DRIVERS: dict[str, Driver] = {
    "actor": drive_actor,
    "refiner": drive_refiner,
    "trainer": drive_trainer,
    "coordinator": drive_coordinator,
}
#: Queries whose data only a finished self-play iteration makes: none, since the
#: coordinator exports its iteration counters at zero from the start (its driver above
#: runs no iteration; tests/e2e/test_iteration.py does).
NEEDS_AN_ITERATION: dict[str, str] = {}


# -- the services of the session ---------------------------------------------------------


@dataclass
class Services:
    servers: dict[str, Any] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def session_services(request: pytest.FixtureRequest) -> Services:
    """The session's server of each service that has a fixture and a traffic driver.

    Resolved here, outside the event loop, because the servers are async session
    fixtures that must start on the session's loop.
    """
    found = Services()
    for service in SERVICES:
        try:
            server = request.getfixturevalue(f"{service}_server")
        except pytest.FixtureLookupError:
            found.missing[service] = f"no `{service}_server` fixture"
            continue
        if service not in DRIVERS:
            found.missing[service] = "no traffic driver in test_dashboard_data.py"
            continue
        found.servers[service] = server
    return found


# -- a real Prometheus -------------------------------------------------------------------


@dataclass
class Prometheus:
    url: str
    started: float

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result


@contextlib.asynccontextmanager
async def prometheus_scraping(
    tools: Tools, services: Services, tmp_path: Path
) -> AsyncIterator[Prometheus]:
    """Prometheus scraping every covered service the way the chart's ServiceMonitor
    does: job="spar", honor_labels, and namespace, pod and service target labels."""
    targets = [
        {
            "targets": [f"127.0.0.1:{server.metrics_port}"],
            "labels": {"namespace": NAMESPACE, "pod": f"{name}-0", "service": name},
        }
        for name, server in services.servers.items()
    ]
    config = {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
            "evaluation_interval": f"{SCRAPE_INTERVAL_S}s",
        },
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "spar", "honor_labels": True, "static_configs": targets}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            str(tools.bin / "prometheus"),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    prom = Prometheus(f"http://127.0.0.1:{port}", time.time())
    try:
        await _until(
            lambda: answers_ok(f"{prom.url}/-/ready"), 30, "Prometheus did not become ready"
        )
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def _until(check: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(message)


def _has_finite_value(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


# -- the test ----------------------------------------------------------------------------


async def test_every_dashboard_query_returns_real_data(
    session_services: Services, tools: Tools, model_path: Path, tmp_path: Path
) -> None:
    covered = set(session_services.servers)
    assert "actor" in covered, "the actor session fixture exists; it must be scraped"
    for name, server in session_services.servers.items():
        await DRIVERS[name](server, model_path, tmp_path, True)

    async with prometheus_scraping(tools, session_services, tmp_path) as prometheus:
        await _check_queries(prometheus, session_services, model_path, tmp_path)


async def _check_queries(
    prometheus: Prometheus, session_services: Services, model_path: Path, tmp_path: Path
) -> None:
    covered = set(session_services.servers)

    def all_up() -> bool:
        up = prometheus.query('up{job="spar"} == 1')
        return len(up) == len(covered)

    await _until(all_up, 30, "Prometheus did not scrape every service")
    # Traffic only now, so every counter's increase falls inside the queried window.
    for name, server in session_services.servers.items():
        await DRIVERS[name](server, model_path, tmp_path, False)
    await asyncio.sleep(4 * SCRAPE_INTERVAL_S)

    window = f"{math.ceil(time.time() - prometheus.started) + 30}s"
    index = series_index(load_families())
    empty, not_checked = [], []
    checked = 0
    for q in queries(load_dashboard()):
        needed = exporters_needed(q.expr, index)
        lacking = sorted({" or ".join(sorted(e)) for e in needed if not e & covered})
        if lacking:
            not_checked.append(f"{q.name} (needs {' and '.join(lacking)})")
            continue
        expr = substitute(q.expr, namespace=NAMESPACE, window=window)
        result = await asyncio.to_thread(prometheus.query, expr)
        if not _has_finite_value(result) and q.name in NEEDS_AN_ITERATION:
            not_checked.append(f"{q.name} ({NEEDS_AN_ITERATION[q.name]})")
            continue
        checked += 1
        if not _has_finite_value(result):
            empty.append(f"{q.name}: {expr} -> {result}")
    assert checked > 0
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

    # The namespace variable lists the scraped namespace.
    names = prometheus.api("label/namespace/values", **{"match[]": "spar_requests_total"})
    assert NAMESPACE in names

    # The alert rules evaluate on the real series without errors.
    groups = prometheus.api("rules", type="alert")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert rules and all(r["health"] == "ok" for r in rules), rules
    assert not [r for r in rules if r.get("lastError")], rules
    down = prometheus.query('ALERTS{alertname="SparServiceDown"}')
    assert down == [], "every scraped service is up"

    if not_checked:
        missing = "; ".join(f"{s}: {why}" for s, why in sorted(session_services.missing.items()))
        pytest.xfail(
            f"{checked} queries return real data; {len(not_checked)} could not be checked "
            f"(missing services: {missing or 'none'}):\n  " + "\n  ".join(not_checked)
        )
