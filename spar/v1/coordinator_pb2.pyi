import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from spar.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IterationStage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ITERATION_STAGE_UNSPECIFIED: _ClassVar[IterationStage]
    ITERATION_STAGE_PROMPTS: _ClassVar[IterationStage]
    ITERATION_STAGE_SAMPLE: _ClassVar[IterationStage]
    ITERATION_STAGE_JUDGE: _ClassVar[IterationStage]
    ITERATION_STAGE_SEARCH: _ClassVar[IterationStage]
    ITERATION_STAGE_BUILD_DATA: _ClassVar[IterationStage]
    ITERATION_STAGE_TRAIN: _ClassVar[IterationStage]
    ITERATION_STAGE_EVALUATE: _ClassVar[IterationStage]
    ITERATION_STAGE_ROLLOUT: _ClassVar[IterationStage]
    ITERATION_STAGE_RECORD: _ClassVar[IterationStage]
    ITERATION_STAGE_DONE: _ClassVar[IterationStage]

class IterationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ITERATION_STATE_UNSPECIFIED: _ClassVar[IterationState]
    ITERATION_STATE_RUNNING: _ClassVar[IterationState]
    ITERATION_STATE_SUCCEEDED: _ClassVar[IterationState]
    ITERATION_STATE_REJECTED: _ClassVar[IterationState]
    ITERATION_STATE_FAILED: _ClassVar[IterationState]
    ITERATION_STATE_AWAITING_APPROVAL: _ClassVar[IterationState]
ITERATION_STAGE_UNSPECIFIED: IterationStage
ITERATION_STAGE_PROMPTS: IterationStage
ITERATION_STAGE_SAMPLE: IterationStage
ITERATION_STAGE_JUDGE: IterationStage
ITERATION_STAGE_SEARCH: IterationStage
ITERATION_STAGE_BUILD_DATA: IterationStage
ITERATION_STAGE_TRAIN: IterationStage
ITERATION_STAGE_EVALUATE: IterationStage
ITERATION_STAGE_ROLLOUT: IterationStage
ITERATION_STAGE_RECORD: IterationStage
ITERATION_STAGE_DONE: IterationStage
ITERATION_STATE_UNSPECIFIED: IterationState
ITERATION_STATE_RUNNING: IterationState
ITERATION_STATE_SUCCEEDED: IterationState
ITERATION_STATE_REJECTED: IterationState
ITERATION_STATE_FAILED: IterationState
ITERATION_STATE_AWAITING_APPROVAL: IterationState

class StartIterationRequest(_message.Message):
    __slots__ = ("prompts_path", "num_prompts")
    PROMPTS_PATH_FIELD_NUMBER: _ClassVar[int]
    NUM_PROMPTS_FIELD_NUMBER: _ClassVar[int]
    prompts_path: str
    num_prompts: int
    def __init__(self, prompts_path: _Optional[str] = ..., num_prompts: _Optional[int] = ...) -> None: ...

