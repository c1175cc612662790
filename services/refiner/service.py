"""gRPC handlers of ``spar.v1.Refiner``: translation between protobuf and the dataclasses
of the refiner's use cases (:mod:`services.refiner.core`), and nothing else.

The interceptor maps errors to status codes by type and cancels a handler when the
client's deadline passes; cancellation reaches every engine request in flight (vLLM
aborts them) and the actor call of ``Answer``.
"""

from __future__ import annotations

import asyncio
import contextlib
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Sequence
from typing import get_args

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.json_format import MessageToDict

from services.refiner.core import RefinerCore
from services.refiner.cost import Cost, PhaseCost
from services.refiner.judge import CheckFn, JudgeKind, TiePolicy, Verdict
from services.refiner.metrics import RefinerMetrics
from services.refiner.options import BudgetRequest, SearchOptions
from services.refiner.queries import (
    ActorReply,
    AnswerQuery,
    ConstraintResult,
    JudgeQuery,
    RefineOutcome,
    RefineQuery,
    Sampling,
)
from services.refiner.search import Node, Outcome, SearchEvent, Selection, Strategy
from spar.client import AsyncActorClient
from spar.client.enums import FINISH_REASON, REFINE_EVENT_KIND, ProtoEnum
from spar.config import Settings
from spar.engine.protocol import GenerationResult, Message, Sample, Usage
from spar.errors import InvalidArgument
from spar.external_judge import ExternalJudge
from spar.ifeval import Constraint
from spar.proto_time import duration
from spar.runtime import EngineRuntime
from spar.sampling import messages_from
from spar.security import client_security
from spar.v1 import common_pb2
from spar.v1 import refiner_pb2 as pb
from spar.v1 import refiner_pb2_grpc as pb_grpc

VERDICT: ProtoEnum[common_pb2.Verdict, Verdict] = ProtoEnum(common_pb2.Verdict, get_args(Verdict))
OUTCOME: ProtoEnum[common_pb2.SearchOutcome, Outcome] = ProtoEnum(
    common_pb2.SearchOutcome, get_args(Outcome)
)
JUDGE_KIND: ProtoEnum[common_pb2.JudgeKind, JudgeKind] = ProtoEnum(
    common_pb2.JudgeKind, get_args(JudgeKind)
)
STRATEGY: ProtoEnum[common_pb2.SearchStrategy, Strategy] = ProtoEnum(
    common_pb2.SearchStrategy, get_args(Strategy)
)
SELECTION: ProtoEnum[common_pb2.NodeSelection, Selection] = ProtoEnum(
    common_pb2.NodeSelection, get_args(Selection)
)
TIE_POLICY: ProtoEnum[pb.TiePolicy, TiePolicy] = ProtoEnum(pb.TiePolicy, get_args(TiePolicy))


# -- protobuf → dataclasses ------------------------------------------------------------


def constraints(messages: Sequence[common_pb2.VerifiableConstraint]) -> list[Constraint]:
    out = []
    for i, c in enumerate(messages):
        try:
            kwargs = MessageToDict(c.kwargs)
        except ValueError as exc:  # NaN or infinity: JSON has no such numbers
            raise InvalidArgument(f"constraints[{i}].kwargs: {exc}") from None
        out.append(Constraint(c.instruction_id, kwargs))
    return out


def search_options(o: common_pb2.SearchOptions) -> SearchOptions:
    return SearchOptions(
        strategy=STRATEGY.parse(o.strategy, "options.strategy"),
        selection=SELECTION.parse(o.selection, "options.selection"),
        branch=o.branch if o.HasField("branch") else None,
        keep_top=o.keep_top if o.HasField("keep_top") else None,
        max_depth=o.max_depth if o.HasField("max_depth") else None,
        end_gate=o.end_gate if o.HasField("end_gate") else None,
        judge_samples=o.judge_samples if o.HasField("judge_samples") else None,
    )


def budget_request(b: common_pb2.SearchBudget) -> BudgetRequest:
    return BudgetRequest(
        max_nodes=b.max_nodes,
        max_generated_tokens=b.max_generated_tokens,
        max_wall_time_s=b.max_wall_time.ToTimedelta().total_seconds()
        if b.HasField("max_wall_time")
        else None,
    )


def sampling(s: common_pb2.SamplingParams) -> Sampling:
    return Sampling(
        n=s.n or 1,
        temperature=s.temperature if s.HasField("temperature") else 0.0,
        top_p=s.top_p if s.HasField("top_p") else None,
        max_tokens=s.max_tokens,
        stop=tuple(s.stop),
        seed=s.seed if s.HasField("seed") else None,
    )


