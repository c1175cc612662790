"""The promotion decision between two evaluations (pure): does the candidate adapter
replace the baseline?"""

from __future__ import annotations

from dataclasses import dataclass

from spar.errors import InvalidArgument
from spar.evaluation import MetricSet, check_metric

#: Scores are ratios of small counts; equal ratios can differ in the last float bit.
_EPSILON = 1e-9


@dataclass(frozen=True)
class PromotionPolicy:
    """Promote when the candidate is not worse than the baseline by more than margin."""

    metric: str = "prompt_level_strict"
    """One of :data:`METRICS`."""
    margin: float = 0.0
    """Allowed drop, in the metric's units (0.02 = two points of accuracy)."""

    def __post_init__(self) -> None:
        check_metric(self.metric)
        if not 0.0 <= self.margin <= 1.0:
            raise InvalidArgument(f"margin={self.margin} must be within [0, 1]")


@dataclass(frozen=True)
class Decision:
    """Whether a candidate is promoted, with the numbers that decided it."""

    promote: bool
    metric: str
    """The IFEval metric compared (a field of EvalMetrics)."""
    baseline: float
    """The metric of the active version."""
    candidate: float
    """The metric of the candidate."""
    margin: float
    """The drop allowed from baseline to candidate."""
    reason: str
    """The decision in words, for the audit log."""

    @property
    def delta(self) -> float:
        return self.candidate - self.baseline


def decide(
    baseline: MetricSet, candidate: MetricSet, policy: PromotionPolicy | None = None
) -> Decision:
    """Whether to promote the candidate, and why (pure).

    Both must come from the same prompts (``EvalReport.scores`` or ``EvalMetrics``).
    """
    policy = policy or PromotionPolicy()
    if baseline.prompts != candidate.prompts:
        raise InvalidArgument(
            f"the baseline was scored on {baseline.prompts} prompts, the candidate on "
            f"{candidate.prompts}: evaluate both on the same prompts"
        )
    b = float(getattr(baseline, policy.metric))
    c = float(getattr(candidate, policy.metric))
    promote = c - b >= -policy.margin - _EPSILON
    if c - b > _EPSILON:
        change = f"improves {policy.metric} from {b:.4f} to {c:.4f} (+{c - b:.4f})"
    elif c - b < -_EPSILON:
        change = f"lowers {policy.metric} from {b:.4f} to {c:.4f} ({c - b:.4f})"
    else:
        change = f"keeps {policy.metric} at {b:.4f}"
    if promote:
        verdict = "promote" if c - b >= -_EPSILON else f"promote: within margin {policy.margin}"
    else:
        verdict = f"keep the baseline: the drop exceeds margin {policy.margin}"
    return Decision(promote, policy.metric, b, c, policy.margin, f"candidate {change}; {verdict}")
