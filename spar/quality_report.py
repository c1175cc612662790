"""What a quality run measured, summarised (pure): degenerate answers, run-to-run spread,
gains in points, tokens per point, the markdown tables of bench/RESULTS.md and the
``RESULT quality_run ...`` line. ``bench/quality_run.py`` runs the iterations and measures;
this module only reads its ``quality.json`` document.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from spar import guardrails
from spar.evaluation import METRICS
from spar.prompt_sets import PromptRecord

MAIN = "prompt_level_loose"
"""The metric the gains are given in (points = 100 × the difference)."""


def degenerate(records: Sequence[PromptRecord], answers: Sequence[str]) -> dict[str, Any]:
    """Answers that break a guardrail (the same rules on every side), by rule, and the
    share wrapped in quotation marks."""
    rules: Counter[str] = Counter()
    bad = 0
    for r, text in zip(records, answers, strict=True):
        issues = guardrails.check(r.prompt, text)
        bad += bool(issues)
        rules.update(i.rule for i in issues)
    n = max(len(answers), 1)
    quoted = sum(1 for t in answers if len(t.strip()) > 1 and t.strip()[0] == t.strip()[-1] == '"')
    return {"share": round(bad / n, 4), "rules": dict(rules), "quoted_share": round(quoted / n, 4)}


def spread(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two greedy evaluations of the same version: answers that differ, metric changes."""
    differ = sum(x != y for x, y in zip(a["answers"], b["answers"], strict=True))
    deltas = {k: round(b["metrics"][k] - a["metrics"][k], 4) for k in METRICS}
    return {
        "answers_differ_share": round(differ / max(len(a["answers"]), 1), 4),
        "metric_deltas": deltas,
        "mean_delta_points": round(100 * sum(deltas.values()) / len(deltas), 2),
        "main_delta_points": round(100 * deltas[MAIN], 2),
    }


COUNTS = ("prompts", "samples", "negatives", "searches", "refined", "dpo_pairs",
          "dpo_pairs_dropped_no_gain", "dpo_pairs_dropped_rewrite", "dpo_pairs_dropped_echo",
          "refine_records",
          "refine_steps_failed_search", "judge_records", "judge_agreed", "judge_relabelled",
          "judge_verifier_only")  # fmt: skip


def _points(x: float) -> str:
    return f"{100 * x:+.1f}"


def gains(doc: dict[str, Any]) -> dict[str, Any]:
    """Gains in points of prompt-level loose after the last measured iteration."""
    its = doc["iterations"]
    measured = sorted((n for n in its if its[n].get("greedy")), key=int)
    if not measured:
        return {}
    base = its[measured[0]]["greedy"]["metrics"][MAIN] if measured[0] == "0" else None
    last = its[measured[-1]]
    greedy = last["greedy"]["metrics"][MAIN]
    out: dict[str, Any] = {"iterations": max(0, int(measured[-1]))}
    if base is not None:
        out["greedy_gain"] = round(100 * (greedy - base), 2)
    for key in ("refined", "llm_refined"):
        if last.get(key):
            out[f"{key}_gain"] = round(100 * (last[key]["metrics"][MAIN] - greedy), 2)
    return out


def tokens_per_point(doc: dict[str, Any]) -> dict[str, Any]:
    """Extra generated tokens per answer per point a refined row gains over greedy, and
    the search stage's generated tokens of all iterations per point of greedy gain."""
    its = doc["iterations"]
    g = gains(doc)
    out: dict[str, Any] = {}
    measured = sorted((n for n in its if its[n].get("greedy")), key=int)
    if not measured:
        return out
    last = its[measured[-1]]
    for key in ("refined", "llm_refined"):
        gain = g.get(f"{key}_gain")
        if last.get(key) and gain:
            extra = last[key]["generated_tokens_per_answer"] - last["greedy"]["tokens_per_answer"]
            out[f"{key}_tokens_per_answer_per_point"] = round(extra / gain, 1)
    search = 0
    for n in its:
        cost = its[n].get("iteration", {}).get("search_cost", {})
        search += sum(int(cost.get(p, {}).get("completion_tokens", 0)) for p in ("judge", "refine"))
    if g.get("greedy_gain"):
        out["search_tokens_per_greedy_point"] = round(search / g["greedy_gain"])
    out["search_generated_tokens"] = search
    return out


