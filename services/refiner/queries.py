"""The refiner's use cases in and out: requests, results and the actor they call.

Plain dataclasses (:mod:`services.refiner.core` runs the use cases over them; the servicer
and the HTTP endpoint translate their wire formats into them) and the narrow
:class:`Actor` protocol, which returns engine results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from services.refiner.cost import PhaseCost
from services.refiner.judge import JudgeKind, Judgement, TiePolicy
from services.refiner.options import BudgetRequest, SearchOptions
from services.refiner.search import SearchResult
from spar.engine.protocol import GenerationResult, Message
from spar.ifeval import Constraint

# -- the actor --------------------------------------------------------------------------


@dataclass(frozen=True)
class Sampling:
    """How the actor samples the answer that ``Answer`` refines."""

    n: int = 1
    """Answers asked for; Answer refines one, so more is an error."""
    temperature: float = 0.0
    top_p: float | None = None
    """None: the actor's default."""
    max_tokens: int = 0
    """0: the server's default."""
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class ActorReply:
    """The actor's answer: the engine's result and the adapter version that wrote it."""

    result: GenerationResult
    adapter: str
    """The actor's active adapter version ('' for the base model)."""


class Actor(Protocol):
    """The actor service as ``Answer`` needs it (gRPC in production). Errors are
    :class:`~spar.errors.SparError` subclasses, mapped by type."""

    target: str
    """Where the actor is, for error messages (``SPAR_REFINER__ACTOR_TARGET``)."""

    async def generate(
        self, messages: Sequence[Message], sampling: Sampling, timeout_s: float | None
    ) -> ActorReply: ...


# -- requests and results --------------------------------------------------------------


@dataclass(frozen=True)
class ConstraintResult:
    """One program-checked constraint's result on a response."""

    instruction_id: str
    strict_pass: bool
    loose_pass: bool
    error: str
    complaint: str
    """What is wrong, in words a refiner acts on ('' when it passed)."""


@dataclass(frozen=True)
class JudgeQuery:
    """A Judge request: does response follow instruction and its constraints?"""

    instruction: str
    response: str
    constraints: list[Constraint] = field(default_factory=list)
    criteria: list[str] = field(default_factory=list)
    """Criteria references: ``pack`` or ``pack/criterion``."""
    kind: JudgeKind | None = None
    """None: the server's default judge kind."""
    samples: int = 0
    """LLM judge samples (0: the server's default)."""
    tie_policy: TiePolicy | None = None


@dataclass(frozen=True)
class JudgeOutcome:
    """A judgement, its constraints' results and the judge phase's token usage."""

    judgement: Judgement
    constraint_results: list[ConstraintResult]
    usage: PhaseCost


@dataclass(frozen=True)
class RefineQuery:
    """A Refine request: search for a response that follows instruction."""

    instruction: str
    response: str
    constraints: list[Constraint] = field(default_factory=list)
    criteria: list[str] = field(default_factory=list)
    kind: JudgeKind | None = None
    options: SearchOptions = field(default_factory=SearchOptions)
    budget: BudgetRequest = field(default_factory=BudgetRequest)


@dataclass(frozen=True)
class RefineOutcome:
    """A finished search, its best response's constraint results and the refiner version
    it ran on ('' for the base model)."""

    result: SearchResult
    constraint_results: list[ConstraintResult]
    refiner_adapter: str


@dataclass(frozen=True)
class AnswerQuery:
    """An Answer request: the actor answers chat, the refiner refines that answer."""

    chat: list[Message]
    chat_field: str = "messages"
    """The request field the chat came from (``prompt`` or ``messages``), for errors."""
    constraints: list[Constraint] = field(default_factory=list)
    criteria: list[str] = field(default_factory=list)
    kind: JudgeKind | None = None
    options: SearchOptions = field(default_factory=SearchOptions)
    budget: BudgetRequest = field(default_factory=BudgetRequest)
    sampling: Sampling = field(default_factory=Sampling)


@dataclass(frozen=True)
class AnswerOutcome:
    """The refined answer, the actor's original and what each step took."""

    refined: RefineOutcome
    original: str
    original_constraint_results: list[ConstraintResult]
    actor_adapter: str
    actor_time_s: float
    total_time_s: float
