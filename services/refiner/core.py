"""The refiner's use cases, Judge, Refine and Answer, over dataclasses: no protobuf here.

The gRPC servicer (service.py) and the OpenAI-compatible endpoint translate their wire
formats into these dataclasses and back. :class:`RefinerCore` validates a request within
the server's limits, takes an admission slot, leases the refiner's active adapter version
for the whole call (so a rollout never switches policy mid-search) and runs the pure
judge and search logic on the engine. ``Answer`` first asks the actor through the narrow
:class:`~services.refiner.queries.Actor` protocol, which returns engine results. Requests
and results are the dataclasses of :mod:`services.refiner.queries`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.refiner import options as opt
from services.refiner.admission import Admission
from services.refiner.conversation import conversation
from services.refiner.cost import Budget, GenerateFn, Meter, PhaseCost
from services.refiner.judge import (
    CheckFn,
    Judge,
    JudgeConfig,
    JudgeKind,
    Judgement,
    OutsideFn,
)
from services.refiner.metrics import RefinerMetrics
from services.refiner.options import BudgetRequest, SearchOptions
from services.refiner.queries import (
    Actor,
    ActorReply,
    AnswerOutcome,
    AnswerQuery,
    ConstraintResult,
    JudgeOutcome,
    JudgeQuery,
    RefineOutcome,
    RefineQuery,
    Sampling,
)
from services.refiner.search import SearchConfig, SearchEvent, SearchResult, TreeSearch
from spar import criteria
from spar.complaints import complaint
from spar.config import Settings
from spar.engine.protocol import (
    AdapterRef,
    Engine,
    GenerationRequest,
    GenerationResult,
    Message,
)
from spar.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    SparError,
    Unavailable,
)
from spar.external_judge import (
    ExternalJudge,
    ExternalJudgeMetrics,
    Requirement,
    SelfDecisions,
)
from spar.ifeval import Constraint
from spar.refine_templates import Prompts
from spar.runtime import EngineRuntime

TimeRemaining = Callable[[], float | None]
"""Seconds left until the client's deadline (None: no deadline)."""


def no_deadline() -> float | None:
    return None


@dataclass(frozen=True)
class SearchPlan:
    """A validated search request, before it has a slot."""

    instruction: str
    constraints: list[Constraint]
    kind: JudgeKind
    search: SearchConfig
    judge: JudgeConfig
    budget: Budget


def constraint_results(
    j: Judgement | None, response: str = "", constraints: Sequence[Constraint] = ()
) -> list[ConstraintResult]:
    """The judgement's program-checked constraints, with a complaint for each failure."""
    if j is None:
        return []
    out = []
    for i, c in enumerate(j.constraints):
        said = ""
        if not c.strict and i < len(constraints):
            said = complaint(response, constraints[i], c)
        out.append(ConstraintResult(c.instruction_id, c.strict, c.loose, c.error, said))
    return out


