"""gRPC handlers of ``spar.v1.Refiner``: thin translation between protobuf and the pure
judge and search logic, plus admission, adapter leases and metrics.

Every engine request of a call runs on the refiner's active adapter version (leased
for the whole call, so a rollout never switches policy mid-search). The interceptor
cancels a handler when the client's deadline passes; cancellation reaches every
engine request in flight (vLLM aborts them) and the actor call of ``Answer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Callable, Sequence

import grpc
from google.protobuf.duration_pb2 import Duration

from services.refiner import options as opt
from services.refiner.admission import Admission
from services.refiner.conversation import conversation
from services.refiner.cost import Budget, Cost, GenerateFn, Meter, PhaseCost
from services.refiner.judge import (
    CheckFn,
    Judge,
    JudgeConfig,
    JudgeKind,
    Judgement,
    OutsideFn,
    Verdict,
)
from services.refiner.metrics import RefinerMetrics
from services.refiner.search import Node, SearchConfig, SearchEvent, SearchResult, TreeSearch
from spar import criteria
from spar.client import AsyncActorClient
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
from spar.security import client_security
from spar.v1 import actor_pb2, common_pb2
from spar.v1 import refiner_pb2 as pb
from spar.v1 import refiner_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


VERDICTS: dict[Verdict, common_pb2.Verdict] = {
    "pass": common_pb2.VERDICT_PASS,
    "fail": common_pb2.VERDICT_FAIL,
    "undecided": common_pb2.VERDICT_UNDECIDED,
}
OUTCOMES = {
    "already_passing": common_pb2.SEARCH_OUTCOME_ALREADY_PASSING,
    "refined": common_pb2.SEARCH_OUTCOME_REFINED,
    "exhausted": common_pb2.SEARCH_OUTCOME_EXHAUSTED,
    "deadline": common_pb2.SEARCH_OUTCOME_DEADLINE,
    "unchanged": common_pb2.SEARCH_OUTCOME_UNCHANGED,
    "budget": common_pb2.SEARCH_OUTCOME_BUDGET,
}
EVENTS = {
    "expanded": pb.REFINE_EVENT_KIND_NODE_EXPANDED,
    "judged": pb.REFINE_EVENT_KIND_NODE_JUDGED,
}


# -- protobuf conversions ------------------------------------------------------------


def phase_message(c: PhaseCost) -> common_pb2.PhaseTokens:
    return common_pb2.PhaseTokens(
        prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens, requests=c.requests
    )


def _duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(int(max(seconds, 0.0) * 1e9))
    return d


def cost_message(
    cost: Cost,
    wall_time_s: float,
    outcome: str = "",
    *,
    search_time_s: float | None = None,
    actor_time_s: float = 0.0,
) -> common_pb2.SearchCost:
    return common_pb2.SearchCost(
        nodes_expanded=cost.nodes_expanded,
        judge_samples=cost.judge_samples,
        judge=phase_message(cost.judge),
        refine=phase_message(cost.refine),
        generate=phase_message(cost.generate),
        wall_time=_duration(wall_time_s),
        outcome=OUTCOMES.get(outcome, common_pb2.SEARCH_OUTCOME_UNSPECIFIED),
        unusable=common_pb2.UnusableRefinements(**cost.unusable),
        guardrail_failures=common_pb2.GuardrailFailures(**cost.guardrail_failures),
        judgements=cost.judgements,
        votes_skipped=cost.votes_skipped,
        search_time=_duration(wall_time_s if search_time_s is None else search_time_s),
        actor_time=_duration(actor_time_s),
    )


def node_message(node: Node) -> pb.SearchNode:
    j = node.judgement
    return pb.SearchNode(
        id=node.id,
        parent_id=node.parent_id,
        depth=node.depth,
        response=node.response,
        reflection=node.reflection,
        critique=j.critique if j else "",
        value=j.value if j else 0.0,
        verdict=VERDICTS[j.verdict] if j else common_pb2.VERDICT_UNSPECIFIED,
        expanded=node.expanded,
        edit_distance=node.edit_distance,
        constraints_met=j.constraints_met if j else 0,
        constraints_checked=len(j.constraints) if j else 0,
        hard_fail=j.hard_fail if j else False,
        guardrails=[g.rule for g in j.guardrails] if j else [],
    )


def event_message(e: SearchEvent) -> pb.RefineEvent:
    return pb.RefineEvent(
        kind=EVENTS[e.kind], node=node_message(e.node), cost=cost_message(e.cost, 0.0)
    )


def constraint_results(
    j: Judgement | None, response: str = "", constraints: Sequence[Constraint] = ()
) -> list[pb.ConstraintResult]:
    if j is None:
        return []
    out = []
    for i, c in enumerate(j.constraints):
        said = ""
        if not c.strict and i < len(constraints):
            said = complaint(response, constraints[i], c)
        out.append(
            pb.ConstraintResult(
                instruction_id=c.instruction_id,
                strict_pass=c.strict,
                loose_pass=c.loose,
                error=c.error,
                complaint=said,
            )
        )
    return out


def refine_response(
    result: SearchResult, include_tree: bool, constraints: Sequence[Constraint] = ()
) -> pb.RefineResponse:
    best = result.best
    return pb.RefineResponse(
        best_response=best.response,
        verdict=VERDICTS[best.judgement.verdict]
        if best.judgement
        else common_pb2.VERDICT_UNDECIDED,
        value=best.value,
        outcome=OUTCOMES[result.outcome],
        cost=cost_message(result.cost, result.wall_time_s, result.outcome),
        trace=[node_message(n) for n in result.trace],
        tree=[node_message(n) for n in result.tree] if include_tree else [],
        edit_distance=best.edit_distance,
        constraint_results=constraint_results(best.judgement, best.response, constraints),
    )


# -- the servicer --------------------------------------------------------------------


class RefinerService(pb_grpc.RefinerServicer):
    """The ``spar.v1.Refiner`` servicer: Judge, Refine, RefineStream and Answer."""

    def __init__(
        self,
        runtime: EngineRuntime,
        settings: Settings,
        metrics: RefinerMetrics,
        *,
        check: CheckFn | None = None,
        external: ExternalJudge | None = None,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.config = settings.refiner
        self.metrics = metrics
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
        self._actor: AsyncActorClient | None = None

    # -- plumbing --------------------------------------------------------------------

    def actor(self) -> AsyncActorClient:
        if self._actor is None:  # created in the server's event loop
            self._actor = AsyncActorClient(
                self.config.actor_target, **client_security(self.settings)
            )
        return self._actor

    async def close(self) -> None:
        if self._actor is not None:
            await self._actor.close()
        if self.external is not None:
            await self.external.close()

    def _generate(self, adapter: AdapterRef | None) -> GenerateFn:
        engine = self.runtime.engine

        async def generate(request: GenerationRequest) -> GenerationResult:
            result = await engine.generate(dataclasses.replace(request, adapter=adapter))
            self.metrics.engine_usage(result.usage.prompt_tokens, result.usage.completion_tokens)
            return result

        return generate

    def _constraints(
        self,
        messages: Sequence[common_pb2.VerifiableConstraint],
        instruction: str,
        refs: Sequence[str] = (),
    ) -> list[Constraint]:
        """The request's constraints, then its criteria (``pack`` or ``pack/criterion``)."""
        limits = self.settings.limits
        constraints = opt.constraints(messages, limits)
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

    async def Judge(
        self, request: pb.JudgeRequest, context: grpc.aio.ServicerContext
    ) -> pb.JudgeResponse:
        limits = self.settings.limits
        instruction = opt.text(request.instruction, "instruction", limits)
        response = opt.response_text(request.response, "response", limits)
        kind = opt.judge_kind(request.kind, self.config)
        constraints = self._constraints(request.constraints, instruction, request.criteria)
        config = opt.judge_config(
            self.config, samples=request.samples, tie_policy=request.tie_policy
        )
        async with self.runtime.host.lease("") as version:
            meter = Meter(self._generate(version.ref if version else None), Budget.unlimited())
            j = await self._judge(kind, instruction, constraints, config, meter).judge(response)
        return pb.JudgeResponse(
            verdict=VERDICTS[j.verdict],
            value=j.value,
            critique=j.critique,
            yes_votes=j.vote.yes,
            no_votes=j.vote.no,
            unparseable=j.vote.unparseable,
            samples=[pb.JudgeSample(text=s.text, verdict=VERDICTS[s.verdict]) for s in j.samples]
            if request.return_all_samples
            else [],
            constraint_results=constraint_results(j, response, self._checkable(constraints)),
            kind=opt.JUDGE_KIND_ENUM[j.kind],
            usage=common_pb2.Usage(
                prompt_tokens=meter.cost.judge.prompt_tokens,
                completion_tokens=meter.cost.judge.completion_tokens,
            ),
        )

    # -- searches --------------------------------------------------------------------

    def _plan(
        self,
        instruction: str,
        constraints: Sequence[common_pb2.VerifiableConstraint],
        kind_value: int,
        options: common_pb2.SearchOptions,
        budget: common_pb2.SearchBudget,
        seed_text: str,
        response_max_tokens: int,
        criteria_refs: Sequence[str] = (),
    ) -> SearchPlan:
        """Validates everything before the request takes (or waits for) a search slot."""
        kind = opt.judge_kind(kind_value, self.config)
        plan = SearchPlan(
            instruction=instruction,
            constraints=self._constraints(constraints, instruction, criteria_refs),
            kind=kind,
            search=opt.search_config(options, self.config, seed_text, response_max_tokens),
            judge=opt.search_judge_config(options, self.config),
            budget=budget,
        )
        opt.budget(budget, self.config, None)
        return plan

    async def _run(
        self,
        plan: SearchPlan,
        response: str,
        context: grpc.aio.ServicerContext,
        *,
        on_event: Callable[[SearchEvent], None] | None = None,
        generate_cost: PhaseCost | None = None,
    ) -> tuple[SearchResult, str]:
        """Runs one search on the active refiner version; returns (result, version name)."""
        budget = opt.budget(plan.budget, self.config, context.time_remaining())
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

    def _refine_plan(self, request: pb.RefineRequest) -> tuple[SearchPlan, str]:
        limits = self.settings.limits
        instruction = opt.text(request.instruction, "instruction", limits)
        response = opt.response_text(request.response, "response", limits)
        plan = self._plan(
            instruction, request.constraints, request.judge, request.options, request.budget,
            instruction + "\0" + response, self._response_tokens(response), request.criteria,
        )  # fmt: skip
        return plan, response

    def _response_tokens(self, response: str) -> int:
        """What the response may have been given: its own length, at least the default."""
        engine = self.runtime.engine
        request = GenerationRequest(messages=[Message("user", response)], raw=True)
        try:
            tokens = engine.prompt_tokens(request)
        except SparError:  # longer than the context: the refine requests will say so
            tokens = engine.info.max_model_len
        return max(tokens, self.settings.limits.default_max_tokens)

    async def Refine(
        self, request: pb.RefineRequest, context: grpc.aio.ServicerContext
    ) -> pb.RefineResponse:
        plan, response = self._refine_plan(request)
        async with self.admission.slot():
            result, _ = await self._run(plan, response, context)
        return refine_response(result, request.return_tree, self._checkable(plan.constraints))

    async def RefineStream(
        self, request: pb.RefineRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RefineEvent]:
        plan, response = self._refine_plan(request)
        async with self.admission.slot():
            events: asyncio.Queue[SearchEvent] = asyncio.Queue()
            task = asyncio.create_task(
                self._run(plan, response, context, on_event=events.put_nowait)
            )
            try:
                while True:
                    if not events.empty():
                        e = events.get_nowait()
                    elif task.done():
                        break
                    else:
                        waiter = asyncio.ensure_future(events.get())
                        done, _ = await asyncio.wait({waiter, task}, return_when=FIRST_COMPLETED)
                        if waiter not in done:
                            waiter.cancel()
                            continue
                        e = waiter.result()
                    yield event_message(e)
                result, _ = task.result()
                yield pb.RefineEvent(
                    kind=pb.REFINE_EVENT_KIND_RESULT,
                    cost=cost_message(result.cost, result.wall_time_s, result.outcome),
                    result=refine_response(
                        result, request.return_tree, self._checkable(plan.constraints)
                    ),
                )
            finally:
                if not task.done():  # the client went away: stop the search's engine work
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    # -- Answer ----------------------------------------------------------------------

    async def _ask_actor(
        self,
        chat: Sequence[Message],
        sampling: common_pb2.SamplingParams,
        context: grpc.aio.ServicerContext,
    ) -> actor_pb2.GenerateResponse:
        if sampling.n > 1:
            raise InvalidArgument(f"sampling.n={sampling.n}: Answer refines one answer; use n=1")
        try:
            return await self.actor().generate(
                messages=[(m.role, m.content) for m in chat],
                n=1,
                temperature=sampling.temperature if sampling.HasField("temperature") else 0.0,
                top_p=sampling.top_p if sampling.HasField("top_p") else None,
                max_tokens=sampling.max_tokens,
                stop=list(sampling.stop),
                seed=sampling.seed if sampling.HasField("seed") else None,
                timeout=context.time_remaining(),
            )
        except SparError as exc:
            detail = exc.message.split(": ", 1)[-1]
            if isinstance(exc, InvalidArgument | FailedPrecondition | DeadlineExceeded):
                raise type(exc)(f"the actor refused the answer request: {detail}") from None
            raise Unavailable(
                f"the actor at {self.config.actor_target} could not answer: {detail} "
                "(SPAR_REFINER__ACTOR_TARGET)"
            ) from None

    async def Answer(
        self, request: pb.AnswerRequest, context: grpc.aio.ServicerContext
    ) -> pb.AnswerResponse:
        start = time.monotonic()
        chat = conversation(request.prompt, request.messages, self.settings.limits)
        prompt = chat.instruction
        answer_max_tokens = request.sampling.max_tokens or self.settings.limits.default_max_tokens
        plan = self._plan(
            prompt, request.constraints, request.judge, request.options, request.budget, prompt,
            answer_max_tokens, request.criteria,
        )  # fmt: skip
        async with self.admission.slot():
            actor_start = time.monotonic()
            reply = await self._ask_actor(chat.messages, request.sampling, context)
            actor_time = time.monotonic() - actor_start
            original = reply.completions[0].text.strip() if reply.completions else ""
            generated = PhaseCost(
                prompt_tokens=reply.usage.prompt_tokens,
                completion_tokens=reply.usage.completion_tokens,
                requests=1,
            )
            result, refiner_adapter = await self._run(
                plan, original, context, generate_cost=generated
            )
        self.metrics.answer(result.outcome)
        best, root = result.best, result.tree[0]
        checkable = self._checkable(plan.constraints)
        return pb.AnswerResponse(
            answer=best.response,
            original=original,
            verdict=VERDICTS[best.judgement.verdict]
            if best.judgement
            else common_pb2.VERDICT_UNDECIDED,
            value=best.value,
            outcome=OUTCOMES[result.outcome],
            cost=cost_message(
                result.cost,
                time.monotonic() - start,
                result.outcome,
                search_time_s=result.wall_time_s,
                actor_time_s=actor_time,
            ),
            actor_adapter=reply.adapter,
            refiner_adapter=refiner_adapter,
            trace=[node_message(n) for n in result.trace] if request.include_trace else [],
            edit_distance=best.edit_distance,
            constraint_results=constraint_results(best.judgement, best.response, checkable),
            original_constraint_results=constraint_results(
                root.judgement, root.response, checkable
            ),
        )


class EngineContext:
    """The engine as the search's token counter (so refine requests fit the context)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def prompt_tokens(self, request: GenerationRequest) -> int:
        return self._engine.prompt_tokens(request)

    @property
    def max_model_len(self) -> int:
        return self._engine.info.max_model_len


@dataclasses.dataclass(frozen=True)
class SearchPlan:
    """A validated search request, before it has a slot."""

    instruction: str
    constraints: list[Constraint]
    kind: JudgeKind
    search: SearchConfig
    judge: JudgeConfig
    budget: common_pb2.SearchBudget
