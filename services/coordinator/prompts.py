"""Prompt sources of the loop: IFEval-format jsonl, plain prompt lists, and synthesis.

A :class:`PromptRecord` is one prompt in IFEval's own form (``key, prompt,
instruction_id_list, kwargs``, as in google-research's ``input_data.jsonl``); a plain
prompt has no constraints. A line may also name criteria of the criteria packs
(``"criteria": ["support"]`` or ``["support/greeting", ...]``, spar.criteria); they join
its instruction ids (``support/greeting``, no kwargs). Loaders name ``file:line`` for
every bad record, and check ids and kwargs with the criteria registry (IFEval's own
checks for IFEval ids).

:func:`synthesize` writes new verifiable prompts: one of our own base tasks plus one to
three constraints drawn from the verifier's registry, kwargs filled in, stated the way
IFEval states them, never two that IFEval (or plain logic) marks as conflicting. It is
deterministic for a seed, and it never emits a prompt of a given exclusion set (the
held-out evaluation prompts), so training never sees an evaluation prompt.

:class:`Split` makes the held-out set measure transfer rather than recall: a seeded share
of the base tasks and of the constraint combinations (the set of instruction ids of a
prompt) is held out, training prompts use neither, and held-out prompts use only held-out
tasks and held-out combinations. :func:`check_split` proves it for two sets of records.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from spar import criteria, ifeval
from spar.errors import Internal, InvalidArgument

Kwargs = Mapping[str, Any]


@dataclass(frozen=True)
class PromptRecord:
    """One prompt; ``kwargs[i]`` are the checker arguments of ``instruction_id_list[i]``."""

    key: int | str
    prompt: str
    instruction_id_list: tuple[str, ...] = ()
    kwargs: tuple[Kwargs, ...] = ()

    @property
    def constraints(self) -> tuple[ifeval.Constraint, ...]:
        return tuple(
            ifeval.Constraint(iid, kw)
            for iid, kw in zip(self.instruction_id_list, self.kwargs, strict=True)
        )

    def to_json(self) -> dict[str, Any]:
        """The record in IFEval's input_data.jsonl form (field order as there)."""
        return {
            "key": self.key,
            "prompt": self.prompt,
            "instruction_id_list": list(self.instruction_id_list),
            "kwargs": [dict(kw) for kw in self.kwargs],
        }


def normalize(prompt: str) -> str:
    """The form prompts are compared in: case-folded, whitespace runs collapsed."""
    return " ".join(prompt.split()).casefold()


def to_jsonl(records: Iterable[PromptRecord]) -> str:
    """Records as jsonl text, one per line (the same records give the same bytes)."""
    return "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in records)


def write_jsonl(path: Path, records: Iterable[PromptRecord]) -> None:
    """Writes records atomically: readers never see a half-written file."""
    text = to_jsonl(records)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- loading -------------------------------------------------------------------------

_IFEVAL_FIELDS = ("key", "prompt", "instruction_id_list", "kwargs")


def _key(value: Any, where: str) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        raise InvalidArgument(f"{where}: key must be an integer or a non-empty string")
    return value


