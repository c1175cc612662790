"""``spar coordinator serve``, ``spar iterate``, ``spar state``, ``spar rollback``,
``spar promote``, ``spar reject``, ``spar audit``."""

from __future__ import annotations

import argparse
import getpass
from typing import Any

from tqdm import tqdm

from spar.v1 import coordinator_pb2 as pb
from spar_cli.commands.flags import (
    EXIT_ERROR,
    add_client_flags,
    add_serve_command,
    connect,
    print_json,
    run_service,
    settings_from,
)

STAGES = [s for s in pb.IterationStage.keys() if s != "ITERATION_STAGE_UNSPECIFIED"]  # noqa: SIM118


def cmd_serve(args: argparse.Namespace) -> int:
    from services.coordinator.server import serve

    return run_service(serve, settings_from(args))


def _stage(it: pb.Iteration) -> str:
    from spar.client.enums import ITERATION_STAGE

    return ITERATION_STAGE.label(it.stage)


def _state(it: pb.Iteration) -> str:
    from spar.client.enums import ITERATION_STATE

    return ITERATION_STATE.label(it.state)


def summary(it: pb.Iteration) -> str:
    c = it.counts
    lines = [
        f"iteration {it.number}: {_state(it)}" + (f" — {it.decision}" if it.decision else ""),
        f"  data: {c.prompts} prompts, {c.samples} samples, {c.negatives} negatives, "
        f"{c.searches} searches, {c.refined} refined, {c.dpo_pairs} DPO pairs, "
        f"{c.sft_records} RFT records"
        + (
            f" ({c.dpo_pairs_dropped_rewrite} rewrites dropped)"
            if c.dpo_pairs_dropped_rewrite
            else ""
        ),
        "  search outcomes: "
        + (", ".join(f"{k} {v}" for k, v in sorted(c.search_outcomes.items())) or "-"),
        f"  actor candidate:   {it.actor_candidate.name or '-'}",
        f"  refiner candidate: {it.refiner_candidate.name or '-'}",
    ]
    if it.HasField("candidate_eval"):
        b, k = it.baseline_eval, it.candidate_eval
        lines.append("  eval (before → after):")
        for field in ("prompt_level_strict", "prompt_level_loose", "instruction_level_strict",
                      "instruction_level_loose"):  # fmt: skip
            lines.append(f"    {field:26s} {getattr(b, field):.3f} → {getattr(k, field):.3f}")
        before = {c.id: c.strict for c in b.criteria}
        packs = [c for c in k.criteria if "/" in c.id]  # criteria packs' own (pack/criterion)
        if packs:
            lines.append("  pass rate per criterion (before → after):")
            for c in packs:
                was = before.get(c.id)
                lines.append(
                    f"    {c.id:26s} {'-' if was is None else f'{was:.3f}'} → {c.strict:.3f}"
                    f"  ({c.count} prompts)"
                )
    cost = it.search_cost
    lines.append(
        f"  search cost: {cost.nodes_expanded} nodes, {cost.judge_samples} judge samples, "
        f"{cost.judge.completion_tokens + cost.refine.completion_tokens} generated tokens, "
        f"{cost.votes_skipped} of {cost.judgements} judgements without LLM votes"
    )
    fields = cost.unusable.DESCRIPTOR.fields
    unusable = [f"{f.name} {getattr(cost.unusable, f.name)}" for f in fields
                if getattr(cost.unusable, f.name)]  # fmt: skip
    if unusable:
        lines.append(f"  unusable refinements: {', '.join(unusable)}")
    if it.error:
        lines.append(f"  error: {it.error}")
    if it.state == pb.ITERATION_STATE_AWAITING_APPROVAL:
        lines.append(
            f"  awaiting approval: `spar promote {it.number}` rolls the candidate out, "
            f"`spar reject {it.number}` drops it"
        )
    return "\n".join(lines)


def watch_with_progress(client: Any, it: pb.Iteration, *, show: bool = True) -> pb.Iteration:
    """Follows an iteration to its end with a progress bar over its stages."""
    final = it
    bar = tqdm(total=len(STAGES) - 1, desc=f"iteration {it.number}", disable=not show)
    for event in client.watch_iteration(it.number):
        final = event.iteration
        bar.n = min(max(final.stage - 1, 0), bar.total)
        bar.set_postfix_str(f"{_stage(final)}: {event.message}"[:80])
        bar.refresh()
    bar.close()
    return final


def cmd_iterate(args: argparse.Namespace) -> int:
    from spar.client import CoordinatorClient

    with connect(CoordinatorClient, args) as client:
        it = client.start_iteration(args.prompts or "", args.num_prompts)
        final = watch_with_progress(client, it, show=not args.json)
    if args.json:
        print_json(final)
    else:
        print(summary(final))
    return (
        0
        if final.state
        in (
            pb.ITERATION_STATE_SUCCEEDED,
            pb.ITERATION_STATE_REJECTED,
            pb.ITERATION_STATE_AWAITING_APPROVAL,
        )
        else EXIT_ERROR
    )


