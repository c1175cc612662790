"""The judge and refine prompts (our own words, the SPaR paper's structure) and how
their answers are read.

The judge lists what the response misses and ends with ``Final Judgement: Yes|No``. When
a program has already checked some requirements (the hybrid judge), the prompt says which
ones, so the model judges only the rest; requirements that only a reader can check
(rubrics) are listed for it too.

Two refine styles (``SPAR_REFINER__REFINE_STYLE``):
- ``direct`` (default, for small models): one user turn with the instruction, the current
  response and the list of problems, the verifier's exact complaints first. The model
  writes only the new response: no markers, no reflection.
- ``paper``: SPaR's own format. The judge conversation continues (judge prompt, the
  critique as the assistant turn, then the refine request) and the model writes a short
  reflection and ``Final Refined Output: [[start]] ... [[end]]``.
Templates are configurable (``SPAR_REFINER__JUDGE_TEMPLATE`` /
``SPAR_REFINER__REFINE_TEMPLATE``).

Parsing is deliberately forgiving about layout (markdown, case, brackets, a missing
``[[end]]`` when the model stopped by itself) and strict about meaning: a sample whose
decision cannot be read is *unparseable*, never guessed.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from spar.engine.protocol import FinishReason, Message
from spar.errors import InvalidArgument

RefineStyle = Literal["direct", "paper"]

JUDGE_TEMPLATE = """You check whether a response does exactly what its instruction asks.

Instruction:
{instruction}

Response:
{response}
{notes}
First list every requirement the instruction sets (content, format, length, wording, \
style). Then name each requirement the response fails, and say briefly how it fails. \
Finish with one last line that is exactly "Final Judgement: Yes" when the response \
meets every requirement, or exactly "Final Judgement: No" when it misses any."""

DIRECT_REFINE_TEMPLATE = """Rewrite the response so that it follows the instruction.

Instruction:
{instruction}

Response:
{response}

Problems to fix:
{critique}

Fix exactly these problems. Keep everything else in the response as it is: the same \
subject, the same content and the same wording where it is already right. Write only \
the new response, with no introduction and no comment about the changes."""

PAPER_REFINE_TEMPLATE = """Now improve the response using your judgement above. Change only \
what is needed to meet the requirements it misses, and keep everything that is \
already right.

