"""The iteration report: what it computes from the recorded iteration, and the HTML file
(every figure inline, nothing fetched)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from report_example import SEARCHES, iteration

from services.coordinator import report
from services.coordinator.iteration_record import IterationRecord
from services.coordinator.journal import Journal
from services.coordinator.state import StateStore
from spar.errors import NotFound


def test_the_report_weighs_search_tokens_against_the_points_gained() -> None:
    r = report.from_record(iteration(), SEARCHES)
    assert [s.generated_tokens for s in r.searches] == [800, 300, 900]
    assert r.searches[0].seconds == 12.5
    assert r.search_tokens == 2000
    assert r.gain_points == pytest.approx(25.0)
    assert r.tokens_per_point == pytest.approx(80.0)
    assert r.unusable == {"cut_at_max_tokens": 3}
    # Only constraint types both evaluations scored are compared.
    assert [(c.instruction_id, c.before, c.after) for c in r.constraints] == [
        ("punctuation:no_comma", 0.25, 0.75)
    ]
    assert [(a.name, a.rolled_out) for a in r.adapters] == [
        ("actor-3-0123456789ab", True), ("refiner-3-ba9876543210", True),
    ]  # fmt: skip


def test_no_gain_means_no_tokens_per_point_and_a_rejected_candidate_is_not_rolled_out() -> None:
    r = report.from_record(iteration("rejected", after=0.125), SEARCHES)
    assert r.gain_points == pytest.approx(-12.5)
    assert r.tokens_per_point is None
    assert not any(a.rolled_out for a in r.adapters)
    assert "no gain" in report.render(r)


def test_the_html_holds_every_figure_inline_and_escapes_text() -> None:
    doc = report.render(report.from_record(iteration(), SEARCHES))
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', doc)
    assert [alt for alt, _ in images] == [
        "pass rate per constraint type",
        "search outcomes",
        "search cost per search",
        "data counts",
        "seconds per stage",
    ]
    assert all(len(png) > 1000 for _, png in images)
    assert "a" * 64 in doc and "b" * 64 in doc  # full digests
    assert "promote &lt;b&gt;now&lt;/b&gt;" in doc
    assert "80 tokens per point" in doc
    assert not re.search(r'(src|href)="(https?:)?//', doc), "nothing may be fetched"


def test_an_iteration_without_evaluation_or_search_still_renders() -> None:
    it = IterationRecord(number=1, state="failed", error="train: no data")
    doc = report.render(report.from_record(it))
    assert "No search ran" in doc and "No per-constraint evaluation" in doc
    assert "error: train: no data" in doc and "No adapter was trained" in doc


def test_write_puts_the_report_into_the_iterations_folder(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save_iteration(iteration())
    Journal(store.iteration_dir(3) / "searches.jsonl").append(SEARCHES)
    path = report.write(store, 3)
    assert path == tmp_path / "iterations" / "0003" / "report.html"
    assert path.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "iteration.json", "report.html", "searches.jsonl",
    ]  # fmt: skip
    elsewhere = report.write(store, 3, tmp_path / "out" / "r.html")
    assert elsewhere.read_text() == path.read_text()
    with pytest.raises(NotFound, match="iteration 9"):
        report.write(store, 9)
