"""One full, small SPaR iteration over real services on loopback, with a coordinator
that is killed mid-iteration and resumes: prompts → samples → judge → search → data →
train both → evaluate → roll out to both actor replicas → record."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest
from support import free_port, reset_to_base, started_coordinator

from services.coordinator.journal import Journal
from spar.client import AsyncActorClient, AsyncCoordinatorClient
from spar.v1 import coordinator_pb2 as pb

pytestmark = pytest.mark.slow

PROMPTS = Path(__file__).parent / "iteration_prompts.jsonl"


async def test_iteration_survives_a_killed_coordinator_and_rolls_out(
    actor_server: object, second_actor: object, refiner_server: object, e2e_trainer: object,
    tmp_path: Path,
) -> None:  # fmt: skip
    actors = [f"127.0.0.1:{s.port}" for s in (actor_server, second_actor)]  # type: ignore[attr-defined]
    env = {
        **os.environ,
        "SPAR_PORT": str(free_port()),
        "SPAR_METRICS_PORT": "-1",
        "SPAR_COORDINATOR__STATE_DIR": str(tmp_path / "state"),
        "SPAR_COORDINATOR__ACTOR_TARGET": actors[0],
        "SPAR_COORDINATOR__REFINER_TARGET": f"127.0.0.1:{refiner_server.port}",  # type: ignore[attr-defined]
        "SPAR_COORDINATOR__TRAINER_TARGET": f"127.0.0.1:{e2e_trainer.port}",  # type: ignore[attr-defined]
        "SPAR_COORDINATOR__ACTOR__TARGETS": json.dumps(actors),
        "SPAR_COORDINATOR__REFINER__TARGETS": json.dumps([f"127.0.0.1:{refiner_server.port}"]),  # type: ignore[attr-defined]
        "SPAR_COORDINATOR__PROMPTS_PATH": str(PROMPTS),
        "SPAR_COORDINATOR__EVAL_PATH": str(PROMPTS),
        "SPAR_COORDINATOR__NUM_PROMPTS": "8",
        "SPAR_COORDINATOR__EVAL_PROMPTS": "4",
        "SPAR_COORDINATOR__EVAL_MAX_TOKENS": "48",
        "SPAR_COORDINATOR__SAMPLES_PER_PROMPT": "2",
        "SPAR_COORDINATOR__SAMPLE_MAX_TOKENS": "48",
        "SPAR_COORDINATOR__JUDGE": "verifier",
        "SPAR_COORDINATOR__SEARCH_MAX_NODES": "9",
        "SPAR_COORDINATOR__MAX_LENGTH": "768",
        "SPAR_COORDINATOR__LORA_RANK": "8",
        "SPAR_COORDINATOR__LEARNING_RATE_DPO": "5e-4",
        # 48-token answers make most refinements rewrites; the rewrite filter has its unit
        # tests (tests/unit/test_iteration_data.py). Here every refined search may give a
        # pair, so the actor candidate this test rolls out exists whatever was sampled.
        "SPAR_COORDINATOR__DPO_MAX_EDIT_DISTANCE": "1.0",
        "SPAR_COORDINATOR__PROMOTE_MARGIN": "1.0",
        "SPAR_COORDINATOR__RECONCILE_INTERVAL_S": "0",
        "SPAR_COORDINATOR__CONCURRENCY": "2",
    }
    proc, target = await started_coordinator(env)
    async with AsyncCoordinatorClient(target, timeout=600) as client:
        it = await client.start_iteration()
        assert it.number == 1
        # Kill it hard once the judge stage has begun (samples are checkpointed by then).
        async for event in client.watch_iteration(1):
            if event.iteration.stage >= pb.ITERATION_STAGE_JUDGE:
                break
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    samples = Journal(tmp_path / "state" / "iterations" / "0001" / "samples.jsonl")
    assert len(samples.read()) == 8

    proc, target = await started_coordinator(env)  # resumes by itself
    try:
        async with AsyncCoordinatorClient(target, timeout=1800) as client:
            final = None
            async for event in client.watch_iteration(1):
                final = event.iteration
            assert final is not None
            state = await client.get_state()
            # The coordinator writes the iteration's report once the iteration has ended.
            report = tmp_path / "state" / "iterations" / "0001" / "report.html"
            for _ in range(120):
                if report.is_file():
                    break
                await asyncio.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()

    assert final.state == pb.ITERATION_STATE_SUCCEEDED, final.error
    assert final.stage == pb.ITERATION_STAGE_DONE
    lines = samples.path.read_text().splitlines()
    assert len(lines) == len(samples.read()) == 8, "resumed work must not duplicate data"
    c = final.counts
    assert (c.prompts, c.samples) == (8, 16)
    assert c.negatives >= 1 and c.searches == c.negatives
    assert final.search_cost.nodes_expanded > 0
    # A refined search gives at most one DPO pair; echoes of the critique and repairs that
    # meet no more constraints are dropped and counted (no rewrite limit here).
    dropped = c.dpo_pairs_dropped_echo + c.dpo_pairs_dropped_no_gain
    assert c.refined >= 1 and c.dpo_pairs >= 1 and c.dpo_pairs + dropped <= c.refined
    assert c.dpo_pairs_dropped_rewrite == 0
    assert c.sft_records >= 1
    # Both candidates were trained and rolled out to every replica.
    assert final.actor_candidate.name.startswith("actor-1-")
    assert final.refiner_candidate.name.startswith("refiner-1-")
    assert state.actor.name == final.actor_candidate.name
    assert {(r.role, r.active) for r in state.replicas} == {
        ("actor", final.actor_candidate.name),
        ("refiner", final.refiner_candidate.name),
    }
    for t in actors:
        async with AsyncActorClient(t, timeout=120) as actor:
            reply = await actor.generate("Say hi.", max_tokens=4)
            assert reply.adapter == final.actor_candidate.name
    await reset_to_base([*actors, f"127.0.0.1:{refiner_server.port}"])  # type: ignore[attr-defined]
    assert final.HasField("candidate_eval") and final.candidate_eval.prompts == 4
    # Per-constraint pass rates are recorded for both evaluations, and the report draws them.
    assert (
        {c.id for c in final.candidate_eval.criteria}
        == {c.id for c in final.baseline_eval.criteria}
        != set()
    )
    html = report.read_text()
    assert html.count("data:image/png;base64,") >= 5
    assert final.actor_candidate.digest in html and "pass rate per constraint type" in html
    assert [t.stage for t in final.timings][-1] == pb.ITERATION_STAGE_RECORD
