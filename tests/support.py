"""Helpers shared by tests (not fixtures): real PEFT adapters made on the spot, a trainer
started over a temporary store, a coordinator process, the small training sets the
trainer tests use, the refined answer a refiner replies with, streamed chat completions
read with the openai SDK, free ports, HTTP readiness and a server's Prometheus samples."""

from __future__ import annotations

import asyncio
import socket
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.parser import text_string_to_metric_families

from spar.config import Settings, TrainerSettings
from spar.v1 import common_pb2, refiner_pb2

if TYPE_CHECKING:
    from services.trainer.server import TrainerServer


def make_lora(model_path: Path, out: Path, seed: int, rank: int = 8) -> Path:
    """A real PEFT LoRA adapter with random (non-zero) weights, so it changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    model = get_peft_model(base, config)
    model.save_pretrained(out)
    return out


#: Four preference pairs: a lowercase answer chosen over the same answer shouting.
PREFERENCE_PAIRS = [
    {"prompt": f"Name {thing}. Answer in lowercase.", "chosen": good, "rejected": bad}
    for thing, good, bad in [
        ("a colour", "blue is a calm colour.", "BLUE IS A CALM COLOUR!"),
        ("an animal", "a cat is a fine animal.", "A CAT IS A FINE ANIMAL!"),
        ("a fruit", "an apple is a sweet fruit.", "AN APPLE IS A SWEET FRUIT!"),
        ("a city", "paris is a lovely city.", "PARIS IS A LOVELY CITY!"),
    ]
]
#: Four judge-style SFT records.
JUDGE_RECORDS = [
    {"prompt": f"Judge: is '{word}' lowercase?", "completion": f"Final Judgement: {verdict}"}
    for word, verdict in [("tree", "Yes"), ("TREE", "No"), ("Sky", "No"), ("river", "Yes")]
]


@asynccontextmanager
async def started_trainer(
    settings: Settings, root: Path, **trainer: Any
) -> AsyncIterator[TrainerServer]:
    """A real trainer whose store and state live under ``root``, on CPU with one torch
    thread (the CI box has two cores, shared with the actor's engine) and no gradient
    checkpointing (a 135M model needs little memory); ``trainer`` overrides any field of
    TrainerSettings."""
    from services.trainer.server import TrainerServer

    fields: dict[str, Any] = {
        "store_dir": str(root / "store"),
        "state_dir": str(root / "state"),
        "device": "cpu",
        "threads": 1,
        "gradient_checkpointing": False,
        **trainer,
    }
    own = settings.model_copy(deep=True)
    own.trainer = TrainerSettings(**fields)
    server = TrainerServer(own)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def refined_answer(original: str, answer: str, **fields: Any) -> refiner_pb2.AnswerResponse:
    """The Answer reply of a search that refined ``original`` into ``answer`` (verdict
    pass, value 1); ``fields`` sets any other field (cost, trace)."""
    return refiner_pb2.AnswerResponse(
        original=original,
        answer=answer,
        verdict=common_pb2.VERDICT_PASS,
        value=1.0,
        outcome=common_pb2.SEARCH_OUTCOME_REFINED,
        **fields,
    )


def free_port() -> int:
    """A loopback port nobody listens on now, for a server that a test starts later."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""Prometheus samples by sample name and sorted labels."""


def metric_samples(text: str) -> Samples:
    """The samples of Prometheus exposition text."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(server: Any) -> Samples:
    """The samples a running server serves on its ``metrics_port`` now."""
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        return metric_samples(reply.read().decode())


def metric_sum(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        v
        for (n, ls), v in samples.items()
        if n == name and all(dict(ls).get(k) == val for k, val in labels.items())
    )


def answers_ok(url: str) -> bool:
    """Whether a GET of url answers 200 within 2 s (False while its server is not up)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


async def started_coordinator(env: dict[str, str]) -> tuple[asyncio.subprocess.Process, str]:
    """`spar coordinator serve` as its own process with ``env`` (SPAR_PORT names its port),
    and its target once it answers SERVING (it has a minute)."""
    from spar.client import AsyncCoordinatorClient
    from spar.errors import SparError

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spar_cli", "coordinator", "serve",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    target = f"127.0.0.1:{env['SPAR_PORT']}"
    async with AsyncCoordinatorClient(target) as client:
        for _ in range(240):
            try:
                if await client.health(timeout=1) == "SERVING":
                    return proc, target
            except SparError:
                pass
            await asyncio.sleep(0.25)
    raise AssertionError("the coordinator did not start")


async def reset_to_base(targets: Iterable[str]) -> None:
    """Leaves the session's replicas as the tests that follow expect them: on the base
    model, with no adapter loaded."""
    from spar.client import AsyncActorClient

    for target in targets:
        async with AsyncActorClient(target, timeout=120) as replica:
            await replica.activate_adapter("base")
            for a in (await replica.list_adapters()).adapters:
                await replica.retire_adapter(a.version.name)


async def streamed(client: Any, **request: Any) -> list[Any]:
    """Every chunk of a chat completion that the async openai SDK ``client`` streams."""
    stream = await client.chat.completions.create(stream=True, **request)
    return [chunk async for chunk in stream]


def streamed_answer(chunks: list[Any]) -> str:
    """The answer that streamed chunks add up to (the first names the assistant's role)."""
    assert chunks[0].choices[0].delta.role == "assistant"
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def user(text: str) -> list[dict[str, str]]:
    """The messages of a chat completion request: one user message."""
    return [{"role": "user", "content": text}]
