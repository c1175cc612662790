"""The criterion types of a criteria pack, and the pack itself (pydantic models).

Each type is one class with the fields a pack file gives it and, for the checkable ones,
how a response is checked and measured; :class:`RubricCriterion` is free text only the LLM
judge decides. :func:`json_schema` is the schema of a pack file
(docs/criteria-pack.schema.json). Loading packs and the registry that checks constraints
against them are in spar.criteria; to add a criterion type, add its class here and to
:data:`Criterion`.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from spar import ifeval
from spar.ifeval import Constraint

PACK_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"
CRITERION_ID = r"^[a-z0-9][a-z0-9_.:-]{0,99}$"
#: The built-in pack of IFEval's instruction ids (``ifeval/<id>``, kwargs from the request).
IFEVAL_PACK = "ifeval"
#: File names a pack folder is read for (other files, and hidden ones, are ignored).
PACK_SUFFIXES = (".yaml", ".yml", ".json")
#: A pack file larger than this is refused (packs are small; a mistake is not).
MAX_PACK_BYTES = 1024 * 1024


class CriterionBase(BaseModel):
    """Fields every criterion has."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=CRITERION_ID)
    """Unique within the pack; constraints name it as ``pack/id``."""
    description: str = Field(default="", max_length=2000)
    """The requirement in words, for critiques and the judge prompt; empty: generated."""

    checkable: ClassVar[bool] = True
    """Decided by program (False: by the LLM judge)."""

    def describe(self) -> str:
        return self.description or self._describe()

    def _describe(self) -> str:  # pragma: no cover - every kind overrides it
        return self.id

    def holds(self, response: str, instruction: str) -> bool:  # pragma: no cover
        raise NotImplementedError

    def measure(self, response: str) -> str:
        """What the response has, for the complaint about a failed check ("" if nothing)."""
        return ""


class RegexCriterion(CriterionBase):
    """A regular expression (Python syntax) must, or must not, match somewhere."""

    type: Literal["regex"]
    pattern: str = Field(min_length=1, max_length=2000)
    must_match: bool = True
    """True: the response must match; False: it must not."""
    ignore_case: bool = False
    multiline: bool = False
    """``^`` and ``$`` match at every line."""
    dotall: bool = False
    """``.`` matches newlines too."""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    def _regex(self) -> re.Pattern[str]:
        flags = (
            (re.IGNORECASE if self.ignore_case else 0)
            | (re.MULTILINE if self.multiline else 0)
            | (re.DOTALL if self.dotall else 0)
        )
        return re.compile(self.pattern, flags)

    def _describe(self) -> str:
        verb = "must match" if self.must_match else "must not match"
        return f"The response {verb} the pattern {self.pattern!r}."

    def holds(self, response: str, instruction: str) -> bool:
        return (self._regex().search(response) is not None) == self.must_match

    def measure(self, response: str) -> str:
        found = self._regex().search(response)
        return f"it has {found.group(0)[:80]!r}" if found else "no match"


class _Keywords(CriterionBase):
    keywords: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        min_length=1, max_length=200
    )
    case_sensitive: bool = False
    whole_words: bool = True
    """Count only whole-word occurrences ("cat" does not count in "category")."""

    def count(self, keyword: str, text: str) -> int:
        escaped = re.escape(keyword)
        pattern = rf"(?<!\w){escaped}(?!\w)" if self.whole_words else escaped
        return len(re.findall(pattern, text, 0 if self.case_sensitive else re.IGNORECASE))

    def measure(self, response: str) -> str:
        counts = [f"{k!r} {self.count(k, response)}x" for k in self.keywords]
        return "found " + ", ".join(counts)


class KeywordsPresentCriterion(_Keywords):
    """Keywords that must appear, each between min_count and max_count times."""

    type: Literal["keywords_present"]
    min_count: int = Field(default=1, ge=1)
    """Each keyword at least this often."""
    max_count: int | None = Field(default=None, ge=1)
    """Each keyword at most this often (no limit when unset)."""
    match: Literal["all", "any"] = "all"
    """all: every keyword must meet the counts; any: one is enough."""

    @model_validator(mode="after")
    def _bounds(self) -> KeywordsPresentCriterion:
        if self.max_count is not None and self.max_count < self.min_count:
            raise ValueError(f"max_count {self.max_count} is below min_count {self.min_count}")
        return self

    def _describe(self) -> str:
        words = ", ".join(repr(k) for k in self.keywords)
        which = "each of" if self.match == "all" else "at least one of"
        times = f"at least {self.min_count} time{'s' if self.min_count > 1 else ''}"
        if self.max_count is not None:
            times = f"{self.min_count} to {self.max_count} times"
        return f"Use {which} {words} {times}."

    def holds(self, response: str, instruction: str) -> bool:
        def ok(k: str) -> bool:
            n = self.count(k, response)
            return n >= self.min_count and (self.max_count is None or n <= self.max_count)

        results = [ok(k) for k in self.keywords]
        return all(results) if self.match == "all" else any(results)