Write one or two sentences of reflection on what must change. Then write \
"Final Refined Output:" followed by the complete new response between [[start]] and \
[[end]], like this:
Final Refined Output: [[start]] the complete new response [[end]]"""

#: Kept for callers of the paper style's name.
REFINE_TEMPLATE = PAPER_REFINE_TEMPLATE

#: Paper-style generation stops at the closing marker, so refinements cost no tokens past it.
REFINE_STOP = "[[end]]"

_JUDGEMENT = re.compile(
    r"final\s*judg(?:e)?ment\s*(?:is)?\s*[:：=\-]*\s*[\*\"'\[\(`]*\s*(yes|no)\b", re.IGNORECASE
)
_BARE = re.compile(r"^[\W_]*(yes|no)[\W_]*$", re.IGNORECASE)
_START = re.compile(r"\[\[\s*start\s*\]\]", re.IGNORECASE)
_OUTPUT = re.compile(r"final\s*refined\s*output\s*[:：]?", re.IGNORECASE)
_END = re.compile(r"\[\[\s*end\s*\]\]", re.IGNORECASE)
# A label line a small model puts before its rewrite ("Revised response:"); not content.
_LABEL = re.compile(
    r"^\s*(?:here(?:'s| is| are)\b[^\n]{0,60}|(?:the )?(?:new|revised|refined|rewritten|"
    r"updated|corrected|improved|fixed) (?:response|answer|version|text)[^\n]{0,30})[:：]\s*\n",
    re.IGNORECASE,
)


def _fields(template: str) -> set[str]:
    try:
        return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise InvalidArgument(f"template {template[:40]!r}… is not a format string: {exc}") from exc


def judge_notes(checked: Sequence[str], rubrics: Sequence[str] = ()) -> str:
    """What the judge prompt says beyond the instruction: checked requirements, rubrics."""
    parts = []
    if checked:
        lines = "\n".join(f"- {c}" for c in checked)
        parts.append(
            "A program has already checked these requirements, and the response meets "
            f"them. Do not judge them again:\n{lines}\nJudge only the instruction's other "
            "requirements."
        )
    if rubrics:
        lines = "\n".join(f"- {r}" for r in rubrics)
        parts.append(f"Also check these requirements:\n{lines}")
    return "".join(f"\n{p}\n" for p in parts)


@dataclass(frozen=True)
class Prompts:
    """The judge and refine templates and the refine style; validated on construction."""

    judge: str = JUDGE_TEMPLATE
    refine: str = DIRECT_REFINE_TEMPLATE
    style: RefineStyle = "direct"
    prefill: str = ""
    """Text the model's refine turn starts with (the engine continues it), for templates
    that want one; empty: none."""

    def __post_init__(self) -> None:
        judge = _fields(self.judge)
        if not {"instruction", "response"} <= judge <= {"instruction", "response", "notes"}:
            raise InvalidArgument(
                "the judge template must use the fields {instruction} and {response} "
                "(and may use {notes})"
            )
        refine = _fields(self.refine)
        if self.style == "direct" and refine != {"instruction", "response", "critique"}:
            raise InvalidArgument(
                "the direct refine template must use exactly the fields {instruction}, "
                "{response} and {critique}"
            )
        if self.style == "paper" and not refine <= {"instruction", "response"}:
            raise InvalidArgument(
                "the paper-style refine template may use only the fields {instruction} and "
                "{response} (the critique is the conversation's assistant turn)"
            )

    @classmethod
    def from_settings(
        cls, judge: str, refine: str, style: RefineStyle = "direct", prefill: str = ""
    ) -> Prompts:
        default = DIRECT_REFINE_TEMPLATE if style == "direct" else PAPER_REFINE_TEMPLATE
        return cls(judge or JUDGE_TEMPLATE, refine or default, style, prefill)

    @property
    def stop(self) -> tuple[str, ...]:
        """Stop strings of refine requests."""
        return (REFINE_STOP,) if self.style == "paper" else ()

    def judge_messages(
        self,
        instruction: str,
        response: str,
        checked: Sequence[str] = (),
        rubrics: Sequence[str] = (),
    ) -> list[Message]:
        notes = judge_notes(checked, rubrics)
        fields = {"instruction": instruction, "response": response}
        if "notes" in _fields(self.judge):
            text = self.judge.format(notes=notes, **fields)
        else:  # a custom template without {notes}: the notes go after it
            text = self.judge.format(**fields) + (f"\n{notes}" if notes else "")
        return [Message("user", text)]

    def refine_messages(self, instruction: str, response: str, critique: str) -> list[Message]:
        """The refine request: one user turn (direct) or the judge conversation (paper)."""
        if self.style == "direct":
            text = self.refine.format(instruction=instruction, response=response, critique=critique)
            return [Message("user", text)]
        return [
            *self.judge_messages(instruction, response),
            Message("assistant", critique),
            Message("user", self.refine.format(instruction=instruction, response=response)),
        ]

    def refine_completion(self, reflection: str, response: str) -> str:
        """What the refiner should write for a refine request (SFT targets)."""
        if self.style == "direct":
            return response
        head = f"{reflection.strip()}\n\n" if reflection.strip() else ""
        return f"{head}Final Refined Output: [[start]]\n{response}\n[[end]]"

    def parse_refinement(self, text: str, finish_reason: FinishReason) -> Refinement | None:
        """The refinement in a sample of this style; None when unusable."""
        if self.style == "direct":
            return parse_direct_refinement(text, finish_reason)
        # The prefill is part of what the model wrote, as far as the markers go.
        return parse_refinement(self.prefill + text, finish_reason)


def parse_judgement(text: str) -> bool | None:
    """True for Yes, False for No, None when the sample's decision cannot be read."""
    matches = _JUDGEMENT.findall(text)
    if matches:
        return bool(matches[-1].lower() == "yes")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if lines:
        bare = _BARE.match(lines[-1].strip())
        if bare:
            return bool(bare.group(1).lower() == "yes")
    return None


@dataclass(frozen=True)
class Refinement:
    """One usable refinement: the new response and (paper style) the model's reflection."""

    reflection: str
    response: str


def parse_direct_refinement(text: str, finish_reason: FinishReason) -> Refinement | None:
    """A direct-style refinement: the sample is the new response (a leading label line
    such as "Revised response:" dropped). None when cut at max_tokens, stopped in a loop,
    or empty."""
    if finish_reason in ("length", "repetition"):
        return None
    body = _LABEL.sub("", text.lstrip(), count=1).strip()
    return Refinement(reflection="", response=body) if body else None


def parse_refinement(text: str, finish_reason: FinishReason) -> Refinement | None:
    """The reflection and refined output of one refine sample; None when unusable.

    A sample cut off by max_tokens or stopped in a loop is unusable: its output may be
    incomplete. A sample without markers that ended by itself is taken whole as the
    refined output.
    """
    if finish_reason in ("length", "repetition"):
        return None
    starts = list(_START.finditer(text))
    outputs = list(_OUTPUT.finditer(text))
    if starts:
        head, body = text[: starts[-1].start()], text[starts[-1].end() :]
    elif outputs:
        head, body = text[: outputs[-1].start()], text[outputs[-1].end() :]
    else:
        # A small model that finished on its own but wrote no markers usually wrote just
        # the new response: take it whole. The judge decides whether it is any good.
        head, body = "", text
    end = _END.search(body)
    if end:
        body = body[: end.start()]
    body = body.strip()
    if not body:
        return None
    reflection = _OUTPUT.sub("", head).strip()
    return Refinement(reflection=reflection, response=body)
