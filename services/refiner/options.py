"""Turns a request's judge kind, options and budget into configs, within server limits.

Pure logic over protobuf messages: unset fields take the server defaults, and a value
over a limit is an InvalidArgument naming the field and the limit, e.g.
``budget.max_nodes=5000 exceeds the server limit 64``.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Sequence

from google.protobuf.json_format import MessageToDict

from services.refiner.cost import Budget
from services.refiner.judge import JudgeConfig, JudgeKind, TiePolicy
from services.refiner.search import SearchConfig, Selection, Strategy
from spar.config import Limits, RefinerSettings
from spar.errors import InvalidArgument
from spar.ifeval import Constraint
from spar.v1 import common_pb2
from spar.v1 import refiner_pb2 as pb

JUDGE_KINDS: dict[int, JudgeKind] = {
    common_pb2.JUDGE_KIND_LLM: "llm",
    common_pb2.JUDGE_KIND_VERIFIER: "verifier",
    common_pb2.JUDGE_KIND_HYBRID: "hybrid",
    common_pb2.JUDGE_KIND_EXTERNAL: "external",
}
JUDGE_KIND_ENUM: dict[JudgeKind, common_pb2.JudgeKind] = {
    "llm": common_pb2.JUDGE_KIND_LLM,
    "verifier": common_pb2.JUDGE_KIND_VERIFIER,
    "hybrid": common_pb2.JUDGE_KIND_HYBRID,
    "external": common_pb2.JUDGE_KIND_EXTERNAL,
}
STRATEGIES: dict[int, Strategy] = {
    common_pb2.SEARCH_STRATEGY_BFS: "bfs",
    common_pb2.SEARCH_STRATEGY_DFS: "dfs",
}
SELECTIONS: dict[int, Selection] = {
    common_pb2.NODE_SELECTION_GREEDY: "greedy",
    common_pb2.NODE_SELECTION_PROPORTIONAL: "proportional",
}
TIE_POLICIES: dict[int, TiePolicy] = {
    pb.TIE_POLICY_RESAMPLE: "resample",
    pb.TIE_POLICY_UNDECIDED: "undecided",
}
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


def constraints(
    messages: Sequence[common_pb2.VerifiableConstraint], limits: Limits
) -> list[Constraint]:
    if len(messages) > limits.max_constraints:
        raise InvalidArgument(
            f"{len(messages)} constraints exceed the server limit {limits.max_constraints} "
            "(SPAR_LIMITS__MAX_CONSTRAINTS)"
        )
    out = []
    for i, c in enumerate(messages):
        if not c.instruction_id:
            raise InvalidArgument(f"constraints[{i}].instruction_id is empty")
        if len(c.instruction_id) > 128:
            raise InvalidArgument(f"constraints[{i}].instruction_id is longer than 128 characters")
        try:
            kwargs = MessageToDict(c.kwargs)
        except ValueError as exc:  # NaN or infinity: JSON has no such numbers
            raise InvalidArgument(f"constraints[{i}].kwargs: {exc}") from None
        size = len(json.dumps(kwargs, separators=(",", ":"), default=str))
        if size > limits.max_constraint_kwargs_chars:
            raise InvalidArgument(
                f"constraints[{i}].kwargs is {size} characters as JSON; the server limit is "
                f"{limits.max_constraint_kwargs_chars} (SPAR_LIMITS__MAX_CONSTRAINT_KWARGS_CHARS)"
            )
        out.append(Constraint(c.instruction_id, kwargs))
    return out


def judge_kind(value: int, settings: RefinerSettings) -> JudgeKind:
    if value == common_pb2.JUDGE_KIND_UNSPECIFIED:
        return settings.judge_kind
    if value not in JUDGE_KINDS:
        raise InvalidArgument(
            f"judge kind {value} is unknown; use LLM, VERIFIER, HYBRID or EXTERNAL"
        )
    return JUDGE_KINDS[value]


def _bounded(field: str, value: int, limit: int, minimum: int = 1) -> int:
    if value < minimum:
        raise InvalidArgument(f"{field}={value} must be at least {minimum}")
    if value > limit:
        raise InvalidArgument(f"{field}={value} exceeds the server limit {limit}")
    return value


def judge_config(
    settings: RefinerSettings, *, samples: int = 0, tie_policy: int = 0, field: str = "samples"
) -> JudgeConfig:
    k = _bounded(field, samples, settings.max_judge_samples) if samples else settings.judge_samples
    if tie_policy and tie_policy not in TIE_POLICIES:
        raise InvalidArgument(f"tie_policy {tie_policy} is unknown; use RESAMPLE or UNDECIDED")
    return JudgeConfig(
        samples=k,
        temperature=settings.judge_temperature,
        top_p=settings.judge_top_p,
        max_tokens=settings.judge_max_tokens,
        tie_policy=TIE_POLICIES.get(tie_policy, settings.tie_policy),
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
    options: common_pb2.SearchOptions,
    settings: RefinerSettings,
    seed_text: str,
    response_max_tokens: int = 256,
) -> SearchConfig:
    s = settings
    if options.strategy and options.strategy not in STRATEGIES:
        raise InvalidArgument(f"options.strategy {options.strategy} is unknown; use BFS or DFS")
    if options.selection and options.selection not in SELECTIONS:
        raise InvalidArgument(
            f"options.selection {options.selection} is unknown; use GREEDY or PROPORTIONAL"
        )
    end_gate = options.end_gate if options.HasField("end_gate") else s.end_gate
    if not math.isfinite(end_gate) or not 0.0 <= end_gate < 1.0:
        raise InvalidArgument(f"options.end_gate={end_gate} must be within [0, 1)")
    return SearchConfig(
        strategy=STRATEGIES.get(options.strategy, s.strategy),
        selection=SELECTIONS.get(options.selection, s.selection),
        branch=_bounded("options.branch", options.branch, s.max_branch)
        if options.HasField("branch")
        else s.branch,
        keep_top=_bounded("options.keep_top", options.keep_top, s.max_keep_top)
        if options.HasField("keep_top")
        else s.keep_top,
        max_depth=_bounded("options.max_depth", options.max_depth, s.max_depth_limit)
        if options.HasField("max_depth")
        else s.max_depth,
        end_gate=end_gate,
        refine_temperature=s.refine_temperature,
        refine_top_p=s.refine_top_p,
        refine_max_tokens=refine_max_tokens(s, response_max_tokens),
        parse_retries=s.parse_retries,
        # Repeatable selection for the same request; engine sampling is seeded separately.
        seed=zlib.crc32(seed_text.encode()),
    )


def search_judge_config(
    options: common_pb2.SearchOptions, settings: RefinerSettings
) -> JudgeConfig:
    samples = options.judge_samples if options.HasField("judge_samples") else 0
    if options.HasField("judge_samples") and samples == 0:
        raise InvalidArgument("options.judge_samples=0 must be at least 1")
    return judge_config(settings, samples=samples, field="options.judge_samples")


def budget(
    message: common_pb2.SearchBudget, settings: RefinerSettings, time_remaining: float | None
) -> Budget:
    """The request's budget, capped by the limits and by the client's deadline."""
    s = settings
    nodes = message.max_nodes or s.default_max_nodes
    if message.max_nodes > s.max_nodes_limit:
        raise InvalidArgument(
            f"budget.max_nodes={message.max_nodes} exceeds the server limit {s.max_nodes_limit}"
        )
    tokens = message.max_generated_tokens or s.default_max_generated_tokens
    if message.max_generated_tokens > s.max_generated_tokens_limit:
        raise InvalidArgument(
            f"budget.max_generated_tokens={message.max_generated_tokens} exceeds the server "
            f"limit {s.max_generated_tokens_limit}"
        )
    wall = s.default_max_wall_time_s
    if message.HasField("max_wall_time"):
        wall = message.max_wall_time.ToTimedelta().total_seconds()
        if wall <= 0:
            raise InvalidArgument(f"budget.max_wall_time={wall:g}s must be positive")
        if wall > s.max_wall_time_limit_s:
            raise InvalidArgument(
                f"budget.max_wall_time={wall:g}s exceeds the server limit "
                f"{s.max_wall_time_limit_s:g}s"
            )
    if time_remaining is not None:
        wall = min(wall, max(time_remaining - DEADLINE_MARGIN_S, 0.0))
    return Budget(max_nodes=nodes, max_generated_tokens=tokens, max_wall_time_s=wall)