class IterationCounts(_message.Message):
    __slots__ = ("prompts", "samples", "negatives", "searches", "refined", "dpo_pairs", "sft_records", "search_outcomes", "dpo_pairs_dropped_rewrite", "dpo_pairs_dropped_no_gain", "refine_records", "refine_steps_failed_search", "refine_steps_dropped", "judge_records", "judge_agreed", "judge_relabelled", "judge_verifier_only", "judge_unchecked", "judge_capped", "dpo_pairs_dropped_echo")
    class SearchOutcomesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    NEGATIVES_FIELD_NUMBER: _ClassVar[int]
    SEARCHES_FIELD_NUMBER: _ClassVar[int]
    REFINED_FIELD_NUMBER: _ClassVar[int]
    DPO_PAIRS_FIELD_NUMBER: _ClassVar[int]
    SFT_RECORDS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    DPO_PAIRS_DROPPED_REWRITE_FIELD_NUMBER: _ClassVar[int]
    DPO_PAIRS_DROPPED_NO_GAIN_FIELD_NUMBER: _ClassVar[int]
    REFINE_RECORDS_FIELD_NUMBER: _ClassVar[int]
    REFINE_STEPS_FAILED_SEARCH_FIELD_NUMBER: _ClassVar[int]
    REFINE_STEPS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    JUDGE_RECORDS_FIELD_NUMBER: _ClassVar[int]
    JUDGE_AGREED_FIELD_NUMBER: _ClassVar[int]
    JUDGE_RELABELLED_FIELD_NUMBER: _ClassVar[int]
    JUDGE_VERIFIER_ONLY_FIELD_NUMBER: _ClassVar[int]
    JUDGE_UNCHECKED_FIELD_NUMBER: _ClassVar[int]
    JUDGE_CAPPED_FIELD_NUMBER: _ClassVar[int]
    DPO_PAIRS_DROPPED_ECHO_FIELD_NUMBER: _ClassVar[int]
    prompts: int
    samples: int
    negatives: int
    searches: int
    refined: int
    dpo_pairs: int
    sft_records: int
    search_outcomes: _containers.ScalarMap[str, int]
    dpo_pairs_dropped_rewrite: int
    dpo_pairs_dropped_no_gain: int
    refine_records: int
    refine_steps_failed_search: int
    refine_steps_dropped: int
    judge_records: int
    judge_agreed: int
    judge_relabelled: int
    judge_verifier_only: int
    judge_unchecked: int
    judge_capped: int
    dpo_pairs_dropped_echo: int
    def __init__(self, prompts: _Optional[int] = ..., samples: _Optional[int] = ..., negatives: _Optional[int] = ..., searches: _Optional[int] = ..., refined: _Optional[int] = ..., dpo_pairs: _Optional[int] = ..., sft_records: _Optional[int] = ..., search_outcomes: _Optional[_Mapping[str, int]] = ..., dpo_pairs_dropped_rewrite: _Optional[int] = ..., dpo_pairs_dropped_no_gain: _Optional[int] = ..., refine_records: _Optional[int] = ..., refine_steps_failed_search: _Optional[int] = ..., refine_steps_dropped: _Optional[int] = ..., judge_records: _Optional[int] = ..., judge_agreed: _Optional[int] = ..., judge_relabelled: _Optional[int] = ..., judge_verifier_only: _Optional[int] = ..., judge_unchecked: _Optional[int] = ..., judge_capped: _Optional[int] = ..., dpo_pairs_dropped_echo: _Optional[int] = ...) -> None: ...