class KeywordsAbsentCriterion(_Keywords):
    """Keywords that must not appear at all."""

    type: Literal["keywords_absent"]

    def _describe(self) -> str:
        return "Do not use " + ", ".join(repr(k) for k in self.keywords) + "."

    def holds(self, response: str, instruction: str) -> bool:
        return all(self.count(k, response) == 0 for k in self.keywords)


_WORD = re.compile(r"\w+(?:['’]\w+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def count_units(text: str, unit: str) -> int:
    """Words (runs of letters/digits, apostrophes inside), sentences (ended by . ! ? …
    before whitespace, or by the end), paragraphs (separated by blank lines), characters."""
    if unit == "words":
        return len(_WORD.findall(text))
    if unit == "sentences":
        return sum(1 for s in _SENTENCE_END.split(text.strip()) if _WORD.search(s))
    if unit == "paragraphs":
        return sum(1 for p in _PARAGRAPH_BREAK.split(text.strip()) if p.strip())
    return len(text.strip())


class LengthCriterion(CriterionBase):
    """Length bounds in words, sentences, paragraphs or characters (inclusive)."""

    type: Literal["length"]
    unit: Literal["words", "sentences", "paragraphs", "characters"]
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> LengthCriterion:
        if self.min is None and self.max is None:
            raise ValueError("set min, max or both")
        if self.min is not None and self.max is not None and self.max < self.min:
            raise ValueError(f"max {self.max} is below min {self.min}")
        return self

    def _describe(self) -> str:
        if self.min is not None and self.max is not None:
            return f"Use {self.min} to {self.max} {self.unit}."
        if self.max is not None:
            return f"Use at most {self.max} {self.unit}."
        return f"Use at least {self.min} {self.unit}."

    def holds(self, response: str, instruction: str) -> bool:
        n = count_units(response, self.unit)
        return (self.min is None or n >= self.min) and (self.max is None or n <= self.max)

    def measure(self, response: str) -> str:
        return f"{count_units(response, self.unit)} {self.unit}"


_FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


class JsonCriterion(CriterionBase):
    """The response is valid JSON (in a code fence too, unless refused), optionally
    valid against a JSON Schema."""

    type: Literal["json"]
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    """A JSON Schema (draft 2020-12 unless ``$schema`` says otherwise) the value must meet."""
    allow_code_fence: bool = True
    """Accept the JSON inside a markdown code fence (```json ... ```)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        import jsonschema  # type: ignore[import-untyped]

        try:
            jsonschema.validators.validator_for(value).check_schema(value)
        except jsonschema.SchemaError as exc:
            where = "/".join(str(p) for p in exc.path)
            raise ValueError(
                f"not a valid JSON Schema: {exc.message}" + (f" (at {where})" if where else "")
            ) from None
        return value

    def _describe(self) -> str:
        return "Answer with valid JSON" + (
            " that matches the given JSON Schema." if self.json_schema else "."
        )

    def value(self, response: str) -> Any:
        """The parsed JSON; raises ValueError with the reason."""
        text = response.strip()
        fenced = _FENCE.match(text)
        if fenced and self.allow_code_fence:
            text = fenced.group(1)
        return json.loads(text)

    def problem(self, response: str) -> str:
        """Why the response fails, or "" when it passes."""
        try:
            value = self.value(response)
        except ValueError as exc:
            return f"not valid JSON: {exc}"
        if self.json_schema is not None:
            import jsonschema  # type: ignore[import-untyped]

            validator = jsonschema.validators.validator_for(self.json_schema)(self.json_schema)
            error = jsonschema.exceptions.best_match(validator.iter_errors(value))
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "the value"
                return f"{where}: {error.message}"
        return ""

    def holds(self, response: str, instruction: str) -> bool:
        return not self.problem(response)

    def measure(self, response: str) -> str:
        return self.problem(response)


class _Affix(CriterionBase):
    text: list[Annotated[str, Field(min_length=1, max_length=1000)]] = Field(
        min_length=1, max_length=50
    )
    """The text (or any one of several)."""
    case_sensitive: bool = False

    @field_validator("text", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def _norm(self, s: str) -> str:
        return s if self.case_sensitive else s.casefold()

    def _choices(self) -> str:
        return " or ".join(repr(t) for t in self.text)


class StartsWithCriterion(_Affix):
    """The response starts with the text (leading whitespace ignored)."""

    type: Literal["starts_with"]

    def _describe(self) -> str:
        return f"Start the response with {self._choices()}."

    def measure(self, response: str) -> str:
        return f"it starts {response.strip()[:40]!r}"

    def holds(self, response: str, instruction: str) -> bool:
        body = self._norm(response.lstrip())
        return any(body.startswith(self._norm(t)) for t in self.text)


class EndsWithCriterion(_Affix):
    """The response ends with the text (trailing whitespace ignored)."""

    type: Literal["ends_with"]

    def _describe(self) -> str:
        return f"End the response with {self._choices()}."

    def measure(self, response: str) -> str:
        return f"it ends {response.strip()[-40:]!r}"

    def holds(self, response: str, instruction: str) -> bool:
        body = self._norm(response.rstrip())
        return any(body.endswith(self._norm(t.rstrip())) for t in self.text)


_LANGDETECT_LOCK = threading.Lock()


def detect_language(text: str) -> str:
    """ISO 639-1 code of text's language (langdetect, seeded: the same text always gets
    the same answer); "" when it cannot tell."""
    from langdetect import DetectorFactory, detect  # type: ignore[import-untyped]
    from langdetect.lang_detect_exception import (  # type: ignore[import-untyped]
        LangDetectException,
    )

    with _LANGDETECT_LOCK:
        DetectorFactory.seed = 0
        try:
            return str(detect(text))
        except LangDetectException:
            return ""


class LanguageCriterion(CriterionBase):
    """The response is in the given language (ISO 639-1 code, as langdetect names it)."""

    type: Literal["language"]
    language: str = Field(pattern=r"^[a-z]{2}(-[a-z]{2})?$")
    """e.g. ``en``, ``de``, ``zh-cn``."""

    def _describe(self) -> str:
        return f"Answer in the language with ISO code {self.language!r}."

    def holds(self, response: str, instruction: str) -> bool:
        return detect_language(response) == self.language

    def measure(self, response: str) -> str:
        return f"detected language {detect_language(response) or 'unknown'!r}"


class IfevalCriterion(CriterionBase):
    """One of IFEval's instruction checkers with fixed kwargs (e.g. no commas)."""

    type: Literal["ifeval"]
    instruction_id: str
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("instruction_id")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in ifeval.INSTRUCTION_IDS:
            raise ValueError(
                f"unknown IFEval instruction id {value!r}; use one of the 25 IFEval ids, e.g. "
                "punctuation:no_comma"
            )
        return value

    def constraint(self) -> Constraint:
        return Constraint(self.instruction_id, self.kwargs)

    def _describe(self) -> str:
        return f"IFEval {self.instruction_id}"

    def holds(self, response: str, instruction: str) -> bool:  # pragma: no cover
        raise NotImplementedError("IFEval criteria are checked by spar.ifeval.check")


