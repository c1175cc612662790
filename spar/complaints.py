"""The verifier's exact complaint about a failed IFEval constraint: what failed, by how much.

A small model repairs "3 commas; none allowed" far more often than "the response should
not contain commas". Each complaint measures the response the way IFEval's checker does
(the same regular expressions and counters, from lm-eval's ``instructions_util``) and
states the measurement beside the requirement. Constraints without a measure fall back
to the checker's own description. :func:`program_critique` lists them, with the answer
guardrails' complaints, as the critique of a failed response. Pure logic.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from spar import guardrails
from spar.guardrails import GuardrailIssue
from spar.ifeval import Constraint, ConstraintCheck


def _util() -> Any:
    from lm_eval.tasks.ifeval import instructions_util  # type: ignore[import-untyped]

    return instructions_util


def _relation(count: int, relation: str, target: int, unit: str) -> str:
    if relation == "less than":
        return f"{count} {unit}; fewer than {target} allowed"
    return f"{count} {unit}; at least {target} needed"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _no_comma(text: str, kw: Mapping[str, Any]) -> str:
    return f"{_plural(text.count(','), 'comma')}; none allowed"


def _words(text: str, kw: Mapping[str, Any]) -> str:
    n = _util().count_words(text)
    return _relation(n, kw["relation"], int(kw["num_words"]), "words")


def _sentences(text: str, kw: Mapping[str, Any]) -> str:
    n = _util().count_sentences(text)
    return _relation(n, kw["relation"], int(kw["num_sentences"]), "sentences")


def _paragraphs(text: str, kw: Mapping[str, Any]) -> str:
    parts = re.split(r"\s?\*\*\*\s?", text)
    empty = sum(not p.strip() for p in parts)
    n = len(parts) - empty
    extra = f" ({empty} empty)" if empty else ""
    return (
        f"{_plural(n, 'paragraph')} separated by the markdown divider ***{extra}; "
        f"exactly {kw['num_paragraphs']} needed"
    )


def _lowercase(text: str, kw: Mapping[str, Any]) -> str:
    upper = sum(c.isupper() for c in text)
    return f"{_plural(upper, 'capital letter')}; only lowercase letters allowed"


def _capital(text: str, kw: Mapping[str, Any]) -> str:
    lower = sum(c.islower() for c in text)
    return f"{_plural(lower, 'lowercase letter')}; only capital letters allowed"


def _capital_words(text: str, kw: Mapping[str, Any]) -> str:
    import nltk  # type: ignore[import-untyped]

    n = sum(w.isupper() for w in nltk.word_tokenize(text))
    return _relation(
        n, kw["capital_relation"], int(kw["capital_frequency"]), "words in all capital letters"
    )


def _letter(text: str, kw: Mapping[str, Any]) -> str:
    letter = str(kw["letter"]).lower()
    n = text.lower().count(letter)
    return _relation(n, kw["let_relation"], int(kw["let_frequency"]), f"letters {letter!r}")


def _keyword_frequency(text: str, kw: Mapping[str, Any]) -> str:
    word = str(kw["keyword"])
    n = len(re.findall(re.escape(word), text, flags=re.IGNORECASE))
    return _relation(n, kw["relation"], int(kw["frequency"]), f"uses of {word!r}")


def _existence(text: str, kw: Mapping[str, Any]) -> str:
    missing = [k for k in kw["keywords"] if not re.search(re.escape(k), text, re.IGNORECASE)]
    return f"missing keywords: {', '.join(repr(k) for k in missing)}; all must appear"


def _forbidden(text: str, kw: Mapping[str, Any]) -> str:
    used = [w for w in kw["forbidden_words"] if re.search(r"\b" + re.escape(w) + r"\b", text, re.I)]
    return f"uses forbidden words: {', '.join(repr(w) for w in used)}; none allowed"


def _bullets(text: str, kw: Mapping[str, Any]) -> str:
    stars = re.findall(r"^\s*\*[^\*].*$", text, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", text, flags=re.MULTILINE)
    n = len(stars) + len(dashes)
    return f"{_plural(n, 'markdown bullet point')}; exactly {kw['num_bullets']} needed"


def _highlights(text: str, kw: Mapping[str, Any]) -> str:
    single = [h for h in re.findall(r"\*[^\n\*]*\*", text) if h.strip("*").strip()]
    double = [h for h in re.findall(r"\*\*[^\n\*]*\*\*", text) if h.removeprefix("**").strip()]
    n = len(single) + len(double)
    return (
        f"{_plural(n, 'highlighted section')} (*like this*); at least {kw['num_highlights']} needed"
    )


def _sections(text: str, kw: Mapping[str, Any]) -> str:
    splitter = str(kw["section_spliter"]).strip()
    n = len(re.split(r"\s?" + re.escape(splitter) + r"\s?\d+\s?", text)) - 1
    return f"{n} sections marked '{splitter} N'; at least {kw['num_sections']} needed"


def _placeholders(text: str, kw: Mapping[str, Any]) -> str:
    n = len(re.findall(r"\[.*?\]", text))
    return (
        f"{_plural(n, 'placeholder')} in square brackets like [address]; at least "
        f"{kw['num_placeholders']} needed"
    )


def _postscript(text: str, kw: Mapping[str, Any]) -> str:
    return f"no postscript starting with {kw['postscript_marker']!r} at the end"


def _end(text: str, kw: Mapping[str, Any]) -> str:
    tail = " ".join(text.strip().split()[-6:])
    return f"ends with {tail!r}; must end with exactly {kw['end_phrase']!r}, nothing after it"


def _quotation(text: str, kw: Mapping[str, Any]) -> str:
    stripped = text.strip()
    return (
        f"starts with {stripped[:1]!r} and ends with {stripped[-1:]!r}; the whole response "
        "must be wrapped in double quotation marks"
    )


def _title(text: str, kw: Mapping[str, Any]) -> str:
    return "no title in double angular brackets, like <<a title>>"


def _two_responses(text: str, kw: Mapping[str, Any]) -> str:
    parts = [p for p in text.split("******") if p.strip()]
    return (
        f"{_plural(len(parts), 'response')} separated by six asterisks (******); exactly 2 "
        "different ones needed"
    )


def _json(text: str, kw: Mapping[str, Any]) -> str:
    return "not valid JSON; the whole response must be one JSON value (markdown fence allowed)"


def _repeat(text: str, kw: Mapping[str, Any]) -> str:
    return "does not start with the request repeated word for word"


def _nth_first_word(text: str, kw: Mapping[str, Any]) -> str:
    paragraphs = [p for p in re.split(r"\n\n", text) if p.strip()]
    nth = int(kw["nth_paragraph"])
    first = paragraphs[nth - 1].split()[0] if len(paragraphs) >= nth else "(missing)"
    return (
        f"{_plural(len(paragraphs), 'paragraph')} separated by blank lines, paragraph {nth} "
        f"starts with {first!r}; {kw['num_paragraphs']} paragraphs needed, paragraph {nth} "
        f"starting with {kw['first_word']!r}"
    )


def _language(text: str, kw: Mapping[str, Any]) -> str:
    return f"not written in the language {kw['language']!r}; write all of it in that language"


def _constrained(text: str, kw: Mapping[str, Any]) -> str:
    return (
        "does not contain one of the exact options 'My answer is yes.', 'My answer is no.', "
        "'My answer is maybe.'"
    )


_MEASURES: dict[str, Callable[[str, Mapping[str, Any]], str]] = {
    "punctuation:no_comma": _no_comma,
    "length_constraints:number_words": _words,
    "length_constraints:number_sentences": _sentences,
    "length_constraints:number_paragraphs": _paragraphs,
    "length_constraints:nth_paragraph_first_word": _nth_first_word,
    "change_case:english_lowercase": _lowercase,
    "change_case:english_capital": _capital,
    "change_case:capital_word_frequency": _capital_words,
    "keywords:letter_frequency": _letter,
    "keywords:frequency": _keyword_frequency,
    "keywords:existence": _existence,
    "keywords:forbidden_words": _forbidden,
    "detectable_format:number_bullet_lists": _bullets,
    "detectable_format:number_highlighted_sections": _highlights,
    "detectable_format:multiple_sections": _sections,
    "detectable_format:title": _title,
    "detectable_format:json_format": _json,
    "detectable_format:constrained_response": _constrained,
    "detectable_content:number_placeholders": _placeholders,
    "detectable_content:postscript": _postscript,
    "startend:end_checker": _end,
    "startend:quotation": _quotation,
    "combination:two_responses": _two_responses,
    "combination:repeat_prompt": _repeat,
    "language:response_language": _language,
}


def complaint(response: str, constraint: Constraint, check: ConstraintCheck) -> str:
    """What the failed check measured, e.g. ``3 commas; none allowed``."""
    if check.error:
        return f"{check.description or check.instruction_id} (could not check: {check.error})"
    measure = _MEASURES.get(constraint.instruction_id)
    if measure is not None:
        try:
            return measure(response, constraint.kwargs)
        except (KeyError, ValueError, TypeError, IndexError, LookupError):
            pass  # kwargs of an unexpected shape: the description still says what is wanted
    return f"not met: {check.description or check.instruction_id}"


def program_critique(
    response: str,
    constraints: Sequence[Constraint],
    checks: Sequence[ConstraintCheck],
    issues: Sequence[GuardrailIssue],
) -> str:
    """The verifier's exact complaints, one per line ("- 3 commas; none allowed")."""
    lines = [
        f"- {complaint(response, c, check)}"
        for c, check in zip(constraints, checks, strict=False)
        if not check.strict
    ]
    lines += [f"- {guardrails.complaint(issue)}" for issue in issues]
    return "\n".join(lines)
