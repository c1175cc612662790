"""Dataclasses as JSON documents and back, by their fields' type hints.

spar keeps its state in dataclasses and writes them as plain JSON (job and iteration
records); this is the one mapping between the two, so a record class declares its fields
and nothing more. A document maps field names to values: nested dataclasses are objects,
tuples and lists arrays, datetimes ISO 8601 text (a time without a zone is UTC), and a
``Literal`` field's value must be one of its names. A record file names its format in a
``schema`` field (:func:`as_document`, :func:`from_document`).

Reading is strict where a record could be misread: an unknown field is a TypeError, a
missing field without a default a KeyError (an optional one, ``X | None``, is None), a
value outside its ``Literal`` a ValueError, so callers catch those three.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


def as_json(value: Any) -> Any:
    """A dataclass (or a value inside one) as JSON-ready data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    return value


def from_json(cls: type[T], doc: Mapping[str, Any]) -> T:
    """The dataclass ``cls`` of a document that :func:`as_json` wrote."""
    if not isinstance(doc, Mapping):
        raise TypeError(f"{cls.__name__} is not a JSON object")
    hints = get_type_hints(cls)
    unknown = set(doc) - set(hints)
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {sorted(unknown)[0]!r}")
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in doc:
            values[f.name] = _value(hints[f.name], doc[f.name], f.name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            if not _optional(hints[f.name]):
                raise KeyError(f"{cls.__name__}.{f.name}")
            values[f.name] = None
    return cls(**values)


def as_document(schema: str, record: Any) -> dict[str, Any]:
    """A record as a JSON document that names its format: ``{"schema": schema, ...fields}``."""
    return {"schema": schema, **as_json(record)}


def from_document(cls: type[T], schema: str, doc: Mapping[str, Any]) -> T:
    """The record of a document that :func:`as_document` wrote; a ValueError when the
    document names another schema (or none)."""
    if doc.get("schema") != schema:
        raise ValueError(f"schema {str(doc.get('schema'))[:60]!r} is not {schema}")
    return from_json(cls, {k: v for k, v in doc.items() if k != "schema"})


def _optional(hint: Any) -> bool:
    return get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint)


def _value(hint: Any, value: Any, name: str) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = (a for a in args if a is not type(None))
        return _value(inner, value, name)
    if dataclasses.is_dataclass(hint):
        return from_json(hint, value)  # type: ignore[arg-type]
    if hint is datetime:
        t = datetime.fromisoformat(value)
        return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{name} {str(value)[:40]!r} is unknown; use one of {list(args)}")
        return value
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_value(args[0], v, name) for v in value)
        return tuple(_value(a, v, name) for a, v in zip(args, value, strict=True))
    if origin is list:
        return [_value(args[0], v, name) for v in value]
    if origin is dict:
        return {k: _value(args[1], v, name) for k, v in value.items()}
    if hint in (int, float, str):
        return hint(value)
    return value
