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
- **hybrid** (verifier first): the program decides every checkable constraint. A
  response that fails one is FAIL with the program's exact complaints ("3 commas; none
  allowed") and no LLM votes are drawn: they could not change the decision, and the
  search ranks such nodes by the share of constraints met. A response that passes every
  check is PASS; the LLM judges only the requirements the program did not check (its
  prompt lists the checked ones), and only when its vote can change something: with
  ``llm_veto`` on, a majority No turns the PASS into FAIL (off by default). Rubric
  criteria of a criteria pack (spar.criteria) are requirements only the LLM can decide:
  their texts are listed in the judge prompt, and when there are any the LLM always votes
  on a response the program passed, and its vote decides. Without constraints, hybrid is
  the LLM judge.
- **external**: hybrid with an outside model (any OpenAI-compatible endpoint,
  spar.external_judge) in place of the refiner's own LLM: one deterministic answer
  instead of k samples.

Every kind also applies the answer guardrails (:mod:`spar.guardrails`: repetition loops,
talk about the task instead of an answer, the instruction said back, off-topic text)
unless switched off: a response that breaks one is FAIL and can never pass the search's
end gate.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from services.refiner.cost import GenerateFn
from spar import guardrails
from spar.complaints import program_critique
from spar.engine.protocol import GenerationRequest
from spar.errors import FailedPrecondition, InvalidArgument, Unavailable
from spar.external_judge import ExternalVerdict, Requirement
from spar.guardrails import GuardrailIssue
from spar.ifeval import Constraint, ConstraintCheck
from spar.refine_templates import Prompts, parse_judgement

JudgeKind = Literal["llm", "verifier", "hybrid", "external"]
Verdict = Literal["pass", "fail", "undecided"]
TiePolicy = Literal["resample", "undecided"]
VotePolicy = Literal["when_needed", "always"]
CheckFn = Callable[[str, str, Sequence[Constraint]], list[ConstraintCheck]]
OutsideFn = Callable[[str, str, Sequence[Requirement]], Awaitable[ExternalVerdict]]
"""(instruction, response, requirements) -> the outside judge's verdict."""


@dataclass(frozen=True)
class JudgeConfig:
    """How the LLM judge samples and when it is asked (settings: ``SPAR_REFINER__JUDGE_*``)."""

    samples: int = 5
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    tie_policy: TiePolicy = "resample"
    tie_resample_rounds: int = 2
    tie_resample_samples: int = 2
    votes: VotePolicy = "when_needed"
    """hybrid: ask the LLM only where its vote can change the decision (when_needed), or
    on every response (always: the pre-verifier-first behaviour, kept for measurement)."""
    llm_veto: bool = False
    """hybrid: a majority No of the LLM turns a full verifier PASS into FAIL."""
    guardrails: bool = True
    """Apply the answer guardrails (spar.guardrails) in every judge kind."""


@dataclass(frozen=True)
class JudgeSample:
    """One LLM judge sample and the decision read from its last line."""

    text: str
    decision: bool | None
    """True: Yes, False: No, None: unparseable."""

    @property
    def verdict(self) -> Verdict:
        return "undecided" if self.decision is None else ("pass" if self.decision else "fail")


