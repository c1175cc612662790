"""Faults of a real `spar actor serve` process (its own engine, on a fixed port).

1. SIGKILL while a refiner ``Answer`` waits on it: the refiner answers UNAVAILABLE at once
   (not after the request's budget), stays SERVING, and answers again once the actor is
   back on the same port, without a restart of its own.
2. SIGTERM with a long request in flight: the request completes within the grace period,
   health turns NOT_SERVING, new requests are refused, and the process exits 0.
3. SIGTERM with a request that needs far longer than the grace period: it is cut off when
   the grace period ends, and the process exits 0.
4. SIGKILL to the server process alone: its vLLM engine processes stop within seconds.

One actor process serves the module: started once, killed and restarted by the first
test, terminated by the second, started again and terminated by the third, started again
and killed by the fourth (so the order of the tests matters).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support import free_port

from services.trainer.distributed import alive, descendants
from spar.client import AsyncActorClient, AsyncRefinerClient, search_budget
from spar.config import Settings
from spar.errors import Cancelled, SparError, Unavailable
from spar.v1 import common_pb2

pytestmark = pytest.mark.slow

GRACE_S = 20.0
#: How soon a failure must be reported (the request itself would take far longer).
PROMPT_FAILURE_S = 5.0
#: How soon an engine whose server was SIGKILLed must be gone (spar/engine/vllm_engine.py
#: gives it 5 s to stop in order before it exits hard).
ORPHAN_DEADLINE_S = 10.0
CONSTRAINTS = [("punctuation:no_comma", {})]


class ActorProcess:
    """`python -m spar_cli actor serve` on fixed ports, logging into a file."""

    def __init__(self, root: Path, settings: Settings) -> None:
        self.root = root
        self.port, self.metrics_port = free_port(), free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "SPAR_MODEL": settings.model,
            "SPAR_CACHE_DIR": str(root / "cache"),
            "SPAR_ENGINE__KV_CACHE_GIB": "1",
            "SPAR_ENGINE__MAX_LORA_RANK": "16",
            "SPAR_ENGINE__MAX_NUM_SEQS": "8",
            "SPAR_GRACE_PERIOD_S": str(GRACE_S),
            "SPAR_COORDINATOR_TARGET": "",
            "SPAR_TLS__PLAINTEXT": "true",
            "VLLM_CPU_KVCACHE_SPACE": "1",
        }
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.starts += 1
        self.log = self.root / f"actor-{self.starts}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "spar_cli", "actor", "serve", "--port", str(self.port),
                    "--metrics-port", str(self.metrics_port),
                ],
                stdout=log, stderr=subprocess.STDOUT, env=self.env,
                start_new_session=True,
            )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL to the actor and its vLLM engine processes, as when its pod dies."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    async def wait_serving(self, timeout_s: float = 240.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        async with AsyncActorClient(self.target) as client:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, self.log.read_text()[-4000:]
                try:
                    if await client.health(timeout=2) == "SERVING":
                        return
                except SparError:
                    pass
                await asyncio.sleep(0.5)
        raise AssertionError(f"the actor did not become SERVING:\n{self.log.read_text()[-4000:]}")

    def generating(self) -> float:
        """Generate requests in flight, from the actor's /metrics."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        for line in text.splitlines():
            if line.startswith("spar_requests_in_flight{") and 'method="Generate"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def stop(self) -> None:
        if self.process is not None:
            self.kill()  # also reaps engine processes a SIGTERM-ed actor left behind


@pytest.fixture(scope="module")
async def actor_process(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ActorProcess]:
    actor = ActorProcess(tmp_path_factory.mktemp("fault-actor"), settings)
    actor.start()
    try:
        await actor.wait_serving()
        yield actor
    finally:
        actor.stop()


@pytest.fixture
async def refiner_of_process(
    settings: Settings, refiner_server: Any, actor_process: ActorProcess
) -> AsyncIterator[Any]:
    """A refiner replica whose actor is the subprocess. It shares the session refiner's
    engine and adapter host (one engine less to start); its gRPC server, admission, metrics
    and actor channel are its own."""
    from services.refiner.server import RefinerServer

    refiner = refiner_server.settings.refiner.model_copy(
        update={"actor_target": actor_process.target}
    )
    server = RefinerServer(settings.model_copy(update={"refiner": refiner}))
    server.runtime.attach(refiner_server.runtime.engine, refiner_server.runtime.host)
    server.port = await server.grpc.start("127.0.0.1", 0)
    await server.grpc.set_serving(True)
    yield server
    await server.grpc.stop(0)
    await server.service.close()


