"""An iteration record (:mod:`iteration_record`) as ``spar.v1.Iteration`` and back.

The coordinator's servicer and its watchers send records as wire messages; the loop
takes the metrics the other services answer with into the record. Records that older
coordinators wrote in protobuf JSON are read here too (:func:`record_from_protobuf_json`).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC
from typing import Any, get_args

from google.protobuf import json_format
from google.protobuf.message import Message

from services.coordinator.iteration_record import (
    Counts,
    CriterionScore,
    EvalMetrics,
    IterationRecord,
    PhaseTokens,
    SearchCost,
    Stage,
    StageTiming,
    State,
    WarmupReport,
)
from services.coordinator.rollout import Version
from spar.client.enums import ProtoEnum
from spar.proto_time import as_seconds, duration, timestamp
from spar.v1 import common_pb2
from spar.v1 import coordinator_pb2 as S

STATE: ProtoEnum[S.IterationState, State] = ProtoEnum(S.IterationState, get_args(State))
STAGE: ProtoEnum[S.IterationStage, Stage] = ProtoEnum(S.IterationStage, get_args(Stage))


def version_message(v: Version | None) -> common_pb2.AdapterVersion:
    if v is None:
        return common_pb2.AdapterVersion()
    return common_pb2.AdapterVersion(
        name=v.name, digest=v.digest, role=v.role, iteration=v.iteration
    )


def _version(m: common_pb2.AdapterVersion, has: bool = True) -> Version | None:
    if not has or not m.name:
        return None
    return Version(m.name, m.digest, m.role, m.iteration)


# -- the record's parts from the services' messages -------------------------------------


def _scalars(m: Message, cls: type[Any]) -> dict[str, Any]:
    """The fields of dataclass cls that message m has by the same name (scalars)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {f.name: getattr(m, f.name) for f in m.DESCRIPTOR.fields if f.name in names}


def eval_metrics(m: S.EvalMetrics) -> EvalMetrics:
    scores = tuple(CriterionScore(**_scalars(c, CriterionScore)) for c in m.criteria)
    return EvalMetrics(**{**_scalars(m, EvalMetrics), "criteria": scores})


def search_cost(m: common_pb2.SearchCost) -> SearchCost:
    return SearchCost(
        **{k: v for k, v in _scalars(m, SearchCost).items() if k not in ("unusable",
           "guardrail_failures", "judge", "refine", "generate")},
        judge=PhaseTokens(**_scalars(m.judge, PhaseTokens)),
        refine=PhaseTokens(**_scalars(m.refine, PhaseTokens)),
        generate=PhaseTokens(**_scalars(m.generate, PhaseTokens)),
        wall_time_s=as_seconds(m.wall_time),
        unusable={f.name: v for f, v in m.unusable.ListFields()},
        guardrail_failures={f.name: v for f, v in m.guardrail_failures.ListFields()},
    )  # fmt: skip


def warmup_report(m: S.WarmupReport) -> WarmupReport:
    return WarmupReport(
        **{k: v for k, v in _scalars(m, WarmupReport).items() if k not in ("mix", "version")},
        mix=dict(m.mix),
        version=_version(m.version, m.HasField("version")),
        duration_s=as_seconds(m.duration),
    )


# -- the whole record ------------------------------------------------------------------


def record_from_message(m: S.Iteration) -> IterationRecord:
    counts = {f.name: v for f, v in m.counts.ListFields() if f.name != "search_outcomes"}
    return IterationRecord(
        number=m.number,
        state=STATE.get(m.state, "running"),
        stage=STAGE.get(m.stage, "prompts"),
        counts=Counts(**counts, search_outcomes=dict(m.counts.search_outcomes)),
        actor_candidate=_version(m.actor_candidate),
        refiner_candidate=_version(m.refiner_candidate),
        baseline_eval=eval_metrics(m.baseline_eval) if m.HasField("baseline_eval") else None,
        candidate_eval=eval_metrics(m.candidate_eval) if m.HasField("candidate_eval") else None,
        search_cost=search_cost(m.search_cost) if m.HasField("search_cost") else None,
        timings=[
            StageTiming(STAGE.get(t.stage, "prompts"), as_seconds(t.duration)) for t in m.timings
        ],
        error=m.error,
        started_at=m.started_at.ToDatetime(UTC) if m.HasField("started_at") else None,
        finished_at=m.finished_at.ToDatetime(UTC) if m.HasField("finished_at") else None,
        decision=m.decision,
        decided_by=m.decided_by,
        warmup=warmup_report(m.warmup) if m.HasField("warmup") else None,
    )


