"""The metric contract of docs/metrics.md, and what a PromQL expression uses of it.

docs/metrics.md is the single list of metric families: the dashboard and the alerts may
use only those names and labels. Each section of the document says which services export
its families; a query can be checked against real data once one of them runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
METRICS_DOC = ROOT / "docs" / "metrics.md"
SERVICES = ("actor", "refiner", "trainer", "coordinator")

#: Labels that Prometheus and the chart's ServiceMonitor add to every scraped series.
TARGET_LABELS = frozenset({"namespace", "pod", "instance", "job", "service"})


@dataclass(frozen=True)
class Family:
    name: str
    type: str
    labels: frozenset[str]
    exporters: frozenset[str]
    """Services that export it (any one of them is enough to see data)."""

    def series_names(self) -> set[str]:
        if self.type == "histogram":
            return {f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count"}
        return {self.name}


def _exporters(heading: str) -> frozenset[str]:
    heading = heading.lower()
    if heading.startswith("all grpc servers"):
        return frozenset(SERVICES)
    found = frozenset(s for s in SERVICES if s in heading)
    if not found:
        raise ValueError(f"docs/metrics.md: cannot tell the services of section {heading!r}")
    return found


def load_families(doc: Path = METRICS_DOC) -> dict[str, Family]:
    """Every family of docs/metrics.md by name."""
    families: dict[str, Family] = {}
    exporters: frozenset[str] = frozenset()
    for line in doc.read_text().splitlines():
        if line.startswith("## "):
            exporters = _exporters(line[3:])
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`spar_"):
            continue
        name = cells[0].strip("`")
        labels = frozenset(label.strip() for label in cells[2].split(",") if label.strip())
        families[name] = Family(name, cells[1], labels, exporters)
    return families


def series_index(families: dict[str, Family]) -> dict[str, Family]:
    """Series name (with _bucket/_sum/_count for histograms) to its family."""
    return {series: f for f in families.values() for series in f.series_names()}


_METRIC = re.compile(r"\b(spar_[a-z0-9_]+|up)\b(?=\s*[{\[)\s])")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_MATCHER = re.compile(r"\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def metrics_in(expr: str) -> set[str]:
    """Series names an expression selects (spar_* and up)."""
    return set(_METRIC.findall(expr))


def labels_in(expr: str) -> set[str]:
    """Label names an expression groups, joins or matches on."""
    names: set[str] = set()
    for group in _GROUPING.findall(expr):
        names.update(n.strip() for n in group.split(",") if n.strip())
    for matchers in _MATCHER.findall(expr):
        names.update(_MATCHER_LABEL.findall(matchers))
    return names


def allowed_labels(expr: str, index: dict[str, Family]) -> set[str]:
    """Labels the series of an expression can carry."""
    allowed = set(TARGET_LABELS)
    for metric in metrics_in(expr):
        family = index.get(metric)
        if family is not None:
            allowed |= family.labels
            if metric.endswith("_bucket") and family.type == "histogram":
                allowed.add("le")
    return allowed


def exporters_needed(expr: str, index: dict[str, Family]) -> list[frozenset[str]]:
    """For each family the expression uses, the services of which one must run."""
    return [
        index[m].exporters if m in index else frozenset(SERVICES)  # `up`: any target
        for m in sorted(metrics_in(expr))
    ]
