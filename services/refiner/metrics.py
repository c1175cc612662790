"""Search-cost metrics of the refiner (docs/metrics.md, "Refiner: search cost"), and the
request metrics of its OpenAI-compatible HTTP endpoint.

Families live on the replica's one :class:`spar.metrics.Metrics` registry. Labels are
low-cardinality: judge kind, outcome, phase, token kind. Cost per answer in PromQL:
``sum(increase(spar_search_tokens_total[5m])) / sum(increase(spar_answers_total[5m]))``.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.refiner.cost import UNUSABLE_REASONS, Cost
from spar.guardrails import RULES
from spar.metrics import LATENCY_BUCKETS, Metrics

DEPTH_BUCKETS = (0, 1, 2, 3, 4, 5, 6, 8)


class RefinerMetrics:
    """The refiner's search-cost metric families on the replica's registry (docs/metrics.md)."""

    def __init__(self, metrics: Metrics) -> None:
        self.base = metrics
        self.service = metrics.service
        self.searches = metrics.counter(
            "spar_searches", "Finished searches by judge and outcome.", ["judge", "outcome"]
        )
        self.answers = metrics.counter(
            "spar_answers", "Finished Answer calls by outcome.", ["outcome"]
        )
        self.nodes = metrics.counter(
            "spar_search_nodes", "Search nodes expanded (refinements generated).", ["judge"]
        )
        self.judge_samples = metrics.counter(
            "spar_search_judge_samples", "LLM judge samples drawn by searches.", ["judge"]
        )
        self.tokens = metrics.counter(
            "spar_search_tokens",
            "Tokens of searches and answers by phase and kind.",
            ["phase", "kind"],
        )
        self.unparseable = metrics.counter(
            "spar_search_unparseable",
            "Judge samples or refinements whose answer could not be read.",
            ["phase"],
        )
        self.unusable = metrics.counter(
            "spar_search_unusable_refinements",
            "Refinements that did not become search nodes, by reason.",
            ["reason"],
        )
        self.guardrails = metrics.counter(
            "spar_search_guardrail_failures",
            "Judged responses that broke an answer guardrail, by rule.",
            ["rule"],
        )
        self.judgements = metrics.counter(
            "spar_search_judgements", "Responses judged by searches.", ["judge"]
        )
        self.votes_skipped = metrics.counter(
            "spar_search_votes_skipped",
            "Judgements that drew no LLM votes because a vote could not change them.",
            ["judge"],
        )
        self.duration = metrics.histogram(
            "spar_search_duration_seconds",
            "Wall time of a search.",
            ["judge"],
            buckets=LATENCY_BUCKETS,
        )
        self.depth = metrics.histogram(
            "spar_search_depth", "Depth of the best node of a search.", buckets=DEPTH_BUCKETS
        )
        self.in_flight = metrics.gauge("spar_searches_in_flight", "Searches running.")
        self.queue = metrics.gauge(
            "spar_search_queue_length", "Requests waiting for a search slot."
        )
        self.in_flight.labels(self.service).set(0)
        self.queue.labels(self.service).set(0)
        for phase in ("generate", "judge", "refine"):
            for kind in ("prompt", "completion"):
                self.tokens.labels(self.service, phase, kind)
        for reason in UNUSABLE_REASONS:
            self.unusable.labels(self.service, reason)
        for rule in RULES:
            self.guardrails.labels(self.service, rule)

    def engine_usage(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Every engine request of the replica (the shared spar_*_tokens_total families)."""
        self.base.prompt_tokens.labels(self.service).inc(prompt_tokens)
        self.base.generated_tokens.labels(self.service).inc(completion_tokens)

    def admission(self, running: int, waiting: int) -> None:
        self.in_flight.labels(self.service).set(running)
        self.queue.labels(self.service).set(waiting)

    def search(self, judge: str, outcome: str, cost: Cost, wall_time_s: float, depth: int) -> None:
        s = self.service
        self.searches.labels(s, judge, outcome).inc()
        self.nodes.labels(s, judge).inc(cost.nodes_expanded)
        self.judge_samples.labels(s, judge).inc(cost.judge_samples)
        for phase in ("judge", "refine", "generate"):
            c = cost.phase(phase)  # type: ignore[arg-type]
            self.tokens.labels(s, phase, "prompt").inc(c.prompt_tokens)
            self.tokens.labels(s, phase, "completion").inc(c.completion_tokens)
        self.unparseable.labels(s, "judge").inc(cost.unparseable_judgements)
        self.unparseable.labels(s, "refine").inc(cost.unparseable_refinements)
        for reason, count in cost.unusable.items():
            self.unusable.labels(s, reason).inc(count)
        for rule, count in cost.guardrail_failures.items():
            self.guardrails.labels(s, rule).inc(count)
        self.judgements.labels(s, judge).inc(cost.judgements)
        self.votes_skipped.labels(s, judge).inc(cost.votes_skipped)
        self.duration.labels(s, judge).observe(wall_time_s)
        self.depth.labels(s).observe(depth)

    def answer(self, outcome: str) -> None:
        self.answers.labels(self.service, outcome).inc()


class HttpMetrics:
    """HTTP requests of the endpoint (docs/metrics.md). ``model`` is one of the served
    names, or ``other`` for a name that is not one; never what a client sent."""

    def __init__(self, metrics: Metrics, models: Sequence[str]) -> None:
        self.service = metrics.service
        self.models = set(models)
        self.requests = metrics.counter(
            "spar_http_requests",
            "OpenAI-compatible HTTP requests by route, model and status.",
            ["route", "model", "code"],
        )
        self.latency = metrics.histogram(
            "spar_http_request_duration_seconds",
            "OpenAI-compatible HTTP request latency, to the last byte of the response.",
            ["route", "model"],
            buckets=LATENCY_BUCKETS,
        )

    def model_label(self, model: str) -> str:
        return model if model in self.models or model == "" else "other"

    def observe(self, route: str, model: str, status: int, seconds: float) -> None:
        label = self.model_label(model)
        self.requests.labels(self.service, route, label, str(status)).inc()
        self.latency.labels(self.service, route, label).observe(seconds)
