"""Prompt synthesis: new verifiable prompts, and the held-out split that keeps training
away from evaluation.

:func:`synthesize` writes new verifiable prompts: one of our own base tasks
(spar.prompt_tasks) plus one to three constraints drawn from the verifier's registry,
kwargs filled in, stated the way IFEval states them, never two that IFEval (or plain
logic) marks as conflicting. It is deterministic for a seed, and it never emits a prompt
of a given exclusion set (the held-out evaluation prompts), so training never sees an
evaluation prompt.

:class:`Split` makes the held-out set measure transfer rather than recall: a seeded share
of the base tasks and of the constraint combinations (the set of instruction ids of a
prompt) is held out, training prompts use neither, and held-out prompts use only held-out
tasks and held-out combinations. :func:`check_split` proves it for two sets of records.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from spar import ifeval
from spar.errors import Internal, InvalidArgument
from spar.prompt_sets import Kwargs, PromptRecord, normalize
from spar.prompt_tasks import BASE_TASKS, CONFLICTS, BaseTask

_RELATIONS = ("at least", "less than")
_LANGUAGES = {
    "de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "pt": "Portuguese",
    "ru": "Russian", "pl": "Polish", "fi": "Finnish", "ko": "Korean",
    "hi": "Hindi", "ar": "Arabic", "vi": "Vietnamese", "sw": "Swahili", "bg": "Bulgarian",
}  # fmt: skip
_FORBIDDEN = (
    "very", "really", "just", "actually", "basically", "thing", "things", "stuff",
    "good", "great", "nice", "important", "however", "also", "many", "often",
    "always", "never", "perhaps", "maybe", "simply", "easy", "best", "amazing",
)  # fmt: skip
_FIRST_WORDS = (
    "first", "today", "finally", "meanwhile", "imagine", "overall", "next", "although",
    "recently", "yesterday", "sometimes", "because", "together", "later", "instead",
)  # fmt: skip
_END_PHRASES = (
    "Any other questions?", "Is there anything else I can help with?",
    "Let me know if you have additional questions.", "Hope this helps.",
    "That is all for now.", "Thank you for reading.", "Have a great day!",
    "This is the end of my answer.",
)  # fmt: skip
_COMMON_LETTERS = "etaoinsrhldcum"
_RARE_LETTERS = "qxzjkv"


@dataclass
class _Draw:
    """State of one prompt being drawn: the rng, its task, the words it must contain."""

    rng: random.Random
    task: BaseTask
    required: list[str] = field(default_factory=list)
    """Words the answer has to contain (so a letter cap must leave them possible)."""


def _kw_capital_frequency(d: _Draw) -> dict[str, Any]:
    relation = d.rng.choice(_RELATIONS)
    n = d.rng.randint(2, 8) if relation == "at least" else d.rng.randint(3, 10)
    return {"capital_frequency": n, "capital_relation": relation}


def _kw_existence(d: _Draw) -> dict[str, Any]:
    k = min(len(d.task.keywords), d.rng.randint(1, 2))
    words = d.rng.sample(d.task.keywords, k)
    d.required.extend(words)
    return {"keywords": words}


def _kw_forbidden(d: _Draw) -> dict[str, Any]:
    allowed = [w for w in _FORBIDDEN if w not in d.task.keywords]
    return {"forbidden_words": d.rng.sample(allowed, d.rng.randint(1, 3))}


def _kw_frequency(d: _Draw) -> dict[str, Any]:
    unused = [w for w in d.task.keywords if w not in d.required] or list(d.task.keywords)
    keyword = d.rng.choice(unused)
    relation = d.rng.choice(_RELATIONS)
    n = d.rng.randint(2, 4)
    if relation == "at least":
        d.required.append(keyword)
    return {"keyword": keyword, "frequency": n, "relation": relation}


def _kw_letter(d: _Draw) -> dict[str, Any]:
    # A cap on a letter must not forbid a word the answer is required to contain.
    needed = " ".join(d.required).lower()
    rare = [c for c in _RARE_LETTERS if c not in needed]
    if rare and d.rng.random() < 0.5:
        return {"letter": d.rng.choice(rare), "let_frequency": d.rng.randint(2, 6),
                "let_relation": "less than"}  # fmt: skip
    return {"letter": d.rng.choice(_COMMON_LETTERS), "let_frequency": d.rng.randint(5, 15),
            "let_relation": "at least"}  # fmt: skip


def _kw_nth_paragraph(d: _Draw) -> dict[str, Any]:
    n = d.rng.randint(2, 5)
    word = d.rng.choice(_FIRST_WORDS)
    d.required.append(word)
    return {"num_paragraphs": n, "nth_paragraph": d.rng.randint(1, n), "first_word": word}


def _kw_sentences(d: _Draw) -> dict[str, Any]:
    relation = d.rng.choice(_RELATIONS)
    n = d.rng.randint(3, 12) if relation == "at least" else d.rng.randint(3, 10)
    return {"num_sentences": n, "relation": relation}


def _kw_words(d: _Draw) -> dict[str, Any]:
    relation = d.rng.choice(_RELATIONS)
    if relation == "at least":
        return {"num_words": d.rng.choice(range(50, 401, 25)), "relation": relation}
    return {"num_words": d.rng.choice(range(40, 301, 20)), "relation": relation}


def _kw_end(d: _Draw) -> dict[str, Any]:
    phrase = d.rng.choice(_END_PHRASES)
    d.required.append(phrase)
    return {"end_phrase": phrase}


def _kw_postscript(d: _Draw) -> dict[str, Any]:
    marker = d.rng.choice(("P.S.", "P.P.S"))
    d.required.append(marker)
    return {"postscript_marker": marker}


def _kw_sections(d: _Draw) -> dict[str, Any]:
    spliter = d.rng.choice(("Section", "SECTION"))
    d.required.append(spliter)
    return {"section_spliter": spliter, "num_sections": d.rng.randint(2, 5)}


def _kw_none(d: _Draw) -> dict[str, Any]:
    return {}


def _count(name: str, low: int, high: int) -> Callable[[_Draw], dict[str, Any]]:
    def draw(d: _Draw) -> dict[str, Any]:
        return {name: d.rng.randint(low, high)}

    return draw


#: How each instruction's kwargs are drawn (``repeat_prompt`` gets its text at the end).
_KWARGS: dict[str, Callable[[_Draw], dict[str, Any]]] = {
    "change_case:capital_word_frequency": _kw_capital_frequency,
    "change_case:english_capital": _kw_none,
    "change_case:english_lowercase": _kw_none,
    "combination:repeat_prompt": _kw_none,
    "combination:two_responses": _kw_none,
    "detectable_content:number_placeholders": _count("num_placeholders", 1, 4),
    "detectable_content:postscript": _kw_postscript,
    "detectable_format:constrained_response": _kw_none,
    "detectable_format:json_format": _kw_none,
    "detectable_format:multiple_sections": _kw_sections,
    "detectable_format:number_bullet_lists": _count("num_bullets", 2, 6),
    "detectable_format:number_highlighted_sections": _count("num_highlights", 1, 4),
    "detectable_format:title": _kw_none,
    "keywords:existence": _kw_existence,
    "keywords:forbidden_words": _kw_forbidden,
    "keywords:frequency": _kw_frequency,
    "keywords:letter_frequency": _kw_letter,
    "language:response_language": lambda d: {"language": d.rng.choice(sorted(_LANGUAGES))},
    "length_constraints:nth_paragraph_first_word": _kw_nth_paragraph,
    "length_constraints:number_paragraphs": _count("num_paragraphs", 2, 5),
    "length_constraints:number_sentences": _kw_sentences,
    "length_constraints:number_words": _kw_words,
    "punctuation:no_comma": _kw_none,
    "startend:end_checker": _kw_end,
    "startend:quotation": _kw_none,
}

_NEEDS_KEYWORDS = ("keywords:existence", "keywords:frequency")


def _words(words: Sequence[str]) -> str:
    return ", ".join(words)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


#: The constraint in words, phrased as IFEval phrases it (its checkers' descriptions).
_TEXT: dict[str, Callable[[Kwargs], str]] = {
    "change_case:capital_word_frequency": lambda k: (
        f"In your response, words with all capital letters should appear "
        f"{k['capital_relation']} {k['capital_frequency']} times."
    ),
    "change_case:english_capital": lambda k: (
        "Your entire response should be in English, and in all capital letters."
    ),
    "change_case:english_lowercase": lambda k: (
        "Your entire response should be in English, and in all lowercase letters. "
        "No capital letters are allowed."
    ),
    "combination:repeat_prompt": lambda k: (
        "First repeat the request word for word without change, then give your answer "
        "(1. do not say any words or characters before repeating the request; 2. the "
        "request you need to repeat does not include this sentence)"
    ),
    "combination:two_responses": lambda k: (
        "Give two different responses. Responses and only responses should be separated "
        "by 6 asterisk symbols: ******."
    ),
    "detectable_content:number_placeholders": lambda k: (
        f"The response must contain at least {_n(k['num_placeholders'], 'placeholder')} "
        "represented by square brackets, such as [address]."
    ),
    "detectable_content:postscript": lambda k: (
        "At the end of your response, please explicitly add a postscript starting with "
        f"{k['postscript_marker'].rstrip('.')}."
    ),
    "detectable_format:constrained_response": lambda k: (
        "Answer with one of the following options: ('My answer is yes.', 'My answer is "
        "no.', 'My answer is maybe.')"
    ),
    "detectable_format:json_format": lambda k: (
        "Entire output should be wrapped in JSON format. You can use markdown ticks such as ```."
    ),
    "detectable_format:multiple_sections": lambda k: (
        f"Your response must have {k['num_sections']} sections. Mark the beginning of each "
        f"section with {k['section_spliter']} X, such as:\n{k['section_spliter']} 1\n"
        f"[content of section 1]\n{k['section_spliter']} 2\n[content of section 2]"
    ),
    "detectable_format:number_bullet_lists": lambda k: (
        f"Your answer must contain exactly {k['num_bullets']} bullet points. Use the "
        "markdown bullet points such as:\n* This is point 1.\n* This is point 2"
    ),
    "detectable_format:number_highlighted_sections": lambda k: (
        f"Highlight at least {_n(k['num_highlights'], 'section')} in your answer with "
        "markdown, i.e. *highlighted section*."
    ),
    "detectable_format:title": lambda k: (
        "Your answer must contain a title, wrapped in double angular brackets, such as "
        "<<poem of joy>>."
    ),
    "keywords:existence": lambda k: f"Include keywords {_words(k['keywords'])} in the response.",
    "keywords:forbidden_words": lambda k: (
        f"Do not include keywords {_words(k['forbidden_words'])} in the response."
    ),
    "keywords:frequency": lambda k: (
        f"In your response, the word {k['keyword']} should appear {k['relation']} "
        f"{k['frequency']} times."
    ),
    "keywords:letter_frequency": lambda k: (
        f"In your response, the letter {k['letter']} should appear {k['let_relation']} "
        f"{k['let_frequency']} times."
    ),
    "language:response_language": lambda k: (
        f"Your ENTIRE response should be in {_LANGUAGES[k['language']]} language, no other "
        "language is allowed."
    ),
    "length_constraints:nth_paragraph_first_word": lambda k: (
        f"There should be {k['num_paragraphs']} paragraphs. Paragraphs and only paragraphs "
        "are separated with each other by two new lines as if it was '\\n\\n' in python. "
        f"Paragraph {k['nth_paragraph']} must start with word {k['first_word']}."
    ),
    "length_constraints:number_paragraphs": lambda k: (
        f"There should be {k['num_paragraphs']} paragraphs. Paragraphs are separated with "
        "the markdown divider: ***"
    ),
    "length_constraints:number_sentences": lambda k: (
        f"Your response should contain {k['relation']} {k['num_sentences']} sentences."
    ),
    "length_constraints:number_words": lambda k: (
        f"Answer with {k['relation']} {k['num_words']} words."
    ),
    "punctuation:no_comma": lambda k: (
        "In your entire response, refrain from the use of any commas."
    ),
    "startend:end_checker": lambda k: (
        f"Finish your response with this exact phrase {k['end_phrase']} No other words "
        "should follow this phrase."
    ),
    "startend:quotation": lambda k: "Wrap your entire response with double quotation marks.",
}
assert set(_KWARGS) == set(_TEXT) == set(ifeval.INSTRUCTION_IDS)


def constraint_text(instruction_id: str, kwargs: Kwargs) -> str:
    """The sentence that asks for a constraint, as IFEval words it."""
    if instruction_id not in _TEXT:
        raise InvalidArgument(f"unknown instruction id {instruction_id!r}")
    return _TEXT[instruction_id](kwargs)


def _pick_ids(rng: random.Random, pool: Sequence[str], count: int) -> list[str]:
    chosen: list[str] = []
    for _ in range(count):
        candidates = [i for i in pool if not any(i in CONFLICTS[c] for c in chosen)]
        if not candidates:
            break
        chosen.append(rng.choice(candidates))
    # The request to repeat is everything before the repeat sentence, so it goes last;
    # a letter cap is drawn once the words the answer must contain are known.
    order = {"combination:repeat_prompt": 2, "keywords:letter_frequency": 1}
    return sorted(chosen, key=lambda i: order.get(i, 0))


def compose(
    task: BaseTask, instruction_ids: Sequence[str], rng: random.Random
) -> tuple[str, tuple[str, ...], tuple[dict[str, Any], ...]]:
    """The prompt text and kwargs of a task with the given (non-conflicting) instructions."""
    d = _Draw(rng, task)
    kwargs = [_KWARGS[i](d) for i in instruction_ids]
    parts = [task.text]
    for iid, kw in zip(instruction_ids, kwargs, strict=True):
        if iid == "combination:repeat_prompt":
            kw["prompt_to_repeat"] = " ".join(parts)
        parts.append(_TEXT[iid](kw))
    return " ".join(parts), tuple(instruction_ids), tuple(kwargs)


def _pool(task: BaseTask, instruction_ids: Sequence[str]) -> list[str]:
    return [
        i
        for i in instruction_ids
        if (i != "detectable_format:constrained_response" or task.yes_no)
        and (i not in _NEEDS_KEYWORDS or task.keywords)
    ]


def synthesize(
    n: int,
    seed: int,
    exclude: Iterable[str] = (),
    *,
    tasks: Sequence[BaseTask] = BASE_TASKS,
    instruction_ids: Sequence[str] | None = None,
    max_constraints: int = 3,
    first_key: int = 1,
    combinations: Callable[[Sequence[str]], bool] | None = None,
) -> list[PromptRecord]:
    """n new verifiable prompts, the same for the same arguments (byte for byte).

    No prompt equals (after :func:`normalize`) a prompt of ``exclude`` or another
    synthesized one; a draw that would is replaced by the next, and so is a draw whose
    instruction ids ``combinations`` refuses (one side of a :class:`Split`).
    InvalidArgument when n distinct prompts cannot be reached (e.g. with very few tasks
    or instruction ids).
    """
    if n < 0:
        raise InvalidArgument(f"n={n} must be at least 0")
    if not 1 <= max_constraints <= 3:
        raise InvalidArgument(f"max_constraints={max_constraints} must be within 1..3")
    if not tasks:
        raise InvalidArgument("no base tasks to synthesize from")
    ids = list(ifeval.INSTRUCTION_IDS if instruction_ids is None else instruction_ids)
    unknown = sorted(set(ids) - set(ifeval.INSTRUCTION_IDS))
    if unknown or not ids:
        raise InvalidArgument(
            f"instruction ids {unknown or '(none)'} are not IFEval ids; use some of "
            f"{', '.join(ifeval.INSTRUCTION_IDS)}"
        )
    rng = random.Random(seed)
    seen = {normalize(p) for p in exclude}
    records: list[PromptRecord] = []
    attempts, max_attempts = 0, 20 * n + 200
    while len(records) < n and attempts < max_attempts:
        attempts += 1
        task = rng.choice(tasks)
        pool = _pool(task, ids)
        if not pool:
            continue
        if "detectable_format:constrained_response" in pool and rng.random() < 1 / 3:
            # It excludes every other instruction, so drawn from the pool it would be rare.
            chosen = ["detectable_format:constrained_response"]
        else:
            chosen = _pick_ids(rng, pool, rng.randint(1, max_constraints))
        if combinations is not None and not combinations(chosen):
            continue
        prompt, iids, kwargs = compose(task, chosen, rng)
        if normalize(prompt) in seen:
            continue
        seen.add(normalize(prompt))
        record = PromptRecord(first_key + len(records), prompt, iids, kwargs)
        try:
            ifeval.validate(record.constraints, record.prompt)
        except InvalidArgument as exc:  # a defect of the tables above, not of the input
            raise Internal(f"synthesized prompt fails validation: {exc.message}") from exc
        records.append(record)
    if len(records) < n:
        raise InvalidArgument(
            f"could synthesize only {len(records)} of {n} distinct prompts in {attempts} "
            "draws (the rest repeated a prompt or matched an excluded one); ask for fewer, "
            "or allow more tasks or instruction ids"
        )
    return records


# -- the held-out split --------------------------------------------------------------

Side = Literal["train", "held_out"]


def combination(instruction_ids: Iterable[str]) -> tuple[str, ...]:
    """A prompt's constraint combination: its instruction ids, sorted, without repeats."""
    return tuple(sorted(set(instruction_ids)))


