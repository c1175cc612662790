"""The coordinator's control logic: iterations (start, resume, watch), rollback and
reconciliation of every replica to the desired versions. The gRPC layer is service.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from services.coordinator import inputs, report
from services.coordinator.audit import AuditEntry, AuditLog
from services.coordinator.iteration_messages import STAGE, iteration_message, version_message
from services.coordinator.iteration_record import IterationRecord, State
from services.coordinator.journal import write_json
from services.coordinator.loop import Iteration, Ports
from services.coordinator.metrics import CoordinatorMetrics
from services.coordinator.release import APPROVAL_FILE
from services.coordinator.replicas import GrpcReplica, pod_namespace, replica_source
from services.coordinator.rollout import RolloutFailed, Version, activate_all, rollout
from services.coordinator.state import ROLES, StateStore, state_root
from spar import criteria
from spar.adapter_files import check_name
from spar.client import AsyncActorClient, AsyncRefinerClient, AsyncTrainerClient
from spar.config import Settings
from spar.errors import FailedPrecondition, InvalidArgument, NotFound, SparError
from spar.external_judge import ExternalJudge, ExternalJudgeMetrics
from spar.request_checks import check_path_text
from spar.security import client_security
from spar.v1 import coordinator_pb2

log = logging.getLogger(__name__)
S = coordinator_pb2
FINAL: set[State] = {"succeeded", "rejected", "failed"}
#: States an iteration stops in (a watch ends there).
STOPPED: set[State] = FINAL | {"awaiting_approval"}


class Coordinator:
    """The coordinator's control logic behind its gRPC service: starts, resumes and watches
    iterations (one at a time), records operators' approvals, rolls versions back, and keeps
    every replica on the desired versions. Its state lives in a :class:`StateStore` folder,
    so a restarted coordinator continues where it stopped."""

    def __init__(self, settings: Settings, metrics: CoordinatorMetrics) -> None:
        self.settings = settings
        self.c = settings.coordinator
        """The coordinator's own settings (``settings.coordinator``)."""
        root = state_root(settings)
        self.store = StateStore(root)
        self.metrics = metrics
        # Criteria packs for prompt sets and evaluation (SPAR_CRITERIA__DIR); a bad pack
        # stops the start here. The refiners must load the same packs.
        criteria.configure(
            settings.criteria.dir or None,
            reload_interval_s=settings.criteria.reload_interval_s,
            on_reload=criteria.pack_metrics(metrics.base),
        )
        self.external = ExternalJudge.from_settings(
            settings.external_judge, ExternalJudgeMetrics(metrics.base)
        )
        """The outside judge a share of the judge stage's judgements also goes to (None: off)."""
        self.audit = AuditLog(
            Path(self.c.audit_path) if self.c.audit_path else root / "audit.jsonl",
            on_append=lambda r: metrics.audit_records.labels(
                metrics.service, r["action"], r["result"]
            ).inc(),
        )
        self.security = client_security(settings)
        self.actor = AsyncActorClient(self.c.actor_target, timeout=3600, **self.security)
        self.refiner = AsyncRefinerClient(self.c.refiner_target, timeout=3600, **self.security)
        self.trainer = AsyncTrainerClient(self.c.trainer_target, timeout=600, **self.security)
        """Clients of the services an iteration calls; rollouts go to each replica's
        AdapterHost instead (:class:`GrpcReplica`)."""
        self._replicas: dict[str, GrpcReplica] = {}
        self._sources = {
            "actor": replica_source(self.c.actor, pod_namespace()),
            "refiner": replica_source(self.c.refiner, pod_namespace()),
        }
        self._task: asyncio.Task[Any] | None = None
        self._running: Iteration | None = None
        self._watchers: set[asyncio.Queue[tuple[IterationRecord, str]]] = set()
        self._rollout_lock = asyncio.Lock()
        self._eval_records: list[Any] | None = None
        last = self.current()
        self._set_awaiting(last)

    @property
    def store_target(self) -> str:
        return self.c.store_address()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.actor.close()
        await self.refiner.close()
        await self.trainer.close()
        if self.external is not None:
            await self.external.close()
        for replica in self._replicas.values():
            await replica.close()

    # -- ports of the loop --------------------------------------------------------------

    async def replicas(self, role: str) -> list[GrpcReplica]:
        targets = await self._sources[role].targets()
        out = []
        for t in targets:
            if t not in self._replicas:
                self._replicas[t] = GrpcReplica(t, **self.security)
            out.append(self._replicas[t])
        return out

    def _eval_prompts(self) -> list[Any]:
        if self._eval_records is None:
            self._eval_records = inputs.eval_prompts(self.c)
        return self._eval_records

    def _ports(self) -> Ports:
        return Ports(
            actor=self.actor,
            refiner=self.refiner,
            trainer=self.trainer,
            replicas=self.replicas,
            prompts=lambda number, path: inputs.train_prompts(
                self.c, number, path, self._eval_prompts()
            ),
            eval_prompts=self._eval_prompts,
            evaluate=lambda records, adapter: inputs.evaluate(self.actor, records, adapter, self.c),
            external=self.external,
        )

    # -- iterations ---------------------------------------------------------------------

    def _set_awaiting(self, it: IterationRecord | None) -> None:
        waiting = it is not None and it.state == "awaiting_approval"
        self.metrics.awaiting_approval.labels(self.metrics.service).set(
            it.number if it is not None and waiting else 0
        )

    def _notify(self, it: IterationRecord, message: str) -> None:
        self.metrics.iteration_stage.labels(self.metrics.service).set(
            0
            if it.stage == "done" or it.state == "awaiting_approval"
            else STAGE.value(it.stage, "stage")
        )
        self._set_awaiting(it)
        snapshot = it.copy()
        for q in self._watchers:
            q.put_nowait((snapshot, message))

    def current(self) -> IterationRecord | None:
        if self._running is not None:
            return self._running.record
        its = self.store.iterations()
        return its[-1] if its else None

    def start(self, prompts_path: str = "", num_prompts: int = 0) -> IterationRecord:
        """Starts the next iteration, or resumes the last one if it did not finish."""
        if self._running is not None:
            return self._running.record
        if prompts_path:
            check_path_text(prompts_path, "prompts_path", self.settings.limits.max_path_chars)
            if not Path(prompts_path).is_file():
                raise InvalidArgument(f"prompts_path {prompts_path[:200]!r} is not a readable file")
        last = self.current()
        if last is not None and last.state == "awaiting_approval":
            raise FailedPrecondition(
                f"iteration {last.number} awaits approval: run `spar promote {last.number}` "
                f"or `spar reject {last.number}` first"
            )
        resume = last is not None and last.state in ("running", "failed")
        number = last.number if resume and last else (last.number + 1 if last else 1)
        settings = self.settings
        if num_prompts:
            settings = settings.model_copy(deep=True)
            settings.coordinator.num_prompts = num_prompts
        return self._launch(number, settings, prompts_path)

    def _launch(self, number: int, settings: Settings, prompts_path: str = "") -> IterationRecord:
        self._running = Iteration(
            number,
            settings,
            self.store,
            self._ports(),
            self._notify,
            prompts_path,
            audit=self.audit,
        )
        self._task = asyncio.create_task(self._run(self._running))
        return self._running.record

    def decide(self, number: int, decision: str, decided_by: str, reason: str) -> IterationRecord:
        """An operator's promote or reject of a candidate that awaits approval; the
        iteration resumes at its rollout, which rolls the candidate out or drops it."""
        if decision not in ("promote", "reject"):
            raise InvalidArgument(f"decision must be promote or reject, not {decision[:40]!r}")
        if len(reason) > 1000:
            raise InvalidArgument("reason is longer than 1000 characters")
        if self._running is not None:
            raise FailedPrecondition(
                f"iteration {self._running.number} is running; only a candidate that awaits "
                "approval can be promoted or rejected"
            )
        it = self.store.load_iteration(number) if number else self.current()
        if it is None:
            raise NotFound(f"iteration {number} does not exist" if number else "no iteration yet")
        if it.state != "awaiting_approval":
            raise FailedPrecondition(
                f"iteration {it.number} does not await approval (it is {it.state})"
            )
        write_json(
            self.store.iteration_dir(it.number) / APPROVAL_FILE,
            {"decision": decision, "decided_by": decided_by, "reason": reason},
        )
        it.state = "running"
        self.store.save_iteration(it)  # a coordinator killed now resumes the rollout
        log.info("iteration %d: %s by %s", it.number, decision, decided_by)
        return self._launch(it.number, self.settings)

    async def _run(self, iteration: Iteration) -> None:
        try:
            it = await iteration.run()
            if it.state in FINAL:
                self.metrics.iterations.labels(self.metrics.service, it.state).inc()
            await self._write_report(it.number)
        finally:
            self._running = None

    async def _write_report(self, number: int) -> None:
        """The iteration's HTML report beside its records (report.py). A report that
        cannot be written is logged; it never fails the iteration."""
        try:
            path = await asyncio.to_thread(report.write, self.store, number)
        except Exception:
            log.exception("iteration %d: the report could not be written", number)
        else:
            log.info("iteration %d: report %s", number, path)

    def resume_unfinished(self) -> None:
        last = self.current()
        if last is not None and last.state == "running":
            log.info("resuming iteration %d at %s", last.number, last.stage)
            self.start()

    async def watch(self, number: int) -> AsyncIterator[tuple[IterationRecord, str]]:
        queue: asyncio.Queue[tuple[IterationRecord, str]] = asyncio.Queue()
        self._watchers.add(queue)
        try:
            current = self.current()
            if number and (current is None or current.number != number):
                current = self.store.load_iteration(number)
            if current is None:
                raise NotFound(
                    f"iteration {number} does not exist" if number else "no iteration yet"
                )
            yield current, "current state"
            if current.state in STOPPED or current.stage == "done":
                return
            while True:
                it, message = await queue.get()
                if it.number != current.number:
                    continue
                yield it, message
                if it.stage == "done" or it.state in STOPPED:
                    return
        finally:
            self._watchers.discard(queue)

    # -- versions -----------------------------------------------------------------------

    async def replica_states(self) -> list[S.ReplicaState]:
        out = []
        for role in ROLES:
            try:
                replicas = await self.replicas(role)
            except SparError as exc:
                log.warning("discovery of %s replicas failed: %s", role, exc)
                continue
            versions: dict[str, str] = {}
            for r in replicas:
                try:
                    hosted = await asyncio.wait_for(r.hosted(), timeout=5)
                    versions[r.target] = hosted.active
                    out.append(
                        S.ReplicaState(
                            target=r.target, role=role, active=hosted.active, reachable=True
                        )
                    )
                except (SparError, TimeoutError):
                    out.append(S.ReplicaState(target=r.target, role=role, reachable=False))
            self.metrics.set_replica_versions(role, versions)
        return out

    async def state(self) -> S.CoordinatorState:
        out = S.CoordinatorState(
            store_target=self.store_target, approval_required=self.c.require_approval
        )
        for role in ROLES:
            active, previous = self.store.desired(role)
            getattr(out, role).CopyFrom(version_message(active))
            getattr(out, f"{role}_previous").CopyFrom(version_message(previous))
        out.iterations.extend(iteration_message(it) for it in self.store.iterations())
        if self._running is not None and out.iterations:
            out.iterations[-1].CopyFrom(iteration_message(self._running.record))
        if out.iterations and out.iterations[-1].state == S.ITERATION_STATE_AWAITING_APPROVAL:
            out.awaiting_approval = out.iterations[-1].number
        out.replicas.extend(await self.replica_states())
        return out

    async def roll_out(self, role: str, version: Version) -> int:
        return len(await self._roll_out(role, version))

    async def _roll_out(self, role: str, version: Version) -> list[str]:
        """Rolls version out to every replica of role; returns the replicas switched."""
        async with self._rollout_lock:
            replicas = await self.replicas(role)
            try:
                with self.metrics.rollout_duration.labels(self.metrics.service, role).time():
                    await rollout(self.store, role, version, replicas, self.store_target)
            except RolloutFailed as exc:
                self.metrics.rollouts.labels(self.metrics.service, role, "failed").inc()
                raise FailedPrecondition(str(exc)) from exc
            self.metrics.rollouts.labels(self.metrics.service, role, "ok").inc()
            return [r.target for r in replicas]

    async def rollback(
        self, role: str, name: str, decided_by: str = "operator", reason: str = ""
    ) -> tuple[Version, int]:
        """Every replica of role back to a version (the previous one when name is empty,
        the base model for ``base``); audited, whether it worked or not."""
        if role not in ROLES:
            raise InvalidArgument(f"role must be one of {', '.join(ROLES)}, not {role[:40]!r}")
        if name and name != "base":
            check_name(name)
        if len(reason) > 1000:
            raise InvalidArgument("reason is longer than 1000 characters")
        if self._running is not None and self._running.record.stage == "rollout":
            raise FailedPrecondition("a rollout is in progress; wait for it to finish")
        active, previous = self.store.desired(role)
        if name == "base":
            target = Version("base", role=role)
        elif not name:
            if previous is None:
                raise FailedPrecondition(f"there is no previous {role} version to roll back to")
            target = previous
        else:
            manifest = await self.trainer.get_manifest(name)
            if manifest.version.role and manifest.version.role != role:
                raise InvalidArgument(f"{name} is a {manifest.version.role} adapter, not {role}")
            target = Version(name, manifest.version.digest, role, manifest.version.iteration)
        entry = AuditEntry(
            action="rollback",
            role=role,
            decision="rollback",
            decided_by=decided_by,
            version=asdict(target),
            previous=asdict(active) if active else None,
            reason=reason,
        )
        try:
            if name == "base":
                switched = await self._serve_base(role, active)
            else:
                switched = await self._roll_out(role, target)
        except SparError as exc:
            self.audit.append(replace(entry, result="failed", error=exc.message))
            raise
        self.audit.append(replace(entry, replicas=switched))
        return target, len(switched)

    async def _serve_base(self, role: str, active: Version | None) -> list[str]:
        """Every replica back to the base model (the adapters stay loaded)."""
        async with self._rollout_lock:
            replicas = await self.replicas(role)
            try:
                await activate_all(replicas, "base", active.name if active else "base")
            except RolloutFailed as exc:
                self.metrics.rollouts.labels(self.metrics.service, role, "failed").inc()
                raise FailedPrecondition(str(exc)) from exc
            self.store.set_desired(role, None, active)
            self.metrics.rollouts.labels(self.metrics.service, role, "ok").inc()
        return [r.target for r in replicas]

    def audit_records(
        self, iteration: int = 0, role: str = "", limit: int = 0
    ) -> tuple[list[dict[str, Any]], bool, str]:
        """Audit records (oldest first) and whether the log's hash chain is intact."""
        if role and role not in ROLES:
            raise InvalidArgument(f"role must be one of {', '.join(ROLES)}, not {role[:40]!r}")
        intact, error = self.audit.verify()
        return self.audit.records(iteration=iteration, role=role, limit=limit), intact, error

    async def reconcile(self) -> None:
        """Brings every reachable replica to its role's desired version."""
        async with self._rollout_lock:
            for role in ROLES:
                if not self.store.manages(role):
                    continue  # never rolled out: replicas keep what operators staged
                active, _ = self.store.desired(role)
                want = active.name if active else ""
                for r in await self.replicas(role):
                    try:
                        hosted = await r.hosted()
                        if hosted.active != want:
                            log.info("reconciling %s %s to %s", role, r.target, want or "base")
                            if active is not None:
                                await r.stage(active, self.store_target)
                            await r.activate(want or "base")
                    except SparError as exc:
                        log.warning("reconciling %s failed: %s", r.target, exc)

    async def reconcile_forever(self) -> None:
        while self.c.reconcile_interval_s > 0:
            await asyncio.sleep(self.c.reconcile_interval_s)
            try:
                await self.reconcile()
                await self.replica_states()
            except Exception:  # never let the background loop die
                log.exception("reconciliation pass failed")
