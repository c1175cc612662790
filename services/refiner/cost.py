"""What a search may spend (:class:`Budget`) and what it spent (:class:`Cost`).

:class:`Meter` sits between the judge/search logic and the engine: every engine request
goes through it, so the cost it reports is exactly what the engine was asked for and
returned. Generated tokens are *reserved* before a request is sent (n x max_tokens)
and settled with the real count afterwards, so concurrent requests can never spend
more than the budget together.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Literal, get_args

from spar.engine.protocol import GenerationRequest, GenerationResult

Phase = Literal["judge", "refine", "generate"]
UnusableReason = Literal[
    "cut_at_max_tokens", "empty", "identical_to_parent", "duplicate", "over_context", "loop"
]
UNUSABLE_REASONS: tuple[UnusableReason, ...] = get_args(UnusableReason)
GenerateFn = Callable[[GenerationRequest], Awaitable[GenerationResult]]


class BudgetExhausted(Exception):
    """A request did not fit into what is left of the node or token budget."""


@dataclass(frozen=True)
class Budget:
    """What one search may spend: nodes, generated tokens (judge + refine), wall time."""

    max_nodes: int
    max_generated_tokens: int
    max_wall_time_s: float

    @classmethod
    def unlimited(cls) -> Budget:
        return cls(max_nodes=2**31, max_generated_tokens=2**62, max_wall_time_s=math.inf)


@dataclass
class PhaseCost:
    """Tokens and engine requests of one phase (generate, judge or refine)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0


@dataclass
class Cost:
    """What one search spent, phase by phase, and what came back unusable."""

    nodes_expanded: int = 0
    judge_samples: int = 0
    judge: PhaseCost = field(default_factory=PhaseCost)
    refine: PhaseCost = field(default_factory=PhaseCost)
    generate: PhaseCost = field(default_factory=PhaseCost)
    unparseable_judgements: int = 0
    unusable: dict[str, int] = field(default_factory=dict)
    """Refinements that did not become nodes, by reason (UNUSABLE_REASONS)."""
    guardrail_failures: dict[str, int] = field(default_factory=dict)
    """Judged responses that broke an answer guardrail, by rule (spar.guardrails.RULES)."""
    judgements: int = 0
    """Responses judged (the judge cache makes each distinct response count once)."""
    votes_skipped: int = 0
    """Judgements the LLM was not asked for, because its vote could not change them."""

    @property
    def unparseable_refinements(self) -> int:
        """All unusable refinements, whatever the reason."""
        return sum(self.unusable.values())

    def count_unusable(self, reason: UnusableReason) -> None:
        self.unusable[reason] = self.unusable.get(reason, 0) + 1

    def phase(self, name: Phase) -> PhaseCost:
        return {"judge": self.judge, "refine": self.refine, "generate": self.generate}[name]

    def snapshot(self) -> Cost:
        return replace(
            self, judge=replace(self.judge), refine=replace(self.refine),
            generate=replace(self.generate), unusable=dict(self.unusable),
            guardrail_failures=dict(self.guardrail_failures),
        )  # fmt: skip

    @property
    def generated_tokens(self) -> int:
        return self.judge.completion_tokens + self.refine.completion_tokens


class Meter:
    """Accounts every engine request of one search against its budget."""

    def __init__(self, generate: GenerateFn, budget: Budget) -> None:
        self._generate = generate
        self.budget = budget
        self.cost = Cost()
        self._reserved_tokens = 0
        self._reserved_nodes = 0
        self.exhausted = False

    # -- tokens ----------------------------------------------------------------------

    @property
    def tokens_left(self) -> int:
        spent = self.cost.generated_tokens + self._reserved_tokens
        return max(self.budget.max_generated_tokens - spent, 0)

    async def generate(self, phase: Phase, request: GenerationRequest) -> GenerationResult:
        """Sends request if its worst case fits the token budget; records its usage."""
        need = request.n * request.max_tokens
        if need > self.tokens_left:
            self.exhausted = True
            raise BudgetExhausted(
                f"{phase} request needs up to {need} tokens; {self.tokens_left} left"
            )
        self._reserved_tokens += need
        try:
            result = await self._generate(request)
        finally:
            self._reserved_tokens -= need
        c = self.cost.phase(phase)
        c.requests += 1
        c.prompt_tokens += result.usage.prompt_tokens
        c.completion_tokens += result.usage.completion_tokens
        if phase == "judge":
            self.cost.judge_samples += len(result.samples)
        return result

    def for_phase(self, phase: Phase) -> GenerateFn:
        async def generate(request: GenerationRequest) -> GenerationResult:
            return await self.generate(phase, request)

        return generate

    # -- nodes -----------------------------------------------------------------------

    def reserve_nodes(self, wanted: int) -> int:
        """Up to ``wanted`` node slots; 0 (and exhausted) when the node budget is spent."""
        free = self.budget.max_nodes - self.cost.nodes_expanded - self._reserved_nodes
        granted = max(min(wanted, free), 0)
        if granted < wanted:
            self.exhausted = True
        self._reserved_nodes += granted
        return granted

    def use_node(self) -> None:
        """Turns one reserved slot into an expanded node."""
        self._reserved_nodes -= 1
        self.cost.nodes_expanded += 1

    def release_nodes(self, count: int) -> None:
        self._reserved_nodes -= count
