from __future__ import annotations

import json
from pathlib import Path

import pytest

from spar.adapter_files import (
    check_name,
    copy_adapter,
    folder_digest,
    validate_adapter_dir,
    version_name,
)
from spar.errors import FailedPrecondition, InvalidArgument, NotFound


def make_adapter(folder: Path, rank: int = 8) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": rank}))
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    return folder


def test_digest_depends_on_content_not_location(tmp_path: Path) -> None:
    a = make_adapter(tmp_path / "a")
    b = tmp_path / "b"
    copy_adapter(a, b)
    assert folder_digest(a) == folder_digest(b)
    (b / "adapter_model.safetensors").write_bytes(b"weightz")
    assert folder_digest(a) != folder_digest(b)


def test_version_name() -> None:
    assert version_name("actor", 3, "0123456789abcdef" * 4) == "actor-3-0123456789ab"


@pytest.mark.parametrize("name", ["../etc", "a/b", "", "base", "-x", "a" * 200, "x..y"])
def test_bad_names(name: str) -> None:
    with pytest.raises(InvalidArgument):
        check_name(name)


def test_validation(tmp_path: Path) -> None:
    good = make_adapter(tmp_path / "good")
    assert validate_adapter_dir(good, max_rank=16)["r"] == 8
    with pytest.raises(NotFound):
        validate_adapter_dir(tmp_path / "missing", max_rank=16)
    with pytest.raises(FailedPrecondition, match="rank 32 exceeds"):
        validate_adapter_dir(make_adapter(tmp_path / "big", rank=32), max_rank=16)
    bad = make_adapter(tmp_path / "bad")
    (bad / "adapter_config.json").write_text("{nope")
    with pytest.raises(FailedPrecondition, match="not valid JSON"):
        validate_adapter_dir(bad, max_rank=16)
    empty = make_adapter(tmp_path / "noweights")
    (empty / "adapter_model.safetensors").unlink()
    with pytest.raises(FailedPrecondition, match="no adapter weights"):
        validate_adapter_dir(empty, max_rank=16)