def answer_chat(
    prompt: str, messages: Sequence[common_pb2.ChatMessage]
) -> tuple[list[Message], str]:
    """An Answer request's chat and the field it came from (exactly one of the two)."""
    return messages_from(prompt, messages), "prompt" if prompt else "messages"


def refine_query(r: pb.RefineRequest) -> RefineQuery:
    return RefineQuery(
        instruction=r.instruction,
        response=r.response,
        constraints=constraints(r.constraints),
        criteria=list(r.criteria),
        kind=JUDGE_KIND.parse(r.judge, "judge"),
        options=search_options(r.options),
        budget=budget_request(r.budget),
    )


# -- dataclasses → protobuf ------------------------------------------------------------


def phase_message(c: PhaseCost) -> common_pb2.PhaseTokens:
    return common_pb2.PhaseTokens(
        prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens, requests=c.requests
    )


def _spent(seconds: float) -> Duration:
    """A time the request spent (never negative on the wire)."""
    return duration(max(seconds, 0.0))


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
        wall_time=_spent(wall_time_s),
        outcome=OUTCOME.value(outcome, "outcome"),
        unusable=common_pb2.UnusableRefinements(**cost.unusable),
        guardrail_failures=common_pb2.GuardrailFailures(**cost.guardrail_failures),
        judgements=cost.judgements,
        votes_skipped=cost.votes_skipped,
        search_time=_spent(wall_time_s if search_time_s is None else search_time_s),
        actor_time=_spent(actor_time_s),
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
        verdict=VERDICT.value(j.verdict if j else "", "verdict"),
        expanded=node.expanded,
        edit_distance=node.edit_distance,
        constraints_met=j.constraints_met if j else 0,
        constraints_checked=len(j.constraints) if j else 0,
        hard_fail=j.hard_fail if j else False,
        guardrails=[g.rule for g in j.guardrails] if j else [],
    )


def event_message(e: SearchEvent) -> pb.RefineEvent:
    return pb.RefineEvent(
        kind=REFINE_EVENT_KIND.value(f"node_{e.kind}", "event kind"),
        node=node_message(e.node),
        cost=cost_message(e.cost, 0.0),
    )


def constraint_messages(results: Sequence[ConstraintResult]) -> list[pb.ConstraintResult]:
    return [
        pb.ConstraintResult(
            instruction_id=r.instruction_id,
            strict_pass=r.strict_pass,
            loose_pass=r.loose_pass,
            error=r.error,
            complaint=r.complaint,
        )
        for r in results
    ]


def refine_response(outcome: RefineOutcome, include_tree: bool) -> pb.RefineResponse:
    result = outcome.result
    best = result.best
    return pb.RefineResponse(
        best_response=best.response,
        verdict=VERDICT.value(best.judgement.verdict if best.judgement else "undecided", "verdict"),
        value=best.value,
        outcome=OUTCOME.value(result.outcome, "outcome"),
        cost=cost_message(result.cost, result.wall_time_s, result.outcome),
        trace=[node_message(n) for n in result.trace],
        tree=[node_message(n) for n in result.tree] if include_tree else [],
        edit_distance=best.edit_distance,
        constraint_results=constraint_messages(outcome.constraint_results),
    )


# -- the actor over gRPC ---------------------------------------------------------------


class GrpcActor:
    """:class:`services.refiner.core.Actor` over the actor service's ``Generate``."""

    def __init__(self, target: str, settings: Settings) -> None:
        self.target = target
        self._settings = settings
        self._client: AsyncActorClient | None = None

    def client(self) -> AsyncActorClient:
        if self._client is None:  # created in the server's event loop
            self._client = AsyncActorClient(self.target, **client_security(self._settings))
        return self._client

    async def generate(
        self, messages: Sequence[Message], sampling: Sampling, timeout_s: float | None
    ) -> ActorReply:
        reply = await self.client().generate(
            messages=[(m.role, m.content) for m in messages],
            n=1,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            stop=list(sampling.stop),
            seed=sampling.seed,
            timeout=timeout_s,
        )
        samples = [
            Sample(c.index, c.text, FINISH_REASON.get(c.finish_reason, "stop"),
                   c.completion_tokens)
            for c in reply.completions
        ]  # fmt: skip
        usage = Usage(reply.usage.prompt_tokens, reply.usage.completion_tokens)
        return ActorReply(GenerationResult(samples, usage), reply.adapter)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


# -- the servicer ----------------------------------------------------------------------


