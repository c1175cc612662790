"""Criteria packs: the requirements a business sets for answers, as named, checkable criteria.

A pack is one YAML or JSON file (schema: ``docs/criteria-pack.schema.json``, or
``spar criteria schema``)::

    name: support
    description: Replies of our customer-support desk
    criteria:
      - id: greeting
        type: starts_with
        text: ["Hello", "Hi"]
      - id: short
        type: length
        unit: words
        max: 120
      - id: polite
        type: rubric
        text: Polite and warm, but no apology for things that are not our fault.

A constraint names a criterion as ``pack/criterion`` (``support/greeting``) wherever an
IFEval instruction id goes today: Judge, Refine and Answer requests, prompt sets of an
iteration, evaluation. A bare pack name (``support``) stands for all its criteria.

Two kinds of criteria:
- **checkable** ones (``regex``, ``keywords_present``, ``keywords_absent``, ``length``,
  ``json``, ``starts_with``, ``ends_with``, ``language``, ``ifeval``) are decided by
  program: :meth:`CriteriaRegistry.check` returns :class:`spar.ifeval.ConstraintCheck`
  for them (and for plain IFEval ids, through :func:`spar.ifeval.check`), so the
  verifier and the hybrid judge treat them exactly like IFEval's;
- **rubric** criteria are free text that only the LLM judge can decide:
  :meth:`CriteriaRegistry.rubrics` gives their texts, which the judge prompt lists as the
  requirements the LLM must check.

IFEval's 25 instruction ids stay usable as they are, and as the built-in pack ``ifeval``
(``ifeval/punctuation:no_comma``, kwargs from the request).

Servers read packs from a folder (``SPAR_CRITERIA__DIR``; a ConfigMap in the chart) and
reload it when a file changes (checked at most every ``reload_interval_s``, on use). A
pack that does not validate is refused with a message naming the file, the criterion and
the field; at start that stops the server, on a reload the packs loaded before stay in
use and the error is logged.

"Loose" results follow IFEval's definition: the criterion holds on some loosened variant
of the response (markdown asterisks removed, first and/or last line dropped).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml  # type: ignore[import-untyped]
from prometheus_client import Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from spar import ifeval
from spar.errors import FailedPrecondition, InvalidArgument
from spar.ifeval import Constraint, ConstraintCheck
from spar.metrics import Metrics

log = logging.getLogger(__name__)

PACK_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"
CRITERION_ID = r"^[a-z0-9][a-z0-9_.:-]{0,99}$"
#: The built-in pack of IFEval's instruction ids (``ifeval/<id>``, kwargs from the request).
IFEVAL_PACK = "ifeval"
#: File names a pack folder is read for (other files, and hidden ones, are ignored).
PACK_SUFFIXES = (".yaml", ".yml", ".json")
#: A pack file larger than this is refused (packs are small; a mistake is not).
MAX_PACK_BYTES = 1024 * 1024


class _Criterion(BaseModel):
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


class RegexCriterion(_Criterion):
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


class _Keywords(_Criterion):
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


class LengthCriterion(_Criterion):
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


class JsonCriterion(_Criterion):
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


class _Affix(_Criterion):
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


class LanguageCriterion(_Criterion):
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


class IfevalCriterion(_Criterion):
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


class RubricCriterion(_Criterion):
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

    def get(self, criterion_id: str) -> _Criterion | None:
        return next((c for c in self.criteria if c.id == criterion_id), None)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a pack file (published as docs/criteria-pack.schema.json)."""
    schema = CriteriaPack.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://spar.dev/schemas/criteria-pack.schema.json"
    return schema


# -- loading -------------------------------------------------------------------------


def _criterion_name(raw: Any, index: int) -> str:
    """How an error names criterion ``index``: its id when it has one."""
    try:
        cid = raw["criteria"][index]["id"]
    except (KeyError, IndexError, TypeError):
        cid = None
    return f"criterion {cid!r} (criteria[{index}])" if cid else f"criteria[{index}]"


