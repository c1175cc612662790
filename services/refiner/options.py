"""Turns a request's judge kind, options and budget into configs, within server limits.

Pure logic over the request's dataclasses (the servicer translates the protobuf
messages into them): unset fields take the server defaults, and a value
over a limit is an InvalidArgument naming the field and the limit, e.g.
``budget.max_nodes=5000 exceeds the server limit 64``.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

from services.refiner.cost import Budget
from services.refiner.judge import JudgeConfig, JudgeKind, TiePolicy
from services.refiner.search import SearchConfig, Selection, Strategy
from spar.config import Limits, RefinerSettings
from spar.errors import InvalidArgument
from spar.ifeval import Constraint


@dataclass(frozen=True)
class SearchOptions:
    """A request's search options; None takes the server's default."""

    strategy: Strategy | None = None
    selection: Selection | None = None
    branch: int | None = None
    """Children generated per expanded node."""
    keep_top: int | None = None
    """Children kept per level in BFS."""
    max_depth: int | None = None
    end_gate: float | None = None
    """The search stops at the first level whose best child has a value above this."""
    judge_samples: int | None = None
    """LLM judge samples per node."""


@dataclass(frozen=True)
class BudgetRequest:
    """What a request asks a search may spend; 0 (or None) takes the server's default."""

    max_nodes: int = 0
    max_generated_tokens: int = 0
    max_wall_time_s: float | None = None


#: A search ends this long before the client's deadline, so the best response found so
#: far still reaches the client (outcome DEADLINE) instead of DEADLINE_EXCEEDED.
DEADLINE_MARGIN_S = 0.5


def text(value: str, field: str, limits: Limits) -> str:
    """An instruction or prompt: non-empty and at most max_prompt_chars."""
    return _text(value, field, limits.max_prompt_chars, "SPAR_LIMITS__MAX_PROMPT_CHARS")


def response_text(value: str, field: str, limits: Limits) -> str:
    """A response to judge or refine: non-empty and at most max_response_chars."""
    return _text(value, field, limits.max_response_chars, "SPAR_LIMITS__MAX_RESPONSE_CHARS")


def _text(value: str, field: str, limit: int, setting: str) -> str:
    if not value.strip():
        raise InvalidArgument(f"{field} is empty; set it to some text")
    if len(value) > limit:
        raise InvalidArgument(
            f"{field} is {len(value)} characters; the server limit is {limit} ({setting})"
        )
    return value


def constraints(given: Sequence[Constraint], limits: Limits) -> list[Constraint]:
    """A request's constraints, within the limits on their number and size."""
    if len(given) > limits.max_constraints:
        raise InvalidArgument(
            f"{len(given)} constraints exceed the server limit {limits.max_constraints} "
            "(SPAR_LIMITS__MAX_CONSTRAINTS)"
        )
    for i, c in enumerate(given):
        if not c.instruction_id:
            raise InvalidArgument(f"constraints[{i}].instruction_id is empty")
        if len(c.instruction_id) > 128:
            raise InvalidArgument(f"constraints[{i}].instruction_id is longer than 128 characters")
        size = len(json.dumps(c.kwargs, separators=(",", ":"), default=str))
        if size > limits.max_constraint_kwargs_chars:
            raise InvalidArgument(
                f"constraints[{i}].kwargs is {size} characters as JSON; the server limit is "
                f"{limits.max_constraint_kwargs_chars} (SPAR_LIMITS__MAX_CONSTRAINT_KWARGS_CHARS)"
            )
    return list(given)


def judge_kind(value: JudgeKind | None, settings: RefinerSettings) -> JudgeKind:
    """The request's judge kind, or the server's default."""
    return settings.judge_kind if value is None else value


def _bounded(field: str, value: int, limit: int, minimum: int = 1) -> int:
    if value < minimum:
        raise InvalidArgument(f"{field}={value} must be at least {minimum}")
    if value > limit:
        raise InvalidArgument(f"{field}={value} exceeds the server limit {limit}")
    return value


def judge_config(
    settings: RefinerSettings,
    *,
    samples: int = 0,
    tie_policy: TiePolicy | None = None,
    field: str = "samples",
) -> JudgeConfig:
    """The judge's config: the request's samples (0: the default) and tie policy."""
    k = _bounded(field, samples, settings.max_judge_samples) if samples else settings.judge_samples
    return JudgeConfig(
        samples=k,
        temperature=settings.judge_temperature,
        top_p=settings.judge_top_p,
        max_tokens=settings.judge_max_tokens,
        tie_policy=settings.tie_policy if tie_policy is None else tie_policy,
        tie_resample_rounds=settings.tie_resample_rounds,
        tie_resample_samples=settings.tie_resample_samples,
        votes=settings.judge_votes,
        llm_veto=settings.llm_veto,
        guardrails=settings.guardrails,
    )


