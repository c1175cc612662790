"""Answer sanity checks: program rules that catch answers which game the checks.

A small model asked to fix "3 commas; none allowed" can pass every IFEval check with an
answer that is no answer at all: one sentence about "the revised response", a loop of
the same line, or text on another subject. Such an answer must not count as a repair.
These rules are part of the verifier: an answer that breaks one fails the search's end
gate, and benchmarks apply the same rules to every side they compare (docs/refinement.md
states them). Pure logic, no I/O.

Rules:
- ``empty``: no letter or digit at all.
- ``repetition``: a loop. The same line (of at least 3 words) three or more times, the
  same sentence (of at least 4 words) three or more times, or one 6-word sequence four
  or more times.
- ``meta``: talk about the requirements or the rewrite instead of an answer ("this
  response meets the requirements", "here is the revised response", "[[start]]").
  A phrase that the instruction itself uses is not counted.
- ``echo``: the instruction said back instead of an answer ("The sea in two short
  sentences." for "Describe the sea in two short sentences."). Three or more words, and
  not one word (function words left out) or number that the instruction does not
  already use; quoted text in the instruction does not count as its words, since an
  answer may be asked to use it ("My answer is yes." for options given in quotes).
- ``off_topic`` (refinements only: needs the reference answer they refine): the answer has
  left the instruction's subject. It shares no subject word with the instruction and fewer
  than a fifth of its content words with the original. Needs a subject word in the
  instruction and eight content words in the answer. A first answer is not judged for
  this: a good one may never repeat the instruction's words.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal

Rule = Literal["empty", "repetition", "meta", "echo", "off_topic"]
RULES: tuple[Rule, ...] = ("empty", "repetition", "meta", "echo", "off_topic")


@dataclass(frozen=True)
class GuardrailIssue:
    """One broken rule and what broke it, in words a refine prompt can use."""

    rule: Rule
    detail: str


_META = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b(?:the|this|my|your|a|our) (?:revised|refined|rewritten|updated|improved|corrected|"
        r"modified|edited) (?:response|answer|version|text|output)\b",
        r"\b(?:the|this|my|your|above|previous|original) (?:response|answer) (?:now )?"
        r"(?:meets|satisfies|follows|adheres|complies|fulfils|fulfills|contains|has no|"
        r"does not contain|uses)\b",
        r"\b(?:meet|meets|meeting|met|satisfy|satisfies|satisfied|satisfying|fulfil|fulfill|"
        r"fulfils|fulfills|fulfilled|follow|follows|followed|following|adhere|adheres|adhered|"
        r"adhering) (?:to )?(?:all )?"
        r"(?:of )?(?:the|these|your|each|every|all) (?:given )?(?:requirements?|constraints?|"
        r"instructions?|criteria)\b",
        r"\bthe (?:instruction|requirement|constraint|task)s? (?:asks?|requires?|says?|states?|"
        r"wants?)\b",
        r"\bhere(?:'s| is| are) (?:the|a|my|your) (?:revised|refined|rewritten|updated|improved|"
        r"corrected|new|modified)\b",
        r"\bfinal (?:refined output|judge?ment)\b",
        r"\[\[\s*(?:start|end)\s*\]\]",
        r"\b(?:word|sentence|comma|paragraph|letter) count\b",
        # The refine prompt's own orders copied into the answer (seen in a kept DPO pair of
        # the full-scale quality run: "... Fix the problems. Section 2 ...").
        r"\bfix (?:exactly )?(?:the|these|all|those) problems\b",
        r"\bproblems to fix\b",
        r"\bkeep everything else (?:in the response )?as it is\b",
    )
)

# Words of the constraint vocabulary and of task wording: they say how to answer, not
# what about, so they do not make a subject.
_NOT_SUBJECT_WORDS = """
    a about above after again against all also an and answer answers any are as ask asked at
    be because been before being below between both but by can capital capitalized case
    comma commas could did do does doing down during each end ending entire english every
    few finish for format from further had has have having he her here highlight highlighted
    his how i if in include includes including into is it its just least less letter letters
    lowercase make markdown marks me more most must my no nor not now of off on once only or
    other our out over own paragraph paragraphs phrase please postscript quotation quotes
    response respond responses same section sections sentence sentences she should so some
    such than that the their them then there these they this those through title to too
    twice under until up uppercase use using very was we were what when where which while who
    whole why will with without word words would write writing written you your yours
    bullet bullets point points json wrap wrapped double times exactly least give provide
    tell explain describe list short long brief answer reply output text following below
    one two three four five six seven eight nine ten first second third last
    """
_NOT_SUBJECT = frozenset(_NOT_SUBJECT_WORDS.split())
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")
_ANY_WORD = re.compile(r"[^\W\d_][\w'-]*")  # in any script
# Words that carry no content of their own: an answer made of the instruction's words and
# these adds nothing to it.
_FUNCTION_WORDS_TEXT = """
    a an as at be by do he if in is it me my of on or so to up us we
    the and but for nor yet are was were been being has have had does did its it's this
    that these those with from into onto than then also very just only here there they
    them their theirs you your yours our ours his her hers she him who whom whose which what
    can could will would shall should may might must not all any each some such own
    """
_FUNCTION_WORDS = frozenset(_FUNCTION_WORDS_TEXT.split())
_NUMBER = re.compile(r"\d+")
_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”|‘[^’]*’|(?<!\w)'[^']*'(?!\w)")


def _stems(text: str, *, subject: bool) -> set[str]:
    out = set()
    for w in _WORD.findall(text.lower()):
        if len(w) < 3 or (subject and w in _NOT_SUBJECT):
            continue
        out.add(w[:5])
    return out


def _norm(line: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", line.lower()).split())


def _repetition(response: str) -> str:
    lines = Counter(_norm(line) for line in response.splitlines())
    for line, n in lines.most_common():
        if n >= 3 and len(line.split()) >= 3:
            return f"the line {line[:60]!r} appears {n} times"
    sentences = Counter(_norm(s) for s in re.split(r"(?<=[.!?])\s+", response))
    for sentence, n in sentences.most_common():
        if n >= 3 and len(sentence.split()) >= 3:
            return f"the sentence {sentence[:60]!r} appears {n} times"
    tokens = _norm(response).split()
    grams = Counter(tuple(tokens[i : i + 6]) for i in range(len(tokens) - 5))
    if grams:
        gram, n = grams.most_common(1)[0]
        if n >= 4:
            return f"the words {' '.join(gram)!r} repeat {n} times"
    return ""


def _meta(instruction: str, response: str) -> str:
    said = instruction.lower()
    for pattern in _META:
        for match in pattern.finditer(response):
            if match.group(0).lower() not in said:
                return f"it talks about the task instead of doing it ({match.group(0)!r})"
    return ""


def _echo(instruction: str, response: str) -> str:
    words = _ANY_WORD.findall(response.lower())
    if len(words) < 3:
        return ""
    said = _QUOTED.sub(" ", instruction).lower()
    if set(_NUMBER.findall(response)) - set(_NUMBER.findall(said)):
        return ""
    said_words = {w[:5] for w in _ANY_WORD.findall(said)}
    if any(w[:5] not in said_words for w in words if w not in _FUNCTION_WORDS):
        return ""
    return "it says the instruction back and adds no word of its own"


def _off_topic(instruction: str, response: str, reference: str | None) -> str:
    if reference is None:  # a first answer is not judged for drift: "haiku about autumn"
        return ""  # may rightly never say "autumn"
    subject = _stems(instruction, subject=True)
    content = _stems(response, subject=False)
    if not subject or len(content) < 8 or subject & content:
        return ""
    if len(content & _stems(reference, subject=False)) >= len(content) / 5:
        return ""
    return "it shares no subject word with the instruction and little with the original"


def check(instruction: str, response: str, reference: str | None = None) -> list[GuardrailIssue]:
    """The rules the response breaks (empty list: a sane answer)."""
    if not re.search(r"\w", response):
        return [GuardrailIssue("empty", "the response is empty")]
    found: list[tuple[Rule, str]] = [
        ("repetition", _repetition(response)),
        ("meta", _meta(instruction, response)),
        ("echo", _echo(instruction, response)),
        ("off_topic", _off_topic(instruction, response, reference)),
    ]
    return [GuardrailIssue(rule, detail) for rule, detail in found if detail]


def complaint(issue: GuardrailIssue) -> str:
    """The issue as a line of a refine critique."""
    what = {
        "empty": "The response is empty; write an answer to the instruction.",
        "repetition": "The response repeats itself ({detail}); say each thing once.",
        "meta": "The response describes the rewrite instead of answering ({detail}); write "
        "only the answer itself.",
        "echo": "The response repeats the instruction ({detail}); answer it instead.",
        "off_topic": "The response is off topic ({detail}); answer the instruction itself.",
    }[issue.rule]
    return what.format(detail=issue.detail)
