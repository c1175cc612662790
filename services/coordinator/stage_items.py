"""The per-item work of the journaled stages (sampling, searching) that an iteration and
the refiner's warm-up share: running items with bounded concurrency and retries, and the
records each item appends to its stage's journal (what :mod:`services.coordinator.data`
and the warm-up read back).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from google.protobuf import json_format

from spar.client.enums import SEARCH_OUTCOME
from spar.config import CoordinatorSettings
from spar.errors import ResourceExhausted, Unavailable
from spar.prompt_sets import PromptRecord
from spar.proto_time import as_seconds, duration
from spar.v1 import actor_pb2, common_pb2, refiner_pb2

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 30.0, 30.0)
"""Back-off of a stage's call that a busy or restarting service refused."""


async def with_retries(fn: Callable[[Any], Awaitable[None]], item: Any) -> None:
    """Calls fn(item), retrying RESOURCE_EXHAUSTED and UNAVAILABLE with back-off: the
    refiner's admission queue and replica restarts are normal in a long batch."""
    for delay in (*RETRY_DELAYS_S, None):
        try:
            await fn(item)
            return
        except (ResourceExhausted, Unavailable) as exc:
            if delay is None:
                raise
            log.info("%s; retrying in %.0f s", exc.message, delay)
            await asyncio.sleep(delay)


async def bounded(limit: int, items: Iterable[Any], fn: Callable[[Any], Awaitable[None]]) -> None:
    """Runs fn over items with at most limit in flight (so the engine batches them)."""
    sem = asyncio.Semaphore(max(1, limit))

    async def one(item: Any) -> None:
        async with sem:
            await with_retries(fn, item)

    await asyncio.gather(*(one(i) for i in items))


# -- journal records -----------------------------------------------------------------------


def prompt_record(r: PromptRecord) -> dict[str, Any]:
    """A prompt as the prompts journal keeps it (IFEval's fields; the key as text)."""
    return {
        "key": str(r.key),
        "prompt": r.prompt,
        "instruction_id_list": list(r.instruction_id_list),
        "kwargs": [dict(k) for k in r.kwargs],
    }


def sample_record(key: str, reply: actor_pb2.GenerateResponse) -> dict[str, Any]:
    """The actor's samples of one prompt."""
    return {
        "key": key,
        "responses": [c.text for c in reply.completions],
        # Whether each sample ended by itself: the warm-up's repairs never start from an
        # answer cut at max_tokens.
        "cut": [c.finish_reason == common_pb2.FINISH_REASON_LENGTH for c in reply.completions],
    }


def search_budget(c: CoordinatorSettings) -> common_pb2.SearchBudget:
    """The budget of each search of the coordinator's settings."""
    return common_pb2.SearchBudget(
        max_nodes=c.search_max_nodes,
        max_generated_tokens=c.search_max_tokens,
        max_wall_time=duration(c.search_max_wall_time_s),
    )


def search_record(
    key: str, prompt: str, root: str, reply: refiner_pb2.RefineResponse
) -> dict[str, Any]:
    """One search from ``root``, the answer it began with, and its trace."""
    return {
        "key": key,
        "prompt": prompt,
        "root": root,
        "best_response": reply.best_response,
        "outcome": SEARCH_OUTCOME.get(reply.outcome, "exhausted"),
        "trace": [node_record(n) for n in reply.trace],
    }


def node_record(n: refiner_pb2.SearchNode) -> dict[str, Any]:
    """A search trace node as the searches journal keeps it (what data.py reads)."""
    return {
        "response": n.response,
        "reflection": n.reflection,
        "critique": n.critique,
        "value": n.value,
        "constraints_met": n.constraints_met,
        "constraints_checked": n.constraints_checked,
        "hard_fail": n.hard_fail,
        "guardrails": list(n.guardrails),
        "edit_distance": n.edit_distance,
    }


def sum_costs(costs: Iterable[Mapping[str, Any]]) -> common_pb2.SearchCost:
    """The sum of the searches' costs (as the searches journal keeps them)."""
    total = common_pb2.SearchCost()
    wall = 0.0
    for doc in costs:
        c = json_format.ParseDict(doc, common_pb2.SearchCost())
        total.nodes_expanded += c.nodes_expanded
        total.judge_samples += c.judge_samples
        for phase in ("judge", "refine", "generate"):
            mine, theirs = getattr(total, phase), getattr(c, phase)
            mine.prompt_tokens += theirs.prompt_tokens
            mine.completion_tokens += theirs.completion_tokens
            mine.requests += theirs.requests
        total.judgements += c.judgements
        total.votes_skipped += c.votes_skipped
        for name in common_pb2.UnusableRefinements.DESCRIPTOR.fields_by_name:
            setattr(total.unusable, name, getattr(total.unusable, name) + getattr(c.unusable, name))
        for name in common_pb2.GuardrailFailures.DESCRIPTOR.fields_by_name:
            mine = getattr(total.guardrail_failures, name)
            setattr(total.guardrail_failures, name, mine + getattr(c.guardrail_failures, name))
        wall += as_seconds(c.wall_time)
    total.wall_time.CopyFrom(duration(wall))
    return total
