"""``spar refiner serve``, ``spar judge`` and ``spar refine`` (the refiner service)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from google.protobuf.json_format import MessageToDict

from spar.client.enums import JUDGE_KIND, SEARCH_OUTCOME, SEARCH_STRATEGY, VERDICT
from spar.errors import InvalidArgument
from spar.v1 import common_pb2
from spar_cli.commands.flags import (
    add_client_flags,
    add_serve_command,
    connect,
    print_json,
    run_service,
    settings_from,
)


def parse_constraint(text: str) -> tuple[str, dict[str, Any]]:
    """``group:name`` or ``group:name:{"json": "kwargs"}`` (IFEval ids contain one colon)."""
    parts = text.split(":", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise InvalidArgument(
            f"--constraint {text!r}: use ID[:JSONKWARGS], e.g. punctuation:no_comma or "
            'length_constraints:number_words:{"relation": "less than", "num_words": 50}'
        )
    kwargs: dict[str, Any] = {}
    if len(parts) == 3 and parts[2].strip():
        try:
            loaded = json.loads(parts[2])
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"--constraint {text!r}: kwargs are not JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise InvalidArgument(f"--constraint {text!r}: kwargs must be a JSON object")
        kwargs = loaded
    return f"{parts[0]}:{parts[1]}", kwargs


def _cost_line(cost: common_pb2.SearchCost) -> str:
    gen = cost.judge.completion_tokens + cost.refine.completion_tokens
    gen += cost.generate.completion_tokens
    wall = cost.wall_time.ToTimedelta().total_seconds()
    line = (
        f"cost: {cost.nodes_expanded} nodes, {cost.judge_samples} judge samples, "
        f"{gen} generated tokens (judge {cost.judge.completion_tokens}, refine "
        f"{cost.refine.completion_tokens}, answer {cost.generate.completion_tokens}), {wall:.1f} s"
    )
    if cost.HasField("actor_time") and cost.actor_time.ToNanoseconds():
        line += (
            f" (answer {cost.actor_time.ToTimedelta().total_seconds():.1f} s, search "
            f"{cost.search_time.ToTimedelta().total_seconds():.1f} s)"
        )
    return line


def _counts(message: Any) -> str:
    """Non-zero fields of a count message, e.g. ``cut_at_max_tokens 2, empty 1``."""
    parts = [f"{f.name} {getattr(message, f.name)}" for f in message.DESCRIPTOR.fields]
    return ", ".join(p for p in parts if not p.endswith(" 0"))


def cmd_serve(args: argparse.Namespace) -> int:
    from services.refiner.server import serve

    settings = settings_from(args)
    if args.actor:
        settings.refiner = settings.refiner.model_copy(update={"actor_target": args.actor})
    if args.openai or args.openai_port is not None:
        update: dict[str, Any] = {"enabled": True}
        if args.openai_port is not None:
            update["port"] = args.openai_port
        settings.openai = settings.openai.model_copy(update=update)
    return run_service(serve, settings)


def cmd_judge(args: argparse.Namespace) -> int:
    from spar.client import RefinerClient

    constraints = [parse_constraint(c) for c in args.constraint or []]
    with connect(RefinerClient, args) as client:
        reply = client.judge(
            args.prompt,
            args.response,
            constraints=constraints,
            criteria=args.criteria or [],
            kind=args.judge or "",
            samples=args.samples,
            return_all_samples=args.all_samples,
        )
    if args.json:
        print_json(reply)
        return 0
    verdict = VERDICT.label(reply.verdict)
    kind = JUDGE_KIND.label(reply.kind)
    print(
        f"verdict: {verdict}  value: {reply.value:.2f}  judge: {kind}  (yes {reply.yes_votes}, "
        f"no {reply.no_votes}, unparseable {reply.unparseable})"
    )
    for c in reply.constraint_results:
        state = "error: " + c.error if c.error else ("pass" if c.strict_pass else "fail")
        said = f" — {c.complaint}" if c.complaint else ""
        print(f"  {c.instruction_id}: {state} (loose: {'pass' if c.loose_pass else 'fail'}){said}")
    if reply.critique:
        print(f"critique:\n{reply.critique}")
    for i, s in enumerate(reply.samples):
        print(f"--- sample {i} ({VERDICT.label(s.verdict)}) ---\n{s.text}")
    return 0


def cmd_refine(args: argparse.Namespace) -> int:
    from spar.client import RefinerClient, search_budget, search_options

    constraints = [parse_constraint(c) for c in args.constraint or []]
    options = search_options(
        strategy=args.algorithm or "", branch=args.branch, max_depth=args.depth
    )
    budget = search_budget(
        max_nodes=args.budget_nodes,
        max_generated_tokens=args.budget_tokens,
        max_wall_time_s=args.budget_seconds,
    )
    with connect(RefinerClient, args) as client:
        if args.response is None:
            answer = client.answer(
                args.prompt,
                constraints=constraints,
                criteria=args.criteria or [],
                judge=args.judge or "",
                options=options,
                budget=budget,
                include_trace=args.trace,
            )
            if args.json:
                print_json(answer)
                return 0
            print(f"original: {answer.original.strip()}")
            _print_result(
                answer.answer, answer.verdict, answer.value, answer.outcome, answer.cost,
                list(answer.trace) if args.trace else [],
            )  # fmt: skip
            _print_change(answer.answer, answer.original, answer.edit_distance, answer.outcome)
            return 0
        kwargs: dict[str, Any] = {
            "constraints": constraints,
            "criteria": args.criteria or [],
            "judge": args.judge or "",
            "options": options,
            "budget": budget,
            "return_tree": args.tree,
        }
        if args.stream:
            return _stream(client, args, kwargs)
        reply = client.refine(args.prompt, args.response, **kwargs)
    if args.json:
        print_json(reply)
        return 0
    _print_result(
        reply.best_response, reply.verdict, reply.value, reply.outcome, reply.cost,
        list(reply.tree if args.tree else reply.trace) if args.trace or args.tree else [],
    )  # fmt: skip
    _print_change(reply.best_response, args.response, reply.edit_distance, reply.outcome)
    return 0


def _print_change(answer: str, original: str, edit_distance: float, outcome: int) -> None:
    if outcome == common_pb2.SEARCH_OUTCOME_ALREADY_PASSING:
        print("(the original already passes: nothing to refine)")
    elif answer.strip() == original.strip():
        print("(the original, unchanged: no refinement passed)")
    else:
        print(f"(refined: edit distance {edit_distance:.2f} from the original)")


def _stream(client: Any, args: argparse.Namespace, kwargs: dict[str, Any]) -> int:
    from spar.v1 import refiner_pb2

    for event in client.refine_stream(args.prompt, args.response, **kwargs):
        if args.json:
            print(json.dumps(MessageToDict(event, preserving_proto_field_name=True)))
            continue
        if event.kind == refiner_pb2.REFINE_EVENT_KIND_RESULT:
            r = event.result
            _print_result(r.best_response, r.verdict, r.value, r.outcome, r.cost, [])
        else:
            n = event.node
            what = (
                "expanded"
                if event.kind == refiner_pb2.REFINE_EVENT_KIND_NODE_EXPANDED
                else "judged"
            )
            value = f" value {n.value:.2f}" if what == "judged" else ""
            print(f"[node {n.id} <- {n.parent_id}, depth {n.depth}] {what}{value}", flush=True)
    return 0


def _print_result(
    text: str, verdict: int, value: float, outcome: int, cost: common_pb2.SearchCost,
    nodes: list[Any],
) -> None:  # fmt: skip
    print(
        f"outcome: {SEARCH_OUTCOME.label(outcome)}  "
        f"verdict: {VERDICT.label(verdict)}  value: {value:.2f}"
    )
    print(_cost_line(cost))
    unusable, guardrails = _counts(cost.unusable), _counts(cost.guardrail_failures)
    if unusable:
        print(f"unusable refinements: {unusable}")
    if guardrails:
        print(f"guardrail failures: {guardrails}")
    for n in nodes:
        print(f"  node {n.id} (parent {n.parent_id}, depth {n.depth}, value {n.value:.2f})")
    print(f"answer: {text.strip()}")


def _add_search_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--constraint",
        action="append",
        metavar="ID[:JSONKWARGS]",
        help="verifiable IFEval constraint (repeatable), e.g. "
        'length_constraints:number_words:\'{"relation": "less than", "num_words": 40}\'',
    )
    p.add_argument(
        "--criteria",
        action="append",
        metavar="PACK[/CRITERION]",
        help="criteria of the refiner's criteria packs (repeatable): a whole pack, e.g. "
        "support, or one criterion, e.g. support/greeting (spar criteria list)",
    )
    p.add_argument(
        "--judge",
        choices=JUDGE_KIND.names,
        help="default: the server's; external: the outside judge (SPAR_EXTERNAL_JUDGE__*)",
    )


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = add_serve_command(sub, "refiner", "run a refiner replica", cmd_serve)
    serve.add_argument(
        "--actor",
        metavar="HOST:PORT",
        help="the actor service (default SPAR_REFINER__ACTOR_TARGET or 127.0.0.1:50051)",
    )
    serve.add_argument(
        "--openai",
        action="store_true",
        help="also serve the OpenAI-compatible HTTP endpoint, /v1/chat/completions "
        "(SPAR_OPENAI__ENABLED)",
    )
    serve.add_argument(
        "--openai-port",
        type=int,
        metavar="PORT",
        help="its port (default 8000, SPAR_OPENAI__PORT; 0: a free port); implies --openai",
    )

    judge = sub.add_parser("judge", help="judge a response against its instruction")
    judge.add_argument("prompt", help="the instruction")
    judge.add_argument("response", help="the response to judge")
    _add_search_flags(judge)
    judge.add_argument("--samples", type=int, default=0, help="LLM judge samples (default 5)")
    judge.add_argument("--all-samples", action="store_true", help="print every judge sample")
    add_client_flags(judge, "refiner")
    judge.set_defaults(func=cmd_judge)

    refine = sub.add_parser(
        "refine", help="refine a response (or the actor's answer) with a budgeted tree search"
    )
    refine.add_argument("prompt", help="the instruction")
    refine.add_argument(
        "--response", help="the response to refine (default: ask the actor for one first)"
    )
    _add_search_flags(refine)
    refine.add_argument(
        "--algorithm", choices=SEARCH_STRATEGY.names, help="default: the server's (bfs)"
    )
    refine.add_argument("--branch", type=int, default=None, help="children per node (3)")
    refine.add_argument("--depth", type=int, default=None, help="maximum depth (3)")
    refine.add_argument("--budget-nodes", type=int, default=0, help="maximum nodes expanded")
    refine.add_argument("--budget-tokens", type=int, default=0, help="maximum generated tokens")
    refine.add_argument("--budget-seconds", type=float, default=None, help="maximum wall time")
    refine.add_argument("--trace", action="store_true", help="print the path to the answer")
    refine.add_argument("--tree", action="store_true", help="print every node (with --response)")
    refine.add_argument(
        "--stream", action="store_true", help="print nodes as they are judged (with --response)"
    )
    add_client_flags(refine, "refiner")
    refine.set_defaults(func=cmd_refine)
