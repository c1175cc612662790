"""Rollout over two real actor replicas from the real artifact store, under client load."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support import make_lora, reset_to_base

from services.coordinator.rollout import Version
from services.coordinator.server import CoordinatorServer
from spar.client import AsyncActorClient, AsyncCoordinatorClient
from spar.config import CoordinatorSettings, Settings
from spar.errors import FailedPrecondition

pytestmark = pytest.mark.slow
PROMPT = "List three fruits."


def publish(trainer: object, folder: Path, iteration: int) -> Version:
    manifest = trainer.store.publish(  # type: ignore[attr-defined]
        folder, role="actor", iteration=iteration, base_model="SmolLM2-135M-Instruct"
    )
    v = manifest["version"]
    return Version(v["name"], v["digest"], "actor", iteration)


@pytest.fixture(scope="module")
def versions(
    e2e_trainer: object, model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> list[Version]:
    root = tmp_path_factory.mktemp("rollout-loras")
    return [
        publish(e2e_trainer, make_lora(model_path, root / f"v{i}", seed=20 + i), i)
        for i in (1, 2, 3)
    ]


def coordinator_settings(
    settings: Settings, tmp: Path, actors: list[str], trainer: object
) -> Settings:
    store = f"127.0.0.1:{trainer.port}"  # type: ignore[attr-defined]
    c = CoordinatorSettings(
        state_dir=str(tmp),
        trainer_target=store,
        actor={"targets": actors},  # type: ignore[arg-type]
        refiner={"targets": []},  # type: ignore[arg-type]
        reconcile_interval_s=0,
    )
    return settings.model_copy(update={"coordinator": c})


@pytest.fixture
async def coordinator(
    settings: Settings, tmp_path: Path, actor_server: object, second_actor: object,
    e2e_trainer: object,
) -> AsyncIterator[CoordinatorServer]:  # fmt: skip
    targets = [f"127.0.0.1:{s.port}" for s in (actor_server, second_actor)]  # type: ignore[attr-defined]
    server = CoordinatorServer(coordinator_settings(settings, tmp_path, targets, e2e_trainer))
    await server.start()
    yield server
    await server.stop()
    await reset_to_base(targets)


async def steady_load(targets: list[str], stop: asyncio.Event) -> tuple[int, list[str]]:
    """Clients that keep generating on every replica until stop; returns (ok, errors)."""
    ok, errors = 0, []

    async def client(target: str) -> None:
        nonlocal ok
        async with AsyncActorClient(target, timeout=120) as actor:
            while not stop.is_set():
                try:
                    await actor.generate(PROMPT, max_tokens=4, temperature=0.0)
                    ok += 1
                except Exception as exc:
                    errors.append(f"{target}: {exc}")

    await asyncio.gather(*(client(t) for t in targets for _ in range(2)))
    return ok, errors


async def active_versions(targets: list[str]) -> set[str]:
    out = set()
    for t in targets:
        async with AsyncActorClient(t) as actor:
            out.add((await actor.list_adapters()).active)
    return out


async def test_rollout_under_load_then_rollback(
    coordinator: CoordinatorServer, versions: list[Version]
) -> None:
    c = coordinator.coordinator
    targets = [r.target for r in await c.replicas("actor")]
    assert len(targets) == 2
    base_text = await greedy(targets[0])

    stop = asyncio.Event()
    load = asyncio.create_task(steady_load(targets, stop))
    await asyncio.sleep(1)
    assert await c.roll_out("actor", versions[0]) == 2
    assert await active_versions(targets) == {versions[0].name}
    v1_text = await greedy(targets[0])
    assert v1_text != base_text and await greedy(targets[1]) == v1_text
    await c.roll_out("actor", versions[1])
    stop.set()
    ok, errors = await load
    assert errors == [] and ok > 0, "requests failed during the rollouts"
    assert await active_versions(targets) == {versions[1].name}

    # The previous version stays loaded, so rollback is instant and needs no fetch.
    async with AsyncActorClient(targets[1]) as actor:
        names = {a.version.name for a in (await actor.list_adapters()).adapters}
    assert names == {versions[0].name, versions[1].name}

    async with AsyncCoordinatorClient(f"127.0.0.1:{coordinator.port}") as client:
        back = await client.rollback("actor")
        assert back.active.name == versions[0].name and back.replicas == 2
        state = await client.get_state()
    assert await active_versions(targets) == {versions[0].name}
    assert state.actor.name == versions[0].name
    assert {r.active for r in state.replicas if r.role == "actor"} == {versions[0].name}
    assert await greedy(targets[1]) == v1_text

    metrics = coordinator.metrics.registry.get_sample_value
    assert (
        metrics("spar_rollouts_total", {"service": "coordinator", "role": "actor", "result": "ok"})
        == 3
    )


async def test_a_replica_down_during_staging_leaves_all_on_the_old_version(
    coordinator: CoordinatorServer, versions: list[Version], settings: Settings, tmp_path: Path,
    e2e_trainer: object,
) -> None:  # fmt: skip
    live = [r.target for r in await coordinator.coordinator.replicas("actor")]
    await coordinator.coordinator.roll_out("actor", versions[0])
    # Same state dir, one more replica that is down.
    broken = CoordinatorServer(
        coordinator_settings(settings, tmp_path, [*live, "127.0.0.1:1"], e2e_trainer)
    )
    with pytest.raises(FailedPrecondition, match="nothing was activated"):
        await broken.coordinator.roll_out("actor", versions[2])
    await broken.coordinator.close()
    assert await active_versions(live) == {versions[0].name}
    for t in live:
        async with AsyncActorClient(t) as actor:
            names = {a.version.name for a in (await actor.list_adapters()).adapters}
        assert versions[2].name not in names, "the failed rollout's copies were dropped"
    desired, _ = broken.coordinator.store.desired("actor")
    assert desired is not None and desired.name == versions[0].name
    failed = broken.metrics.registry.get_sample_value(
        "spar_rollouts_total", {"service": "coordinator", "role": "actor", "result": "failed"}
    )
    assert failed == 1


async def test_rollback_errors(coordinator: CoordinatorServer) -> None:
    from spar.errors import InvalidArgument, NotFound

    async with AsyncCoordinatorClient(f"127.0.0.1:{coordinator.port}") as client:
        with pytest.raises(InvalidArgument, match="role"):
            await client.rollback("wizard")
        with pytest.raises(FailedPrecondition, match="no previous"):
            await client.rollback("actor")
        with pytest.raises(NotFound):
            await client.rollback("actor", "actor-9-000000000000")


async def greedy(target: str) -> str:
    async with AsyncActorClient(target, timeout=120) as actor:
        reply = await actor.generate(PROMPT, max_tokens=16, temperature=0.0)
    return reply.completions[0].text
