"""IFEval evaluation of an actor.

:func:`evaluate` generates greedily through the actor (every request in flight at once
up to ``concurrency``, so vLLM batches them), checks each response with the criteria
registry (:func:`spar.ifeval.check` for IFEval ids, the pack's checkers for
``pack/criterion`` ids; rubric criteria need an LLM and are not scored here) and scores
with :func:`spar.ifeval.scores`: IFEval's four
metrics with the paper's definitions (prompt level: every instruction of a prompt
followed; instruction level: share of all instructions followed; strict: the response
as is; loose: the best of its loosened variants).

:func:`score` is pure: it turns responses into a report. The coordinator's promotion
decision between two evaluations is services.coordinator.promotion.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from spar import criteria, ifeval
from spar.client.enums import FINISH_REASON
from spar.errors import InvalidArgument
from spar.ifeval import ConstraintCheck, IfevalScores
from spar.prompt_sets import PromptRecord
from spar.v1 import actor_pb2

#: IFEval's four metrics, named as in ``spar.v1.EvalMetrics``.
METRICS = (
    "prompt_level_strict",
    "prompt_level_loose",
    "instruction_level_strict",
    "instruction_level_loose",
)

#: Room for IFEval's long answers (lm-eval allows 1280); the actor's default limit.
DEFAULT_MAX_TOKENS = 1024
DEFAULT_CONCURRENCY = 32


class Actor(Protocol):
    """What evaluation needs of an actor client (:class:`spar.client.AsyncActorClient`)."""

    def generate(
        self,
        prompt: str = "",
        *,
        temperature: float | None = None,
        max_tokens: int = 0,
        adapter: str = "",
        timeout: float | None = None,
    ) -> Awaitable[actor_pb2.GenerateResponse]: ...


class MetricSet(Protocol):
    """IFEval's four metrics of one evaluation (:class:`Metrics`, ``spar.v1.EvalMetrics``)."""

    @property
    def prompt_level_strict(self) -> float: ...
    @property
    def prompt_level_loose(self) -> float: ...
    @property
    def instruction_level_strict(self) -> float: ...
    @property
    def instruction_level_loose(self) -> float: ...
    @property
    def prompts(self) -> int: ...


@dataclass(frozen=True)
class Metrics:
    """IFEval's four accuracies over a set of prompts (each in [0, 1])."""

    prompt_level_strict: float
    prompt_level_loose: float
    instruction_level_strict: float
    instruction_level_loose: float
    prompts: int
    instructions: int

    @classmethod
    def from_scores(cls, s: IfevalScores) -> Metrics:
        return cls(
            s.prompt_strict,
            s.prompt_loose,
            s.instruction_strict,
            s.instruction_loose,
            s.prompts,
            s.instructions,
        )

    def as_dict(self) -> dict[str, float]:
        """The four metrics by name."""
        return {name: float(getattr(self, name)) for name in METRICS}


@dataclass(frozen=True)
class Response:
    """The actor's answer to one prompt."""

    text: str
    finish_reason: str = "STOP"
    completion_tokens: int = 0
    adapter: str = ""
    """The adapter version that served it; empty for the base model."""


@dataclass(frozen=True)
class PromptResult:
    """One prompt's answer and the check of each of its constraints."""

    record: PromptRecord
    response: Response
    checks: tuple[ConstraintCheck, ...]

    @property
    def strict(self) -> bool:
        return all(c.strict for c in self.checks)

    @property
    def loose(self) -> bool:
        return all(c.loose for c in self.checks)


@dataclass(frozen=True)
class InstructionScore:
    """Accuracy on one instruction id across every prompt that has it."""

    instruction_id: str
    count: int
    strict: float
    loose: float


@dataclass(frozen=True)
class EvalReport:
    """One IFEval run of an actor: scores, per-instruction accuracy and every answer."""

    scores: Metrics
    by_instruction: tuple[InstructionScore, ...]
    """Sorted by instruction id."""
    results: tuple[PromptResult, ...]
    """In the order of the prompts."""
    adapter: str = ""
    """The adapter version asked for; empty: whatever the replica serves by default."""
    max_tokens: int = 0
    """The generation limit of each answer."""
    wall_s: float = 0.0
    """How long the run took."""

    @property
    def served_adapters(self) -> tuple[str, ...]:
        """Versions that answered; more than one means the default changed mid-run."""
        return tuple(sorted({r.response.adapter for r in self.results}))

    def to_json(self) -> dict[str, Any]:
        return {
            "adapter": self.adapter,
            "served_adapters": list(self.served_adapters),
            "max_tokens": self.max_tokens,
            "wall_s": round(self.wall_s, 3),
            "prompts": self.scores.prompts,
            "instructions": self.scores.instructions,
            "metrics": self.scores.as_dict(),
            "by_instruction": {
                s.instruction_id: {"count": s.count, "strict": s.strict, "loose": s.loose}
                for s in self.by_instruction
            },
            "results": [
                {
                    **r.record.to_json(),
                    "response": r.response.text,
                    "finish_reason": r.response.finish_reason,
                    "completion_tokens": r.response.completion_tokens,
                    "served_adapter": r.response.adapter,
                    "checked": [c.instruction_id for c in r.checks],
                    "strict": [c.strict for c in r.checks],
                    "loose": [c.loose for c in r.checks],
                    "errors": [c.error for c in r.checks],
                }
                for r in self.results
            ],
        }


