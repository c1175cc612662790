"""Coordinator metrics (docs/metrics.md), on the server's registry."""

from __future__ import annotations

from spar.metrics import Metrics

ROLLOUT_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
#: Values of the ``state`` label of ``spar_iterations_total`` (IterationState, lower case).
FINAL_STATES = ("succeeded", "rejected", "failed")


class CoordinatorMetrics:
    """The coordinator's Prometheus metrics (rollouts, iterations, stages), in the registry of
    its server's :class:`spar.metrics.Metrics` (``base``)."""

    def __init__(self, metrics: Metrics) -> None:
        self.base = metrics
        self.service = metrics.service
        self.rollouts = metrics.counter(
            "spar_rollouts", "Rollouts by role and result.", ["role", "result"]
        )
        self.rollout_duration = metrics.histogram(
            "spar_rollout_duration_seconds",
            "Stage + activate of a version over all replicas of a role.",
            ["role"],
            buckets=ROLLOUT_BUCKETS,
        )
        self.replica_version = metrics.gauge(
            "spar_replica_active_version_info",
            "1 per replica for the version it serves (base: no adapter).",
            ["role", "replica", "version"],
        )
        self.iterations = metrics.counter(
            "spar_iterations", "Finished iterations by final state.", ["state"]
        )
        # Every final state exists at 0 from the start, so increase() over a window sees
        # the first iteration (a counter series born at 1 has no increase to show).
        for state in FINAL_STATES:
            self.iterations.labels(self.service, state)
        self.iteration_stage = metrics.gauge(
            "spar_iteration_stage", "Stage number of the running iteration (0: idle)."
        )
        self.iteration_stage.labels(self.service).set(0)
        self.awaiting_approval = metrics.gauge(
            "spar_iteration_awaiting_approval",
            "Iteration whose candidate awaits an operator's promote or reject (0: none).",
        )
        self.awaiting_approval.labels(self.service).set(0)
        self.audit_records = metrics.counter(
            "spar_audit_records",
            "Records appended to the audit log by action and result.",
            ["action", "result"],
        )
        self._known: dict[str, set[tuple[str, str, str, str]]] = {}

    def set_replica_versions(self, role: str, versions: dict[str, str]) -> None:
        """Replaces the role's per-replica series (replicas that left disappear)."""
        for labels in list(self._known.get(role, ())):
            self.replica_version.remove(*labels)
        self._known[role] = set()
        for replica, version in versions.items():
            labels = (self.service, role, replica, version or "base")
            self.replica_version.labels(*labels).set(1)
            self._known[role].add(labels)
