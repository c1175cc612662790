"""Prompt sets on disk: IFEval-format jsonl, plain prompt lists, and how they are read.

A :class:`PromptRecord` is one prompt in IFEval's own form (``key, prompt,
instruction_id_list, kwargs``, as in google-research's ``input_data.jsonl``); a plain
prompt has no constraints. A line may also name criteria of the criteria packs
(``"criteria": ["support"]`` or ``["support/greeting", ...]``, spar.criteria); they join
its instruction ids (``support/greeting``, no kwargs). Loaders name ``file:line`` for
every bad record, and check ids and kwargs with the criteria registry (IFEval's own
checks for IFEval ids). spar.prompt_synthesis writes new sets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spar import criteria, ifeval
from spar.atomic_files import write_atomic
from spar.errors import InvalidArgument

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
    write_atomic(path, to_jsonl(records).encode())


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