def record_from_protobuf_json(doc: dict[str, Any]) -> IterationRecord:
    """A record as coordinators before spar's iteration schema wrote it."""
    return record_from_message(json_format.ParseDict(doc, S.Iteration()))


def state_name(state: State) -> str:
    """The state as clients see it (``ITERATION_STATE_SUCCEEDED``)."""
    return f"ITERATION_STATE_{state.upper()}"


def eval_evidence(e: EvalMetrics) -> dict[str, Any]:
    """Metrics as the audit log keeps them (protobuf JSON of ``EvalMetrics``, as ever)."""
    doc: dict[str, Any] = json_format.MessageToDict(
        _eval_message(e), preserving_proto_field_name=True
    )
    return doc


def _eval_message(e: EvalMetrics) -> S.EvalMetrics:
    doc = dataclasses.asdict(e)
    return S.EvalMetrics(**{**doc, "criteria": [S.CriterionScore(**c) for c in doc["criteria"]]})


def search_cost_message(c: SearchCost) -> common_pb2.SearchCost:
    doc = dataclasses.asdict(c)
    wall = doc.pop("wall_time_s")
    return common_pb2.SearchCost(
        **{k: v for k, v in doc.items() if k not in ("unusable", "guardrail_failures")},
        wall_time=duration(wall),
        unusable=common_pb2.UnusableRefinements(**c.unusable),
        guardrail_failures=common_pb2.GuardrailFailures(**c.guardrail_failures),
    )


def warmup_message(w: WarmupReport) -> S.WarmupReport:
    doc = {k: v for k, v in dataclasses.asdict(w).items() if k not in ("version", "duration_s")}
    m = S.WarmupReport(**doc, duration=duration(w.duration_s))
    if w.version is not None:
        m.version.CopyFrom(version_message(w.version))
    return m


def iteration_message(r: IterationRecord) -> S.Iteration:
    """The record as ``spar.v1.Iteration`` (what clients and watchers get)."""
    counts = {k: v for k, v in vars(r.counts).items() if k != "search_outcomes"}
    m = S.Iteration(
        number=r.number,
        state=STATE.value(r.state, "state"),
        stage=STAGE.value(r.stage, "stage"),
        counts=S.IterationCounts(**counts, search_outcomes=r.counts.search_outcomes),
        timings=[S.StageTiming(stage=STAGE.value(t.stage, "stage"), duration=duration(t.seconds))
                 for t in r.timings],
        error=r.error,
        decision=r.decision,
        decided_by=r.decided_by,
    )  # fmt: skip
    for name, version in (("actor_candidate", r.actor_candidate),
                          ("refiner_candidate", r.refiner_candidate)):  # fmt: skip
        if version is not None:
            getattr(m, name).CopyFrom(version_message(version))
    if r.baseline_eval is not None:
        m.baseline_eval.CopyFrom(_eval_message(r.baseline_eval))
    if r.candidate_eval is not None:
        m.candidate_eval.CopyFrom(_eval_message(r.candidate_eval))
    if r.search_cost is not None:
        m.search_cost.CopyFrom(search_cost_message(r.search_cost))
    for name, when in (("started_at", r.started_at), ("finished_at", r.finished_at)):
        if when is not None:
            getattr(m, name).CopyFrom(timestamp(when))
    if r.warmup is not None:
        m.warmup.CopyFrom(warmup_message(r.warmup))
    return m
