"""Two-phase rollout over scripted replicas: all-or-nothing staging, activation, retire,
and the desired versions it records (the one rollout path production runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.coordinator.rollout import (
    Hosted,
    RolloutFailed,
    Version,
    rollout,
    to_retire,
)
from services.coordinator.state import StateStore


class FakeReplica:
    """Scripted AdapterHost: records calls, fails where told to."""

    def __init__(self, target: str, *, loaded: set[str] | None = None, fail_stage: bool = False,
                 fail_activate: bool = False, active: str = "") -> None:  # fmt: skip
        self.target = target
        self.loaded = set(loaded or ())
        self.active = active
        self.fail_stage = fail_stage
        self.fail_activate = fail_activate
        self.calls: list[tuple[str, str]] = []

    async def stage(self, version: Version, store_target: str) -> bool:
        self.calls.append(("stage", version.name))
        if self.fail_stage:
            raise ConnectionError("replica down")
        new = version.name not in self.loaded
        self.loaded.add(version.name)
        return new

    async def activate(self, name: str) -> None:
        self.calls.append(("activate", name))
        if self.fail_activate and name != "old":
            raise ConnectionError("refused")
        self.active = "" if name == "base" else name

    async def retire(self, name: str) -> None:
        self.calls.append(("retire", name))
        self.loaded.discard(name)

    async def hosted(self) -> Hosted:
        return Hosted(frozenset(self.loaded), self.active)


NEW = Version("actor-2-bbbbbbbbbbbb", "b" * 64, "actor", 2)
OLD = Version("old", "a" * 64, "actor", 1)


def serving_old(tmp_path: Path) -> StateStore:
    """A state store whose desired actor version is OLD (what the replicas serve)."""
    store = StateStore(tmp_path)
    store.set_desired("actor", OLD, None)
    return store


async def test_stage_everywhere_then_activate_everywhere_then_retire(tmp_path: Path) -> None:
    store = serving_old(tmp_path)
    replicas = [FakeReplica(f"r{i}", loaded={"ancient", "old"}, active="old") for i in range(3)]
    report = await rollout(store, "actor", NEW, replicas, "store:1")
    for r in replicas:
        kinds = [c[0] for c in r.calls]
        assert kinds.index("stage") < kinds.index("activate") < kinds.index("retire")
        assert r.active == NEW.name
        assert r.loaded == {NEW.name, "old"}, "previous stays loaded, older ones go"
    assert report.staged_now == ["r0", "r1", "r2"]
    # Nobody activates before everybody staged.
    assert all(("activate", NEW.name) not in r.calls[:1] for r in replicas)
    assert store.desired("actor") == (NEW, OLD)


async def test_one_failed_stage_activates_nothing_and_drops_copies(tmp_path: Path) -> None:
    store = serving_old(tmp_path)
    ok1 = FakeReplica("a", loaded={"old"}, active="old")
    ok2 = FakeReplica("b", loaded={"old", NEW.name}, active="old")  # had it before
    down = FakeReplica("c", loaded={"old"}, active="old", fail_stage=True)
    with pytest.raises(RolloutFailed) as err:
        await rollout(store, "actor", NEW, [ok1, ok2, down], "store:1")
    assert set(err.value.failures) == {"c"}
    assert all(r.active == "old" for r in (ok1, ok2, down))
    assert NEW.name not in ok1.loaded, "copies staged by the failed rollout are dropped"
    assert NEW.name in ok2.loaded, "a copy that was there before stays"
    assert not any(c[0] == "activate" for r in (ok1, ok2, down) for c in r.calls)
    assert store.desired("actor") == (OLD, None), "nothing recorded"


async def test_failed_activation_switches_the_others_back(tmp_path: Path) -> None:
    store = serving_old(tmp_path)
    good = FakeReplica("a", loaded={"old"}, active="old")
    bad = FakeReplica("b", loaded={"old"}, active="old", fail_activate=True)
    with pytest.raises(RolloutFailed, match="switched back to old"):
        await rollout(store, "actor", NEW, [good, bad], "store:1")
    assert good.active == "old" and bad.active == "old"
    assert store.desired("actor") == (OLD, None), "nothing recorded"


async def test_rollout_is_idempotent(tmp_path: Path) -> None:
    store = serving_old(tmp_path)
    r = FakeReplica("a", loaded={"old"}, active="old")
    await rollout(store, "actor", NEW, [r], "s")
    report = await rollout(store, "actor", NEW, [r], "s")
    assert report.staged_now == [] and r.active == NEW.name
    assert r.loaded == {NEW.name, "old"}, "a rerun keeps the version before it, not itself"
    assert store.desired("actor") == (NEW, OLD)


async def test_no_replicas_is_an_error(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with pytest.raises(RolloutFailed, match="no replicas"):
        await rollout(store, "actor", NEW, [], "s")
    assert not store.manages("actor")


def test_to_retire_keeps_active_and_kept() -> None:
    hosted = Hosted(frozenset({"a", "b", "c", "d"}), active="d")
    assert to_retire(hosted, ["a", ""]) == ["b", "c"]


async def test_first_rollout_records_base_before_any_switch(tmp_path: Path) -> None:
    """A coordinator killed mid-switch on a role's first rollout must leave a record that
    reconciliation acts on: the base model, the one version every replica had. What a
    kill would leave is what is on disk while the first replica switches."""
    store = StateStore(tmp_path)
    on_disk_at_switch: list[tuple[bool, object]] = []

    class Switching(FakeReplica):
        async def activate(self, name: str) -> None:
            on_disk_at_switch.append((store.manages("actor"), store.desired("actor")))
            await super().activate(name)

    assert not store.manages("actor")
    await rollout(store, "actor", NEW, [Switching("a"), Switching("b")], "store:1")
    assert on_disk_at_switch == [(True, (None, None))] * 2
    assert store.desired("actor")[0] == NEW, "recorded once every replica switched"


async def test_retiring_runs_on_every_replica_at_once_and_a_failure_stays_local(
    tmp_path: Path,
) -> None:
    """Retiring once went replica by replica, so a rollout to 4 replicas took 4 round trips
    more than one to a single replica; each phase now reaches every replica at once."""
    import asyncio

    in_flight = most = 0

    class SlowReplica(FakeReplica):
        async def hosted(self) -> Hosted:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(0.01)
            in_flight -= 1
            if self.target == "r3":
                raise ConnectionError("replica down")
            return await super().hosted()

    store = serving_old(tmp_path)
    replicas = [SlowReplica(f"r{i}", loaded={"ancient", "old"}, active="old") for i in range(4)]
    report = await rollout(store, "actor", NEW, replicas, "store:1")
    assert most == 4
    assert report.retired == {f"r{i}": ["ancient"] for i in range(3)}
    assert replicas[3].loaded == {"ancient", "old", NEW.name}, "r3 keeps what it had"
    assert report.stage_s >= 0 and report.activate_s >= 0 and report.retire_s >= 0.01
    assert report.seconds >= report.stage_s + report.activate_s + report.retire_s
