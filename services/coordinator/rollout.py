"""Two-phase rollout of an adapter version to every replica of a role.

Phase 1 stages the version everywhere (fetch, verify digest, load); if any replica fails,
nothing activates and the copies staged by this rollout are dropped. Phase 2 switches
every replica's active alias. Then versions other than the new and the previous one are
retired, so rollback stays instant and memory stays bounded.

The decisions are pure functions; :func:`rollout` runs them over :class:`ReplicaOps`
(gRPC in production, anything in unit tests) and records the role's desired versions
through :class:`DesiredVersions` (the coordinator's state store in production). It is the
one rollout path: the iteration loop, the refiner warm-up and an operator's rollback all
call it. Every step is idempotent, so a coordinator that dies mid-rollout simply runs the
same rollout again on restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

BASE = "base"


@dataclass(frozen=True)
class Version:
    """One adapter version as a rollout and the state store name it."""

    name: str
    """The adapter's name (``actor-2-<digest prefix>``); ``base`` is the base model."""
    digest: str = ""
    """SHA-256 of the adapter's files, checked by every replica that stages it."""
    role: str = ""
    """``actor`` or ``refiner``."""
    iteration: int = 0
    """The iteration that trained it (0: the refiner's warm-up)."""


@dataclass(frozen=True)
class Hosted:
    """What one replica hosts: loaded version names and the active one ('' = base)."""

    names: frozenset[str]
    active: str


class ReplicaOps(Protocol):
    """The AdapterHost calls a rollout needs from one replica."""

    target: str

    async def stage(self, version: Version, store_target: str) -> bool:
        """Stages; returns True when it was loaded now (False: it was already there)."""
        ...

    async def activate(self, name: str) -> None: ...

    async def retire(self, name: str) -> None: ...

    async def hosted(self) -> Hosted: ...


class DesiredVersions(Protocol):
    """The state-store writes a rollout makes: each role's desired (active) and previous
    version, which replicas are reconciled to."""

    def desired(self, role: str) -> tuple[Version | None, Version | None]:
        """(active, previous) of role; None is the base model."""
        ...

    def manages(self, role: str) -> bool:
        """True once a desired version of role was recorded (base counts)."""
        ...

    def set_desired(self, role: str, active: Version | None, previous: Version | None) -> None:
        """Records role's desired versions durably before returning."""
        ...


class RolloutFailed(Exception):
    """A rollout that activated nothing, or switched the replicas it had switched back."""

    def __init__(self, message: str, failures: dict[str, str]) -> None:
        super().__init__(message)
        self.failures = failures


@dataclass
class RolloutReport:
    """What one rollout did."""

    version: str
    replicas: list[str]
    staged_now: list[str] = field(default_factory=list)
    retired: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    """The whole rollout, retiring included."""
    stage_s: float = 0.0
    """Phase 1 on every replica at once: fetch, verify, load."""
    activate_s: float = 0.0
    """Phase 2 on every replica at once; when it ends, every replica serves the version."""
    retire_s: float = 0.0
    """Unloading the versions no longer kept, on every replica at once."""


# -- pure decisions --------------------------------------------------------------------


def stage_failures(results: dict[str, BaseException | bool]) -> dict[str, str]:
    """Replicas whose staging failed, with the reason."""
    return {
        t: f"{type(r).__name__}: {r}" for t, r in results.items() if isinstance(r, BaseException)
    }


def to_drop_after_failed_stage(results: dict[str, BaseException | bool]) -> list[str]:
    """Replicas where this rollout loaded the version (they drop it; others never had it
    or had it before the rollout and keep it)."""
    return sorted(t for t, r in results.items() if r is True)


def to_retire(hosted: Hosted, keep: Sequence[str]) -> list[str]:
    """Versions to unload on a replica: all but the kept ones and the active one."""
    kept = {k for k in keep if k} | {hosted.active}
    return sorted(n for n in hosted.names if n not in kept)


# -- execution --------------------------------------------------------------------------


