"""What ``spar up --demo`` shows: a refined answer with what changed and what it cost, then
one small self-play iteration with its before/after table and the path of its report.

The formatting functions are pure (over the gRPC replies) so tests read their output;
fields the refiner may not send (older servers) are shown only when present.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable
from typing import Any

from spar.proto_time import as_seconds
from spar.security import ClientSecurity
from spar.v1 import coordinator_pb2 as pb
from spar.v1 import refiner_pb2
from spar.word_diff import changed_words, render, word_diff

#: The demo's request: one constraint a small model often breaks, a small search.
DEMO_CONSTRAINT: tuple[str, dict[str, object]] = ("punctuation:no_comma", {})


def _has(message: Any, name: str) -> bool:
    """Whether ``message`` carries field ``name`` (servers and stubs of other versions)."""
    fields = message.DESCRIPTOR.fields_by_name
    if name not in fields:
        return False
    field = fields[name]
    if field.message_type is not None and not field.is_repeated:
        return bool(message.HasField(name))
    return bool(getattr(message, name))


def _indent(text: str, prefix: str) -> str:
    lines = text.strip().splitlines() or [""]
    return "\n".join(prefix + line if i else line for i, line in enumerate(lines))


def _constraint_line(answer: refiner_pb2.AnswerResponse) -> str | None:
    """Each checked constraint, before → after, with the verifier's complaint, when the
    refiner reports them."""
    if not _has(answer, "constraint_results"):
        return None
    before = {c.instruction_id: c for c in getattr(answer, "original_constraint_results", [])}
    parts = []
    for c in answer.constraint_results:
        now = "passed" if c.strict_pass else "failed"
        was = before.get(c.instruction_id)
        if was is not None and was.strict_pass != c.strict_pass:
            text = f"{c.instruction_id} {'passed' if was.strict_pass else 'failed'} → {now}"
        else:
            text = f"{c.instruction_id} {now}"
        complaint = getattr(c, "complaint", "") or getattr(was, "complaint", "")
        parts.append(text + (f" ({complaint})" if complaint else ""))
    return "; ".join(parts)


def cost_line(answer: refiner_pb2.AnswerResponse) -> str:
    """Outcome and cost of one answer, in one line."""
    from spar.client.enums import SEARCH_OUTCOME, VERDICT

    outcome = SEARCH_OUTCOME.label(answer.outcome)
    verdict = VERDICT.label(answer.verdict)
    cost = answer.cost
    tokens = sum(p.completion_tokens for p in (cost.generate, cost.judge, cost.refine))
    time = f"{as_seconds(cost.wall_time):.1f} s"
    if _has(cost, "actor_time") or _has(cost, "search_time"):
        actor, search = as_seconds(cost.actor_time), as_seconds(cost.search_time)
        time += f" (actor {actor:.1f} s, search {search:.1f} s)"
    parts = [
        outcome.replace("_", " "),
        f"verdict {verdict}",
        f"value {answer.value:.2f}",
        f"{cost.nodes_expanded} nodes",
        f"{tokens:,} generated tokens",
        time,
    ]
    if _has(cost, "unusable"):
        unusable = {f.name: v for f, v in cost.unusable.ListFields() if v}
        if unusable:
            listed = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in unusable.items())
            parts.append(f"unusable refinements: {listed}")
    return " · ".join(parts)


def answer_lines(answer: refiner_pb2.AnswerResponse, colour: bool = False) -> list[str]:
    """The original, the refined answer, what changed between them and what it cost."""
    original, refined = answer.original.strip(), answer.answer.strip()
    lines = [f"actor:    {_indent(original, '          ')}"]
    if refined == original:
        lines.append("refined:  (the same: nothing better was found, or it already passed)")
    else:
        spans = word_diff(original, refined)
        lines.append(f"refined:  {_indent(refined, '          ')}")
        size = f"{changed_words(spans)} words changed"
        if _has(answer, "edit_distance"):
            size += f", edit distance {answer.edit_distance:.2f}"
        lines.append(f"changes:  {_indent(render(spans, colour), '          ')}")
        lines.append(f"          ({size})")
    if (constraints := _constraint_line(answer)) is not None:
        lines.append(f"checks:   {constraints}")
    lines.append(f"cost:     {cost_line(answer)}")
    return lines


def _pct(x: float) -> str:
    return f"{x * 100:5.1f}%"


def iteration_lines(it: pb.Iteration) -> list[str]:
    """The iteration's outcome: decision, data, search cost and the before/after table."""
    from spar.client.enums import ITERATION_STATE
    from spar.evaluation import METRICS

    state = ITERATION_STATE.label(it.state)
    c, cost = it.counts, it.search_cost
    tokens = cost.judge.completion_tokens + cost.refine.completion_tokens
    lines = [
        f"iteration {it.number}: {state}" + (f" — {it.decision}" if it.decision else ""),
        f"  data:    {c.prompts} prompts → {c.samples} samples → {c.negatives} failing → "
        f"{c.searches} searched → {c.refined} refined → {c.dpo_pairs} DPO pairs, "
        f"{c.sft_records} RFT records",
        f"  search:  {cost.nodes_expanded} nodes, {tokens:,} generated tokens, "
        f"{as_seconds(cost.wall_time):.0f} s",
    ]
    if it.HasField("candidate_eval") and it.candidate_eval.prompts:
        b, a = it.baseline_eval, it.candidate_eval
        heading = f"IFEval on {a.prompts} held-out prompts"
        lines.append(f"  {heading:30s} before   after  change")
        for m in METRICS:
            before, after = getattr(b, m), getattr(a, m)
            lines.append(
                f"  {m:30s} {_pct(before)}  {_pct(after)}  {(after - before) * 100:+5.1f} pp"
            )
        gain = (a.prompt_level_strict - b.prompt_level_strict) * 100
        if gain > 1e-9:
            lines.append(f"  {tokens / gain:,.0f} search tokens per point of prompt_level_strict")
    elif not it.actor_candidate.name and it.state != pb.ITERATION_STATE_FAILED:
        lines.append("  IFEval:  not evaluated: no actor was trained this iteration")
    rolled = it.state == pb.ITERATION_STATE_SUCCEEDED
    for role, v in (("actor", it.actor_candidate), ("refiner", it.refiner_candidate)):
        if v.name:
            status = "rolled out" if rolled else "not rolled out"
            lines.append(f"  {role + ':':8s} {v.name} ({status}; sha256 {v.digest[:16]}…)")
    if it.error:
        lines.append(f"  error:   {it.error}")
    return lines


