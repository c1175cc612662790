"""A replica's adapter folder across restarts: leftovers removed, verified copies reused,
corrupted ones deleted, new folders never on old names, one live owner per folder."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from spar.adapter_cache import AdapterCache, copy_matches, copy_of, parse_version_name
from spar.adapter_files import folder_digest, version_name


def make_adapter(folder: Path, weights: bytes = b"weights") -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (folder / "adapter_model.safetensors").write_bytes(weights)
    return folder


def cached_version(root: Path, iteration: int = 1, tag: str = "1") -> tuple[str, str, Path]:
    """A copy as an earlier run left it: (name, digest, folder)."""
    source = make_adapter(root.parent / f"src-{iteration}-{tag}", weights=b"w%d" % iteration)
    digest = folder_digest(source)
    name = version_name("actor", iteration, digest)
    copy = root / f"{name}.{tag}"
    source.rename(copy)
    return name, digest, copy


def test_names_of_copies_and_versions() -> None:
    assert copy_of("actor-1-6d29de7ff359.1") == "actor-1-6d29de7ff359"  # the old counter tags
    assert copy_of("actor-1-6d29de7ff359.0a1b2c3d4e5f") == "actor-1-6d29de7ff359"
    assert copy_of("my.adapter.ff") == "my.adapter"
    for other in (".lock", "actor-1-6d29de7ff359", "actor-1-6d29de7ff359.partial", "x.1.zz"):
        assert copy_of(other) is None, other
    parsed = parse_version_name("refiner-12-0123456789ab")
    assert parsed is not None and (parsed.role, parsed.iteration) == ("refiner", 12)
    assert parse_version_name("my-adapter") is None


def test_a_copy_matches_by_full_digest_or_else_the_digest_in_its_name() -> None:
    digest = "ab" * 32
    name = version_name("actor", 1, digest)
    assert copy_matches(name, digest, digest)
    assert not copy_matches(name, digest, "cd" * 32)
    assert copy_matches(name, "", digest)
    assert not copy_matches(name, "", "cd" * 32)
    assert not copy_matches("my-adapter", "", digest), "an unverifiable copy is not used"


@contextmanager
def opened(root: Path) -> Iterator[AdapterCache]:
    """The cache of root, closed at the end (which releases its folder lock)."""
    cache = AdapterCache.open(root)
    try:
        yield cache
    finally:
        cache.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A replica's adapter folder."""
    folder = tmp_path / "adapters" / "actor"
    folder.mkdir(parents=True)
    return folder


def test_start_removes_leftovers_and_keeps_complete_copies(root: Path) -> None:
    name, _, copy = cached_version(root)
    for leftover in (f".fetch-{name}-cf567fb1", f"{name}.0a1b2c3d.partial"):
        make_adapter(root / leftover)
    (root / "notes.txt").write_text("not ours to delete")

    with opened(root) as cache:
        assert cache.root == root and cache.removed == 2
        assert sorted(p.name for p in root.iterdir()) == [".lock", copy.name, "notes.txt"]
        assert cache.cached() == [name]


def test_a_verified_copy_is_claimed_where_it_lies(root: Path) -> None:
    name, digest, copy = cached_version(root)
    with opened(root) as cache:
        claimed = cache.claim(name, digest)
        assert claimed is not None
        assert (claimed.path, claimed.digest, claimed.iteration) == (copy, digest, 1)
        assert cache.claim(name, digest) is None, "a copy is claimed once"


def test_a_corrupted_copy_is_deleted_not_used(root: Path) -> None:
    name, digest, copy = cached_version(root)
    (copy / "adapter_model.safetensors").write_bytes(b"bit rot")
    with opened(root) as cache:
        assert cache.claim(name, digest) is None
        assert not copy.exists()
        name2, _, copy2 = cached_version(root, iteration=2)
        (copy2 / "adapter_config.json").write_text("{}")
    # Without the digest, the one in the name still catches it.
    with opened(root) as cache:
        assert cache.claim(name2) is None and not copy2.exists()


def test_new_folders_never_reuse_an_old_name(root: Path) -> None:
    name, _, old = cached_version(root, tag="1")
    with opened(root) as cache:
        fresh = {cache.new_folder(name) for _ in range(50)}
        assert old not in fresh and len(fresh) == 50
        assert all(p.parent == root and copy_of(p.name) == name for p in fresh)


def test_unclaimed_copies_are_dropped(root: Path) -> None:
    wanted, digest, keep = cached_version(root, iteration=2)
    stale, _, gone = cached_version(root, iteration=1)
    with opened(root) as cache:
        assert cache.claim(wanted, digest) is not None
        assert cache.drop_unclaimed() == [stale]
        assert keep.is_dir() and not gone.exists()


def test_a_live_owner_keeps_its_folder_and_the_next_replica_gets_another(root: Path) -> None:
    name, digest, copy = cached_version(root)
    with opened(root):
        fetching = make_adapter(root / f".fetch-{name}-00000000")  # the first one's transfer
        with opened(root) as second:
            assert second.root == root.with_name("actor.2")
            assert fetching.is_dir(), "another replica's transfer in progress was left alone"
            assert second.claim(name, digest) is None and copy.is_dir()
    # Once the first replica is gone, its folder is the next one's, with its copies.
    with opened(root) as again:
        assert again.root == root and not fetching.exists()
        assert again.claim(name, digest) is not None


def test_an_unwritable_folder_is_a_clear_error(tmp_path: Path) -> None:
    from spar.errors import FailedPrecondition

    blocker = tmp_path / "adapters"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(FailedPrecondition, match="cannot use the adapter folder"):
        AdapterCache.open(blocker / "actor")
