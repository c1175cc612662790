"""An iteration's report: one self-contained HTML file, its figures embedded as PNGs.

What a person wants to see at a glance after an iteration: did instruction following
improve (pass rate per constraint type, before and after), what did the search find and
what did it cost (outcomes; nodes, tokens and seconds per search; tokens spent per
percentage point gained), how much training data came out, and which adapters were
rolled out (with their digests).

:func:`collect` reads what the loop recorded in the iteration's folder (state.py's layout:
``iteration.json``, ``searches.jsonl``); :func:`render` is pure and turns a
:class:`IterationReport` into HTML, drawing with matplotlib's object API (no pyplot, no
global state: safe in the coordinator's worker thread). :func:`write` does both and puts
``report.html`` into the iteration's folder. The coordinator writes one after every
iteration; ``spar report`` writes one on demand.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from services.coordinator.iteration_record import EvalMetrics, IterationRecord
from services.coordinator.journal import Journal
from services.coordinator.report_figures import (
    constraint_figure,
    cost_figure,
    counts_figure,
    outcome_figure,
    timing_figure,
)
from services.coordinator.state import StateStore
from spar.atomic_files import write_atomic
from spar.evaluation import METRICS
from spar.proto_time import as_seconds
from spar.v1 import common_pb2

FILE_NAME = "report.html"

#: The metric the headline and "tokens per point" use (the default promotion metric).
HEADLINE_METRIC = "prompt_level_strict"

# -- the data ------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchCost:
    """One search of the iteration: how it ended and what it cost."""

    outcome: str
    nodes: int
    generated_tokens: int
    seconds: float


@dataclass(frozen=True)
class ConstraintRate:
    """Strict pass rate of one constraint type before and after, over the same prompts."""

    instruction_id: str
    count: int
    before: float
    after: float


@dataclass(frozen=True)
class Adapter:
    """A version an iteration trained, as the report lists it."""

    role: str
    name: str
    digest: str
    rolled_out: bool
    """Whether it became the active version (the iteration succeeded)."""


@dataclass(frozen=True)
class IterationReport:
    """Everything the HTML report of one iteration shows (:func:`collect` reads it,
    :func:`render` draws it)."""

    number: int
    state: str
    """The iteration's final state (succeeded, rejected, ...)."""
    decision: str = ""
    """The promotion decision in words."""
    error: str = ""
    started: str = ""
    finished: str = ""
    counts: Mapping[str, int] = field(default_factory=dict)
    """Data counts in pipeline order (prompts → ... → RFT records)."""
    metrics: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    """IFEval's four metrics: (before, after); empty without an evaluation."""
    constraints: Sequence[ConstraintRate] = ()
    searches: Sequence[SearchCost] = ()
    unusable: Mapping[str, int] = field(default_factory=dict)
    """Refinements that never became tree nodes, by reason (when the refiner reports it)."""
    adapters: Sequence[Adapter] = ()
    timings: Mapping[str, float] = field(default_factory=dict)
    """Seconds per stage."""

    @property
    def search_tokens(self) -> int:
        return sum(s.generated_tokens for s in self.searches)

    @property
    def gain_points(self) -> float | None:
        """Change of the headline metric in percentage points; None without evaluation."""
        if HEADLINE_METRIC not in self.metrics:
            return None
        before, after = self.metrics[HEADLINE_METRIC]
        return (after - before) * 100.0

    @property
    def tokens_per_point(self) -> float | None:
        """Search tokens spent per percentage point gained; None when nothing was gained."""
        gain = self.gain_points
        if gain is None or gain <= 1e-9:
            return None
        return self.search_tokens / gain


def _time(t: datetime | None) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if t is not None else ""


def search_costs(records: Iterable[Mapping[str, Any]]) -> list[SearchCost]:
    """Per-search costs from the search journal's records."""
    out = []
    for r in records:
        cost = json_format.ParseDict(
            r.get("cost", {}), common_pb2.SearchCost(), ignore_unknown_fields=True
        )
        out.append(
            SearchCost(
                outcome=str(r.get("outcome", "")),
                nodes=cost.nodes_expanded,
                generated_tokens=cost.judge.completion_tokens + cost.refine.completion_tokens,
                seconds=as_seconds(cost.wall_time),
            )
        )
    return out


