from __future__ import annotations

from pathlib import Path

import pytest

from spar.adapter_registry import AdapterRegistry, HostedVersion
from spar.engine.protocol import AdapterRef
from spar.errors import AlreadyExists, FailedPrecondition, NotFound


def version(reg: AdapterRegistry, name: str, digest: str = "d") -> HostedVersion:
    return HostedVersion(
        ref=AdapterRef(name, reg.next_engine_id(), Path(name)),
        digest=digest,
        role="actor",
        iteration=1,
    )


def test_empty_name_follows_the_active_alias() -> None:
    reg = AdapterRegistry()
    assert reg.resolve("") is None  # base model
    reg.add(version(reg, "a"))
    reg.add(version(reg, "b"))
    assert reg.activate("a") == (None, "a")
    assert reg.resolve("").name == "a"  # type: ignore[union-attr]
    assert reg.activate("b") == ("a", "b")
    assert reg.resolve("").name == "b"  # type: ignore[union-attr]
    assert reg.resolve("base") is None
    assert reg.activate("base") == ("b", None)


def test_lease_keeps_the_version_it_started_with() -> None:
    reg = AdapterRegistry()
    reg.add(version(reg, "a"))
    reg.add(version(reg, "b"))
    reg.activate("a")
    held = reg.acquire("")
    reg.activate("b")
    assert held is not None and held.name == "a" and held.in_flight == 1
    assert reg.retire("a") is None  # in use: unloaded later
    with pytest.raises(NotFound):
        reg.resolve("a")  # retiring: no new requests
    assert reg.release(held) is True  # last request ended: unload now


def test_engine_ids_are_never_reused() -> None:
    reg = AdapterRegistry()
    ids = {reg.next_engine_id() for _ in range(100)}
    assert len(ids) == 100


def test_errors() -> None:
    reg = AdapterRegistry()
    reg.add(version(reg, "a", digest="1"))
    with pytest.raises(AlreadyExists):
        reg.add(version(reg, "a", digest="2"))
    with pytest.raises(NotFound, match="not loaded"):
        reg.resolve("zzz")
    with pytest.raises(FailedPrecondition, match="StageAdapter"):
        reg.activate("zzz")
    reg.activate("a")
    with pytest.raises(FailedPrecondition, match="active"):
        reg.retire("a")
    assert reg.retire("zzz") is None