@dataclass(frozen=True)
class Vote:
    """The count of one judgement's samples: Yes, No, unreadable."""

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
    """One response's judgement: verdict, value, the critique that drives refinement."""

    kind: JudgeKind
    verdict: Verdict
    value: float
    """LLM value (share of Yes) when the LLM voted, else the share of constraints met."""
    critique: str
    vote: Vote = field(default_factory=lambda: Vote(0, 0, 0))
    samples: tuple[JudgeSample, ...] = ()
    constraints: tuple[ConstraintCheck, ...] = ()
    guardrails: tuple[GuardrailIssue, ...] = ()
    hard_fail: bool = False
    """A checked constraint or a guardrail failed: never PASS, never past the end gate."""
    voted: bool = False
    """LLM samples were drawn for this judgement."""
    vote_decides: bool = False
    """The LLM value decides the end gate (llm judge; hybrid with llm_veto)."""

    @property
    def constraint_share(self) -> float:
        """Share of the checked constraints met (1.0 when none were checked)."""
        if not self.constraints:
            return 1.0
        return sum(c.strict for c in self.constraints) / len(self.constraints)

    @property
    def constraints_met(self) -> int:
        return sum(c.strict for c in self.constraints)

    @property
    def llm_value(self) -> float | None:
        return self.vote.value if self.voted else None

    def passes(self, gate: float) -> bool:
        """Past the end gate: nothing checked failed, and the LLM agrees where it decides."""
        if self.hard_fail:
            return False
        if self.vote_decides:
            return self.value > gate
        return self.verdict == "pass"


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
        rubrics: Sequence[str] = (),
        outside: OutsideFn | None = None,
        observe: Callable[[str, Judgement], None] | None = None,
    ) -> None:
        if kind == "verifier" and rubrics:
            raise InvalidArgument(
                "the verifier judge cannot decide rubric criteria (only an LLM can); use the "
                "hybrid, llm or external judge, or name only checkable criteria"
            )
        if kind == "verifier" and not constraints:
            raise InvalidArgument(
                "the verifier judge needs at least one verifiable constraint; add constraints "
                "or use the llm or hybrid judge"
            )
        if kind == "external" and outside is None:
            raise FailedPrecondition(
                "the external judge is not configured on this refiner; set "
                "SPAR_EXTERNAL_JUDGE__URL and SPAR_EXTERNAL_JUDGE__MODEL"
            )
        if config.samples < 1:
            raise InvalidArgument("judge samples must be at least 1")
        self.kind = kind
        self.instruction = instruction
        self.constraints = list(constraints)
        self.rubrics = list(rubrics)
        self.prompts = prompts
        self.config = config
        self._generate = generate
        self._check = check
        self._outside = outside
        self._observe = observe

    @property
    def checks_constraints(self) -> bool:
        """The program decides constraints (verifier, or hybrid with constraints)."""
        return bool(self.constraints) and self.kind != "llm"

    async def judge(self, response: str, reference: str | None = None) -> Judgement:
        """Judges response; ``reference`` (the search's original) helps the topic rule."""
        judgement = await self._judge(response, reference)
        if self._observe is not None:
            self._observe(response, judgement)
        return judgement

    async def _judge(self, response: str, reference: str | None) -> Judgement:
        checks = (
            tuple(self._check(self.instruction, response, self.constraints))
            if self.checks_constraints
            else ()
        )
        issues = (
            tuple(guardrails.check(self.instruction, response, reference))
            if self.config.guardrails
            else ()
        )
        failed = any(not c.strict for c in checks) or bool(issues)
        program = program_critique(response, self.constraints, checks, issues) if failed else ""
        share = sum(c.strict for c in checks) / len(checks) if checks else 1.0
        if self.checks_constraints:
            return await self._verifier_first(response, checks, issues, failed, program, share)
        return await self._llm(response, issues, failed, program)

    async def _verifier_first(
        self,
        response: str,
        checks: tuple[ConstraintCheck, ...],
        issues: tuple[GuardrailIssue, ...],
        failed: bool,
        program: str,
        share: float,
    ) -> Judgement:
        always = self.kind in ("hybrid", "external") and self.config.votes == "always"
        # Rubrics are requirements only the LLM decides: it votes, and its vote decides.
        veto = self.config.llm_veto or bool(self.rubrics)
        if failed and not always:
            return Judgement(
                self.kind, "fail", share, program, constraints=checks, guardrails=issues,
                hard_fail=True,
            )  # fmt: skip
        if self.kind == "verifier" or (not veto and not always):
            return Judgement(
                self.kind, "pass", share, "Every checked requirement is met.",
                constraints=checks, guardrails=issues,
            )  # fmt: skip
        checked = [c.description or c.instruction_id for c in checks]
        samples = await self._vote(response, checked)
        vote = count_votes(samples)
        if failed:  # votes="always": the LLM was asked although it cannot change the verdict
            return Judgement(
                self.kind, "fail", vote.value * share, program, vote, samples,
                constraints=checks, guardrails=issues, hard_fail=True, voted=True,
            )  # fmt: skip
        verdict: Verdict = vote.verdict if veto else "pass"
        return Judgement(
            self.kind, verdict, vote.value, majority_critique(samples, vote.verdict), vote,
            samples, constraints=checks, guardrails=issues, voted=True, vote_decides=veto,
        )  # fmt: skip

    async def _llm(
        self, response: str, issues: tuple[GuardrailIssue, ...], failed: bool, program: str
    ) -> Judgement:
        if failed and self.config.votes != "always":
            return Judgement(self.kind, "fail", 0.0, program, guardrails=issues, hard_fail=True)
        samples = await self._vote(response, [])
        vote = count_votes(samples)
        critique = majority_critique(samples, vote.verdict)
        if failed:
            critique = program + (f"\n\n{critique}" if critique else "")
        return Judgement(
            self.kind, "fail" if failed else vote.verdict, vote.value, critique, vote, samples,
            guardrails=issues, hard_fail=failed, voted=True, vote_decides=True,
        )  # fmt: skip

    async def _vote(self, response: str, checked: Sequence[str]) -> tuple[JudgeSample, ...]:
        if self.kind == "external":
            return (await self._ask_outside(response),)
        samples = await self._draw(response, checked, self.config.samples)
        if self.config.tie_policy == "resample":
            for _ in range(self.config.tie_resample_rounds):
                if count_votes(samples).verdict != "undecided":
                    break
                samples += await self._draw(response, checked, self.config.tie_resample_samples)
        return samples

    async def _ask_outside(self, response: str) -> JudgeSample:
        """The outside judge's one answer as a sample (it answers deterministically)."""
        assert self._outside is not None
        requirements = [Requirement(f"rubric-{i}", t) for i, t in enumerate(self.rubrics, 1)]
        try:
            verdict = await self._outside(self.instruction, response, requirements)
        except (Unavailable, FailedPrecondition) as exc:
            raise Unavailable(f"the external judge could not judge: {exc.message}") from None
        missed = [r.text for r in requirements if verdict.requirements.get(r.id) is False]
        if verdict.overall is None:
            text = "The outside judge's answer could not be read."
        elif verdict.overall and not missed:
            text = "The outside judge found every requirement met.\nFinal Judgement: Yes"
        else:
            lines = "".join(f"\n- not met: {m}" for m in missed)
            text = f"The outside judge found the response lacking.{lines}\nFinal Judgement: No"
        decision = None if verdict.overall is None else verdict.overall and not missed
        return JudgeSample(text, decision)

    async def _draw(self, response: str, checked: Sequence[str], n: int) -> tuple[JudgeSample, ...]:
        c = self.config
        request = GenerationRequest(
            messages=self.prompts.judge_messages(self.instruction, response, checked, self.rubrics),
            n=n,
            temperature=c.temperature,
            top_p=c.top_p,
            max_tokens=c.max_tokens,
            # A long response leaves less room for the critique; a vote cut short is
            # unparseable, which the tie policy handles, never a failed request.
            clamp_to_context=True,
        )
        try:
            result = await self._generate(request)
        except InvalidArgument:
            # The judge prompt alone does not fit the model's context: no vote can be read.
            return tuple(JudgeSample("", None) for _ in range(n))
        return tuple(JudgeSample(s.text, parse_judgement(s.text)) for s in result.samples)
