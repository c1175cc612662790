"""Training data of an iteration, from its judgments and searches (pure logic).

What each kind of record teaches, and why only these records are kept:

- **Actor DPO pairs** (chosen = the refined answer, rejected = the actor's own failing
  sample): only from searches whose final answer passed the end gate *and* passes more
  checked constraints than the original, and only when the chosen answer is a repair,
  not a rewrite (normalised word edit distance, spar.edits). A pair that passes the gate
  without meeting more checked constraints teaches a preference the verifier cannot
  vouch for; a rewrite teaches paraphrasing instead of fixing the violation.
- **Refiner refinement records** (refine request → the new response): only the steps on
  the path of a search that ended in a passing node (outcome ``refined``), in the refine
  template the refiner uses (``Prompts.refine_messages`` / ``refine_completion``). A step
  that raised the LLM's value inside a search that never passed is not a good example:
  the value of a 135M judge is noise, and the search's own verdict on that path was "no
  repair found". Steps on a passing path that lose a checked constraint or break a
  guardrail are dropped too.
- **Refiner judgement records** (judge prompt without constraint notes → a judgement):
  when the prompt's constraints are known, the target is the *verifier's* judgement —
  its verdict and its exact complaint list (:func:`verifier_judgement`). See
  :func:`judgment_records` for why disagreeing records are relabelled, not dropped.

Every function also returns what it dropped, by reason, so an iteration reports them.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spar import guardrails
from spar.complaints import program_critique
from spar.edits import normalized_edit_distance
from spar.ifeval import Constraint, ConstraintCheck
from spar.refine_templates import Prompts

Record = dict[str, Any]
CheckFn = Callable[[str, str, Sequence[Constraint]], list[ConstraintCheck]]
"""The verifier (``spar.ifeval.check`` in production)."""

_VERDICT_LINE = re.compile(r"^.*final\s*judg(?:e)?ment.*$", re.IGNORECASE | re.MULTILINE)


def pick_negative(judged: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The sample that goes to search: a majority-FAIL one (lowest value first); ties
    and undecided votes are dropped, as in the paper."""
    failing = [j for j in judged if j["verdict"] == "fail"]
    if not failing:
        return None
    return min(failing, key=lambda j: (j["value"], j["index"]))


# -- actor DPO pairs -------------------------------------------------------------------


@dataclass
class PairCounts:
    """Why candidate DPO pairs were kept or dropped (for the iteration's counts)."""

    pairs: int = 0
    """Pairs kept."""
    no_gain: int = 0
    """Passed the gate but met no more checked constraints than the original (or the
    search record does not say how many it met)."""
    rewrites: int = 0
    """The chosen answer rewrote rather than repaired (edit distance over the limit)."""
    echoes: int = 0
    """The chosen answer repeats a complaint of the critique (:func:`echoes_critique`)."""


_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def echoes_critique(response: str, critiques: Iterable[str]) -> bool:
    """The response repeats a complaint of the critique it was asked to fix ("2 uses of
    virus; fewer than 2 allowed"): an answer made of the problem list can pass the checks
    it names, but it is no answer (seen in the warm-up of the first GPU run)."""
    text = f" {' '.join(_words(response))} "
    for critique in critiques:
        for line in refine_critique(critique).splitlines():
            words = _words(line)
            if len(words) >= 4 and f" {' '.join(words)} " in text:
                return True
    return False


def _met(node: Mapping[str, Any]) -> int | None:
    checked = node.get("constraints_checked")
    return int(node.get("constraints_met", 0)) if checked else None


def _sane(node: Mapping[str, Any]) -> bool:
    return not node.get("hard_fail") and not node.get("guardrails")


def constraint_gain(search: Mapping[str, Any]) -> int | None:
    """Checked constraints the search's answer meets beyond the original's; None when the
    record does not say (no constraints checked, or a record from before they were kept)."""
    trace = search.get("trace") or []
    if len(trace) < 2:
        return None
    before, after = _met(trace[0]), _met(trace[-1])
    if before is None or after is None:
        return None
    return after - before


def dpo_pairs(
    searches: Iterable[Mapping[str, Any]], max_edit_distance: float = 1.0
) -> tuple[list[Record], PairCounts]:
    """Pairs from searches whose answer passed the gate and meets more checked
    constraints than the original, and is a repair (edit distance ≤ max_edit_distance)."""
    pairs = []
    counts = PairCounts()
    for s in searches:
        if s["outcome"] != "refined":
            continue
        chosen, rejected = s["best_response"], s["root"]
        if not chosen.strip() or chosen.strip() == rejected.strip():
            continue
        gain = constraint_gain(s)
        trace = s.get("trace") or []
        if gain is None or gain <= 0 or not _sane(trace[-1]):
            counts.no_gain += 1
            continue
        if echoes_critique(chosen, [n.get("critique", "") for n in trace[:-1]]):
            counts.echoes += 1
            continue
        if normalized_edit_distance(rejected, chosen) > max_edit_distance:
            counts.rewrites += 1
            continue
        pairs.append({"prompt": s["prompt"], "chosen": chosen, "rejected": rejected})
    counts.pairs = len(pairs)
    return pairs, counts


# -- refiner records ---------------------------------------------------------------------


def _messages(turns: list[Any], completion: str) -> Record:
    return {
        "messages": [
            *({"role": m.role, "content": m.content} for m in turns),
            {"role": "assistant", "content": completion},
        ]
    }


def refine_critique(critique: str) -> str:
    """The critique as the search put it in its refine prompt (no verdict line)."""
    return _VERDICT_LINE.sub("", critique).strip() or "The response misses a requirement."


