"""The loop's prompt sources and evaluation, over prompts.py and evaluate.py."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.coordinator.prompts import PromptRecord, load_ifeval, load_prompts, synthesize
from spar.config import CoordinatorSettings
from spar.v1 import coordinator_pb2

EVAL_SEED = 1_000_003
"""Seed of the synthesised held-out set; training prompts are drawn disjoint from it."""


def eval_prompts(c: CoordinatorSettings) -> list[PromptRecord]:
    if c.eval_path:
        return load_ifeval(Path(c.eval_path))[: c.eval_prompts]
    return synthesize(c.eval_prompts, EVAL_SEED, first_key=1_000_000)


def train_prompts(
    c: CoordinatorSettings, iteration: int, path: str, held_out: Sequence[PromptRecord]
) -> list[PromptRecord]:
    if path:
        return load_prompts(Path(path))
    return synthesize(c.num_prompts, iteration, exclude=[r.prompt for r in held_out])


async def evaluate(
    actor: Any, records: Sequence[PromptRecord], adapter: str, c: CoordinatorSettings
) -> coordinator_pb2.EvalMetrics:
    from services.coordinator.evaluate import evaluate_actor

    result = await evaluate_actor(
        actor, list(records), adapter=adapter, max_tokens=c.eval_max_tokens,
        concurrency=c.concurrency,
    )  # fmt: skip
    s = result.scores
    return coordinator_pb2.EvalMetrics(
        prompt_level_strict=s.prompt_level_strict,
        prompt_level_loose=s.prompt_level_loose,
        instruction_level_strict=s.instruction_level_strict,
        instruction_level_loose=s.instruction_level_loose,
        prompts=len(records),
    )
