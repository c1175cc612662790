"""A recorded iteration as the coordinator leaves it, for the report tests."""

from __future__ import annotations

from typing import Any

from spar.v1 import common_pb2
from spar.v1 import coordinator_pb2 as pb


def evaluation(strict: float, criteria: dict[str, tuple[int, float]]) -> pb.EvalMetrics:
    return pb.EvalMetrics(
        prompt_level_strict=strict,
        prompt_level_loose=strict,
        instruction_level_strict=strict,
        instruction_level_loose=strict,
        prompts=8,
        criteria=[
            pb.CriterionScore(id=k, count=n, strict=v, loose=v) for k, (n, v) in criteria.items()
        ],
    )


def iteration(state: int = pb.ITERATION_STATE_SUCCEEDED, after: float = 0.5) -> pb.Iteration:
    it = pb.Iteration(
        number=3,
        state=state,
        stage=pb.ITERATION_STAGE_DONE,
        counts=pb.IterationCounts(
            prompts=4, samples=12, negatives=3, searches=3, refined=2, dpo_pairs=2, sft_records=5
        ),
        actor_candidate=common_pb2.AdapterVersion(name="actor-3-0123456789ab", digest="a" * 64),
        refiner_candidate=common_pb2.AdapterVersion(name="refiner-3-ba9876543210", digest="b" * 64),
        baseline_eval=evaluation(0.25, {"punctuation:no_comma": (4, 0.25), "old:gone": (1, 1.0)}),
        candidate_eval=evaluation(after, {"punctuation:no_comma": (4, 0.75), "new:only": (2, 1.0)}),
        decision="candidate improves prompt_level_strict; promote <b>now</b>",
    )
    it.timings.add(stage=pb.ITERATION_STAGE_SEARCH).duration.FromSeconds(42)
    return it


def search(outcome: str, nodes: int, judge: int, refine: int, seconds: float) -> dict[str, Any]:
    return {
        "key": f"{outcome}-{nodes}",
        "outcome": outcome,
        "cost": {
            "nodes_expanded": nodes,
            "judge": {"completion_tokens": judge},
            "refine": {"completion_tokens": refine},
            "wall_time": f"{seconds}s",
            "unusable": {"cut_at_max_tokens": 1, "duplicate": 0},
            "a_field_from_a_newer_refiner": 7,
        },
    }


SEARCHES = [
    search("refined", 4, 300, 500, 12.5),
    search("refined", 2, 100, 200, 6.0),
    search("exhausted", 6, 400, 500, 30.0),
]