class RubricCriterion(CriterionBase):
    """A requirement in words that the LLM judge decides (no program can)."""

    type: Literal["rubric"]
    text: str = Field(min_length=1, max_length=2000)
    """What the judge must check, e.g. "cites the manual's section number"."""

    checkable: ClassVar[bool] = False

    def _describe(self) -> str:
        return self.text


Criterion = Annotated[
    RegexCriterion
    | KeywordsPresentCriterion
    | KeywordsAbsentCriterion
    | LengthCriterion
    | JsonCriterion
    | StartsWithCriterion
    | EndsWithCriterion
    | LanguageCriterion
    | IfevalCriterion
    | RubricCriterion,
    Field(discriminator="type"),
]


class CriteriaPack(BaseModel):
    """A named set of criteria (one file of the packs folder)."""

    model_config = ConfigDict(extra="forbid", title="spar criteria pack")

    name: str = Field(pattern=PACK_NAME)
    """Constraints name the pack's criteria as ``<name>/<criterion id>``."""
    description: str = Field(default="", max_length=2000)
    criteria: list[Criterion] = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _unique_ids(self) -> CriteriaPack:
        seen: set[str] = set()
        for i, c in enumerate(self.criteria):
            if c.id in seen:
                raise ValueError(f"criteria[{i}]: id {c.id!r} is used twice")
            seen.add(c.id)
        if self.name == IFEVAL_PACK:
            raise ValueError(f"the pack name {IFEVAL_PACK!r} is the built-in IFEval pack's")
        return self

    def get(self, criterion_id: str) -> CriterionBase | None:
        return next((c for c in self.criteria if c.id == criterion_id), None)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a pack file (published as docs/criteria-pack.schema.json)."""
    schema = CriteriaPack.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://spar.dev/schemas/criteria-pack.schema.json"
    return schema
