"""The figures of an iteration's report (services.coordinator.report), each a PNG as
base64 text, drawn with matplotlib's object API (no pyplot, no global state: safe in the
coordinator's worker thread)."""

from __future__ import annotations

import base64
import io
import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.coordinator.report import ConstraintRate, SearchCost

#: Search outcomes in the order a reader weighs them, with their colours.
OUTCOME_COLOURS = {
    "refined": "#2e7d32",
    "already_passing": "#90a4ae",
    "unchanged": "#8d6e63",
    "budget": "#ef6c00",
    "exhausted": "#c62828",
    "deadline": "#6a1b9a",
}
BEFORE, AFTER = "#b0bec5", "#1565c0"


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig


def _style(ax: Any) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=9)


def constraint_figure(rates: Sequence[ConstraintRate]) -> str:
    """Horizontal bars: pass rate per constraint type, before (grey) and after (blue)."""
    fig = _figure(7.5, 0.8 + 0.36 * len(rates))
    ax = fig.subplots()
    ys = range(len(rates))
    # The y axis is inverted below (first type on top): "before" sits above "after".
    for offset, attr, colour, label in ((-0.2, "before", BEFORE, "before"),
                                        (0.2, "after", AFTER, "after")):  # fmt: skip
        values = [getattr(r, attr) * 100 for r in rates]
        bars = ax.barh([y + offset for y in ys], values, 0.4, color=colour, label=label)
        ax.bar_label(bars, labels=[f"{v:.0f}%" for v in values], padding=2, fontsize=7)
    ax.set_yticks(list(ys), [f"{r.instruction_id} (n={r.count})" for r in rates])
    ax.invert_yaxis()
    ax.set_xlim(0, 110)
    ax.set_xticks(range(0, 101, 20))
    ax.set_xlabel("prompts whose constraint is met (strict), %")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1), ncols=2, fontsize=9, frameon=False)
    _style(ax)
    return _png(fig)


def outcome_figure(searches: Sequence[SearchCost]) -> str:
    counts: dict[str, int] = {}
    for s in searches:
        counts[s.outcome] = counts.get(s.outcome, 0) + 1
    order = [o for o in OUTCOME_COLOURS if o in counts] + sorted(
        o for o in counts if o not in OUTCOME_COLOURS
    )
    fig = _figure(5.5, 0.7 + 0.4 * len(order))
    ax = fig.subplots()
    bars = ax.barh(order, [counts[o] for o in order],
                   color=[OUTCOME_COLOURS.get(o, "#607d8b") for o in order])  # fmt: skip
    ax.bar_label(bars, padding=3, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("searches")
    ax.xaxis.get_major_locator().set_params(integer=True)
    _style(ax)
    return _png(fig)


#: Below this many searches each one is drawn as a dot: a histogram of a handful of values
#: shows its bins more than the values.
HISTOGRAM_FROM = 10


def cost_figure(searches: Sequence[SearchCost]) -> str:
    """Nodes, generated tokens and seconds per search (histograms, or one dot per search
    when there are few), medians marked."""
    fig = _figure(9.0, 2.6 if len(searches) >= HISTOGRAM_FROM else 1.9)
    panels = fig.subplots(1, 3)
    series: list[tuple[str, list[float]]] = [
        ("nodes expanded", [s.nodes for s in searches]),
        ("generated tokens", [s.generated_tokens for s in searches]),
        ("seconds", [s.seconds for s in searches]),
    ]
    for ax, (label, values) in zip(panels, series, strict=True):
        median = statistics.median(values)
        if len(values) >= HISTOGRAM_FROM:
            ax.hist(values, bins="auto", color=AFTER, alpha=0.85, rwidth=0.9)
            ax.set_ylabel("searches", fontsize=9)
            ax.yaxis.get_major_locator().set_params(integer=True)
        else:
            # Equal values would hide each other: each search gets its own row.
            ax.scatter(values, range(len(values)), color=AFTER, s=40, zorder=3)
            ax.set_ylim(-1, len(values))
            ax.set_yticks([])
            ax.spines["left"].set_visible(False)
        if label != "seconds":
            ax.xaxis.get_major_locator().set_params(integer=True)
        ax.axvline(median, color="#212121", linestyle="--", linewidth=1)
        ax.set_title(f"{label}\nmedian {median:,.4g}", fontsize=10)
        _style(ax)
    return _png(fig)


def _named_bars(
    values: Mapping[str, float],
    colour: str,
    row_height: float,
    labels: list[str] | None,
    fontsize: int,
) -> Any:
    """Horizontal bars, one per name in the mapping's order (the first on top); their axes."""
    names = list(values)
    ax = _figure(6.0, 0.7 + row_height * len(names)).subplots()
    bars = ax.barh(names, [values[n] for n in names], color=colour)
    ax.bar_label(bars, labels=labels, padding=3, fontsize=fontsize)
    ax.invert_yaxis()
    _style(ax)
    return ax


def counts_figure(counts: Mapping[str, int]) -> str:
    """The data funnel: prompts → samples → ... → training records."""
    ax = _named_bars(counts, "#00838f", 0.34, None, 9)
    ax.xaxis.get_major_locator().set_params(integer=True)
    return _png(ax.figure)


def timing_figure(timings: Mapping[str, float]) -> str:
    labels = [f"{t:,.1f} s" for t in timings.values()]
    ax = _named_bars(timings, "#5e35b1", 0.3, labels, 8)
    ax.set_xlabel("seconds")
    return _png(ax.figure)