def _prompt(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(f"{where}: prompt must be a non-empty string")
    return value


def _ifeval_record(obj: Mapping[str, Any], where: str) -> PromptRecord:
    missing = [f for f in _IFEVAL_FIELDS if f not in obj]
    if missing:
        raise InvalidArgument(
            f"{where}: missing field {', '.join(map(repr, missing))}; an IFEval record has "
            f"{', '.join(_IFEVAL_FIELDS)}"
        )
    ids, kwargs = obj["instruction_id_list"], obj["kwargs"]
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise InvalidArgument(f"{where}: instruction_id_list must be a list of strings")
    if not isinstance(kwargs, list) or not all(isinstance(k, dict) for k in kwargs):
        raise InvalidArgument(f"{where}: kwargs must be a list of objects")
    if len(ids) != len(kwargs):
        raise InvalidArgument(
            f"{where}: instruction_id_list has {len(ids)} ids but kwargs has {len(kwargs)} "
            "objects; they pair up by position"
        )
    record = PromptRecord(
        key=_key(obj["key"], where),
        prompt=_prompt(obj["prompt"], where),
        instruction_id_list=tuple(ids),
        # Hugging Face's copy of IFEval lists every kwarg of every type, unused ones null.
        kwargs=tuple({k: v for k, v in kw.items() if v is not None} for kw in kwargs),
    )
    return _with_criteria(record, obj, where)


def _with_criteria(record: PromptRecord, obj: Mapping[str, Any], where: str) -> PromptRecord:
    """The record with the line's ``criteria`` added, every constraint validated."""
    refs = obj.get("criteria", [])
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise InvalidArgument(f"{where}: criteria must be a list of strings (PACK or PACK/ID)")
    try:
        extra = criteria.registry().expand(refs)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{where}: criteria: {exc.message}") from None
    have = set(record.instruction_id_list)
    extra = [c for c in extra if c.instruction_id not in have]
    if extra:
        record = PromptRecord(
            key=record.key,
            prompt=record.prompt,
            instruction_id_list=record.instruction_id_list + tuple(c.instruction_id for c in extra),
            kwargs=record.kwargs + tuple({} for _ in extra),
        )
    try:
        criteria.registry().validate(record.constraints, record.prompt)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{where}: {exc.message}") from None
    return record


def _plain_record(obj: Mapping[str, Any], where: str, line: int) -> PromptRecord:
    if "prompt" not in obj:
        raise InvalidArgument(
            f"{where}: missing field 'prompt'; a line is {{\"prompt\": ...}} or an IFEval "
            "record (key, prompt, instruction_id_list, kwargs)"
        )
    record = PromptRecord(
        key=_key(obj.get("key", line), where), prompt=_prompt(obj["prompt"], where)
    )
    return _with_criteria(record, obj, where)


def parse_jsonl(
    lines: Iterable[str], source: str, *, require_constraints: bool = False
) -> list[PromptRecord]:
    """Records of jsonl text: IFEval records, or ``{"prompt": ...}`` lines (keyed by line).

    With ``require_constraints`` every line must be an IFEval record with at least one
    instruction (what evaluation needs).
    """
    records: list[PromptRecord] = []
    seen: dict[int | str, int] = {}
    for number, line in enumerate(lines, 1):
        where = f"{source}:{number}"
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(
                f"{where}: not valid JSON ({exc.msg}, column {exc.colno})"
            ) from None
        if not isinstance(obj, dict):
            raise InvalidArgument(f"{where}: expected a JSON object, got {type(obj).__name__}")
        if "instruction_id_list" in obj or (require_constraints and "criteria" not in obj):
            record = _ifeval_record(obj, where)
        else:
            record = _plain_record(obj, where, number)
        if require_constraints and not record.instruction_id_list:
            raise InvalidArgument(
                f"{where}: instruction_id_list is empty; an evaluation prompt needs at "
                "least one verifiable instruction or criterion"
            )
        if record.key in seen:
            raise InvalidArgument(f"{where}: key {record.key!r} repeats line {seen[record.key]}")
        seen[record.key] = number
        records.append(record)
    if not records:
        raise InvalidArgument(f"{source}: no prompts in the file")
    return records


def parse_text(lines: Iterable[str], source: str) -> list[PromptRecord]:
    """One prompt per non-blank line, keyed by its line number."""
    records = [
        PromptRecord(key=number, prompt=line.strip())
        for number, line in enumerate(lines, 1)
        if line.strip()
    ]
    if not records:
        raise InvalidArgument(f"{source}: no prompts in the file")
    return records


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InvalidArgument(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidArgument(f"{path}: is a directory, expected a .jsonl or .txt file") from None
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"{path}: not UTF-8 text (byte {exc.start})") from None


def load_prompts(path: Path) -> list[PromptRecord]:
    """Any prompt source: ``.txt`` (one prompt a line) or jsonl (IFEval or plain lines)."""
    lines = _read_lines(path)
    if path.suffix == ".txt":
        return parse_text(lines, str(path))
    return parse_jsonl(lines, str(path))


def load_ifeval(path: Path) -> list[PromptRecord]:
    """IFEval-format jsonl where every record has at least one verifiable instruction."""
    return parse_jsonl(_read_lines(path), str(path), require_constraints=True)


# -- synthesis -----------------------------------------------------------------------


@dataclass(frozen=True)
class BaseTask:
    """A task without constraints; keywords are words a good answer naturally uses."""

    text: str
    keywords: tuple[str, ...] = ()
    yes_no: bool = False
    """A yes/no question, the only kind that can take ``constrained_response``."""


def _t(text: str, *keywords: str) -> BaseTask:
    return BaseTask(text, keywords)


def _q(text: str, *keywords: str) -> BaseTask:
    return BaseTask(text, keywords, yes_no=True)


BASE_TASKS: tuple[BaseTask, ...] = (
    _t("Write an email to your landlord asking to repair a leaking kitchen faucet.",
       "faucet", "repair", "apartment"),
    _t("Write a short story about a lighthouse keeper who finds a message in a bottle.",
       "lighthouse", "bottle", "storm"),
    _t("Summarize the main causes of the French Revolution for a high school student.",
       "monarchy", "taxes", "bread"),
    _t("Explain how vaccines teach the immune system to recognise a virus.",
       "antibodies", "virus", "immunity"),
    _t("Write a list of tips for someone who wants to start running.",
       "shoes", "stretching", "pace"),
    _t("Write a product description for a backpack with a built-in solar panel.",
       "solar", "battery", "waterproof"),
    _t("Write a cover letter for a junior data analyst position at a shipping company.",
       "data", "analysis", "logistics"),
    _t("Explain to a ten-year-old why the sky is blue.", "sunlight", "scattering", "colors"),
    _t("Write a poem about the first snow of winter in a small mountain town.",
       "snow", "quiet", "chimney"),
    _t("Write a blog post about the benefits of learning a second language as an adult.",
       "vocabulary", "practice", "culture"),
    _t("Describe a typical day in the life of a beekeeper.", "hive", "honey", "queen"),
    _t("Write a speech for a retirement party of a school librarian.",
       "books", "students", "library"),
    _t("Give advice to a student who feels overwhelmed before final exams.",
       "schedule", "sleep", "breaks"),
    _t("Write a review of a fictional Italian restaurant that just opened downtown.",
       "pasta", "service", "dessert"),
    _t("Explain how a bill becomes a law in a parliamentary democracy.",
       "parliament", "vote", "committee"),
    _t("Write a dialogue between a customer and a bike mechanic about a squeaky brake.",
       "brake", "wheel", "chain"),
    _t("Write a travel guide entry for a weekend in Lisbon.", "tram", "pastries", "river"),
    _t("Summarize the plot of a heist movie in which the thieves steal a famous painting.",
       "museum", "painting", "alarm"),
    _t("Write an advertisement for a community gardening club.",
       "garden", "volunteers", "vegetables"),
    _t("Explain the difference between weather and climate.",
       "temperature", "decades", "forecast"),
    _t("Write a thank-you note to a neighbour who looked after your cat.",
       "cat", "kindness", "neighbour"),
    _t("Describe how to make a simple tomato soup at home.", "tomatoes", "onion", "simmer"),
    _t("Write a persuasive essay arguing that cities should plant more trees.",
       "shade", "trees", "pollution"),
    _t("Write a job posting for a part-time barista at a small coffee shop.",
       "coffee", "customers", "shifts"),
    _t("Explain how compound interest works with a simple example.",
       "interest", "savings", "years"),
    _t("Write a bedtime story about a dragon who is afraid of the dark.",
       "dragon", "night", "lantern"),
    _t("Write a letter to your future self to be opened in ten years.",
       "dreams", "future", "memories"),
    _t("Describe the water cycle for a science class.",
       "evaporation", "clouds", "rain"),
    _t("Write a riddle whose answer is a clock, and then explain the answer.",
       "hands", "time", "face"),
    _t("Write an announcement that the office will move to a new building next month.",
       "office", "move", "parking"),
    _t("Explain why sleep matters for memory.", "sleep", "memory", "brain"),
    _t("Write a short biography of a fictional inventor who built a flying bicycle.",
       "inventor", "bicycle", "wings"),
    _t("Write a complaint to an airline about lost luggage.",
       "luggage", "flight", "refund"),
    _t("Describe the rules of chess to someone who has never played.",
       "king", "pawn", "checkmate"),
    _t("Write a pitch for a mobile app that helps people share leftover food.",
       "food", "app", "waste"),
    _t("Explain how a refrigerator keeps food cold.", "refrigerant", "compressor", "heat"),
    _t("Write a diary entry of an astronaut on her first day on the Moon.",
       "moon", "earth", "dust"),
    _t("Write instructions for planting a tree in a backyard.", "hole", "roots", "water"),
    _t("Write a motivational message for a football team before the final match.",
       "team", "final", "together"),
    _t("Compare trains and planes for a 500 kilometre trip.", "train", "plane", "comfort"),
    _t("Write a limerick about a cat who loves to sleep in the sink.",
       "cat", "sink", "nap"),
    _t("Explain what a computer password manager does and why it helps.",
       "password", "security", "vault"),
    _t("Write a toast for your best friend's wedding.", "friendship", "love", "cheers"),
    _t("Describe the history of the bicycle in a few key steps.",
       "bicycle", "pedals", "tires"),
    _t("Write a news report about a town that won a prize for its clean streets.",
       "town", "award", "streets"),
    _t("Write a recipe for a vegetarian chili.", "beans", "chili", "spices"),
    _t("Explain how bees communicate the location of flowers.",
       "dance", "flowers", "hive"),
    _t("Write a welcome message for new members of an online chess club.",
       "members", "tournament", "chess"),
    _t("Write a short fable with a moral about patience.", "tortoise", "patience", "race"),
    _t("Describe your ideal weekend in the countryside.", "hiking", "farm", "fresh"),
    _t("Write a plan for a week of healthy family dinners.",
       "vegetables", "protein", "dinner"),
    _t("Explain the basics of how the internet sends data between computers.",
       "packets", "router", "network"),
    _t("Write a funny story about a robot that tries to bake a cake.",
       "robot", "cake", "oven"),
    _t("Write a speech for a student running for class president.",
       "school", "promise", "students"),
    _t("Write a social media post announcing a charity bake sale.",
       "charity", "cookies", "donations"),
    _t("Explain why the Moon has phases.", "moon", "sunlight", "orbit"),
    _t("Write an apology email to a client for a delayed delivery.",
       "delay", "delivery", "apology"),
    _t("Describe a busy market in a city you would like to visit.",
       "market", "spices", "crowd"),
    _t("Write a guide for caring for a houseplant that needs little light.",
       "soil", "leaves", "watering"),
    _t("Write a short mystery story set on a night train.", "train", "detective", "ticket"),
    _t("Explain how recycling paper works.", "paper", "pulp", "recycling"),
    _t("Write a eulogy for a beloved village baker.", "bakery", "bread", "village"),
    _t("Write a memo to employees about a new four-day work week trial.",
       "employees", "trial", "productivity"),
    _q("Is it a good idea to learn to code before going to university?",
       "programming", "university", "skills"),
    _q("Is it healthy to drink coffee every day?", "coffee", "caffeine", "health"),
    _q("Should every school teach students how to cook?", "cooking", "school", "nutrition"),
    _q("Can a person learn to play the piano well after the age of fifty?",
       "piano", "practice", "age"),
    _q("Is it safer to travel by train than by car?", "train", "car", "safety"),
    _q("Should cities ban cars from their historic centres?",
       "cars", "pedestrians", "traffic"),
    _q("Is reading on paper better for learning than reading on a screen?",
       "paper", "screen", "reading"),
    _q("Would a four-day school week help students learn more?",
       "students", "week", "learning"),
)  # fmt: skip

#: Conflicting instruction pairs: IFEval's ``INSTRUCTION_CONFLICTS`` (made symmetric),
#: plus pairs whose checkers contradict each other though IFEval does not list them.
_IFEVAL_CONFLICTS: dict[str, tuple[str, ...]] = {
    "keywords:existence": ("keywords:existence",),
    "keywords:frequency": ("keywords:frequency",),
    "keywords:forbidden_words": ("keywords:forbidden_words",),
    "keywords:letter_frequency": ("keywords:letter_frequency",),
    "language:response_language": (
        "language:response_language", "detectable_format:multiple_sections",
        "keywords:existence", "keywords:frequency", "keywords:forbidden_words",
        "startend:end_checker", "change_case:english_capital", "change_case:english_lowercase",
    ),
    "length_constraints:number_sentences": ("length_constraints:number_sentences",),
    "length_constraints:number_paragraphs": (
        "length_constraints:number_paragraphs", "length_constraints:nth_paragraph_first_word",
        "length_constraints:number_sentences",
    ),
    "length_constraints:number_words": ("length_constraints:number_words",),
    "length_constraints:nth_paragraph_first_word": (
        "length_constraints:nth_paragraph_first_word", "length_constraints:number_paragraphs",
    ),
    "detectable_content:number_placeholders": ("detectable_content:number_placeholders",),
    "detectable_content:postscript": ("detectable_content:postscript",),
    "detectable_format:number_bullet_lists": ("detectable_format:number_bullet_lists",),
    "detectable_format:constrained_response": ifeval.INSTRUCTION_IDS,
    "detectable_format:number_highlighted_sections": (
        "detectable_format:number_highlighted_sections",
    ),
    "detectable_format:multiple_sections": (
        "detectable_format:multiple_sections", "language:response_language",
        "detectable_format:number_highlighted_sections",
    ),
    "detectable_format:json_format": tuple(
        i for i in ifeval.INSTRUCTION_IDS
        if i not in ("keywords:forbidden_words", "keywords:existence")
    ),
    "detectable_format:title": ("detectable_format:title",),
    "combination:two_responses": tuple(
        i for i in ifeval.INSTRUCTION_IDS
        if i not in (
            "keywords:forbidden_words", "keywords:existence", "language:response_language",
            "detectable_format:title", "punctuation:no_comma",
        )
    ),
    "combination:repeat_prompt": tuple(
        i for i in ifeval.INSTRUCTION_IDS
        if i not in ("keywords:existence", "detectable_format:title", "punctuation:no_comma")
    ),
    "startend:end_checker": ("startend:end_checker",),
    "change_case:capital_word_frequency": (
        "change_case:capital_word_frequency", "change_case:english_lowercase",
        "change_case:english_capital",
    ),
    "change_case:english_capital": ("change_case:english_capital",),
    "change_case:english_lowercase": (
        "change_case:english_lowercase", "change_case:english_capital",
    ),
    "punctuation:no_comma": ("punctuation:no_comma",),
    "startend:quotation": ("startend:quotation", "detectable_format:title"),
}  # fmt: skip

#: Why each extra pair cannot both be followed.
EXTRA_CONFLICTS: dict[tuple[str, str], str] = {
    ("startend:quotation", "startend:end_checker"):
        "the answer must end with a quotation mark and with the end phrase",
    ("detectable_format:multiple_sections", "change_case:english_lowercase"):
        "the section marker is matched case-sensitively ('Section 1')",
    ("detectable_format:multiple_sections", "change_case:english_capital"):
        "the section marker is matched case-sensitively ('Section 1')",
    ("combination:repeat_prompt", "punctuation:no_comma"):
        "the repeated request itself contains commas",
    ("language:response_language", "length_constraints:nth_paragraph_first_word"):
        "the required first word is English",
    ("language:response_language", "keywords:letter_frequency"):
        "letters are counted in the Latin alphabet, which most of the languages do not use",
    ("language:response_language", "change_case:capital_word_frequency"):
        "capital letters are Latin ones, which most of the languages do not use",
}  # fmt: skip


def _conflict_table() -> dict[str, frozenset[str]]:
    table: dict[str, set[str]] = {i: {i} for i in ifeval.INSTRUCTION_IDS}
    pairs = [(a, b) for a, bs in _IFEVAL_CONFLICTS.items() for b in bs]
    for a, b in [*pairs, *EXTRA_CONFLICTS]:
        table[a].add(b)
        table[b].add(a)
    return {k: frozenset(v) for k, v in table.items()}


#: instruction id → the ids it must not be combined with (itself included).
CONFLICTS: Mapping[str, frozenset[str]] = _conflict_table()

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