class EngineContext:
    """The engine as the search's token counter (so refine requests fit the context)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def prompt_tokens(self, request: GenerationRequest) -> int:
        return self._engine.prompt_tokens(request)

    @property
    def max_model_len(self) -> int:
        return self._engine.info.max_model_len


# -- the use cases ---------------------------------------------------------------------


class RefinerCore:
    """Judge, Refine and Answer over the engine runtime, the criteria packs, the outside
    judge and the actor; admission bounds the searches that run and wait."""

    def __init__(
        self,
        runtime: EngineRuntime,
        settings: Settings,
        metrics: RefinerMetrics,
        actor: Actor,
        *,
        check: CheckFn | None = None,
        external: ExternalJudge | None = None,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.config = settings.refiner
        self.metrics = metrics
        self.actor = actor
        # Criteria packs (SPAR_CRITERIA__DIR): a bad pack stops the start here.
        self.criteria = criteria.CriteriaRegistry(
            settings.criteria.dir or None,
            reload_interval_s=settings.criteria.reload_interval_s,
            on_reload=criteria.pack_metrics(metrics.base),
        )
        self.criteria.load()
        # None: the criteria registry's CheckFn (IFEval ids and pack criteria).
        self.check = check
        # The outside judge's families exist (at 0) whether or not one is configured.
        self.external_metrics = ExternalJudgeMetrics(metrics.base)
        self.external = external or ExternalJudge.from_settings(
            settings.external_judge, self.external_metrics
        )
        c = self.config
        self.prompts = Prompts.from_settings(
            c.judge_template, c.refine_template, c.refine_style, c.refine_prefill
        )
        self.admission = Admission(
            self.config.max_concurrent_searches, self.config.max_queue, metrics.admission
        )

    async def close(self) -> None:
        if self.external is not None:
            await self.external.close()

    # -- plumbing --------------------------------------------------------------------

    def _generate(self, adapter: AdapterRef | None) -> GenerateFn:
        engine = self.runtime.engine

        async def generate(request: GenerationRequest) -> GenerationResult:
            result = await engine.generate(dataclasses.replace(request, adapter=adapter))
            self.metrics.engine_usage(result.usage.prompt_tokens, result.usage.completion_tokens)
            return result

        return generate

    def _constraints(
        self, given: Sequence[Constraint], instruction: str, refs: Sequence[str] = ()
    ) -> list[Constraint]:
        """The request's constraints, then its criteria (``pack`` or ``pack/criterion``)."""
        limits = self.settings.limits
        constraints = opt.constraints(given, limits)
        for i, ref in enumerate(refs):
            if len(ref) > 128:
                raise InvalidArgument(f"criteria[{i}] is longer than 128 characters")
        try:
            constraints += self.criteria.expand(refs)
        except InvalidArgument as exc:
            raise InvalidArgument(f"criteria: {exc.message}") from None
        if len(constraints) > limits.max_constraints:
            raise InvalidArgument(
                f"{len(constraints)} constraints and criteria exceed the server limit "
                f"{limits.max_constraints} (SPAR_LIMITS__MAX_CONSTRAINTS)"
            )
        if constraints:  # also for the llm judge, which ignores them: bad input is an error
            self.criteria.validate(constraints, instruction)
        return constraints

    def _checkable(self, constraints: Sequence[Constraint]) -> list[Constraint]:
        """The constraints the program decides (what constraint results are about)."""
        return self.criteria.split(constraints)[0]

    def _judge(
        self,
        kind: JudgeKind,
        instruction: str,
        constraints: list[Constraint],
        config: JudgeConfig,
        meter: Meter,
    ) -> Judge:
        checkable, rubric = self.criteria.split(constraints)
        rubrics = self.criteria.rubrics(rubric)
        outside: OutsideFn | None = self.external.judge if self.external is not None else None
        return Judge(
            kind, instruction, checkable, prompts=self.prompts, config=config,
            generate=meter.for_phase("judge"), check=self.check or self.criteria.check,
            rubrics=rubrics,
            outside=outside, observe=self._observer(kind, instruction, checkable, rubric),
        )  # fmt: skip

    def _observer(
        self,
        kind: JudgeKind,
        instruction: str,
        checkable: Sequence[Constraint],
        rubric: Sequence[Constraint],
    ) -> Callable[[str, Judgement], None] | None:
        """Sends the sampled share of this request's judgements to the outside judge too,
        in the background (never waited for), to count the agreement per criterion."""
        external = self.external
        if external is None or kind == "external" or external.settings.sample_fraction <= 0:
            return None
        texts = self.criteria.rubrics(rubric)

        def observe(response: str, j: Judgement) -> None:
            if not external.wants(instruction, response):
                return
            requirements = [
                Requirement(c.instruction_id, check.description or c.instruction_id)
                for c, check in zip(checkable, j.constraints, strict=False)
            ] + [Requirement(c.instruction_id, t) for c, t in zip(rubric, texts, strict=True)]
            decided = {check.instruction_id: check.strict for check in j.constraints}
            if j.voted and j.vote.verdict != "undecided":
                decided |= {c.instruction_id: j.vote.verdict == "pass" for c in rubric}
            overall = {"pass": True, "fail": False}.get(j.verdict)
            external.compare_soon(
                instruction, response, requirements, SelfDecisions(overall, decided)
            )

        return observe

    # -- Judge -----------------------------------------------------------------------

    async def judge(self, query: JudgeQuery) -> JudgeOutcome:
        """Judges one response (no admission slot: a judgement is one short request)."""
        limits = self.settings.limits
        instruction = opt.text(query.instruction, "instruction", limits)
        response = opt.response_text(query.response, "response", limits)
        kind = opt.judge_kind(query.kind, self.config)
        constraints = self._constraints(query.constraints, instruction, query.criteria)
        config = opt.judge_config(self.config, samples=query.samples, tie_policy=query.tie_policy)
        async with self.runtime.host.lease("") as version:
            meter = Meter(self._generate(version.ref if version else None), Budget.unlimited())
            j = await self._judge(kind, instruction, constraints, config, meter).judge(response)
        return JudgeOutcome(
            judgement=j,
            constraint_results=constraint_results(j, response, self._checkable(constraints)),
            usage=meter.cost.judge,
        )

    # -- searches --------------------------------------------------------------------

    def _plan(
        self,
        instruction: str,
        constraints: Sequence[Constraint],
        kind: JudgeKind | None,
        options: SearchOptions,
        budget: BudgetRequest,
        seed_text: str,
        response_max_tokens: int,
        criteria_refs: Sequence[str] = (),
    ) -> SearchPlan:
        """Validates everything before the request takes (or waits for) a search slot."""
        return SearchPlan(
            instruction=instruction,
            constraints=self._constraints(constraints, instruction, criteria_refs),
            kind=opt.judge_kind(kind, self.config),
            search=opt.search_config(options, self.config, seed_text, response_max_tokens),
            judge=opt.search_judge_config(options, self.config),
            budget=opt.budget(budget, self.config),
        )

    async def _run(
        self,
        plan: SearchPlan,
        response: str,
        time_remaining: TimeRemaining,
        *,
        on_event: Callable[[SearchEvent], None] | None = None,
        generate_cost: PhaseCost | None = None,
    ) -> tuple[SearchResult, str]:
        """Runs one search on the active refiner version; returns (result, version name)."""
        budget = opt.within_deadline(plan.budget, time_remaining())
        async with self.runtime.host.lease("") as version:
            meter = Meter(self._generate(version.ref if version else None), budget)
            if generate_cost is not None:
                meter.cost.generate = generate_cost
            search = TreeSearch(
                plan.instruction,
                response,
                judge=self._judge(plan.kind, plan.instruction, plan.constraints, plan.judge, meter),
                meter=meter,
                prompts=self.prompts,
                config=plan.search,
                on_event=on_event,
                context=EngineContext(self.runtime.engine),
            )
            result = await search.run()
        self.metrics.search(
            plan.kind, result.outcome, result.cost, result.wall_time_s, result.best.depth
        )
        return result, version.name if version else ""

    def _response_tokens(self, response: str) -> int:
        """What the response may have been given: its own length, at least the default."""
        engine = self.runtime.engine
        request = GenerationRequest(messages=[Message("user", response)], raw=True)
        try:
            tokens = engine.prompt_tokens(request)
        except SparError:  # longer than the context: the refine requests will say so
            tokens = engine.info.max_model_len
        return max(tokens, self.settings.limits.default_max_tokens)

    async def refine(
        self,
        query: RefineQuery,
        time_remaining: TimeRemaining = no_deadline,
        on_event: Callable[[SearchEvent], None] | None = None,
    ) -> RefineOutcome:
        """Searches for a better response; on_event sees every node as it is expanded and
        judged. Validation errors come before the request waits for a slot."""
        limits = self.settings.limits
        instruction = opt.text(query.instruction, "instruction", limits)
        response = opt.response_text(query.response, "response", limits)
        plan = self._plan(
            instruction, query.constraints, query.kind, query.options, query.budget,
            instruction + "\0" + response, self._response_tokens(response), query.criteria,
        )  # fmt: skip
        async with self.admission.slot():
            result, adapter = await self._run(plan, response, time_remaining, on_event=on_event)
        best = result.best
        checkable = self._checkable(plan.constraints)
        return RefineOutcome(
            result, constraint_results(best.judgement, best.response, checkable), adapter
        )

    # -- Answer ----------------------------------------------------------------------

    async def _ask_actor(
        self, chat: Sequence[Message], sampling: Sampling, time_remaining: TimeRemaining
    ) -> ActorReply:
        if sampling.n > 1:
            raise InvalidArgument(f"sampling.n={sampling.n}: Answer refines one answer; use n=1")
        try:
            return await self.actor.generate(chat, sampling, time_remaining())
        except (InvalidArgument, FailedPrecondition, DeadlineExceeded) as exc:
            raise type(exc)(f"the actor refused the answer request: {exc.detail}") from None
        except SparError as exc:
            raise Unavailable(
                f"the actor at {self.actor.target} could not answer: {exc.detail} "
                "(SPAR_REFINER__ACTOR_TARGET)"
            ) from None

    async def answer(
        self, query: AnswerQuery, time_remaining: TimeRemaining = no_deadline
    ) -> AnswerOutcome:
        """The actor answers the chat; the refiner refines that answer (one admission slot
        for both, so a busy refiner refuses before the actor spends anything)."""
        start = time.monotonic()
        chat = conversation(query.chat, self.settings.limits, query.chat_field)
        prompt = chat.instruction
        answer_max_tokens = query.sampling.max_tokens or self.settings.limits.default_max_tokens
        plan = self._plan(
            prompt, query.constraints, query.kind, query.options, query.budget, prompt,
            answer_max_tokens, query.criteria,
        )  # fmt: skip
        async with self.admission.slot():
            actor_start = time.monotonic()
            reply = await self._ask_actor(chat.messages, query.sampling, time_remaining)
            actor_time = time.monotonic() - actor_start
            samples = reply.result.samples
            original = samples[0].text.strip() if samples else ""
            generated = PhaseCost(
                prompt_tokens=reply.result.usage.prompt_tokens,
                completion_tokens=reply.result.usage.completion_tokens,
                requests=1,
            )
            result, refiner_adapter = await self._run(
                plan, original, time_remaining, generate_cost=generated
            )
        self.metrics.answer(result.outcome)
        best, root = result.best, result.tree[0]
        checkable = self._checkable(plan.constraints)
        return AnswerOutcome(
            refined=RefineOutcome(
                result,
                constraint_results(best.judgement, best.response, checkable),
                refiner_adapter,
            ),
            original=original,
            original_constraint_results=constraint_results(
                root.judgement, root.response, checkable
            ),
            actor_adapter=reply.adapter,
            actor_time_s=actor_time,
            total_time_s=time.monotonic() - start,
        )