async def answer(client: AsyncRefinerClient, prompt: str, max_tokens: int) -> Any:
    return await client.answer(
        prompt,
        constraints=CONSTRAINTS,
        judge="verifier",
        max_tokens=max_tokens,
        budget=search_budget(max_nodes=1),
        timeout=600,
    )


async def wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.05)


async def test_actor_killed_during_answer_gives_unavailable_then_recovers(
    actor_process: ActorProcess, refiner_of_process: Any
) -> None:
    assert actor_process.process is not None
    target = f"127.0.0.1:{refiner_of_process.port}"
    async with AsyncRefinerClient(target) as refiner:
        # A long answer (hundreds of tokens: tens of seconds on CPU), killed mid-generation.
        pending = asyncio.create_task(
            answer(refiner, "Write a 400-word story about a lighthouse keeper.", 400)
        )
        await wait_until(
            lambda: actor_process.generating() >= 1 or pending.done(), 60, "the actor generates"
        )
        assert not pending.done(), pending.result()
        killed = time.monotonic()
        actor_process.kill()
        with pytest.raises(Unavailable) as failed:
            await pending
        to_unavailable = time.monotonic() - killed
        message = str(failed.value)
        assert actor_process.target in message and "SPAR_REFINER__ACTOR_TARGET" in message
        assert to_unavailable < PROMPT_FAILURE_S, f"UNAVAILABLE after {to_unavailable:.1f} s"
        actor_process.process.wait()

        # Down: the refiner stays SERVING and refuses answers at once.
        assert await refiner.health() == "SERVING"
        t0 = time.monotonic()
        with pytest.raises(Unavailable, match="could not answer"):
            await answer(refiner, "Say hello.", 8)
        while_down = time.monotonic() - t0
        assert while_down < PROMPT_FAILURE_S

        # Back on the same port: the same refiner answers again.
        actor_process.start()
        await actor_process.wait_serving()
        back = time.monotonic()
        refused = 0
        while True:
            attempt = time.monotonic()
            try:
                reply = await answer(refiner, "Say hello.", 8)
                break
            except Unavailable:  # until the refiner's channel reconnects (gRPC backoff)
                refused += 1
                assert time.monotonic() - back < 60, "the refiner did not reconnect"
                await asyncio.sleep(0.2)
        reconnected, took = attempt - back, time.monotonic() - attempt
        assert reply.original and reply.cost.generate.completion_tokens > 0
        assert reply.verdict in (common_pb2.VERDICT_PASS, common_pb2.VERDICT_FAIL)
    print(
        f"\nFAULT actor-killed: UNAVAILABLE {to_unavailable:.2f} s after SIGKILL; "
        f"while down {while_down:.2f} s; actor SERVING again -> {refused} refused, the answer "
        f"that succeeded started after {reconnected:.2f} s and took {took:.2f} s"
    )


