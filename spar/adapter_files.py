"""Adapter folders on disk: names, content digests and validation. No network, no engine.

A version's digest is the sha256 over the sorted ``<path>\\0<sha256 of file>\\n`` lines of
its files, so the same weights always give the same name, wherever they were copied.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from spar.errors import FailedPrecondition, InvalidArgument, NotFound

BASE = "base"
"""Reserved name: the base model without an adapter."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
PARTIAL_SUFFIX = ".partial"
"""A copy in progress (copy_adapter); never complete, removed at the next start."""


@dataclass(frozen=True)
class FileDigest:
    """One file of an adapter folder, as a manifest lists it."""

    path: str
    """Relative to the folder, with forward slashes."""
    size: int
    """In bytes."""
    sha256: str


def check_name(name: str) -> str:
    """Returns name when it is a valid adapter version name, else raises InvalidArgument."""
    if name == BASE:
        raise InvalidArgument(f"{BASE!r} is reserved for the base model; name the adapter")
    # fullmatch: with match, "$" would also accept a name that ends in a newline.
    if not _NAME.fullmatch(name) or ".." in name:
        raise InvalidArgument(
            f"adapter name {name[:80]!r} is invalid: use 1-128 characters of letters, digits, "
            "'.', '_' and '-', starting with a letter or digit (e.g. actor-3-0123456789ab)"
        )
    return name


def version_name(role: str, iteration: int, digest: str) -> str:
    """The immutable name of a version: ``<role>-<iteration>-<sha256[:12]>``."""
    return f"{role}-{iteration}-{digest[:12]}"


def file_digests(folder: Path) -> list[FileDigest]:
    out = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        out.append(
            FileDigest(path.relative_to(folder).as_posix(), path.stat().st_size, h.hexdigest())
        )
    return out


def digest_of(files: list[FileDigest]) -> str:
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"{f.path}\0{f.sha256}\n".encode())
    return h.hexdigest()


def folder_digest(folder: Path) -> str:
    return digest_of(file_digests(folder))


def validate_adapter_dir(folder: Path, max_rank: int) -> dict[str, object]:
    """Checks that folder holds a usable PEFT LoRA adapter; returns its adapter_config."""
    if not folder.is_dir():
        raise NotFound(f"adapter folder {folder} does not exist on this replica")
    config_path = folder / "adapter_config.json"
    if not config_path.is_file():
        raise FailedPrecondition(
            f"{folder} is not a PEFT adapter folder: adapter_config.json is missing "
            "(save adapters with PeftModel.save_pretrained)"
        )
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FailedPrecondition(f"{config_path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise FailedPrecondition(f"{config_path} must hold a JSON object")
    if config.get("peft_type", "LORA") != "LORA":
        raise FailedPrecondition(
            f"{folder}: only LoRA adapters are supported, not {config.get('peft_type')}"
        )
    rank = config.get("r")
    if not isinstance(rank, int) or rank <= 0:
        raise FailedPrecondition(f"{config_path}: 'r' (LoRA rank) must be a positive integer")
    if rank > max_rank:
        raise FailedPrecondition(
            f"adapter rank {rank} exceeds the server's max LoRA rank {max_rank}; "
            "retrain with a smaller rank or raise SPAR_ENGINE__MAX_LORA_RANK"
        )
    if not any((folder / w).is_file() for w in WEIGHT_FILES):
        raise FailedPrecondition(f"{folder} has no adapter weights ({' or '.join(WEIGHT_FILES)})")
    return config


def copy_adapter(src: Path, dest: Path) -> None:
    """Copies an adapter folder atomically (a crash leaves no half-copied dest)."""
    tmp = dest.with_name(dest.name + PARTIAL_SUFFIX)
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