def cmd_state(args: argparse.Namespace) -> int:
    from spar.client import CoordinatorClient

    with connect(CoordinatorClient, args) as client:
        state = client.get_state()
    if args.json:
        print_json(state)
        return 0
    for role in ("actor", "refiner"):
        active, previous = getattr(state, role), getattr(state, f"{role}_previous")
        print(f"{role:8s} active {active.name or 'base'}   previous {previous.name or '-'}")
    for r in state.replicas:
        status = r.active or "base" if r.reachable else "UNREACHABLE"
        print(f"  {r.role:8s} {r.target:24s} {status}")
    for it in state.iterations:
        print(f"iteration {it.number}: {_state(it)} ({_stage(it)}) {it.decision or it.error}")
    print(f"approval mode: {'on' if state.approval_required else 'off'}")
    if state.awaiting_approval:
        n = state.awaiting_approval
        print(f"AWAITING APPROVAL: iteration {n} — `spar promote {n}` or `spar reject {n}`")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from spar.client import CoordinatorClient

    with connect(CoordinatorClient, args) as client:
        reply = client.rollback(
            args.role, args.version or "", operator=args.operator, reason=args.reason
        )
    if args.json:
        print_json(reply)
    else:
        print(f"{args.role}: {reply.active.name} active on {reply.replicas} replicas")
    return 0


def _decide(args: argparse.Namespace, decision: str) -> int:
    from spar.client import CoordinatorClient

    with connect(CoordinatorClient, args) as client:
        call = client.promote if decision == "promote" else client.reject
        it = call(args.iteration, operator=args.operator, reason=args.reason)
        if not args.no_wait:
            it = watch_with_progress(client, it, show=not args.json)
    if args.json:
        print_json(it)
    else:
        print(summary(it))
    return 0 if it.state != pb.ITERATION_STATE_FAILED else EXIT_ERROR


def cmd_promote(args: argparse.Namespace) -> int:
    return _decide(args, "promote")


def cmd_reject(args: argparse.Namespace) -> int:
    return _decide(args, "reject")


def _version(v: Any) -> str:
    if not v.name:
        return "-"
    return f"{v.name}" + (f" ({v.digest[:12]})" if v.digest else "")


def audit_lines(reply: pb.ListAuditResponse) -> list[str]:
    lines = []
    for r in reply.records:
        when = r.time.ToJsonString() if r.HasField("time") else "-"
        where = f"iteration {r.iteration}" if r.iteration else "operator"
        lines.append(
            f"#{r.sequence} {when} {r.action} {r.role} {_version(r.version)} "
            f"(was {_version(r.previous)}) [{where}] {r.result}"
        )
        lines.append(
            f"    decided by {r.decided_by}: {r.decision}" + (f" — {r.reason}" if r.reason else "")
        )
        if r.HasField("candidate_eval"):
            b, k = r.baseline_eval, r.candidate_eval
            lines.append(
                f"    evidence: prompt_level_strict {b.prompt_level_strict:.3f} → "
                f"{k.prompt_level_strict:.3f} on {k.prompts} prompts"
            )
        if r.replicas:
            lines.append(f"    replicas: {', '.join(r.replicas)}")
        if r.error:
            lines.append(f"    error: {r.error}")
    if not reply.records:
        lines.append("no audit records")
    if not reply.chain_intact:
        lines.append(f"WARNING: the audit log's hash chain is broken: {reply.chain_error}")
    return lines


def cmd_audit(args: argparse.Namespace) -> int:
    from spar.client import CoordinatorClient

    with connect(CoordinatorClient, args) as client:
        reply = client.list_audit(args.iteration, args.role or "", args.limit)
    if args.json:
        print_json(reply)
    else:
        print("\n".join(audit_lines(reply)))
    return 0 if reply.chain_intact else EXIT_ERROR


def _add_decision_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--operator",
        default=_user(),
        help="who decides, recorded in the audit log (default: your user name)",
    )
    p.add_argument("--reason", default="", help="why, recorded in the audit log")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name (a container without a passwd entry)
        return "unknown"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    add_serve_command(sub, "coordinator", "run the coordinator", cmd_serve)

    iterate = sub.add_parser("iterate", help="run (or resume) one self-play iteration")
    iterate.add_argument("--prompts", help="IFEval-format or plain jsonl prompt file")
    iterate.add_argument("--num-prompts", type=int, default=0, help="prompts to use")
    add_client_flags(iterate, "coordinator")
    iterate.set_defaults(func=cmd_iterate)

    state = sub.add_parser("state", help="versions, replicas and iterations")
    add_client_flags(state, "coordinator")
    state.set_defaults(func=cmd_state)

    rollback = sub.add_parser("rollback", help="return every replica of a role to a version")
    rollback.add_argument("role", choices=["actor", "refiner"])
    rollback.add_argument("version", nargs="?", help="version name (default: the previous one)")
    _add_decision_flags(rollback)
    add_client_flags(rollback, "coordinator")
    rollback.set_defaults(func=cmd_rollback)

    for name, func, text in (
        ("promote", cmd_promote, "roll out the candidate of an iteration that awaits approval"),
        ("reject", cmd_reject, "drop the candidate of an iteration that awaits approval"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("iteration", type=int, help="iteration number (see `spar state`)")
        _add_decision_flags(p)
        p.add_argument("--no-wait", action="store_true", help="return without following it")
        add_client_flags(p, "coordinator")
        p.set_defaults(func=func)

    audit = sub.add_parser("audit", help="the audit log of rollouts, rollbacks and decisions")
    audit.add_argument("--iteration", type=int, default=0, help="only this iteration")
    audit.add_argument("--role", choices=["actor", "refiner"], help="only this role")
    audit.add_argument("--limit", type=int, default=0, help="only the last N records")
    add_client_flags(audit, "coordinator")
    audit.set_defaults(func=cmd_audit)