def _explain(source: str, raw: Any, exc: ValidationError) -> str:
    """One clause per problem: file, criterion and field."""
    clauses = []
    for err in exc.errors():
        loc = list(err["loc"])
        where = [source]
        if len(loc) >= 2 and loc[0] == "criteria" and isinstance(loc[1], int):
            where.append(_criterion_name(raw, loc[1]))
            loc = loc[2:]
            # The discriminated union puts the criterion's type first; it is not a field.
            if loc and loc[0] in _TYPES:
                loc = loc[1:]
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = ["type"]
            message = f"{'unknown' if err['type'] == 'union_tag_invalid' else 'missing'} type; "
            message += f"use one of {', '.join(_TYPES)}"
        field = ".".join(str(p) for p in loc)
        if field:
            where.append(f"field {field}")
        clauses.append(": ".join(where) + ": " + message)
    return "; ".join(clauses)


_TYPES = (
    "regex", "keywords_present", "keywords_absent", "length", "json", "starts_with",
    "ends_with", "language", "ifeval", "rubric",
)  # fmt: skip


def parse_pack(text: str, source: str) -> CriteriaPack:
    """A pack from YAML or JSON text; InvalidArgument naming source, criterion and field."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidArgument(f"{source}{at}: not valid YAML or JSON: {problem}") from None
    if not isinstance(raw, dict):
        raise InvalidArgument(
            f"{source}: a pack is a mapping with name, description and criteria, not "
            f"{type(raw).__name__}"
        )
    try:
        pack = CriteriaPack.model_validate(raw)
    except ValidationError as exc:
        raise InvalidArgument(_explain(source, raw, exc)) from None
    for i, c in enumerate(pack.criteria):
        if isinstance(c, IfevalCriterion):
            try:
                ifeval.validate([c.constraint()])
            except InvalidArgument as exc:
                message = exc.message.removeprefix("constraints[0]: ")
                raise InvalidArgument(
                    f"{source}: {_criterion_name(raw, i)}: field kwargs: {message}"
                ) from None
    return pack


def load_pack(path: Path) -> CriteriaPack:
    try:
        size = path.stat().st_size
        if size > MAX_PACK_BYTES:
            raise InvalidArgument(f"{path}: {size} bytes; a pack may have {MAX_PACK_BYTES}")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise InvalidArgument(f"{path}: cannot be read: {exc.strerror or exc}") from None
    return parse_pack(text, str(path))


def pack_files(folder: Path) -> list[Path]:
    """The pack files of a folder (a ConfigMap's ``..data`` links are not packs)."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix in PACK_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def load_folder(folder: Path) -> dict[str, CriteriaPack]:
    """Every pack of folder by name; InvalidArgument for the first bad file or a name
    that two files use."""
    packs: dict[str, CriteriaPack] = {}
    origin: dict[str, Path] = {}
    for path in pack_files(folder):
        pack = load_pack(path)
        if pack.name in packs:
            raise InvalidArgument(
                f"{path}: pack name {pack.name!r} is already used by {origin[pack.name]}"
            )
        packs[pack.name] = pack
        origin[pack.name] = path
    return packs


def _signature(folder: Path) -> tuple[tuple[str, int, int], ...]:
    out = []
    for p in pack_files(folder):
        try:
            st = p.stat()  # follows the ConfigMap's symlinks to the current data
        except OSError:
            continue
        out.append((p.name, st.st_mtime_ns, st.st_size))
    return tuple(out)


# -- the registry --------------------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    """What a constraint id stands for."""

    id: str
    """The id as the request gave it."""
    pack: str
    """Pack name; "" for a plain IFEval id."""
    criterion: _Criterion | None
    """The pack's criterion; None for IFEval ids (plain or ``ifeval/``)."""
    ifeval_id: str = ""
    """The IFEval instruction id to check, for IFEval ids and ``ifeval`` criteria."""

    @property
    def checkable(self) -> bool:
        return self.criterion is None or self.criterion.checkable


def _loosened(response: str) -> list[str]:
    """IFEval's loose variants of a response: as is, without the first line, without the
    last line, without both, and each without asterisks (empty ones are skipped, as in
    IFEval)."""
    lines = response.split("\n")
    first = "\n".join(lines[1:]).strip()
    last = "\n".join(lines[:-1]).strip()
    both = "\n".join(lines[1:-1]).strip()
    out = [response, first, last, both]
    return out + [v.replace("*", "") for v in out]


class CriteriaRegistry:
    """The packs of one folder plus the built-in ``ifeval`` pack, reloaded when the
    folder changes. :meth:`check` is a CheckFn for the verifier."""

    def __init__(
        self,
        folder: Path | str | None = None,
        *,
        reload_interval_s: float = 2.0,
        on_reload: Callable[[bool, int], None] | None = None,
    ) -> None:
        self.folder = Path(folder).expanduser() if folder else None
        self.reload_interval_s = reload_interval_s
        self.on_reload = on_reload
        """Called after every (re)load attempt with (ok, packs loaded)."""
        self.last_error = ""
        """Why the last reload failed ("" when it worked)."""
        self._packs: dict[str, CriteriaPack] = {}
        self._signature: tuple[tuple[str, int, int], ...] = ()
        self._checked_at = 0.0
        self._lock = threading.Lock()

    def load(self) -> None:
        """Loads the folder now; InvalidArgument (file, criterion, field) when a pack is
        bad. A server calls this at start, so a bad pack stops it there."""
        if self.folder is None:
            return
        if not self.folder.is_dir():
            raise FailedPrecondition(f"criteria folder {self.folder} does not exist")
        with self._lock:
            signature = _signature(self.folder)
            try:
                packs = load_folder(self.folder)
            except InvalidArgument as exc:
                self.last_error = exc.message
                self._report(False)
                raise
            self._packs, self._signature, self.last_error = packs, signature, ""
            self._checked_at = time.monotonic()
        self._report(True)

    def _report(self, ok: bool) -> None:
        if self.on_reload is not None:
            self.on_reload(ok, len(self._packs))

    def maybe_reload(self) -> None:
        """Reloads when a file changed (checked at most every reload_interval_s). A bad
        folder keeps the packs loaded before; the error is logged once per change."""
        if self.folder is None:
            return
        now = time.monotonic()
        if now - self._checked_at < self.reload_interval_s:
            return
        with self._lock:
            if now - self._checked_at < self.reload_interval_s:
                return
            self._checked_at = now
            signature = _signature(self.folder)
            if signature == self._signature:
                return
            self._signature = signature
            try:
                packs = load_folder(self.folder)
            except InvalidArgument as exc:
                self.last_error = exc.message
                log.error(
                    "criteria packs in %s not reloaded, keeping the %d loaded before: %s",
                    self.folder, len(self._packs), exc.message,
                )  # fmt: skip
                ok = False
            else:
                self._packs, self.last_error, ok = packs, "", True
                log.info("criteria packs reloaded from %s: %s", self.folder, sorted(packs))
        self._report(ok)

    def packs(self) -> dict[str, CriteriaPack]:
        """User packs by name (the built-in ``ifeval`` pack is not among them)."""
        self.maybe_reload()
        return dict(self._packs)

    # -- constraints ---------------------------------------------------------------------

    def resolve(self, instruction_id: str) -> Resolved:
        """What an id stands for; InvalidArgument for unknown packs and criteria."""
        if "/" not in instruction_id:
            return Resolved(instruction_id, "", None, instruction_id)
        pack_name, _, cid = instruction_id.partition("/")
        if pack_name == IFEVAL_PACK:
            return Resolved(instruction_id, IFEVAL_PACK, None, cid)
        pack = self.packs().get(pack_name)
        if pack is None:
            known = ", ".join(sorted([*self._packs, IFEVAL_PACK]))
            raise InvalidArgument(
                f"unknown criteria pack {pack_name!r} in {instruction_id!r}; loaded: {known}"
            )
        criterion = pack.get(cid)
        if criterion is None:
            ids = ", ".join(c.id for c in pack.criteria)
            raise InvalidArgument(f"pack {pack_name!r} has no criterion {cid!r}; it has {ids}")
        iid = criterion.instruction_id if isinstance(criterion, IfevalCriterion) else ""
        return Resolved(instruction_id, pack_name, criterion, iid)

    def expand(self, refs: Iterable[str]) -> list[Constraint]:
        """Constraints of pack references: ``pack`` (every criterion of it) or
        ``pack/criterion``; duplicates are dropped, order kept."""
        out: list[Constraint] = []
        seen: set[str] = set()
        for ref in refs:
            ref = ref.strip()
            if not ref:
                raise InvalidArgument("a criteria reference is empty; use PACK or PACK/CRITERION")
            if "/" in ref:
                self.resolve(ref)
                ids = [ref]
            elif ref == IFEVAL_PACK:
                raise InvalidArgument(
                    "the ifeval pack needs kwargs per instruction; name its ids as constraints "
                    "(e.g. punctuation:no_comma) instead of the whole pack"
                )
            else:
                pack = self.packs().get(ref)
                if pack is None:
                    known = ", ".join(sorted(self._packs)) or "none"
                    raise InvalidArgument(f"unknown criteria pack {ref!r}; loaded: {known}")
                ids = [f"{ref}/{c.id}" for c in pack.criteria]
            for i in ids:
                if i not in seen:
                    seen.add(i)
                    out.append(Constraint(i, {}))
        return out

    def validate(self, constraints: Sequence[Constraint], instruction: str = "") -> list[str]:
        """Descriptions of the constraints; InvalidArgument naming ``constraints[i]``."""
        out: list[str] = []
        for i, c in enumerate(constraints):
            try:
                r = self.resolve(c.instruction_id)
                if r.criterion is None:
                    out.extend(ifeval.validate([Constraint(r.ifeval_id, c.kwargs)], instruction))
                    continue
                if c.kwargs:
                    raise InvalidArgument(
                        f"{c.instruction_id} takes no kwargs (the pack fixes its parameters)"
                    )
                out.append(r.criterion.describe())
            except InvalidArgument as exc:
                message = exc.message.removeprefix("constraints[0]: ")
                raise InvalidArgument(f"constraints[{i}]: {message}") from None
        return out

    def split(self, constraints: Sequence[Constraint]) -> tuple[list[Constraint], list[Constraint]]:
        """(checkable, rubric) constraints, each in the given order."""
        checkable: list[Constraint] = []
        rubric: list[Constraint] = []
        for c in constraints:
            (checkable if self.resolve(c.instruction_id).checkable else rubric).append(c)
        return checkable, rubric

    def rubrics(self, constraints: Sequence[Constraint]) -> list[str]:
        """The rubric texts among constraints: the requirements the LLM judge must check."""
        out = []
        for c in constraints:
            r = self.resolve(c.instruction_id)
            if isinstance(r.criterion, RubricCriterion):
                out.append(r.criterion.text)
        return out

    def check(
        self, instruction: str, response: str, constraints: Sequence[Constraint]
    ) -> list[ConstraintCheck]:
        """Strict and loose results of every checkable constraint, in order (a CheckFn).

        IFEval ids go to :func:`spar.ifeval.check`; pack criteria are checked here. An
        unknown id, or a rubric criterion (only the LLM judge decides those), gives a
        result with ``error`` set (not followed), as an unknown IFEval id does.
        """
        out: list[ConstraintCheck | None] = [None] * len(constraints)
        via_ifeval: list[tuple[int, Constraint]] = []
        for i, c in enumerate(constraints):
            try:
                r = self.resolve(c.instruction_id)
            except InvalidArgument as exc:
                out[i] = ConstraintCheck(c.instruction_id, False, False, error=exc.message)
                continue
            if r.criterion is None or isinstance(r.criterion, IfevalCriterion):
                kwargs = c.kwargs if r.criterion is None else r.criterion.kwargs
                via_ifeval.append((i, Constraint(r.ifeval_id, kwargs)))
                continue
            out[i] = self._check_one(c.instruction_id, r.criterion, instruction, response)
        if via_ifeval:
            checks = ifeval.check(instruction, response, [c for _, c in via_ifeval])
            for (i, _), result in zip(via_ifeval, checks, strict=True):
                criterion = self.resolve(constraints[i].instruction_id).criterion
                out[i] = ConstraintCheck(
                    constraints[i].instruction_id,
                    result.strict,
                    result.loose,
                    criterion.describe()
                    if criterion and criterion.description
                    else result.description,
                    result.error,
                )
        return [c for c in out if c is not None]

    def _check_one(
        self, cid: str, criterion: _Criterion, instruction: str, response: str
    ) -> ConstraintCheck:
        description = criterion.describe()
        if not criterion.checkable:
            return ConstraintCheck(
                cid, False, False, description, "a rubric criterion: only the LLM judge decides it"
            )
        try:
            strict = criterion.holds(response, instruction)
            loose = strict or any(
                criterion.holds(v, instruction) for v in _loosened(response)[1:] if v.strip()
            )
        except Exception as exc:  # a checker failing on odd text counts as not followed
            return ConstraintCheck(cid, False, False, description, f"checker failed: {exc}")
        if not strict:
            with contextlib.suppress(Exception):
                measured = criterion.measure(response)
                if measured:
                    description = f"{description} ({measured})"
        return ConstraintCheck(cid, strict, loose, description)


def pack_metrics(metrics: Metrics) -> Callable[[bool, int], None]:
    """The criteria families of docs/metrics.md on a server's registry; returns the
    registry's ``on_reload`` callback that keeps them current."""
    service = metrics.service
    loaded = Gauge(
        "spar_criteria_packs_loaded",
        "Criteria packs in use (SPAR_CRITERIA__DIR; the built-in ifeval pack not counted).",
        ["service"],
        registry=metrics.registry,
    )
    reloads = Counter(
        "spar_criteria_reloads",
        "Loads of the criteria folder by result (error: a bad pack; the old ones stay).",
        ["service", "result"],
        registry=metrics.registry,
    )
    loaded.labels(service).set(0)
    for result in ("ok", "error"):
        reloads.labels(service, result)

    def on_reload(ok: bool, packs: int) -> None:
        reloads.labels(service, "ok" if ok else "error").inc()
        loaded.labels(service).set(packs)

    return on_reload


# -- the process's registry ------------------------------------------------------------

_registry: CriteriaRegistry | None = None
_registry_lock = threading.Lock()


def configure(
    folder: Path | str | None,
    *,
    reload_interval_s: float = 2.0,
    on_reload: Callable[[bool, int], None] | None = None,
) -> CriteriaRegistry:
    """Sets the process's registry (servers call it at start) and loads the folder;
    InvalidArgument when a pack is bad."""
    global _registry
    reg = CriteriaRegistry(folder, reload_interval_s=reload_interval_s, on_reload=on_reload)
    reg.load()
    with _registry_lock:
        _registry = reg
    return reg


def registry() -> CriteriaRegistry:
    """The process's registry: the configured one, else that of the settings'
    ``criteria.dir`` (``SPAR_CRITERIA__DIR``; none: IFEval ids only)."""
    global _registry
    with _registry_lock:
        if _registry is None:
            from spar.config import Settings

            c = Settings().criteria
            reg = CriteriaRegistry(c.dir or None, reload_interval_s=c.reload_interval_s)
            reg.load()
            _registry = reg
        return _registry


def check(
    instruction: str, response: str, constraints: Sequence[Constraint]
) -> list[ConstraintCheck]:
    """:meth:`CriteriaRegistry.check` of the process's registry (a CheckFn)."""
    return registry().check(instruction, response, constraints)


def rubrics(constraints: Sequence[Constraint]) -> list[str]:
    """:meth:`CriteriaRegistry.rubrics` of the process's registry."""
    return registry().rubrics(constraints)


def describe_pack(pack: CriteriaPack) -> list[str]:
    """Lines describing a pack for people (``spar criteria show``)."""
    lines = [f"{pack.name}: {pack.description}" if pack.description else pack.name]
    for c in pack.criteria:
        kind = "rubric (LLM judge)" if not c.checkable else f"{c.type} (program)"  # type: ignore[attr-defined]
        lines.append(f"  {pack.name}/{c.id:24s} {kind:28s} {c.describe()}")
    return lines