def task_of(prompt: str, tasks: Sequence[BaseTask] = BASE_TASKS) -> BaseTask | None:
    """The base task a synthesised prompt was built on (its text starts the prompt)."""
    found = [t for t in tasks if prompt.startswith(t.text)]
    return max(found, key=lambda t: len(t.text)) if found else None


@dataclass(frozen=True)
class Split:
    """A seeded split of the generator's base tasks and constraint combinations.

    Held out: ``task_share`` of the base tasks (yes/no questions and other tasks shuffled
    apart, so both sides keep some of each) and every combination whose seeded hash falls
    under ``combination_share``. Training prompts use only training tasks and training
    combinations; held-out prompts only held-out ones. So a held-out figure measures
    whether following constraints transfers to tasks and combinations never trained on.
    """

    seed: int
    task_share: float = 0.25
    combination_share: float = 0.25

    def __post_init__(self) -> None:
        for name in ("task_share", "combination_share"):
            share = getattr(self, name)
            if not 0.0 < share < 1.0:
                raise InvalidArgument(f"{name}={share} must be between 0 and 1 (exclusive)")

    def held_out_tasks(self, tasks: Sequence[BaseTask] = BASE_TASKS) -> tuple[BaseTask, ...]:
        rng = random.Random(self.seed)
        held: list[BaseTask] = []
        for group in ([t for t in tasks if t.yes_no], [t for t in tasks if not t.yes_no]):
            order = list(group)
            rng.shuffle(order)
            held += order[: max(1, round(self.task_share * len(order)))] if order else []
        return tuple(t for t in tasks if t in held)

    def tasks(self, side: Side, tasks: Sequence[BaseTask] = BASE_TASKS) -> tuple[BaseTask, ...]:
        held = set(self.held_out_tasks(tasks))
        return tuple(t for t in tasks if (t in held) == (side == "held_out"))

    def combination_held_out(self, instruction_ids: Iterable[str]) -> bool:
        key = f"{self.seed}:" + "+".join(combination(instruction_ids))
        h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
        return h / 2**64 < self.combination_share

    def accepts(self, side: Side) -> Callable[[Sequence[str]], bool]:
        """The combination filter of one side (for :func:`synthesize`)."""
        held = side == "held_out"
        return lambda ids: self.combination_held_out(ids) == held

    def synthesize(
        self, side: Side, n: int, seed: int, exclude: Iterable[str] = (), *, first_key: int = 1
    ) -> list[PromptRecord]:
        """n prompts of one side of the split."""
        return synthesize(
            n, seed, exclude, tasks=self.tasks(side), combinations=self.accepts(side),
            first_key=first_key,
        )  # fmt: skip


