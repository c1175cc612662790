"""A recorded iteration as the coordinator leaves it, for the report tests."""

from __future__ import annotations

from typing import Any

from services.coordinator.iteration_record import (
    Counts,
    CriterionScore,
    EvalMetrics,
    IterationRecord,
    StageTiming,
    State,
)
from services.coordinator.rollout import Version


def evaluation(strict: float, criteria: dict[str, tuple[int, float]]) -> EvalMetrics:
    return EvalMetrics(
        prompt_level_strict=strict,
        prompt_level_loose=strict,
        instruction_level_strict=strict,
        instruction_level_loose=strict,
        prompts=8,
        criteria=tuple(CriterionScore(k, n, v, v) for k, (n, v) in criteria.items()),
    )


def iteration(state: State = "succeeded", after: float = 0.5) -> IterationRecord:
    return IterationRecord(
        number=3,
        state=state,
        stage="done",
        counts=Counts(
            prompts=4, samples=12, negatives=3, searches=3, refined=2, dpo_pairs=2, sft_records=5
        ),
        actor_candidate=Version("actor-3-0123456789ab", "a" * 64),
        refiner_candidate=Version("refiner-3-ba9876543210", "b" * 64),
        baseline_eval=evaluation(0.25, {"punctuation:no_comma": (4, 0.25), "old:gone": (1, 1.0)}),
        candidate_eval=evaluation(after, {"punctuation:no_comma": (4, 0.75), "new:only": (2, 1.0)}),
        decision="candidate improves prompt_level_strict; promote <b>now</b>",
        timings=[StageTiming("search", 42.0)],
    )


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
