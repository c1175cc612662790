"""SIGKILL of a real `spar coordinator serve` process in the middle of a rollout.

Two actor replicas run v1; the coordinator rolls out v2 and is killed as soon as v2 is
staged on a replica (between staging and switching). A new coordinator on the same state
directory must bring every replica to one version, the one its versions.json names
(here v1: the killed rollout never recorded v2), without help.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path

import pytest
from support import free_port, make_lora, reset_to_base, started_coordinator

from spar.client import AsyncActorClient, AsyncCoordinatorClient
from spar.errors import SparError

pytestmark = pytest.mark.slow

#: Rollouts tried before the test gives up on killing one between staging and switching.
ATTEMPTS = 5


async def hosted(targets: list[str]) -> dict[str, tuple[str, set[str]]]:
    """(active, loaded names) of every replica."""
    out = {}
    for t in targets:
        async with AsyncActorClient(t, timeout=10) as actor:
            reply = await actor.list_adapters()
        out[t] = (reply.active, {a.version.name for a in reply.adapters})
    return out


async def test_coordinator_killed_mid_rollout_resumes_to_one_version(
    actor_server: object, second_actor: object, e2e_trainer: object, model_path: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    store = e2e_trainer.store  # type: ignore[attr-defined]
    v1, v2 = (
        store.publish(
            make_lora(model_path, tmp_path / f"lora{i}", seed=40 + i),
            role="actor", iteration=i, base_model="SmolLM2-135M-Instruct",
        )["version"]["name"]
        for i in (1, 2)
    )  # fmt: skip
    actors = [f"127.0.0.1:{s.port}" for s in (actor_server, second_actor)]  # type: ignore[attr-defined]
    env = {
        **os.environ,
        "SPAR_TLS__PLAINTEXT": "true",
        "SPAR_PORT": str(free_port()),
        "SPAR_METRICS_PORT": "-1",
        "SPAR_COORDINATOR__STATE_DIR": str(tmp_path / "state"),
        "SPAR_COORDINATOR__TRAINER_TARGET": f"127.0.0.1:{e2e_trainer.port}",  # type: ignore[attr-defined]
        "SPAR_COORDINATOR__ACTOR_TARGET": actors[0],
        "SPAR_COORDINATOR__ACTOR__TARGETS": json.dumps(actors),
        "SPAR_COORDINATOR__REFINER__TARGETS": "[]",
        "SPAR_COORDINATOR__RECONCILE_INTERVAL_S": "1",
    }
    proc, target = await started_coordinator(env)
    try:
        async with AsyncCoordinatorClient(target, timeout=300) as client:
            assert (await client.rollback("actor", v1)).replicas == 2
        assert {a for a, _ in (await hosted(actors)).values()} == {v1}
        timings = []
        # 1. Killed once v2 is staged on a replica (the RPC has not returned), then
        # 2. once v2 is active on a replica (the others or versions.json may lag).
        for switched in (False, True):
            for _attempt in range(ATTEMPTS):
                at_kill, proc, mid = await kill_during_rollout(
                    proc, target, actors, v2, switched=switched
                )
                if mid or switched:
                    break
                # The rollout finished before the kill landed: put v1 back and try again.
                proc, target = await back_on(env, actors, v1, v2)
            else:
                raise AssertionError(f"the rollout ended before the kill in {ATTEMPTS} tries")
            proc, target, consistent = await restart_until_consistent(env, actors)
            async with AsyncCoordinatorClient(target) as client:
                state = await client.get_state()
            assert state.actor.name in (v1, v2)
            assert {r.active for r in state.replicas if r.role == "actor"} == {state.actor.name}
            active = {t: a for t, (a, _) in at_kill.items()}
            timings.append(
                f"killed once v2 was {'active' if switched else 'staged'} (active at the kill: "
                f"{sorted(active.values())}); all on {state.actor.name} {consistent:.2f} s "
                "after the restart"
            )
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
        await reset_to_base(actors)
    print(f"\nFAULT coordinator-killed (v1={v1}, v2={v2}): " + "; ".join(timings))


async def kill_during_rollout(
    proc: asyncio.subprocess.Process, target: str, actors: list[str], version: str,
    *, switched: bool,
) -> tuple[dict[str, tuple[str, set[str]]], asyncio.subprocess.Process, bool]:  # fmt: skip
    """Rolls version out and SIGKILLs the coordinator as soon as a replica has it staged
    (or active, when switched); returns what the replicas hosted then, and whether the
    kill came before the rollout's reply."""
    async with contextlib.AsyncExitStack() as stack:
        # Open channels, polled side by side: the window between staging and switching
        # is short, and a new channel per poll would spend it connecting.
        replicas = [
            await stack.enter_async_context(AsyncActorClient(t, timeout=10)) for t in actors
        ]
        client = await stack.enter_async_context(AsyncCoordinatorClient(target, timeout=300))
        rolling = asyncio.create_task(client.rollback("actor", version))
        deadline = time.monotonic() + 120
        while True:
            replies = await asyncio.gather(*(r.list_adapters() for r in replicas))
            hit = [
                reply for reply in replies
                if (reply.active == version if switched
                    else version in {a.version.name for a in reply.adapters})
            ]  # fmt: skip
            if hit or rolling.done():
                break
            assert time.monotonic() < deadline, f"{version} never reached a replica"
            await asyncio.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        (outcome,) = await asyncio.gather(rolling, return_exceptions=True)
    # Between stage and switch there is time to kill, though on a fast machine the last
    # replica may stage and the switch follow before the kill lands (the caller retries);
    # a switch takes milliseconds, so there the rollout may have completed first (the
    # replicas must agree either way).
    return await hosted(actors), proc, isinstance(outcome, SparError)


async def back_on(
    env: dict[str, str], actors: list[str], old: str, new: str
) -> tuple[asyncio.subprocess.Process, str]:
    """A new coordinator that has rolled the replicas back to old, with new unloaded, so
    that the next rollout of new stages it again; returns the process and its target."""
    proc, target = await started_coordinator(env)
    async with AsyncCoordinatorClient(target, timeout=300) as client:
        assert (await client.rollback("actor", old)).replicas == len(actors)
    for t in actors:
        async with AsyncActorClient(t, timeout=120) as actor:
            if new in {a.version.name for a in (await actor.list_adapters()).adapters}:
                await actor.retire_adapter(new)
    return proc, target


async def restart_until_consistent(
    env: dict[str, str], actors: list[str]
) -> tuple[asyncio.subprocess.Process, str, float]:
    """A new coordinator on the same state; waits until every replica runs its desired
    version; returns the process, its target and the seconds that took."""
    proc, target = await started_coordinator(env)
    restarted = time.monotonic()
    try:
        async with AsyncCoordinatorClient(target, timeout=60) as client:
            while True:
                state = await client.get_state()
                actives = {a for a, _ in (await hosted(actors)).values()}
                if actives == {state.actor.name}:
                    return proc, target, time.monotonic() - restarted
                assert time.monotonic() - restarted < 60, f"replicas on {actives}, desired {state}"
                await asyncio.sleep(0.2)
    except BaseException:
        # A coordinator left running would keep reconciling the session's shared actor
        # replicas under the tests that follow.
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        raise