def check_metric(name: str) -> None:
    """InvalidArgument unless ``name`` is one of :data:`METRICS`."""
    if name not in METRICS:
        raise InvalidArgument(f"metric {name!r} is unknown; use one of {', '.join(METRICS)}")


def _require_constraints(records: Sequence[PromptRecord]) -> None:
    if not records:
        raise InvalidArgument("no prompts to evaluate")
    unconstrained = [r.key for r in records if not r.instruction_id_list]
    if unconstrained:
        raise InvalidArgument(
            f"prompts with keys {unconstrained[:5]} have no verifiable instruction; IFEval "
            "evaluation needs IFEval-format prompts"
        )


def score(
    records: Sequence[PromptRecord], responses: Sequence[Response], **report: Any
) -> EvalReport:
    """Checks every response against its prompt's constraints and scores them (pure)."""
    if len(records) != len(responses):
        raise InvalidArgument(f"{len(records)} prompts but {len(responses)} responses")
    _require_constraints(records)
    registry = criteria.registry()

    def checked(rec: PromptRecord, resp: Response) -> tuple[ConstraintCheck, ...]:
        checkable, _ = registry.split(rec.constraints)
        return tuple(registry.check(rec.prompt, resp.text, checkable))

    results = tuple(
        PromptResult(rec, resp, checked(rec, resp))
        for rec, resp in zip(records, responses, strict=True)
    )
    per_id: dict[str, list[ConstraintCheck]] = {}
    for r in results:
        for c in r.checks:
            per_id.setdefault(c.instruction_id, []).append(c)
    by_instruction = tuple(
        InstructionScore(
            iid,
            len(cs),
            sum(c.strict for c in cs) / len(cs),
            sum(c.loose for c in cs) / len(cs),
        )
        for iid, cs in sorted(per_id.items())
    )
    return EvalReport(
        scores=Metrics.from_scores(ifeval.scores([r.checks for r in results])),
        by_instruction=by_instruction,
        results=results,
        **report,
    )


async def generate_responses(
    client: Actor,
    prompts: Sequence[str],
    *,
    adapter: str = "",
    max_tokens: int = DEFAULT_MAX_TOKENS,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float | None = None,
    on_response: Callable[[int], None] | None = None,
) -> list[Response]:
    """Greedy answers, in prompt order; the first failed request fails the whole run."""
    if concurrency < 1:
        raise InvalidArgument(f"concurrency={concurrency} must be at least 1")
    if max_tokens < 1:
        raise InvalidArgument(f"max_tokens={max_tokens} must be at least 1")
    slots = asyncio.Semaphore(concurrency)
    out: list[Response | None] = [None] * len(prompts)

    async def one(i: int) -> None:
        async with slots:
            reply = await client.generate(
                prompts[i],
                temperature=0.0,
                max_tokens=max_tokens,
                adapter=adapter,
                timeout=timeout,
            )
        c = reply.completions[0]
        out[i] = Response(
            text=c.text,
            finish_reason=FINISH_REASON.label(c.finish_reason).upper(),
            completion_tokens=c.completion_tokens,
            adapter=reply.adapter,
        )
        if on_response is not None:
            on_response(i)

    # A TaskGroup cancels the requests still running when one fails; callers get that
    # failure itself (e.g. NOT_FOUND for an unknown adapter), not an ExceptionGroup.
    try:
        async with asyncio.TaskGroup() as group:
            for i in range(len(prompts)):
                group.create_task(one(i))
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [r for r in out if r is not None]


async def evaluate_actor(
    client: Actor,
    records: Sequence[PromptRecord],
    *,
    adapter: str = "",
    max_tokens: int = DEFAULT_MAX_TOKENS,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float | None = None,
    on_response: Callable[[int], None] | None = None,
) -> EvalReport:
    """IFEval scores of the actor behind ``client`` (pinned to ``adapter`` when given).

    ``adapter`` as in GenerateRequest: empty for the replica's active version, ``base``
    for the base model, or a version name. ``on_response(i)`` is called as prompt i is
    answered (for progress bars).
    """
    _require_constraints(records)
    started = time.monotonic()
    responses = await generate_responses(
        client,
        [r.prompt for r in records],
        adapter=adapter,
        max_tokens=max_tokens,
        concurrency=concurrency,
        timeout=timeout,
        on_response=on_response,
    )
    wall_s = time.monotonic() - started
    # The checkers are CPU work (tokenizers, language detection): keep the loop free.
    return await asyncio.to_thread(
        score, records, responses, adapter=adapter, max_tokens=max_tokens, wall_s=wall_s
    )
