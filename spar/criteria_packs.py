"""Criteria pack files: reading one (YAML or JSON), a folder of them, and the errors that
name the file, the criterion and the field of what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]
from pydantic import ValidationError

from spar import ifeval
from spar.criterion_types import MAX_PACK_BYTES, PACK_SUFFIXES, CriteriaPack, IfevalCriterion
from spar.errors import InvalidArgument


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


def folder_signature(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when a pack file of folder changes (names, mtimes, sizes)."""
    out = []
    for p in pack_files(folder):
        try:
            st = p.stat()  # follows the ConfigMap's symlinks to the current data
        except OSError:
            continue
        out.append((p.name, st.st_mtime_ns, st.st_size))
    return tuple(out)
