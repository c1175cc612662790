"""The judge and refine prompts (our own words, the SPaR paper's structure) and how
their answers are read.

The judge lists what the response misses and ends with ``Final Judgement: Yes|No``.
The refine turn continues that conversation (judge prompt, the judge's critique as the
assistant turn, then the refine request) and asks for a short reflection followed by
``Final Refined Output: [[start]] ... [[end]]``. Both templates are configurable
(``SPAR_REFINER__JUDGE_TEMPLATE`` / ``SPAR_REFINER__REFINE_TEMPLATE``).

Parsing is deliberately forgiving about layout (markdown, case, brackets, a missing
``[[end]]`` when the model stopped by itself) and strict about meaning: a sample whose
decision cannot be read is *unparseable*, never guessed.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from spar.engine.protocol import FinishReason, Message
from spar.errors import InvalidArgument

JUDGE_TEMPLATE = """You check whether a response does exactly what its instruction asks.

Instruction:
{instruction}

Response:
{response}

First list every requirement the instruction sets (content, format, length, wording, \
style). Then name each requirement the response fails, and say briefly how it fails. \
Finish with one last line that is exactly "Final Judgement: Yes" when the response \
meets every requirement, or exactly "Final Judgement: No" when it misses any."""

REFINE_TEMPLATE = """Now improve the response using your judgement above. Change only \
what is needed to meet the requirements it misses, and keep everything that is \
already right.

Write one or two sentences of reflection on what must change. Then write \
"Final Refined Output:" followed by the complete new response between [[start]] and \
[[end]], like this:
Final Refined Output: [[start]] the complete new response [[end]]"""

#: Generation stops at the closing marker, so refinements cost no tokens past it.
REFINE_STOP = "[[end]]"

_JUDGEMENT = re.compile(
    r"final\s*judg(?:e)?ment\s*(?:is)?\s*[:：=\-]*\s*[\*\"'\[\(`]*\s*(yes|no)\b", re.IGNORECASE
)
_BARE = re.compile(r"^[\W_]*(yes|no)[\W_]*$", re.IGNORECASE)
_START = re.compile(r"\[\[\s*start\s*\]\]", re.IGNORECASE)
_OUTPUT = re.compile(r"final\s*refined\s*output\s*[:：]?", re.IGNORECASE)
_END = re.compile(r"\[\[\s*end\s*\]\]", re.IGNORECASE)


def _fields(template: str) -> set[str]:
    try:
        return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise InvalidArgument(f"template {template[:40]!r}… is not a format string: {exc}") from exc


@dataclass(frozen=True)
class Prompts:
    """The two templates; validated on construction."""

    judge: str = JUDGE_TEMPLATE
    refine: str = REFINE_TEMPLATE

    def __post_init__(self) -> None:
        if _fields(self.judge) != {"instruction", "response"}:
            raise InvalidArgument(
                "the judge template must use exactly the fields {instruction} and {response}"
            )
        if not _fields(self.refine) <= {"instruction", "response"}:
            raise InvalidArgument(
                "the refine template may use only the fields {instruction} and {response}"
            )

    @classmethod
    def from_settings(cls, judge: str, refine: str) -> Prompts:
        return cls(judge or JUDGE_TEMPLATE, refine or REFINE_TEMPLATE)

    def judge_messages(self, instruction: str, response: str) -> list[Message]:
        return [Message("user", self.judge.format(instruction=instruction, response=response))]

    def refine_messages(self, instruction: str, response: str, critique: str) -> list[Message]:
        """The judge conversation, continued with the refine request."""
        return [
            *self.judge_messages(instruction, response),
            Message("assistant", critique),
            Message("user", self.refine.format(instruction=instruction, response=response)),
        ]


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
    reflection: str
    response: str


def parse_refinement(text: str, finish_reason: FinishReason) -> Refinement | None:
    """The reflection and refined output of one refine sample; None when unusable.

    A sample cut off by max_tokens is unusable: its output may be incomplete. A sample
    without markers that ended by itself is taken whole as the refined output.
    """
    if finish_reason == "length":
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
