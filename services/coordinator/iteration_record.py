"""The record of one SPaR iteration, as dataclasses, and its file format.

``<state_dir>/iterations/<number>/iteration.json`` holds :meth:`IterationRecord.to_json`:
spar's own versioned schema (``"schema": "spar.coordinator.iteration/v1"``), not protobuf
JSON. Records of older coordinators (protobuf JSON of ``spar.v1.Iteration``) are read
through :func:`services.coordinator.iteration_messages.record_from_protobuf_json`. The
wire message ``spar.v1.Iteration`` is made from a record at the edge
(:mod:`services.coordinator.iteration_messages`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from services.coordinator.rollout import Version
from spar.dataclass_json import as_document, from_document

ITERATION_SCHEMA = "spar.coordinator.iteration/v1"
"""The ``schema`` field of an iteration record in this format."""

State = Literal["running", "succeeded", "rejected", "failed", "awaiting_approval"]
Stage = Literal[
    "prompts", "sample", "judge", "search", "build_data", "train", "evaluate", "rollout",
    "record", "done",
]  # fmt: skip
STAGES: tuple[Stage, ...] = get_args(Stage)[:-1]
"""The stages in the order they run (``done`` follows the last)."""


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Counts:
    """How much data each stage made or dropped."""

    prompts: int = 0
    """Training prompts of the iteration."""
    samples: int = 0
    """Actor responses sampled for them."""
    negatives: int = 0
    """Failing responses, each the root of a search."""
    searches: int = 0
    refined: int = 0
    """Searches that found a passing refinement."""
    dpo_pairs: int = 0
    sft_records: int = 0
    """Refiner SFT records: refinement and judgement records together."""
    search_outcomes: dict[str, int] = field(default_factory=dict)
    """Searches per outcome (already_passing, refined, unchanged, exhausted, budget,
    deadline)."""
    dpo_pairs_dropped_rewrite: int = 0
    """Refined pairs dropped: the chosen answer rewrote rather than repaired the rejected
    one (edit distance over ``dpo_max_edit_distance``)."""
    dpo_pairs_dropped_no_gain: int = 0
    """Refined pairs dropped: the answer met no more checked constraints than the original."""
    refine_records: int = 0
    """Refinement steps on paths that ended in a passing node."""
    refine_steps_failed_search: int = 0
    """Refinement steps not used: of searches that never passed."""
    refine_steps_dropped: int = 0
    """Refinement steps not used: on a passing path, but losing a checked constraint or
    breaking a guardrail."""
    judge_records: int = 0
    judge_agreed: int = 0
    """Judgements with known constraints where the LLM's majority agreed with the verifier."""
    judge_relabelled: int = 0
    """... where it disagreed (relabelled with the verifier's verdict)."""
    judge_verifier_only: int = 0
    """... where it did not vote."""
    judge_unchecked: int = 0
    """Judgements without known constraints, kept by the paper's split-vote rule."""
    judge_capped: int = 0
    """Judgements left out for balance (one per prompt and target verdict)."""
    dpo_pairs_dropped_echo: int = 0
    """Refined pairs dropped: the answer repeats a complaint of the critique it fixes."""


@dataclass(frozen=True)
class CriterionScore:
    """Pass rate of one criterion (or IFEval instruction id) in an evaluation."""

    id: str
    count: int
    strict: float
    loose: float


@dataclass(frozen=True)
class EvalMetrics:
    """IFEval's four metrics of one adapter on the held-out prompts."""

    prompt_level_strict: float = 0.0
    """Share of prompts whose every instruction holds (strict check)."""
    prompt_level_loose: float = 0.0
    instruction_level_strict: float = 0.0
    """Share of instructions that hold (strict check)."""
    instruction_level_loose: float = 0.0
    prompts: int = 0
    criteria: tuple[CriterionScore, ...] = ()
    """Pass rate per criterion (or IFEval instruction id)."""


@dataclass
class PhaseTokens:
    """Tokens and engine requests of one phase of the searches."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    """Generated tokens."""
    requests: int = 0


@dataclass
class SearchCost:
    """What the iteration's searches spent, summed."""

    nodes_expanded: int = 0
    judge_samples: int = 0
    """LLM judge samples drawn."""
    judge: PhaseTokens = field(default_factory=PhaseTokens)
    refine: PhaseTokens = field(default_factory=PhaseTokens)
    generate: PhaseTokens = field(default_factory=PhaseTokens)
    wall_time_s: float = 0.0
    """Seconds the searches took, summed."""
    unusable: dict[str, int] = field(default_factory=dict)
    """Refinements dropped, per reason."""
    guardrail_failures: dict[str, int] = field(default_factory=dict)
    """Judgements a guardrail failed, per rule."""
    judgements: int = 0
    votes_skipped: int = 0
    """Judgements that drew no LLM votes because a vote could not change them."""


@dataclass(frozen=True)
class WarmupReport:
    """What the refiner's warm-up before iteration 1 did."""

    prompts: int = 0
    samples: int = 0
    failing: int = 0
    """Samples that failed a checked constraint and ended by themselves."""
    searches: int = 0
    searches_refined: int = 0
    search_records: int = 0
    """Training records from the searches."""
    repair_records: int = 0
    """Training records from exact programmatic repairs."""
    mix: dict[str, int] = field(default_factory=dict)
    """Records by the constraint type they fix (instruction id), both sources together."""
    version: Version | None = None
    """The refiner version it rolled out (None: none)."""
    duration_s: float = 0.0
    skipped: str = ""
    """Why it trained nothing ('' when it did)."""
    repairs_capped: int = 0


@dataclass(frozen=True)
class StageTiming:
    """How long one stage of the iteration took."""

    stage: Stage
    seconds: float
    """Wall time of the stage, in seconds."""


@dataclass
class IterationRecord:
    """One iteration: where it is, what it made, what was decided and why."""

    number: int
    state: State = "running"
    stage: Stage = "prompts"
    """The stage it runs (or stopped in); ``done`` when finished."""
    counts: Counts = field(default_factory=Counts)
    actor_candidate: Version | None = None
    refiner_candidate: Version | None = None
    baseline_eval: EvalMetrics | None = None
    """The active actor version's metrics (None: not evaluated)."""
    candidate_eval: EvalMetrics | None = None
    search_cost: SearchCost | None = None
    timings: list[StageTiming] = field(default_factory=list)
    error: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    decision: str = ""
    """Why the candidate was promoted or not, with an operator's note."""
    decided_by: str = ""
    warmup: WarmupReport | None = None

    def copy(self) -> IterationRecord:
        return IterationRecord.from_json(self.to_json())

    def to_json(self) -> dict[str, Any]:
        return as_document(ITERATION_SCHEMA, self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> IterationRecord:
        """A record in this schema (a ValueError, TypeError or KeyError when it is not)."""
        return from_document(cls, ITERATION_SCHEMA, doc)
