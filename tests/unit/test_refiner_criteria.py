"""The refiner's request handling of criteria packs and the outside judge, without an
engine: constraints from criteria, the judge it builds, the sampled shadow judgements."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.refiner.cost import Budget, Meter
from services.refiner.metrics import RefinerMetrics
from services.refiner.service import RefinerService
from spar.config import CriteriaSettings, ExternalJudgeSettings, Limits, Settings
from spar.errors import InvalidArgument
from spar.external_judge import ExternalJudge
from spar.ifeval import Constraint
from spar.metrics import Metrics
from tests.unit.refiner_script import PROMPTS, Script, yes

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "criteria" / "support.yaml"
INSTRUCTION = "Customer email, case 48213: my screen is cracked."
GOOD = (
    "Hello Sam,\n\nThank you for writing about case 48213. A replacement ships today and "
    "arrives before Friday.\n\nBest regards, the support team"
)


def service(tmp_path: Path, answer: dict[str, Any] | None = None) -> tuple[RefinerService, Metrics]:
    packs = tmp_path / "packs"
    packs.mkdir()
    (packs / "support.yaml").write_text(EXAMPLE.read_text())
    settings = Settings(
        cache_dir=tmp_path,
        criteria=CriteriaSettings(dir=str(packs)),
        limits=Limits(max_constraints=12),
    )
    metrics = Metrics("refiner")
    svc = RefinerService(None, settings, RefinerMetrics(metrics))  # type: ignore[arg-type]
    if answer is not None:
        content = json.dumps(answer)

        def endpoint(request: httpx.Request) -> httpx.Response:
            body = {"choices": [{"message": {"role": "assistant", "content": content}}]}
            return httpx.Response(200, json=body)

        svc.core.external = ExternalJudge(
            ExternalJudgeSettings(url="http://judge/v1", model="m", sample_fraction=1.0),
            svc.core.external_metrics,
            transport=httpx.MockTransport(endpoint),
        )
    return svc, metrics


def test_criteria_become_constraints(tmp_path: Path) -> None:
    svc, metrics = service(tmp_path)
    no_comma = Constraint("punctuation:no_comma", {})
    constraints = svc.core._constraints([no_comma], INSTRUCTION, ["support"])
    assert [c.instruction_id for c in constraints][:2] == [
        "punctuation:no_comma",
        "support/greeting",
    ]
    assert len(constraints) == 11
    assert len(svc.core._checkable(constraints)) == 9
    assert (
        metrics.registry.get_sample_value("spar_criteria_packs_loaded", {"service": "refiner"}) == 1
    )
    with pytest.raises(InvalidArgument, match="criteria: unknown criteria pack 'billing'"):
        svc.core._constraints([], INSTRUCTION, ["billing"])
    with pytest.raises(
        InvalidArgument, match="13 constraints and criteria exceed the server limit 12"
    ):
        svc.core._constraints([no_comma] * 3, INSTRUCTION, ["support"])


def test_a_bad_pack_stops_the_refiner_at_start(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: bad\ncriteria:\n  - id: x\n    type: length\n")
    settings = Settings(cache_dir=tmp_path, criteria=CriteriaSettings(dir=str(tmp_path)))
    with pytest.raises(InvalidArgument, match=r"bad.yaml: criterion 'x'"):
        RefinerService(None, settings, RefinerMetrics(Metrics("refiner")))  # type: ignore[arg-type]


async def test_sampled_judgements_go_to_the_outside_judge_and_agreement_is_counted(
    tmp_path: Path,
) -> None:
    outside = {
        "requirements": {"support/greeting": True, "support/short": True,
                         "support/polite_no_apology": False},
        "overall": False,
    }  # fmt: skip
    svc, metrics = service(tmp_path, outside)
    core = svc.core
    constraints = core._constraints([], INSTRUCTION, ["support"])
    meter = Meter(Script(judge={GOOD: [yes()]}), Budget.unlimited())
    config = core.config.model_copy(update={"judge_samples": 1})
    from services.refiner import options as opt

    core.prompts = PROMPTS  # the scripted engine reads its tiny templates
    judge = core._judge("hybrid", INSTRUCTION, constraints, opt.judge_config(config), meter)
    j = await judge.judge(GOOD)
    assert j.verdict == "pass" and j.voted
    assert core.external is not None
    await core.external.drain()

    def agreement(criterion: str, verdict: str) -> float:
        labels = {"service": "refiner", "criterion": criterion, "agreement": verdict}
        return metrics.registry.get_sample_value("spar_external_judge_agreement_total", labels) or 0

    assert agreement("support/greeting", "agree") == 1
    assert agreement("support/polite_no_apology", "disagree") == 1
    assert agreement("overall", "disagree") == 1
    assert agreement("support/next_step", "agree") == 0, "not answered: not counted"
    await svc.close()