ROWS = (
    ("greedy", "greedy"),
    ("greedy_repeat", "greedy (again)"),
    ("refined", "refined (hybrid)"),
    ("llm_refined", "refined (LLM judge)"),
)


def report(doc: dict[str, Any]) -> str:
    """The markdown tables of bench/RESULTS.md."""
    its = doc["iterations"]
    lines = [
        "| iteration | answers | "
        + " | ".join(METRICS)
        + " | degenerate | quoted | tokens/answer |",
        "|---|---|" + "---|" * 7,
    ]
    for n in sorted(its, key=int):
        for key, label in ROWS:
            row = its[n].get(key)
            if not row:
                continue
            m, d = row["metrics"], row["degenerate"]
            tokens = row.get("generated_tokens_per_answer", row.get("tokens_per_answer", 0))
            lines.append(
                f"| {n} | {label} | " + " | ".join(f"{m.get(k, 0):.3f}" for k in METRICS)
                + f" | {d['share']:.3f} | {d['quoted_share']:.3f} | {tokens:.0f} |"
            )  # fmt: skip
    lines += ["", "| iteration | state | " + " | ".join(COUNTS) + " | stage seconds | decision |",
              "|---|---|" + "---|" * (len(COUNTS) + 2)]  # fmt: skip
    for n in sorted(its, key=int):
        it = its[n].get("iteration")
        if not it:
            continue
        c = it.get("counts", {})
        stages = ", ".join(
            f"{t['stage'].removeprefix('ITERATION_STAGE_').lower()} {_seconds(t):.0f}"
            for t in it.get("timings", [])
        )
        lines.append(
            f"| {n} | {it.get('state', '?').removeprefix('ITERATION_STATE_').lower()} | "
            + " | ".join(str(c.get(k, 0)) for k in COUNTS)
            + f" | {stages} | {it.get('decision', '')} |"
        )
        w = it.get("warmup")
        if w:
            lines.append(
                f"\nwarm-up: {w.get('prompts', 0)} prompts, {w.get('samples', 0)} samples, "
                f"{w.get('failing', 0)} failing uncut, {w.get('searches_refined', 0)}/"
                f"{w.get('searches', 0)} searches refined, {w.get('search_records', 0)} search "
                f"records + {w.get('repair_records', 0)} repairs ({w.get('repairs_capped', 0)} "
                f"capped), mix {w.get('mix', {})}, version "
                f"{w.get('version', {}).get('name', '-')}, {w.get('duration', '?')}\n"
            )
    s = doc.get("spread")
    if s:
        lines.append(
            f"\nrun-to-run spread (base greedy twice): {100 * s['answers_differ_share']:.1f} % of "
            f"answers differ; {MAIN} {s['main_delta_points']:+.1f} points, mean of the four "
            f"{s['mean_delta_points']:+.1f} points"
        )
    for n in sorted(its, key=int):
        if its[n].get("coordinator_vs_run"):
            lines.append(f"iteration {n}: coordinator's candidate evaluation vs this run's: "
                         f"{its[n]['coordinator_vs_run']}")  # fmt: skip
    lines += ["", f"gains (points of {MAIN}): {gains(doc)}",
              f"tokens per point: {tokens_per_point(doc)}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def _seconds(timing: dict[str, Any]) -> float:
    d = timing.get("duration", "0s")
    return float(str(d).rstrip("s") or 0)


def result_line(doc: dict[str, Any]) -> str:
    fields: dict[str, Any] = {"iterations": 0, **gains(doc)}
    s = doc.get("spread")
    if s:
        fields["spread_points"] = s["main_delta_points"]
        fields["answers_differ"] = s["answers_differ_share"]
    its = doc["iterations"]
    measured = sorted((n for n in its if its[n].get("greedy")), key=int)
    if measured:
        first, last = its[measured[0]], its[measured[-1]]
        fields["degenerate_greedy_base"] = first["greedy"]["degenerate"]["share"]
        fields["degenerate_greedy_last"] = last["greedy"]["degenerate"]["share"]
        if last.get("refined"):
            fields["degenerate_refined_last"] = last["refined"]["degenerate"]["share"]
        fields["greedy_loose_last"] = round(last["greedy"]["metrics"][MAIN], 4)
    return "RESULT quality_run " + " ".join(f"{k}={v}" for k, v in fields.items())
