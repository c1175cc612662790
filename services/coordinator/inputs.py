"""The loop's prompt sources and evaluation, over prompts.py and evaluate.py."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spar.config import CoordinatorSettings
from spar.prompt_sets import PromptRecord, load_ifeval, load_prompts
from spar.prompt_synthesis import Split, check_split
from spar.v1 import coordinator_pb2

EVAL_SEED = 1_000_003
"""Seed of the synthesised held-out set and of the task/combination split."""

SPLIT = Split(EVAL_SEED)
"""Synthesised training prompts (every iteration's and the warm-up's) come from one side
of this split, synthesised held-out prompts from the other (prompts.Split)."""


def eval_prompts(c: CoordinatorSettings) -> list[PromptRecord]:
    if c.eval_path:
        return load_ifeval(Path(c.eval_path))[: c.eval_prompts]
    return SPLIT.synthesize("held_out", c.eval_prompts, EVAL_SEED, first_key=1_000_000)


def train_prompts(
    c: CoordinatorSettings, iteration: int, path: str, held_out: Sequence[PromptRecord]
) -> list[PromptRecord]:
    if path:
        return load_prompts(Path(path))
    records = SPLIT.synthesize("train", c.num_prompts, iteration, [r.prompt for r in held_out])
    if not c.eval_path:
        # Both sides synthesised: the split must hold (InvalidArgument names the prompt).
        check_split(records, held_out, SPLIT)
    return records


async def evaluate(
    actor: Any, records: Sequence[PromptRecord], adapter: str, c: CoordinatorSettings
) -> coordinator_pb2.EvalMetrics:
    from spar.evaluation import evaluate_actor

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
        # Per instruction id: what the iteration report draws before and after.
        criteria=[
            coordinator_pb2.CriterionScore(
                id=i.instruction_id, count=i.count, strict=i.strict, loose=i.loose
            )
            for i in result.by_instruction
        ],
    )