def print_lines(lines: Iterable[str]) -> None:
    print("\n".join(lines), flush=True)


def refined_answer(target: str, prompt: str, security: ClientSecurity) -> None:
    """Asks the refiner for one refined answer and prints it with its diff and cost."""
    from spar.client import RefinerClient, search_budget, search_options

    print(f"\nprompt:   {prompt}\n          (constraint: {DEMO_CONSTRAINT[0]})", flush=True)
    print("          asking the refiner: the actor answers, the judge checks, a search "
          "refines a failing answer …", flush=True)  # fmt: skip
    with RefinerClient(target, timeout=600, **security) as refiner:
        answer = refiner.answer(
            prompt,
            constraints=[DEMO_CONSTRAINT],
            max_tokens=96,
            options=search_options(branch=2, max_depth=2),
            budget=search_budget(max_nodes=4),
        )
    print_lines(answer_lines(answer, colour=sys.stdout.isatty()))


def watch(coordinator: Any, it: pb.Iteration) -> pb.Iteration:
    """Follows the iteration with one progress bar over its stages, redrawn in place each
    second (a stage can take minutes: the clock shows it is not stuck)."""
    from tqdm import tqdm

    from spar.client.enums import ITERATION_STAGE

    stages = len(pb.IterationStage.keys()) - 2  # neither UNSPECIFIED nor DONE
    final = it
    bar = tqdm(
        total=stages,
        desc=f"iteration {it.number}",
        bar_format="{desc}: {bar:24} {n}/{total} stages {elapsed}{postfix}",
        dynamic_ncols=True,
        disable=not sys.stderr.isatty(),
    )
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(1.0):
            bar.refresh()

    ticker = threading.Thread(target=tick, name="progress", daemon=True)
    ticker.start()
    try:
        for event in coordinator.watch_iteration(it.number):
            final = event.iteration
            stage = ITERATION_STAGE.label(final.stage)
            bar.n = min(max(final.stage - 1, 0), stages)
            message = event.message.removeprefix(f"iteration {it.number}: ")
            bar.set_postfix_str(message if message.startswith(stage) else
                                f"{stage}: {message}")  # fmt: skip
    finally:
        stop.set()
        ticker.join()
        bar.close()
    return final


def iteration(target: str, security: ClientSecurity) -> None:
    """Runs one iteration with a progress bar, then prints its table and its report."""
    from spar.client import CoordinatorClient
    from spar_cli.commands.report import report_path

    print("\none small self-play iteration (prompts → samples → judge → search → train → "
          "evaluate → roll out):", flush=True)  # fmt: skip
    with CoordinatorClient(target, **security) as coordinator:
        final = watch(coordinator, coordinator.start_iteration())
    print_lines(iteration_lines(final))
    # The coordinator writes it too; writing it here means it is there when this prints.
    print(f"report:   {report_path(final.number)}", flush=True)
