"""Trainer metric families (docs/metrics.md), on the service's one registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from spar.metrics import Metrics


class TrainerMetrics:
    """The trainer's Prometheus metrics (jobs, queue, progress), in the registry of its
    server's :class:`spar.metrics.Metrics`."""

    def __init__(self, metrics: Metrics) -> None:
        r = metrics.registry
        self.service = metrics.service
        self.jobs = Counter(
            "spar_train_jobs", "Jobs that reached a final state.", ["service", "kind", "state"],
            registry=r,
        )  # fmt: skip
        self.queue_length = Gauge(
            "spar_train_queue_length", "Queued jobs.", ["service"], registry=r
        )
        self.running = Gauge(
            "spar_train_job_running", "1 while a job runs.", ["service", "kind"], registry=r
        )
        self.step = Gauge(
            "spar_train_step", "Step of the running job.", ["service", "kind"], registry=r
        )
        self.loss = Gauge(
            "spar_train_loss", "Latest training loss.", ["service", "kind"], registry=r
        )
        self.reward_margin = Gauge(
            "spar_train_reward_margin", "Latest DPO reward margin.", ["service"], registry=r
        )
        self.reward_accuracy = Gauge(
            "spar_train_reward_accuracy", "Latest DPO reward accuracy.", ["service"], registry=r
        )
        self.tokens_per_second = Gauge(
            "spar_train_tokens_per_second", "Training throughput.", ["service", "kind"],
            registry=r,
        )  # fmt: skip
        self.published = Counter(
            "spar_adapters_published", "Versions published to the store.", ["service", "role"],
            registry=r,
        )  # fmt: skip
        self.queue_length.labels(self.service).set(0)
        for kind in ("dpo", "sft"):
            self.running.labels(self.service, kind).set(0)

    def progress(self, kind: str, event: dict[str, float]) -> None:
        s = self.service
        if "step" in event:
            self.step.labels(s, kind).set(event["step"])
        if "loss" in event:
            self.loss.labels(s, kind).set(event["loss"])
        if "tokens_per_second" in event:
            self.tokens_per_second.labels(s, kind).set(event["tokens_per_second"])
        if "reward_margin" in event:
            self.reward_margin.labels(s).set(event["reward_margin"])
            self.reward_accuracy.labels(s).set(event.get("reward_accuracy", 0.0))