def _unusable(records: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Unusable refinements summed over the searches, where the refiner reports them."""
    total: dict[str, int] = {}
    for r in records:
        for reason, n in (r.get("cost", {}).get("unusable") or {}).items():
            total[reason] = total.get(reason, 0) + int(n)
    return {k: v for k, v in total.items() if v}


def constraint_rates(baseline: EvalMetrics, candidate: EvalMetrics) -> list[ConstraintRate]:
    """Before/after pass rates of every constraint type both evaluations scored."""
    before = {c.id: c for c in baseline.criteria}
    after = {c.id: c for c in candidate.criteria}
    return [
        ConstraintRate(cid, after[cid].count, before[cid].strict, after[cid].strict)
        for cid in sorted(before.keys() & after.keys())
    ]


def from_record(it: IterationRecord, searches: Sequence[Mapping[str, Any]] = ()) -> IterationReport:
    """The report of an iteration record and its search journal (pure)."""
    c = it.counts
    counts = {
        "prompts": c.prompts,
        "samples": c.samples,
        "negatives": c.negatives,
        "searches": c.searches,
        "refined": c.refined,
        "DPO pairs": c.dpo_pairs,
        "RFT records": c.sft_records,
    }
    metrics: dict[str, tuple[float, float]] = {}
    constraints: list[ConstraintRate] = []
    baseline, candidate = it.baseline_eval or EvalMetrics(), it.candidate_eval
    if candidate is not None and candidate.prompts:
        metrics = {m: (getattr(baseline, m), getattr(candidate, m)) for m in METRICS}
        constraints = constraint_rates(baseline, candidate)
    rolled_out = it.state == "succeeded"
    adapters = [
        Adapter(role, v.name, v.digest, rolled_out)
        for role, v in (("actor", it.actor_candidate), ("refiner", it.refiner_candidate))
        if v is not None
    ]
    timings: dict[str, float] = {t.stage: t.seconds for t in it.timings}
    return IterationReport(
        number=it.number,
        state=it.state,
        decision=it.decision,
        error=it.error,
        started=_time(it.started_at),
        finished=_time(it.finished_at),
        counts=counts,
        metrics=metrics,
        constraints=constraints,
        searches=search_costs(searches),
        unusable=_unusable(searches),
        adapters=adapters,
        timings=timings,
    )


def collect(store: StateStore, number: int) -> IterationReport:
    """The report of iteration ``number`` from the coordinator's state directory."""
    from spar.errors import NotFound

    it = store.load_iteration(number)
    if it is None:
        raise NotFound(f"iteration {number} is not in {store.root}")
    searches = Journal(store.iteration_dir(number) / "searches.jsonl").read()
    return from_record(it, list(searches.values()))


# -- HTML ----------------------------------------------------------------------------

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #212121;
       max-width: 980px; margin: 24px auto; padding: 0 16px; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 32px;
     border-bottom: 1px solid #e0e0e0; padding-bottom: 4px; }
.meta { color: #616161; font-size: 13px; }
.state { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff;
         font-size: 13px; vertical-align: middle; }
.succeeded { background: #2e7d32; } .rejected { background: #ef6c00; }
.failed { background: #c62828; } .running, .awaiting_approval { background: #1565c0; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 16px 0; }
.card { flex: 1 1 180px; border: 1px solid #e0e0e0; border-radius: 8px; padding: 10px 14px; }
.card .v { font-size: 22px; font-weight: 600; } .card .k { color: #616161; font-size: 13px; }
.up { color: #2e7d32; } .down { color: #c62828; }
table { border-collapse: collapse; font-size: 14px; margin: 8px 0; }
th, td { text-align: left; padding: 4px 12px 4px 0; border-bottom: 1px solid #eeeeee; }
code { font: 12px ui-monospace, "SFMono-Regular", Menlo, monospace; word-break: break-all; }
figure { margin: 8px 0; } figure img { max-width: 100%; }
.note { color: #616161; font-style: italic; }
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _signed(points: float) -> str:
    cls = "up" if points > 0 else "down" if points < 0 else ""
    return f'<span class="{cls}">{points:+.1f} pp</span>'


def _img(png: str, alt: str) -> str:
    return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{png}"></figure>'


def _cards(r: IterationReport) -> str:
    cards = []
    if r.gain_points is not None:
        before, after = r.metrics[HEADLINE_METRIC]
        cards.append(
            (f"{_pct(before)} → {_pct(after)}", f"{HEADLINE_METRIC} ({_signed(r.gain_points)})")
        )
    refined = sum(s.outcome == "refined" for s in r.searches)
    cards.append((f"{refined} / {len(r.searches)}", "searches that found a passing refinement"))
    cards.append((f"{r.search_tokens:,}", "tokens generated by search"))
    per_point = r.tokens_per_point
    cards.append(
        (f"{per_point:,.0f}" if per_point is not None else "no gain",
         "search tokens per percentage point gained")
    )  # fmt: skip
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="v">{v}</div><div class="k">{k}</div></div>'
        for v, k in cards
    ) + "</div>"  # fmt: skip


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """An HTML table; cells are HTML already (callers escape text)."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _metrics_table(r: IterationReport) -> str:
    return _table(
        ["IFEval metric", "before", "after", "change"],
        ([_e(m), _pct(b), _pct(a), _signed((a - b) * 100)] for m, (b, a) in r.metrics.items()),
    )


def _adapters_table(r: IterationReport) -> str:
    if not r.adapters:
        return '<p class="note">No adapter was trained in this iteration.</p>'
    return _table(
        ["role", "version", "sha256 digest", ""],
        (
            [
                _e(a.role),
                f"<code>{_e(a.name)}</code>",
                f"<code>{_e(a.digest)}</code>",
                "rolled out" if a.rolled_out else "not rolled out",
            ]
            for a in r.adapters
        ),
    )


def render(r: IterationReport) -> str:
    """The whole report as one HTML document (figures inline)."""
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>spar iteration {r.number}</title><style>{CSS}</style></head><body>",
        f'<h1>Iteration {r.number} <span class="state {_e(r.state)}">{_e(r.state)}</span></h1>',
        f'<p class="meta">{_e(r.started)}{" → " + _e(r.finished) if r.finished else ""}</p>',
    ]
    if r.decision:
        parts.append(f"<p>{_e(r.decision)}</p>")
    if r.error:
        parts.append(f'<p class="down">error: {_e(r.error)}</p>')
    parts.append(_cards(r))

    parts.append("<h2>Instruction following, before and after</h2>")
    if r.metrics:
        parts.append(_metrics_table(r))
    if r.constraints:
        parts.append(_img(constraint_figure(r.constraints), "pass rate per constraint type"))
    elif not r.metrics and r.decision:
        parts.append(f'<p class="note">Not evaluated: {_e(r.decision)}.</p>')
    else:
        parts.append('<p class="note">No per-constraint evaluation was recorded.</p>')

    parts.append("<h2>Search</h2>")
    if r.searches:
        parts.append(_img(outcome_figure(r.searches), "search outcomes"))
        parts.append(_img(cost_figure(r.searches), "search cost per search"))
        gain = r.gain_points
        per_point = r.tokens_per_point
        parts.append(
            f"<p>{r.search_tokens:,} tokens generated over {len(r.searches)} searches "
            f"({sum(s.nodes for s in r.searches)} nodes, "
            f"{sum(s.seconds for s in r.searches):,.0f} s)"
            + (f"; {HEADLINE_METRIC} changed {gain:+.1f} pp" if gain is not None else "")
            + (f": <b>{per_point:,.0f} tokens per point</b>." if per_point is not None else ".")
            + "</p>"
        )
        if r.unusable:
            listed = ", ".join(f"{n} {_e(k.replace('_', ' '))}" for k, n in r.unusable.items())
            parts.append(f"<p>Refinements that were unusable: {listed}.</p>")
    else:
        parts.append('<p class="note">No search ran in this iteration.</p>')

    parts.append("<h2>Training data</h2>")
    parts.append(_img(counts_figure(r.counts), "data counts"))

    parts.append("<h2>Adapters</h2>")
    parts.append(_adapters_table(r))

    if r.timings:
        parts.append("<h2>Time per stage</h2>")
        parts.append(_img(timing_figure(r.timings), "seconds per stage"))
    parts.append("</body></html>")
    return "\n".join(parts)


def path_of(store: StateStore, number: int) -> Path:
    return store.iteration_dir(number) / FILE_NAME


def write(store: StateStore, number: int, out: Path | None = None) -> Path:
    """Writes the report of iteration ``number`` (default: into its folder); returns it."""
    doc = render(collect(store, number))
    target = out or path_of(store, number)
    write_atomic(target, doc.encode())
    return target
