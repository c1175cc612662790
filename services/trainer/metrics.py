"""Trainer metric families (docs/metrics.md), on the service's one registry."""

from __future__ import annotations

from spar.metrics import Metrics


class TrainerMetrics:
    """The trainer's Prometheus metrics (jobs, queue, progress), in the registry of its
    server's :class:`spar.metrics.Metrics`."""

    def __init__(self, metrics: Metrics) -> None:
        self.service = metrics.service
        self.jobs = metrics.counter(
            "spar_train_jobs", "Jobs that reached a final state.", ["kind", "state"]
        )
        self.queue_length = metrics.gauge("spar_train_queue_length", "Queued jobs.")
        self.running = metrics.gauge("spar_train_job_running", "1 while a job runs.", ["kind"])
        self.step = metrics.gauge("spar_train_step", "Step of the running job.", ["kind"])
        self.loss = metrics.gauge("spar_train_loss", "Latest training loss.", ["kind"])
        self.reward_margin = metrics.gauge("spar_train_reward_margin", "Latest DPO reward margin.")
        self.reward_accuracy = metrics.gauge(
            "spar_train_reward_accuracy", "Latest DPO reward accuracy."
        )
        self.tokens_per_second = metrics.gauge(
            "spar_train_tokens_per_second", "Training throughput.", ["kind"]
        )
        self.published = metrics.counter(
            "spar_adapters_published", "Versions published to the store.", ["role"]
        )
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
