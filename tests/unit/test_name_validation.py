"""Adapter names, store paths and request paths/ids can never escape their folder or crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.trainer.store import ArtifactStore
from spar.adapter_fetch import CorruptTransfer, check_relative_path
from spar.adapter_files import check_name
from spar.errors import MAX_MESSAGE_CHARS, InvalidArgument, NotFound, SparError
from spar.request_checks import check_path_text, check_token, expand_path

BAD_NAMES = [
    "",
    ".",
    "..",
    "../x",
    "a/../b",
    "/abs",
    "a/b",
    "a\\b",
    "-flag",
    ".hidden",
    "x..y",
    "a\0b",
    "a\n",
    "name\n",
    "a b",
    "a" * 129,
    "base",
    "ａｃｔｏｒ-1",  # fullwidth letters
    "actor\u2215x",  # division slash looks like '/'
    "actor\u202e1",  # right-to-left override
    "ac\u0301tor",  # combining accent
    "é",
    "actor-1-\u00a0",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_adapter_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgument):
        check_name(name)


@pytest.mark.parametrize("name", ["actor-3-0123456789ab", "a", "A.b_c-1", "x" * 128])
def test_good_adapter_names_pass(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", [n for n in BAD_NAMES if n != "base"])
def test_store_refuses_bad_names_before_touching_disk(tmp_path: Path, name: str) -> None:
    store = ArtifactStore(tmp_path / "store")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "manifest.json").write_text("{}")
    with pytest.raises(InvalidArgument):
        store.get(name)
    with pytest.raises(InvalidArgument):
        store.version_dir(name)


def test_store_unknown_good_name_is_not_found(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    with pytest.raises(NotFound):
        store.get("actor-1-0123456789ab")


@pytest.mark.parametrize(
    "path", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a\\b", "a\0b", "x" * 256]
)
def test_fetched_file_paths_stay_inside(path: str) -> None:
    with pytest.raises(CorruptTransfer):
        check_relative_path(path)


def test_request_paths_are_bounded() -> None:
    assert check_path_text("/models/m", "p", 100) == "/models/m"
    for bad in ["x" * 101, "a\0b", "/" + "y" * 256]:
        with pytest.raises(InvalidArgument):
            check_path_text(bad, "p", 100)
    with pytest.raises(InvalidArgument, match="not a usable path"):
        expand_path("~no-such-user-spar-test/model", "base_model")


@pytest.mark.parametrize("value", ["a b", "x" * 129, "é", "a\n", "\0"])
def test_tokens_are_printable_ascii(value: str) -> None:
    with pytest.raises(InvalidArgument):
        check_token(value, "request_id", 128)
    assert check_token("req-1_ok:2", "request_id", 128) == "req-1_ok:2"


def test_error_messages_are_bounded() -> None:
    err = SparError("x" * 100_000)
    assert len(err.message) < MAX_MESSAGE_CHARS + 40
    assert err.message.endswith("more characters)")