@dataclass
class RefineCounts:
    """How many refinement (RFT) records came out, and why steps were dropped."""

    records: int = 0
    """Records kept."""
    steps_failed_search: int = 0
    """Steps of searches that ended without a passing node (never training data)."""
    steps_dropped: int = 0
    """Steps on a passing path that lost a checked constraint, broke a guardrail or
    repeat a complaint of the critique they were asked to fix."""


def refinement_records(
    searches: Iterable[Mapping[str, Any]], prompts: Prompts
) -> tuple[list[Record], RefineCounts]:
    """Refine request → new response, for every usable step of every passing path."""
    out = []
    counts = RefineCounts()
    for s in searches:
        trace = s.get("trace") or []
        steps = list(itertools.pairwise(trace))
        if s["outcome"] != "refined":
            counts.steps_failed_search += len(steps)
            continue
        for parent, child in steps:
            before, after = _met(parent), _met(child)
            lost = before is not None and after is not None and after < before
            critique = parent.get("critique", "")
            echo = echoes_critique(child["response"], [critique])
            if not critique or lost or child.get("guardrails") or echo:
                counts.steps_dropped += 1
                continue
            turns = prompts.refine_messages(
                s["prompt"], parent["response"], refine_critique(parent["critique"])
            )
            out.append(
                _messages(turns, prompts.refine_completion(child["reflection"], child["response"]))
            )
    counts.records = len(out)
    return out, counts


PASS_JUDGEMENT = "The response meets every requirement of the instruction.\nFinal Judgement: Yes"


def verifier_judgement(passed: bool, complaints: str) -> str:
    """The judge's answer in the judge prompt's format, written from the verifier's
    verdict and its exact complaints (one per line)."""
    if passed:
        return PASS_JUDGEMENT
    return f"The response misses these requirements:\n{complaints}\nFinal Judgement: No"


def llm_verdict(judgment: Mapping[str, Any]) -> str | None:
    """The LLM's majority verdict of a judgment record; None when it did not vote (the
    verifier decided alone) or tied."""
    yes, no = int(judgment.get("yes_votes", 0)), int(judgment.get("no_votes", 0))
    if yes == no:
        return None
    return "pass" if yes > no else "fail"


@dataclass
class JudgeCounts:
    """How the judge (RFT) records' targets were decided."""

    records: int = 0
    """Records kept."""
    agreed: int = 0
    """Constraints known, the LLM voted and its majority agreed with the verifier."""
    relabelled: int = 0
    """Constraints known, the LLM's majority disagreed: the target is the verifier's."""
    verifier: int = 0
    """Constraints known, no LLM vote (the verifier decided alone): the verifier's target."""
    unchecked: int = 0
    """No constraints known: a split but decided LLM vote, the majority's critique (the paper)."""
    capped: int = 0
    """Beyond one record per prompt and target verdict (kept out for balance)."""


_PRIORITY = {"relabelled": 0, "agreed": 1, "verifier": 2}


def judgment_records(
    judgments: Iterable[Mapping[str, Any]],
    prompts: Prompts,
    constraints: Mapping[str, Sequence[Constraint]],
    check: CheckFn,
) -> tuple[list[Record], JudgeCounts]:
    """Judge prompt → judgement records; ``constraints`` by prompt key.

    Where the constraints are known, every target is the verifier's verdict and its
    complaint list (guardrail findings included), and a record whose LLM vote disagreed
    is **relabelled**, not dropped. Why relabel: the records the LLM got wrong are the
    ones that can teach it something; dropping them would keep only the verdicts the
    model already gives (and, verifier-first, the LLM seldom votes at all, so little
    would be left), whereas the verifier's verdict on a checked constraint is right by
    construction. The judge prompt carries no "already checked" notes, so the refiner's
    LLM judge learns to say what the verifier would when no constraints are supplied.
    Counts say how many records agreed, were relabelled, or had no LLM vote.

    For balance, each prompt gives at most one record per target verdict (a relabelled
    one first, then an agreeing one, then an unvoted one). Without constraints, the
    paper's rule stays: split but decided votes, the majority side's critique.
    """
    counts = JudgeCounts()
    chosen: dict[tuple[str, bool], tuple[int, int, Record]] = {}
    out: list[Record] = []
    for order, j in enumerate(judgments):
        cons = list(constraints.get(str(j.get("prompt_key", "")), ()))
        turns = prompts.judge_messages(j["prompt"], j["response"])
        if not cons:
            yes, no = j["yes_votes"], j["no_votes"]
            if yes == 0 or no == 0 or yes == no or not j.get("critique"):
                continue
            out.append(_messages(turns, j["critique"]))
            counts.unchecked += 1
            continue
        checks = check(j["prompt"], j["response"], cons)
        issues = guardrails.check(j["prompt"], j["response"])
        passed = all(c.strict for c in checks) and not issues
        complaints = program_critique(j["response"], cons, checks, issues) if not passed else ""
        llm = llm_verdict(j)
        case = "verifier"
        if llm is not None:
            case = "agreed" if (llm == "pass") == passed else "relabelled"
        setattr(counts, case, getattr(counts, case) + 1)
        record = _messages(turns, verifier_judgement(passed, complaints))
        key = (str(j.get("prompt_key", "")), passed)
        rank = (_PRIORITY[case], order, record)
        if key in chosen:
            counts.capped += 1
            if rank[:2] >= chosen[key][:2]:
                continue
        chosen[key] = rank
    out += [r for _, _, r in sorted(chosen.values(), key=lambda v: v[1])]
    counts.records = len(out)
    return out, counts