async def stage_all(
    replicas: Sequence[ReplicaOps], version: Version, store_target: str
) -> list[str]:
    """Phase 1 everywhere; returns the replicas that loaded it now. Raises RolloutFailed
    (after dropping what it staged) when any replica fails."""
    if not replicas:
        raise RolloutFailed("no replicas to roll out to", {})
    outcomes = await asyncio.gather(
        *(r.stage(version, store_target) for r in replicas), return_exceptions=True
    )
    results: dict[str, BaseException | bool] = {
        r.target: o for r, o in zip(replicas, outcomes, strict=True)
    }
    failures = stage_failures(results)
    if failures:
        drop = set(to_drop_after_failed_stage(results))
        await asyncio.gather(
            *(r.retire(version.name) for r in replicas if r.target in drop),
            return_exceptions=True,
        )
        raise RolloutFailed(
            f"staging {version.name} failed on {len(failures)} of {len(replicas)} replicas; "
            "nothing was activated: " + "; ".join(f"{t}: {e}" for t, e in failures.items()),
            failures,
        )
    return to_drop_after_failed_stage(results)


async def activate_all(replicas: Sequence[ReplicaOps], name: str, fallback: str) -> None:
    """Phase 2 everywhere. If a replica refuses, the ones switched go back to fallback."""
    outcomes = await asyncio.gather(*(r.activate(name) for r in replicas), return_exceptions=True)
    failures = {
        r.target: f"{type(o).__name__}: {o}"
        for r, o in zip(replicas, outcomes, strict=True)
        if isinstance(o, BaseException)
    }
    if failures:
        switched = [
            r for r, o in zip(replicas, outcomes, strict=True) if not isinstance(o, BaseException)
        ]
        await asyncio.gather(
            *(r.activate(fallback or BASE) for r in switched), return_exceptions=True
        )
        raise RolloutFailed(
            f"activating {name} failed on {len(failures)} replicas; the others were switched "
            f"back to {fallback or BASE}",
            failures,
        )


async def retire_old(replicas: Sequence[ReplicaOps], keep: Sequence[str]) -> dict[str, list[str]]:
    """Unloads versions other than keep on every replica at once (best effort: a failure
    here is only logged). Concurrent like the two phases, so that a rollout to n replicas
    does not take n round trips longer than one to a single replica."""

    async def one(replica: ReplicaOps) -> list[str] | None:
        try:
            names = to_retire(await replica.hosted(), keep)
            for name in names:
                await replica.retire(name)
            return names
        except Exception as exc:
            log.warning("retiring old versions on %s failed: %s", replica.target, exc)
            return None

    outcomes = await asyncio.gather(*(one(r) for r in replicas))
    return {
        r.target: names for r, names in zip(replicas, outcomes, strict=True) if names is not None
    }


def previous_name(desired: DesiredVersions, role: str, version: Version) -> str:
    """The version that stays loaded next to version: the one active before this rollout,
    or, when this rollout runs again after it recorded version, the one before that."""
    active, previous = desired.desired(role)
    if active is not None and active.name == version.name:
        return previous.name if previous else ""
    return active.name if active else ""


async def rollout(
    desired: DesiredVersions,
    role: str,
    version: Version,
    replicas: Sequence[ReplicaOps],
    store_target: str,
) -> RolloutReport:
    """Stage everywhere, activate everywhere, record version as role's desired one, retire
    all but version and the previous one."""
    t0 = time.perf_counter()
    active, _ = desired.desired(role)
    previous = previous_name(desired, role, version)
    staged_now = await stage_all(replicas, version, store_target)
    t_staged = time.perf_counter()
    if not desired.manages(role):
        # The first rollout of a role: record the base model as desired before any replica
        # switches, so a coordinator killed mid-switch reconciles every replica back to
        # one version (reconciliation leaves roles it never managed alone).
        desired.set_desired(role, None, None)
    await activate_all(replicas, version.name, previous)
    t_active = time.perf_counter()
    if active is None or active.name != version.name:
        desired.set_desired(role, version, active)
    t_recorded = time.perf_counter()
    retired = await retire_old(replicas, [version.name, previous])
    t_end = time.perf_counter()
    return RolloutReport(
        version=version.name,
        replicas=[r.target for r in replicas],
        staged_now=staged_now,
        retired=retired,
        seconds=t_end - t0,
        stage_s=t_staged - t0,
        activate_s=t_active - t_staged,
        retire_s=t_end - t_recorded,
    )