def refine_max_tokens(settings: RefinerSettings, response_max_tokens: int) -> int:
    """Tokens per refinement: the setting, or room for a whole rewrite of the response."""
    if settings.refine_max_tokens > 0:
        return settings.refine_max_tokens
    return response_max_tokens + settings.refine_extra_tokens


def search_config(
    options: SearchOptions,
    settings: RefinerSettings,
    seed_text: str,
    response_max_tokens: int = 256,
) -> SearchConfig:
    """How the request's search explores, within the server's limits."""
    s = settings
    o = options
    end_gate = s.end_gate if o.end_gate is None else o.end_gate
    if not math.isfinite(end_gate) or not 0.0 <= end_gate < 1.0:
        raise InvalidArgument(f"options.end_gate={end_gate} must be within [0, 1)")
    return SearchConfig(
        strategy=s.strategy if o.strategy is None else o.strategy,
        selection=s.selection if o.selection is None else o.selection,
        branch=s.branch if o.branch is None else _bounded("options.branch", o.branch, s.max_branch),
        root_branch=(s.root_branch or s.branch)
        if o.branch is None
        else _bounded("options.branch", o.branch, s.max_branch),
        keep_top=s.keep_top
        if o.keep_top is None
        else _bounded("options.keep_top", o.keep_top, s.max_keep_top),
        max_depth=s.max_depth
        if o.max_depth is None
        else _bounded("options.max_depth", o.max_depth, s.max_depth_limit),
        end_gate=end_gate,
        refine_temperature=s.refine_temperature,
        refine_top_p=s.refine_top_p,
        refine_max_tokens=refine_max_tokens(s, response_max_tokens),
        loop_stop=s.loop_stop(),
        refine_growth=s.refine_growth,
        parse_retries=s.parse_retries,
        # Repeatable selection for the same request; engine sampling is seeded separately.
        seed=zlib.crc32(seed_text.encode()),
    )


def search_judge_config(options: SearchOptions, settings: RefinerSettings) -> JudgeConfig:
    """The judge's config in a search (``options.judge_samples``)."""
    if options.judge_samples == 0:
        raise InvalidArgument("options.judge_samples=0 must be at least 1")
    return judge_config(settings, samples=options.judge_samples or 0, field="options.judge_samples")


def budget(request: BudgetRequest, settings: RefinerSettings) -> Budget:
    """The request's budget, within the server's limits (parsed once, before the search
    waits for a slot; :func:`within_deadline` caps it when the search starts)."""
    s = settings
    nodes = request.max_nodes or s.default_max_nodes
    if request.max_nodes > s.max_nodes_limit:
        raise InvalidArgument(
            f"budget.max_nodes={request.max_nodes} exceeds the server limit {s.max_nodes_limit}"
        )
    tokens = request.max_generated_tokens or s.default_max_generated_tokens
    if request.max_generated_tokens > s.max_generated_tokens_limit:
        raise InvalidArgument(
            f"budget.max_generated_tokens={request.max_generated_tokens} exceeds the server "
            f"limit {s.max_generated_tokens_limit}"
        )
    wall = s.default_max_wall_time_s
    if request.max_wall_time_s is not None:
        wall = request.max_wall_time_s
        if wall <= 0:
            raise InvalidArgument(f"budget.max_wall_time={wall:g}s must be positive")
        if wall > s.max_wall_time_limit_s:
            raise InvalidArgument(
                f"budget.max_wall_time={wall:g}s exceeds the server limit "
                f"{s.max_wall_time_limit_s:g}s"
            )
    return Budget(max_nodes=nodes, max_generated_tokens=tokens, max_wall_time_s=wall)


def within_deadline(budget: Budget, time_remaining: float | None) -> Budget:
    """budget with its wall time cut to end before the client's deadline (None: none)."""
    if time_remaining is None:
        return budget
    wall = min(budget.max_wall_time_s, max(time_remaining - DEADLINE_MARGIN_S, 0.0))
    return replace(budget, max_wall_time_s=wall)
