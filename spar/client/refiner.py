"""Client of a refiner: judge, refine, answer (``Refiner``) and its adapters.

Options that are enums on the wire (judge kind, search strategy, node selection, tie
policy) take their short names here ("llm", "bfs", ...; see :mod:`spar.client.enums`);
"" leaves the choice to the server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from spar.client.adapter_host import AdapterHostMethods
from spar.client.base import AsyncClient, Call, Client, streamed, unary, with_given
from spar.client.enums import JUDGE_KIND, NODE_SELECTION, SEARCH_STRATEGY, TIE_POLICY
from spar.proto_time import duration
from spar.v1 import common_pb2, refiner_pb2_grpc
from spar.v1 import refiner_pb2 as pb

Stub = refiner_pb2_grpc.RefinerStub

ConstraintSpec = tuple[str, Mapping[str, Any]] | common_pb2.VerifiableConstraint
"""An IFEval constraint: (instruction id, kwargs), or the message itself."""


def constraint_messages(
    constraints: Sequence[ConstraintSpec],
) -> list[common_pb2.VerifiableConstraint]:
    """(instruction id, kwargs) pairs as VerifiableConstraint messages."""
    out = []
    for c in constraints:
        if isinstance(c, common_pb2.VerifiableConstraint):
            out.append(c)
            continue
        instruction_id, kwargs = c
        msg = common_pb2.VerifiableConstraint(instruction_id=instruction_id)
        msg.kwargs.update(dict(kwargs))
        out.append(msg)
    return out


def search_options(
    *,
    strategy: str = "",
    selection: str = "",
    branch: int | None = None,
    keep_top: int | None = None,
    max_depth: int | None = None,
    end_gate: float | None = None,
    judge_samples: int | None = None,
) -> common_pb2.SearchOptions:
    """The tree search's shape; unset fields take the server's defaults."""
    options = common_pb2.SearchOptions(
        strategy=SEARCH_STRATEGY.value(strategy, "strategy"),
        selection=NODE_SELECTION.value(selection, "selection"),
    )
    return with_given(
        options, branch=branch, keep_top=keep_top, max_depth=max_depth, end_gate=end_gate,
        judge_samples=judge_samples,
    )  # fmt: skip


def search_budget(
    *, max_nodes: int = 0, max_generated_tokens: int = 0, max_wall_time_s: float | None = None
) -> common_pb2.SearchBudget:
    """What one search may spend; 0 (or None) takes the server's default."""
    b = common_pb2.SearchBudget(max_nodes=max_nodes, max_generated_tokens=max_generated_tokens)
    if max_wall_time_s is not None:
        b.max_wall_time.CopyFrom(duration(max_wall_time_s))
    return b


class RefinerMethods(AdapterHostMethods):
    """The refiner's RPCs, written once for the blocking and the asyncio client."""

    @unary
    def judge(
        self,
        instruction: str,
        response: str,
        *,
        constraints: Sequence[ConstraintSpec] = (),
        criteria: Sequence[str] = (),
        kind: str = "",
        samples: int = 0,
        tie_policy: str = "",
        return_all_samples: bool = False,
        timeout: float | None = None,
    ) -> Call[pb.JudgeResponse]:
        """Whether the response follows the instruction (and its constraints)."""
        request = pb.JudgeRequest(
            instruction=instruction,
            response=response,
            constraints=constraint_messages(constraints),
            criteria=list(criteria),
            kind=JUDGE_KIND.value(kind, "judge kind"),
            samples=samples,
            tie_policy=TIE_POLICY.value(tie_policy, "tie policy"),
            return_all_samples=return_all_samples,
        )
        return Call(Stub, "Judge", request, pb.JudgeResponse, timeout)

    @unary
    def refine(
        self,
        instruction: str,
        response: str,
        *,
        constraints: Sequence[ConstraintSpec] = (),
        criteria: Sequence[str] = (),
        judge: str = "",
        options: common_pb2.SearchOptions | None = None,
        budget: common_pb2.SearchBudget | None = None,
        return_tree: bool = False,
        timeout: float | None = None,
    ) -> Call[pb.RefineResponse]:
        """A response improved by tree search until the judge passes it: the best one
        the search finds within its budget."""
        request = pb.RefineRequest(
            instruction=instruction,
            response=response,
            constraints=constraint_messages(constraints),
            criteria=list(criteria),
            judge=JUDGE_KIND.value(judge, "judge kind"),
            options=options,
            budget=budget,
            return_tree=return_tree,
        )
        return Call(Stub, "Refine", request, pb.RefineResponse, timeout)

    refine_stream = streamed(refine, "RefineStream", pb.RefineEvent)

    @unary
    def answer(
        self,
        prompt: str = "",
        *,
        messages: Sequence[tuple[str, str]] = (),
        constraints: Sequence[ConstraintSpec] = (),
        criteria: Sequence[str] = (),
        judge: str = "",
        temperature: float | None = None,
        max_tokens: int = 0,
        options: common_pb2.SearchOptions | None = None,
        budget: common_pb2.SearchBudget | None = None,
        include_trace: bool = False,
        timeout: float | None = None,
    ) -> Call[pb.AnswerResponse]:
        """The actor's answer to a prompt, refined until the judge passes it."""
        sampling = with_given(
            common_pb2.SamplingParams(max_tokens=max_tokens), temperature=temperature
        )
        request = pb.AnswerRequest(
            prompt=prompt,
            messages=[common_pb2.ChatMessage(role=r, content=c) for r, c in messages],
            constraints=constraint_messages(constraints),
            criteria=list(criteria),
            sampling=sampling,
            judge=JUDGE_KIND.value(judge, "judge kind"),
            budget=budget,
            options=options,
            include_trace=include_trace,
        )
        return Call(Stub, "Answer", request, pb.AnswerResponse, timeout)


class RefinerClient(RefinerMethods, Client):
    """Blocking client of a refiner (``Refiner`` + ``AdapterHost`` + health).

    with RefinerClient("127.0.0.1:50052") as refiner:
        reply = refiner.answer("Describe the sea in under 20 words.",
                               constraints=[("punctuation:no_comma", {})])
    """


class AsyncRefinerClient(RefinerMethods, AsyncClient):
    """asyncio client of a refiner; same methods as :class:`RefinerClient`, awaitable."""