class RefinerService(pb_grpc.RefinerServicer):
    """The ``spar.v1.Refiner`` servicer: Judge, Refine, RefineStream and Answer, each a
    translation around :class:`~services.refiner.core.RefinerCore`."""

    def __init__(
        self,
        runtime: EngineRuntime,
        settings: Settings,
        metrics: RefinerMetrics,
        *,
        check: CheckFn | None = None,
        external: ExternalJudge | None = None,
    ) -> None:
        self.config = settings.refiner
        self.actor = GrpcActor(self.config.actor_target, settings)
        self.core = RefinerCore(
            runtime, settings, metrics, self.actor, check=check, external=external
        )

    async def close(self) -> None:
        await self.actor.close()
        await self.core.close()

    async def Judge(
        self, request: pb.JudgeRequest, context: grpc.aio.ServicerContext
    ) -> pb.JudgeResponse:
        query = JudgeQuery(
            instruction=request.instruction,
            response=request.response,
            constraints=constraints(request.constraints),
            criteria=list(request.criteria),
            kind=JUDGE_KIND.parse(request.kind, "kind"),
            samples=request.samples,
            tie_policy=TIE_POLICY.parse(request.tie_policy, "tie_policy"),
        )
        outcome = await self.core.judge(query)
        j = outcome.judgement
        return pb.JudgeResponse(
            verdict=VERDICT.value(j.verdict, "verdict"),
            value=j.value,
            critique=j.critique,
            yes_votes=j.vote.yes,
            no_votes=j.vote.no,
            unparseable=j.vote.unparseable,
            samples=[
                pb.JudgeSample(text=s.text, verdict=VERDICT.value(s.verdict, "verdict"))
                for s in j.samples
            ]
            if request.return_all_samples
            else [],
            constraint_results=constraint_messages(outcome.constraint_results),
            kind=JUDGE_KIND.value(j.kind, "judge kind"),
            usage=common_pb2.Usage(
                prompt_tokens=outcome.usage.prompt_tokens,
                completion_tokens=outcome.usage.completion_tokens,
            ),
        )

    async def Refine(
        self, request: pb.RefineRequest, context: grpc.aio.ServicerContext
    ) -> pb.RefineResponse:
        outcome = await self.core.refine(refine_query(request), context.time_remaining)
        return refine_response(outcome, request.return_tree)

    async def RefineStream(
        self, request: pb.RefineRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RefineEvent]:
        query = refine_query(request)
        events: asyncio.Queue[SearchEvent] = asyncio.Queue()
        task = asyncio.create_task(
            self.core.refine(query, context.time_remaining, on_event=events.put_nowait)
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
            outcome = task.result()
            result = outcome.result
            yield pb.RefineEvent(
                kind=pb.REFINE_EVENT_KIND_RESULT,
                cost=cost_message(result.cost, result.wall_time_s, result.outcome),
                result=refine_response(outcome, request.return_tree),
            )
        finally:
            if not task.done():  # the client went away: stop the search's engine work
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def Answer(
        self, request: pb.AnswerRequest, context: grpc.aio.ServicerContext
    ) -> pb.AnswerResponse:
        chat, chat_field = answer_chat(request.prompt, request.messages)
        query = AnswerQuery(
            chat=chat,
            chat_field=chat_field,
            constraints=constraints(request.constraints),
            criteria=list(request.criteria),
            kind=JUDGE_KIND.parse(request.judge, "judge"),
            options=search_options(request.options),
            budget=budget_request(request.budget),
            sampling=sampling(request.sampling),
        )
        outcome = await self.core.answer(query, context.time_remaining)
        result = outcome.refined.result
        best = result.best
        return pb.AnswerResponse(
            answer=best.response,
            original=outcome.original,
            verdict=VERDICT.value(
                best.judgement.verdict if best.judgement else "undecided", "verdict"
            ),
            value=best.value,
            outcome=OUTCOME.value(result.outcome, "outcome"),
            cost=cost_message(
                result.cost,
                outcome.total_time_s,
                result.outcome,
                search_time_s=result.wall_time_s,
                actor_time_s=outcome.actor_time_s,
            ),
            actor_adapter=outcome.actor_adapter,
            refiner_adapter=outcome.refined.refiner_adapter,
            trace=[node_message(n) for n in result.trace] if request.include_trace else [],
            edit_distance=best.edit_distance,
            constraint_results=constraint_messages(outcome.refined.constraint_results),
            original_constraint_results=constraint_messages(outcome.original_constraint_results),
        )