class WarmupReport(_message.Message):
    __slots__ = ("prompts", "samples", "failing", "searches", "searches_refined", "search_records", "repair_records", "mix", "version", "duration", "skipped", "repairs_capped")
    class MixEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    FAILING_FIELD_NUMBER: _ClassVar[int]
    SEARCHES_FIELD_NUMBER: _ClassVar[int]
    SEARCHES_REFINED_FIELD_NUMBER: _ClassVar[int]
    SEARCH_RECORDS_FIELD_NUMBER: _ClassVar[int]
    REPAIR_RECORDS_FIELD_NUMBER: _ClassVar[int]
    MIX_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    REPAIRS_CAPPED_FIELD_NUMBER: _ClassVar[int]
    prompts: int
    samples: int
    failing: int
    searches: int
    searches_refined: int
    search_records: int
    repair_records: int
    mix: _containers.ScalarMap[str, int]
    version: _common_pb2.AdapterVersion
    duration: _duration_pb2.Duration
    skipped: str
    repairs_capped: int
    def __init__(self, prompts: _Optional[int] = ..., samples: _Optional[int] = ..., failing: _Optional[int] = ..., searches: _Optional[int] = ..., searches_refined: _Optional[int] = ..., search_records: _Optional[int] = ..., repair_records: _Optional[int] = ..., mix: _Optional[_Mapping[str, int]] = ..., version: _Optional[_Union[_common_pb2.AdapterVersion, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., skipped: _Optional[str] = ..., repairs_capped: _Optional[int] = ...) -> None: ...

class EvalMetrics(_message.Message):
    __slots__ = ("prompt_level_strict", "prompt_level_loose", "instruction_level_strict", "instruction_level_loose", "prompts", "criteria")
    PROMPT_LEVEL_STRICT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_LEVEL_LOOSE_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_LEVEL_STRICT_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_LEVEL_LOOSE_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    CRITERIA_FIELD_NUMBER: _ClassVar[int]
    prompt_level_strict: float
    prompt_level_loose: float
    instruction_level_strict: float
    instruction_level_loose: float
    prompts: int
    criteria: _containers.RepeatedCompositeFieldContainer[CriterionScore]
    def __init__(self, prompt_level_strict: _Optional[float] = ..., prompt_level_loose: _Optional[float] = ..., instruction_level_strict: _Optional[float] = ..., instruction_level_loose: _Optional[float] = ..., prompts: _Optional[int] = ..., criteria: _Optional[_Iterable[_Union[CriterionScore, _Mapping]]] = ...) -> None: ...

class CriterionScore(_message.Message):
    __slots__ = ("id", "count", "strict", "loose")
    ID_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    STRICT_FIELD_NUMBER: _ClassVar[int]
    LOOSE_FIELD_NUMBER: _ClassVar[int]
    id: str
    count: int
    strict: float
    loose: float
    def __init__(self, id: _Optional[str] = ..., count: _Optional[int] = ..., strict: _Optional[float] = ..., loose: _Optional[float] = ...) -> None: ...

class StageTiming(_message.Message):
    __slots__ = ("stage", "duration")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    stage: IterationStage
    duration: _duration_pb2.Duration
    def __init__(self, stage: _Optional[_Union[IterationStage, str]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class Iteration(_message.Message):
    __slots__ = ("number", "state", "stage", "counts", "actor_candidate", "refiner_candidate", "baseline_eval", "candidate_eval", "search_cost", "timings", "error", "started_at", "finished_at", "decision", "decided_by", "warmup")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    ACTOR_CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    REFINER_CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    BASELINE_EVAL_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_EVAL_FIELD_NUMBER: _ClassVar[int]
    SEARCH_COST_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    DECIDED_BY_FIELD_NUMBER: _ClassVar[int]
    WARMUP_FIELD_NUMBER: _ClassVar[int]
    number: int
    state: IterationState
    stage: IterationStage
    counts: IterationCounts
    actor_candidate: _common_pb2.AdapterVersion
    refiner_candidate: _common_pb2.AdapterVersion
    baseline_eval: EvalMetrics
    candidate_eval: EvalMetrics
    search_cost: _common_pb2.SearchCost
    timings: _containers.RepeatedCompositeFieldContainer[StageTiming]
    error: str
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    decision: str
    decided_by: str
    warmup: WarmupReport
    def __init__(self, number: _Optional[int] = ..., state: _Optional[_Union[IterationState, str]] = ..., stage: _Optional[_Union[IterationStage, str]] = ..., counts: _Optional[_Union[IterationCounts, _Mapping]] = ..., actor_candidate: _Optional[_Union[_common_pb2.AdapterVersion, _Mapping]] = ..., refiner_candidate: _Optional[_Union[_common_pb2.AdapterVersion, _Mapping]] = ..., baseline_eval: _Optional[_Union[EvalMetrics, _Mapping]] = ..., candidate_eval: _Optional[_Union[EvalMetrics, _Mapping]] = ..., search_cost: _Optional[_Union[_common_pb2.SearchCost, _Mapping]] = ..., timings: _Optional[_Iterable[_Union[StageTiming, _Mapping]]] = ..., error: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., decision: _Optional[str] = ..., decided_by: _Optional[str] = ..., warmup: _Optional[_Union[WarmupReport, _Mapping]] = ...) -> None: ...

class WatchIterationRequest(_message.Message):
    __slots__ = ("number",)
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    number: int
    def __init__(self, number: _Optional[int] = ...) -> None: ...

class IterationEvent(_message.Message):
    __slots__ = ("iteration", "message")
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    iteration: Iteration
    message: str
    def __init__(self, iteration: _Optional[_Union[Iteration, _Mapping]] = ..., message: _Optional[str] = ...) -> None: ...

class GetStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReplicaState(_message.Message):
    __slots__ = ("target", "role", "active", "reachable")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    target: str
    role: str
    active: str
    reachable: bool
    def __init__(self, target: _Optional[str] = ..., role: _Optional[str] = ..., active: _Optional[str] = ..., reachable: _Optional[bool] = ...) -> None: ...

class CoordinatorState(_message.Message):
    __slots__ = ("actor", "actor_previous", "refiner", "refiner_previous", "iterations", "replicas", "store_target", "approval_required", "awaiting_approval")
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTOR_PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    REFINER_FIELD_NUMBER: _ClassVar[int]
    REFINER_PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    STORE_TARGET_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    AWAITING_APPROVAL_FIELD_NUMBER: _ClassVar[int]
    actor: _common_pb2.AdapterVersion
    actor_previous: _common_pb2.AdapterVersion
    refiner: _common_pb2.AdapterVersion
    refiner_previous: _common_pb2.AdapterVersion
    iterations: _containers.RepeatedCompositeFieldContainer[Iteration]
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaState]
    store_target: str
    approval_required: bool
    awaiting_approval: int
    def __init__(self, actor: _Optional[_Union[_common_pb2.AdapterVersion, _Mapping]] = ..., actor_previous: _Optional[_Union[_common_pb2.AdapterVersion, _Mapping]] = ..., refiner: _Optional[_Union[_common_pb2.AdapterVersion, _Mapping]] = ..., refiner_previous: _Optional[_Union[_common_pb2.AdapterVersion, _Mapping]] = ..., iterations: _Optional[_Iterable[_Union[Iteration, _Mapping]]] = ..., replicas: _Optional[_Iterable[_Union[ReplicaState, _Mapping]]] = ..., store_target: _Optional[str] = ..., approval_required: _Optional[bool] = ..., awaiting_approval: _Optional[int] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("role", "name", "operator", "reason")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    role: str
    name: str
    operator: str
    reason: str
    def __init__(self, role: _Optional[str] = ..., name: _Optional[str] = ..., operator: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RollbackResponse(_message.Message):
    __slots__ = ("active", "replicas")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    active: _common_pb2.AdapterVersion
    replicas: int
    def __init__(self, active: _Optional[_Union[_common_pb2.AdapterVersion, _Mapping]] = ..., replicas: _Optional[int] = ...) -> None: ...

class ListAuditRequest(_message.Message):
    __slots__ = ("iteration", "role", "limit")
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    iteration: int
    role: str
    limit: int
    def __init__(self, iteration: _Optional[int] = ..., role: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class AuditRecord(_message.Message):
    __slots__ = ("sequence", "time", "action", "iteration", "role", "version", "previous", "decision", "reason", "decided_by", "baseline_eval", "candidate_eval", "replicas", "result", "error", "previous_hash")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DECIDED_BY_FIELD_NUMBER: _ClassVar[int]
    BASELINE_EVAL_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_EVAL_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_HASH_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time: _timestamp_pb2.Timestamp
    action: str
    iteration: int
    role: str
    version: _common_pb2.AdapterVersion
    previous: _common_pb2.AdapterVersion
    decision: str
    reason: str
    decided_by: str
    baseline_eval: EvalMetrics
    candidate_eval: EvalMetrics
    replicas: _containers.RepeatedScalarFieldContainer[str]
    result: str
    error: str
    previous_hash: str
    def __init__(self, sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., action: _Optional[str] = ..., iteration: _Optional[int] = ..., role: _Optional[str] = ..., version: _Optional[_Union[_common_pb2.AdapterVersion, _Mapping]] = ..., previous: _Optional[_Union[_common_pb2.AdapterVersion, _Mapping]] = ..., decision: _Optional[str] = ..., reason: _Optional[str] = ..., decided_by: _Optional[str] = ..., baseline_eval: _Optional[_Union[EvalMetrics, _Mapping]] = ..., candidate_eval: _Optional[_Union[EvalMetrics, _Mapping]] = ..., replicas: _Optional[_Iterable[str]] = ..., result: _Optional[str] = ..., error: _Optional[str] = ..., previous_hash: _Optional[str] = ...) -> None: ...

class ListAuditResponse(_message.Message):
    __slots__ = ("records", "chain_intact", "chain_error")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    CHAIN_INTACT_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ERROR_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[AuditRecord]
    chain_intact: bool
    chain_error: str
    def __init__(self, records: _Optional[_Iterable[_Union[AuditRecord, _Mapping]]] = ..., chain_intact: _Optional[bool] = ..., chain_error: _Optional[str] = ...) -> None: ...

class PromoteRequest(_message.Message):
    __slots__ = ("iteration", "operator", "reason")
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    iteration: int
    operator: str
    reason: str
    def __init__(self, iteration: _Optional[int] = ..., operator: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RejectRequest(_message.Message):
    __slots__ = ("iteration", "operator", "reason")
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    iteration: int
    operator: str
    reason: str
    def __init__(self, iteration: _Optional[int] = ..., operator: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
