"""Judges: LLM majority vote (the paper), program verifier, and the hybrid of both.

Pure logic: the LLM judge draws its k samples through an injected ``generate`` (one
engine request with n=k, so vLLM batches them and shares the prompt's KV cache), and
the verifier through an injected ``check`` (``spar.ifeval.check`` in production).

Semantics:
- **llm**: value = share of Yes among the parseable samples; Yes > No is PASS, No > Yes
  FAIL; a tie (also 0-0: nothing parseable) is re-sampled up to a limit or reported
  UNDECIDED, by the tie policy. The critique is a sample of the majority side.
- **verifier**: every constraint is checked (IFEval strict); value = share passed;
  PASS only when all pass.
- **hybrid**: verifier for the checkable constraints, LLM vote for the rest. Any failed
  constraint makes the verdict FAIL and blocks the end gate (``hard_fail``), whatever
  the LLM says; value = LLM value x share of constraints passed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from services.refiner.cost import GenerateFn
from services.refiner.prompts import Prompts, parse_judgement
from spar.engine.protocol import GenerationRequest
from spar.errors import InvalidArgument
from spar.ifeval import Constraint, ConstraintCheck

JudgeKind = Literal["llm", "verifier", "hybrid"]
Verdict = Literal["pass", "fail", "undecided"]
TiePolicy = Literal["resample", "undecided"]
CheckFn = Callable[[str, str, Sequence[Constraint]], list[ConstraintCheck]]


@dataclass(frozen=True)
class JudgeConfig:
    samples: int = 5
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    tie_policy: TiePolicy = "resample"
    tie_resample_rounds: int = 2
    tie_resample_samples: int = 2


@dataclass(frozen=True)
class JudgeSample:
    text: str
    decision: bool | None
    """True: Yes, False: No, None: unparseable."""

    @property
    def verdict(self) -> Verdict:
        return "undecided" if self.decision is None else ("pass" if self.decision else "fail")


@dataclass(frozen=True)
class Vote:
    yes: int
    no: int
    unparseable: int

    @property
    def value(self) -> float:
        decided = self.yes + self.no
        return self.yes / decided if decided else 0.0

    @property
    def verdict(self) -> Verdict:
        if self.yes > self.no:
            return "pass"
        if self.no > self.yes:
            return "fail"
        return "undecided"


def count_votes(samples: Sequence[JudgeSample]) -> Vote:
    yes = sum(s.decision is True for s in samples)
    no = sum(s.decision is False for s in samples)
    return Vote(yes=yes, no=no, unparseable=len(samples) - yes - no)


def majority_critique(samples: Sequence[JudgeSample], verdict: Verdict) -> str:
    """A sample of the majority side (any parseable one for a tie, else the first)."""
    want = {"pass": True, "fail": False}.get(verdict)
    for s in samples:
        if want is not None and s.decision is want:
            return s.text.strip()
    for s in samples:
        if s.decision is not None:
            return s.text.strip()
    return samples[0].text.strip() if samples else ""


@dataclass(frozen=True)
class Judgement:
    kind: JudgeKind
    verdict: Verdict
    value: float
    critique: str
    vote: Vote = field(default_factory=lambda: Vote(0, 0, 0))
    samples: tuple[JudgeSample, ...] = ()
    constraints: tuple[ConstraintCheck, ...] = ()
    hard_fail: bool = False
    """A checkable constraint failed: never PASS, never past the end gate."""

    @property
    def constraint_share(self) -> float:
        if not self.constraints:
            return 1.0
        return sum(c.strict for c in self.constraints) / len(self.constraints)

    def passes(self, gate: float) -> bool:
        return not self.hard_fail and self.value > gate


def _missed(checks: Sequence[ConstraintCheck]) -> str:
    lines = [
        f"- {c.description or c.instruction_id}" + (f" ({c.error})" if c.error else "")
        for c in checks
        if not c.strict
    ]
    return "A program check shows the response misses these requirements:\n" + "\n".join(lines)


class Judge:
    """Judges responses to one instruction with one kind of judge."""

    def __init__(
        self,
        kind: JudgeKind,
        instruction: str,
        constraints: Sequence[Constraint],
        *,
        prompts: Prompts,
        config: JudgeConfig,
        generate: GenerateFn,
        check: CheckFn,
    ) -> None:
        if kind == "verifier" and not constraints:
            raise InvalidArgument(
                "the verifier judge needs at least one verifiable constraint; add constraints "
                "or use the llm or hybrid judge"
            )
        if config.samples < 1:
            raise InvalidArgument("judge samples must be at least 1")
        self.kind = kind
        self.instruction = instruction
        self.constraints = list(constraints)
        self.prompts = prompts
        self.config = config
        self._generate = generate
        self._check = check

    async def judge(self, response: str) -> Judgement:
        checks = (
            tuple(self._check(self.instruction, response, self.constraints))
            if self.constraints and self.kind != "llm"
            else ()
        )
        failed = any(not c.strict for c in checks)
        if self.kind == "verifier":
            share = sum(c.strict for c in checks) / len(checks)
            return Judgement(
                kind="verifier",
                verdict="fail" if failed else "pass",
                value=share,
                critique=_missed(checks) if failed else "Every checked requirement is met.",
                constraints=checks,
                hard_fail=failed,
            )
        samples = await self._vote(response)
        vote = count_votes(samples)
        critique = majority_critique(samples, vote.verdict)
        if not failed:
            return Judgement(
                kind=self.kind, verdict=vote.verdict, value=vote.value, critique=critique,
                vote=vote, samples=samples, constraints=checks,
            )  # fmt: skip
        share = sum(c.strict for c in checks) / len(checks)
        llm_no = majority_critique(samples, "fail")
        return Judgement(
            kind="hybrid",
            verdict="fail",
            value=vote.value * share,
            critique=_missed(checks) + (f"\n\n{llm_no}" if llm_no else ""),
            vote=vote,
            samples=samples,
            constraints=checks,
            hard_fail=True,
        )

    async def _vote(self, response: str) -> tuple[JudgeSample, ...]:
        samples = await self._draw(response, self.config.samples)
        if self.config.tie_policy == "resample":
            for _ in range(self.config.tie_resample_rounds):
                if count_votes(samples).verdict != "undecided":
                    break
                samples += await self._draw(response, self.config.tie_resample_samples)
        return samples

    async def _draw(self, response: str, n: int) -> tuple[JudgeSample, ...]:
        c = self.config
        result = await self._generate(
            GenerationRequest(
                messages=self.prompts.judge_messages(self.instruction, response),
                n=n,
                temperature=c.temperature,
                top_p=c.top_p,
                max_tokens=c.max_tokens,
            )
        )
        return tuple(JudgeSample(s.text, parse_judgement(s.text)) for s in result.samples)
