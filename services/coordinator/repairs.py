"""Exact, minimal repairs of a failing answer that a program can make (pure logic).

Some IFEval constraints can be met by a mechanical edit that changes nothing else: letter
case, commas, wrapping quotation marks, an end phrase, a postscript, a title. The
refiner's warm-up (services/coordinator/warmup.py) uses such repairs as extra examples of
a refinement: the refine request with the verifier's complaints → the repaired answer.
They are examples for the refiner, never answers served to users or DPO pairs for the
actor: a calibration run showed that an actor trained on naive repairs of this kind
learns the surface habit (496 of 541 answers wrapped in quotation marks), not the skill.

A repair is made only when every failed constraint of the answer is repairable, and it
is kept only when the repaired answer passes every constraint and every guardrail
(:mod:`spar.guardrails`) — the program checks its own edit, as it checks the model's.
Answers cut at max_tokens are never repaired (the caller's rule: their text is not a
finished answer).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spar import guardrails
from spar.complaints import program_critique
from spar.ifeval import Constraint, ConstraintCheck
from spar.prompt_synthesis import task_of

CheckFn = Callable[[str, str, Sequence[Constraint]], list[ConstraintCheck]]
Edit = Callable[[str, Mapping[str, Any], str], str]


def _lowercase(text: str, kw: Mapping[str, Any], instruction: str) -> str:
    return text.lower()


def _capital(text: str, kw: Mapping[str, Any], instruction: str) -> str:
    return text.upper()


def _no_comma(text: str, kw: Mapping[str, Any], instruction: str) -> str:
    # "1,000" → "1000"; "red, green" → "red green"; a comma ending a line goes.
    text = re.sub(r",[ \t]*(?=\n|$)", "", text)
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)
    return re.sub(r",[ \t]*", " ", text)


def _quotation(text: str, kw: Mapping[str, Any], instruction: str) -> str:
    body = text.strip()
    return f'"{body}"'


def _end_phrase(text: str, kw: Mapping[str, Any], instruction: str) -> str:
    return f"{text.rstrip()}\n\n{kw['end_phrase']}"


def _postscript(text: str, kw: Mapping[str, Any], instruction: str) -> str:
    marker = str(kw.get("postscript_marker", "P.S.")).rstrip(".")
    return f"{text.rstrip()}\n\n{marker}. Thank you for reading."


def _title(text: str, kw: Mapping[str, Any], instruction: str) -> str:
    task = task_of(instruction)
    if task is not None and task.keywords:
        title = " and ".join(w.title() for w in task.keywords[:2])
    else:
        title = " ".join(re.findall(r"[A-Za-z']+", text)[:4]).title() or "Answer"
    return f"<<{title}>>\n\n{text.lstrip()}"


#: Repairs in the order they are applied: text is added first, then its case is changed,
#: and the wrapping quotation marks come last (they must be the first and last characters).
REPAIRS: dict[str, Edit] = {
    "detectable_format:title": _title,
    "punctuation:no_comma": _no_comma,
    "detectable_content:postscript": _postscript,
    "startend:end_checker": _end_phrase,
    "change_case:english_lowercase": _lowercase,
    "change_case:english_capital": _capital,
    "startend:quotation": _quotation,
}


@dataclass(frozen=True)
class Repair:
    """A repaired answer and what it repaired."""

    response: str
    """The repaired answer (passes every constraint and guardrail)."""
    fixed: tuple[str, ...]
    """Instruction ids the original failed and the repair fixed."""
    critique: str
    """The verifier's complaints about the original (what a refine request carries)."""


def repair(
    instruction: str, response: str, constraints: Sequence[Constraint], check: CheckFn
) -> Repair | None:
    """The exact repair of response, or None when a failed constraint (or a guardrail) is
    beyond a program's repair, nothing failed, or the repaired answer still fails."""
    checks = check(instruction, response, constraints)
    issues = guardrails.check(instruction, response)
    failed = [c for c, r in zip(constraints, checks, strict=True) if not r.strict]
    if not failed or issues or any(c.instruction_id not in REPAIRS for c in failed):
        return None
    text = response
    order = list(REPAIRS)
    for c in sorted(failed, key=lambda c: order.index(c.instruction_id)):
        text = REPAIRS[c.instruction_id](text, c.kwargs, instruction)
    after = check(instruction, text, constraints)
    if not all(r.strict for r in after) or guardrails.check(instruction, text, response):
        return None
    return Repair(
        response=text,
        fixed=tuple(c.instruction_id for c in failed),
        critique=program_critique(response, constraints, checks, issues),
    )
