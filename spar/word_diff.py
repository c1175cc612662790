"""What a refinement changed, word by word, for people to read (pure logic).

:func:`word_diff` splits both texts into words, punctuation marks and the whitespace
between them and aligns them with difflib, so removing a comma shows as ``vast[-,-]``
rather than a whole word out and in; a word replaced by a similar one (``Blue`` by
``blue``) is diffed by character.
:func:`render` prints the spans ``git diff --word-diff`` style (``[-old-]{+new+}``) or,
for a terminal, in colour.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["same", "removed", "added"]

#: Words, single punctuation marks and runs of whitespace: a removed comma is one token.
_TOKEN = re.compile(r"\s+|\w+(?:['’]\w+)*|[^\w\s]")
_RED, _GREEN, _STRIKE, _RESET = "\x1b[31m", "\x1b[32m", "\x1b[9m", "\x1b[0m"


@dataclass(frozen=True)
class Span:
    """A run of text that both versions share, or that one of them removed or added."""

    kind: Kind
    text: str


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _merge(spans: list[Span]) -> list[Span]:
    out: list[Span] = []
    for s in spans:
        if not s.text:
            continue
        if out and out[-1].kind == s.kind:
            out[-1] = Span(s.kind, out[-1].text + s.text)
        else:
            out.append(s)
    return out


def _chars(a: str, b: str) -> list[Span]:
    spans: list[Span] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            spans.append(Span("same", a[i1:i2]))
        else:
            spans += [Span("removed", a[i1:i2]), Span("added", b[j1:j2])]
    return spans


def word_diff(original: str, refined: str) -> list[Span]:
    """The spans that turn ``original`` into ``refined`` (same, removed, added)."""
    a, b = _tokens(original), _tokens(refined)
    spans: list[Span] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        old, new = "".join(a[i1:i2]), "".join(b[j1:j2])
        if op == "equal":
            spans.append(Span("same", old))
        elif op == "replace" and i2 - i1 == j2 - j1 == 1 and _similar(old, new):
            spans += _chars(old, new)
        else:
            spans += [Span("removed", old), Span("added", new)]
    return _merge(spans)


def _similar(a: str, b: str) -> bool:
    """One word edited, not swapped for another: a character diff reads better then."""
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= 0.5


def changed_words(spans: list[Span]) -> int:
    """Words removed or added (a replaced word counts once on each side)."""
    return sum(len(s.text.split()) or 1 for s in spans if s.kind != "same" and s.text.strip())


def render(spans: list[Span], colour: bool = False) -> str:
    """The diff as one text: ``[-removed-]{+added+}``, or red and green for a terminal."""
    out = []
    for s in spans:
        if s.kind == "same":
            out.append(s.text)
        elif colour:
            code = _RED + _STRIKE if s.kind == "removed" else _GREEN
            out.append(f"{code}{s.text}{_RESET}")
        else:
            out.append(f"[-{s.text}-]" if s.kind == "removed" else f"{{+{s.text}+}}")
    return "".join(out)
