"""The artifact store folder: content-addressed names, atomic publish, no escapes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from services.trainer.store import PARTIAL_PREFIX, ArtifactStore
from spar.adapter_files import folder_digest, version_name
from spar.errors import DataLoss, InvalidArgument, NotFound


def make_adapter(folder: Path, weights: bytes = b"weights") -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (folder / "adapter_model.safetensors").write_bytes(weights)
    return folder


def publish(store: ArtifactStore, folder: Path, **kwargs: object) -> dict[str, object]:
    args: dict[str, object] = {"role": "actor", "iteration": 2, "base_model": "/m"} | kwargs
    return store.publish(folder, **args)  # type: ignore[arg-type]


def test_publish_names_the_version_by_its_content(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    src = make_adapter(tmp_path / "a")
    m = publish(store, src, job_id="job-1", dataset_digest="d" * 64, metrics={"loss": 0.5})
    digest = folder_digest(src)
    assert m["version"] == {
        "name": version_name("actor", 2, digest),
        "digest": digest,
        "role": "actor",
        "iteration": 2,
    }
    name = m["version"]["name"]  # type: ignore[index]
    assert folder_digest(store.files_dir(name)) == digest
    assert sorted(f["path"] for f in m["files"]) == [  # type: ignore[attr-defined]
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert store.get(name) == m and store.list() == [m] and store.list("refiner") == []
    store.verify(name)
    # The same content again is the same version (names are never reused for other bytes).
    again = publish(store, src, job_id="job-2")
    assert again["version"] == m["version"] and again["job_id"] == "job-1"
    other = publish(store, make_adapter(tmp_path / "b", b"other"))
    assert other["version"]["name"] != name  # type: ignore[index]
    newest = store.list()[0]["version"]["name"]
    assert newest == other["version"]["name"]  # type: ignore[index]


def test_a_crash_during_publish_leaves_nothing_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ArtifactStore(tmp_path / "store")
    src = make_adapter(tmp_path / "a")

    def crash(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError, match="disk full"):
        publish(store, src)
    monkeypatch.undo()
    assert store.list() == [] and list(store.root.iterdir()) == []
    # A killed process cannot clean up: its partial folder is never listed and goes at start.
    partial = tmp_path / "store" / f"{PARTIAL_PREFIX}actor-2-0123-abcd"
    (partial / "files").mkdir(parents=True)
    (partial / "manifest.json").write_text("{}")
    assert store.list() == []
    with pytest.raises(NotFound):
        store.get(partial.name[1:])
    ArtifactStore(tmp_path / "store")
    assert not partial.exists()


def test_names_and_paths_cannot_escape(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    name = publish(store, make_adapter(tmp_path / "a"))["version"]["name"]  # type: ignore[index]
    for bad in ("../a", "a/../../b", "/etc", ".partial-x", "base"):
        with pytest.raises(InvalidArgument):
            store.get(bad)
    with pytest.raises(NotFound, match="not in the store"):
        store.get("actor-9-000000000000")
    with pytest.raises(InvalidArgument, match="escapes"):
        store.file_path(name, "../manifest.json")
    with pytest.raises(InvalidArgument, match="role='critic'"):
        publish(store, make_adapter(tmp_path / "c"), role="critic")


def test_verify_detects_changed_bytes(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    name = publish(store, make_adapter(tmp_path / "a"))["version"]["name"]  # type: ignore[index]
    (store.files_dir(name) / "adapter_model.safetensors").write_bytes(b"weightz")
    with pytest.raises(DataLoss):
        store.verify(name)


def test_a_restarted_store_replaces_a_damaged_version_on_republish(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    src = make_adapter(tmp_path / "a")
    first = publish(store, src, job_id="job-1")
    name = first["version"]["name"]  # type: ignore[index]
    weights = store.files_dir(name) / "adapter_model.safetensors"
    weights.write_bytes(b"bit rot")  # damaged while the trainer was down

    restarted = ArtifactStore(tmp_path / "store")
    assert not restarted.intact(name)
    again = publish(restarted, src, job_id="job-2")
    assert again["version"] == first["version"] and again["job_id"] == "job-2"
    restarted.verify(name)
    assert weights.read_bytes() == b"weights"
    assert [p.name for p in restarted.root.iterdir()] == [name], "nothing set aside is left"
    # An intact version is returned as it is.
    assert publish(restarted, src, job_id="job-3")["job_id"] == "job-2"


def test_a_version_without_a_readable_manifest_is_replaced(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    src = make_adapter(tmp_path / "a")
    name = publish(store, src)["version"]["name"]  # type: ignore[index]
    (store.version_dir(name) / "manifest.json").write_text("{")
    with pytest.raises(DataLoss, match="unreadable"):
        store.get(name)
    assert publish(ArtifactStore(tmp_path / "store"), src)["version"]["name"] == name
    store.verify(name)
