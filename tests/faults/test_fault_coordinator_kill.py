"""SIGKILL of a real `spar coordinator serve` process in the middle of a rollout.

Two actor replicas run v1; the coordinator rolls out v2 and is killed as soon as v2 is
staged on a replica (between staging and switching). A new coordinator on the same state
directory must bring every replica to one version, the one its versions.json names
(here v1: the killed rollout never recorded v2), without help.
"""

from __future__ import annotations

import asyncio
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
            at_kill, proc = await kill_during_rollout(proc, target, actors, v2, switched=switched)
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
) -> tuple[dict[str, tuple[str, set[str]]], asyncio.subprocess.Process]:  # fmt: skip
    """Rolls version out and SIGKILLs the coordinator as soon as a replica has it staged
    (or active, when switched); returns what the replicas hosted then."""
    async with AsyncCoordinatorClient(target, timeout=300) as client:
        rolling = asyncio.create_task(client.rollback("actor", version))
        deadline = time.monotonic() + 120
        while True:
            seen = await hosted(actors)
            hit = [t for t, (active, names) in seen.items()
                   if (active == version if switched else version in names)]  # fmt: skip
            if hit or rolling.done():
                break
            assert time.monotonic() < deadline, f"{version} never reached a replica"
            await asyncio.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        (outcome,) = await asyncio.gather(rolling, return_exceptions=True)
        # Between stage and switch there is time to kill; a switch takes milliseconds, so
        # there the rollout may have completed first (the replicas must agree either way).
        assert switched or isinstance(outcome, SparError), f"not killed mid-rollout: {outcome}"
    return await hosted(actors), proc


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