async def test_sigterm_drains_in_flight_and_refuses_new_requests(
    actor_process: ActorProcess,
) -> None:
    process = actor_process.process
    assert process is not None and process.poll() is None
    async with AsyncActorClient(actor_process.target, timeout=120) as client:
        # A counting continuation runs to max_tokens (~10 s on CPU), well within the grace.
        stream = client.generate_stream(
            "1, 2, 3, 4, 5, 6, 7, 8,", raw_prompt=True, max_tokens=120, temperature=0.0
        )
        first = await anext(stream)
        watch = health_pb2_grpc.HealthStub(client.channel).Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

        process.send_signal(signal.SIGTERM)
        terminated = time.monotonic()
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        # A new request (new connection) is refused while the old one drains.
        async with AsyncActorClient(actor_process.target, timeout=10) as fresh:
            t0 = time.monotonic()
            with pytest.raises(Unavailable):
                await fresh.generate("Say hi.", max_tokens=4)
            refused = time.monotonic() - t0
        assert refused < PROMPT_FAILURE_S
        assert process.poll() is None, "the in-flight request is still draining"

        rest = [delta async for delta in stream]
        drained = time.monotonic() - terminated
    tokens = max(d.usage.completion_tokens for d in rest)
    text = first.delta + "".join(d.delta for d in rest)
    finished = [d.finish_reason for d in rest if d.finish_reason]
    assert finished == [common_pb2.FINISH_REASON_LENGTH] and tokens == 120, text
    assert re.search(r"\d+, \d+", text)
    code = await asyncio.to_thread(process.wait, GRACE_S + 15)
    exited = time.monotonic() - terminated
    assert code == 0, actor_process.log.read_text()[-4000:]
    assert exited < GRACE_S + 10
    print(
        f"\nFAULT sigterm: in-flight stream finished {drained:.2f} s after SIGTERM "
        f"({tokens} tokens); new request refused in {refused:.2f} s; exit 0 after "
        f"{exited:.2f} s (grace {GRACE_S:.0f} s)"
    )


async def test_a_request_outlasting_the_grace_period_is_cut_off_at_its_end(
    actor_process: ActorProcess,
) -> None:
    """SIGTERM while a request needs far longer than the grace period: the stream ends
    with an error when the grace period ends (not when the request would have finished),
    and the process still exits 0."""
    actor_process.start()  # the previous test terminated it
    await actor_process.wait_serving()
    process = actor_process.process
    assert process is not None
    async with AsyncActorClient(actor_process.target, timeout=300) as client:
        # ~1,000 tokens: over a minute on CPU, three times the grace period.
        stream = client.generate_stream(
            "1, 2, 3, 4, 5, 6, 7, 8,", raw_prompt=True, max_tokens=1000, temperature=0.0
        )
        await anext(stream)
        process.send_signal(signal.SIGTERM)
        terminated = time.monotonic()
        chunks, finished = 0, []
        with pytest.raises(SparError) as caught:
            async for delta in stream:
                chunks += 1
                finished += [delta.finish_reason] if delta.finish_reason else []
        cut = time.monotonic() - terminated
    assert chunks > 0 and not finished  # it was streaming, and never finished
    assert GRACE_S - 1 < cut < GRACE_S + 10, f"cut {cut:.1f} s after SIGTERM"
    assert isinstance(caught.value, Unavailable | Cancelled), caught.value
    code = await asyncio.to_thread(process.wait, 30)
    exited = time.monotonic() - terminated
    assert code == 0, actor_process.log.read_text()[-4000:]
    print(
        f"\nFAULT grace-cut: stream cut {cut:.2f} s after SIGTERM ({caught.value.code.name}, "
        f"{chunks} chunks streamed meanwhile); exit 0 after {exited:.2f} s (grace {GRACE_S:.0f} s)"
    )


async def test_a_sigkill_to_the_server_alone_leaves_no_engine_running(
    actor_process: ActorProcess,
) -> None:
    """The OOM killer or a `kill -9 <pid>` ends the server process only: its vLLM
    EngineCore and worker notice their parent is gone and stop within seconds, instead of
    running on orphaned with gigabytes of memory."""
    if actor_process.process is None or actor_process.process.poll() is not None:
        actor_process.start()  # the previous test terminated it
        await actor_process.wait_serving()
    process = actor_process.process
    assert process is not None
    engines = {
        pid: comm for pid in descendants(process.pid) if (comm := _comm(pid)).startswith("VLLM::")
    }
    # /proc/<pid>/comm keeps 15 characters: "VLLM::EngineCor".
    assert {"VLLM::EngineCor", "VLLM::Worker"} <= set(engines.values()), engines
    os.kill(process.pid, signal.SIGKILL)  # the server alone, not its process group
    killed = time.monotonic()
    process.wait()
    await wait_until(
        lambda: not any(alive(pid) for pid in engines), ORPHAN_DEADLINE_S, "the engine stops"
    )
    gone = time.monotonic() - killed
    print(f"\nFAULT server-sigkill: {len(engines)} engine processes gone {gone:.2f} s after it")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