def check_split(
    train: Iterable[PromptRecord], held_out: Iterable[PromptRecord], split: Split | None = None
) -> None:
    """InvalidArgument unless no held-out prompt shares its prompt, its base task or its
    constraint combination with a training prompt (and, given the split, every held-out
    prompt is on its held-out side)."""
    train = list(train)
    prompts = {normalize(r.prompt) for r in train}
    tasks = {t.text for r in train if (t := task_of(r.prompt)) is not None}
    combos = {combination(r.instruction_id_list) for r in train}
    held_tasks = {t.text for t in split.held_out_tasks()} if split else set()
    for r in held_out:
        task = task_of(r.prompt)
        combo = combination(r.instruction_id_list)
        why = ""
        if normalize(r.prompt) in prompts:
            why = "is also a training prompt"
        elif task is not None and task.text in tasks:
            why = f"uses the base task {task.text!r}, which a training prompt uses"
        elif combo in combos:
            why = f"uses the constraint combination {'+'.join(combo)}, which a training prompt uses"
        elif split is not None and (task is None or task.text not in held_tasks):
            why = "is not built on a held-out base task of the split"
        elif split is not None and not split.combination_held_out(combo):
            why = f"uses the combination {'+'.join(combo)}, which the split keeps for training"
        if why:
            raise InvalidArgument(
                f"held-out prompt {r.key!r} {why}; the held-out set must measure transfer to "
                "tasks and constraint combinations that no training prompt uses"
            )
