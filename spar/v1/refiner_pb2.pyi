from spar.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TiePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIE_POLICY_UNSPECIFIED: _ClassVar[TiePolicy]
    TIE_POLICY_RESAMPLE: _ClassVar[TiePolicy]
    TIE_POLICY_UNDECIDED: _ClassVar[TiePolicy]

class RefineEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFINE_EVENT_KIND_UNSPECIFIED: _ClassVar[RefineEventKind]
    REFINE_EVENT_KIND_NODE_EXPANDED: _ClassVar[RefineEventKind]
    REFINE_EVENT_KIND_NODE_JUDGED: _ClassVar[RefineEventKind]
    REFINE_EVENT_KIND_RESULT: _ClassVar[RefineEventKind]
TIE_POLICY_UNSPECIFIED: TiePolicy
TIE_POLICY_RESAMPLE: TiePolicy
TIE_POLICY_UNDECIDED: TiePolicy
REFINE_EVENT_KIND_UNSPECIFIED: RefineEventKind
REFINE_EVENT_KIND_NODE_EXPANDED: RefineEventKind
REFINE_EVENT_KIND_NODE_JUDGED: RefineEventKind
REFINE_EVENT_KIND_RESULT: RefineEventKind

class JudgeRequest(_message.Message):
    __slots__ = ("instruction", "response", "constraints", "kind", "samples", "tie_policy", "return_all_samples", "criteria")
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    TIE_POLICY_FIELD_NUMBER: _ClassVar[int]
    RETURN_ALL_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    CRITERIA_FIELD_NUMBER: _ClassVar[int]
    instruction: str
    response: str
    constraints: _containers.RepeatedCompositeFieldContainer[_common_pb2.VerifiableConstraint]
    kind: _common_pb2.JudgeKind
    samples: int
    tie_policy: TiePolicy
    return_all_samples: bool
    criteria: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, instruction: _Optional[str] = ..., response: _Optional[str] = ..., constraints: _Optional[_Iterable[_Union[_common_pb2.VerifiableConstraint, _Mapping]]] = ..., kind: _Optional[_Union[_common_pb2.JudgeKind, str]] = ..., samples: _Optional[int] = ..., tie_policy: _Optional[_Union[TiePolicy, str]] = ..., return_all_samples: _Optional[bool] = ..., criteria: _Optional[_Iterable[str]] = ...) -> None: ...

class JudgeSample(_message.Message):
    __slots__ = ("text", "verdict")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    text: str
    verdict: _common_pb2.Verdict
    def __init__(self, text: _Optional[str] = ..., verdict: _Optional[_Union[_common_pb2.Verdict, str]] = ...) -> None: ...

class ConstraintResult(_message.Message):
    __slots__ = ("instruction_id", "strict_pass", "loose_pass", "error", "complaint")
    INSTRUCTION_ID_FIELD_NUMBER: _ClassVar[int]
    STRICT_PASS_FIELD_NUMBER: _ClassVar[int]
    LOOSE_PASS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    COMPLAINT_FIELD_NUMBER: _ClassVar[int]
    instruction_id: str
    strict_pass: bool
    loose_pass: bool
    error: str
    complaint: str
    def __init__(self, instruction_id: _Optional[str] = ..., strict_pass: _Optional[bool] = ..., loose_pass: _Optional[bool] = ..., error: _Optional[str] = ..., complaint: _Optional[str] = ...) -> None: ...

class JudgeResponse(_message.Message):
    __slots__ = ("verdict", "value", "critique", "yes_votes", "no_votes", "unparseable", "samples", "constraint_results", "kind", "usage")
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CRITIQUE_FIELD_NUMBER: _ClassVar[int]
    YES_VOTES_FIELD_NUMBER: _ClassVar[int]
    NO_VOTES_FIELD_NUMBER: _ClassVar[int]
    UNPARSEABLE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINT_RESULTS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    verdict: _common_pb2.Verdict
    value: float
    critique: str
    yes_votes: int
    no_votes: int
    unparseable: int
    samples: _containers.RepeatedCompositeFieldContainer[JudgeSample]
    constraint_results: _containers.RepeatedCompositeFieldContainer[ConstraintResult]
    kind: _common_pb2.JudgeKind
    usage: _common_pb2.Usage
    def __init__(self, verdict: _Optional[_Union[_common_pb2.Verdict, str]] = ..., value: _Optional[float] = ..., critique: _Optional[str] = ..., yes_votes: _Optional[int] = ..., no_votes: _Optional[int] = ..., unparseable: _Optional[int] = ..., samples: _Optional[_Iterable[_Union[JudgeSample, _Mapping]]] = ..., constraint_results: _Optional[_Iterable[_Union[ConstraintResult, _Mapping]]] = ..., kind: _Optional[_Union[_common_pb2.JudgeKind, str]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ...) -> None: ...

class RefineRequest(_message.Message):
    __slots__ = ("instruction", "response", "constraints", "judge", "options", "budget", "return_tree", "criteria")
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    JUDGE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    RETURN_TREE_FIELD_NUMBER: _ClassVar[int]
    CRITERIA_FIELD_NUMBER: _ClassVar[int]
    instruction: str
    response: str
    constraints: _containers.RepeatedCompositeFieldContainer[_common_pb2.VerifiableConstraint]
    judge: _common_pb2.JudgeKind
    options: _common_pb2.SearchOptions
    budget: _common_pb2.SearchBudget
    return_tree: bool
    criteria: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, instruction: _Optional[str] = ..., response: _Optional[str] = ..., constraints: _Optional[_Iterable[_Union[_common_pb2.VerifiableConstraint, _Mapping]]] = ..., judge: _Optional[_Union[_common_pb2.JudgeKind, str]] = ..., options: _Optional[_Union[_common_pb2.SearchOptions, _Mapping]] = ..., budget: _Optional[_Union[_common_pb2.SearchBudget, _Mapping]] = ..., return_tree: _Optional[bool] = ..., criteria: _Optional[_Iterable[str]] = ...) -> None: ...

class SearchNode(_message.Message):
    __slots__ = ("id", "parent_id", "depth", "response", "reflection", "critique", "value", "verdict", "expanded", "edit_distance", "constraints_met", "constraints_checked", "hard_fail", "guardrails")
    ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    REFLECTION_FIELD_NUMBER: _ClassVar[int]
    CRITIQUE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    EXPANDED_FIELD_NUMBER: _ClassVar[int]
    EDIT_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_MET_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    HARD_FAIL_FIELD_NUMBER: _ClassVar[int]
    GUARDRAILS_FIELD_NUMBER: _ClassVar[int]
    id: int
    parent_id: int
    depth: int
    response: str
    reflection: str
    critique: str
    value: float
    verdict: _common_pb2.Verdict
    expanded: bool
    edit_distance: float
    constraints_met: int
    constraints_checked: int
    hard_fail: bool
    guardrails: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[int] = ..., parent_id: _Optional[int] = ..., depth: _Optional[int] = ..., response: _Optional[str] = ..., reflection: _Optional[str] = ..., critique: _Optional[str] = ..., value: _Optional[float] = ..., verdict: _Optional[_Union[_common_pb2.Verdict, str]] = ..., expanded: _Optional[bool] = ..., edit_distance: _Optional[float] = ..., constraints_met: _Optional[int] = ..., constraints_checked: _Optional[int] = ..., hard_fail: _Optional[bool] = ..., guardrails: _Optional[_Iterable[str]] = ...) -> None: ...

class RefineResponse(_message.Message):
    __slots__ = ("best_response", "verdict", "value", "outcome", "cost", "trace", "tree", "edit_distance", "constraint_results")
    BEST_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    TREE_FIELD_NUMBER: _ClassVar[int]
    EDIT_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINT_RESULTS_FIELD_NUMBER: _ClassVar[int]
    best_response: str
    verdict: _common_pb2.Verdict
    value: float
    outcome: _common_pb2.SearchOutcome
    cost: _common_pb2.SearchCost
    trace: _containers.RepeatedCompositeFieldContainer[SearchNode]
    tree: _containers.RepeatedCompositeFieldContainer[SearchNode]
    edit_distance: float
    constraint_results: _containers.RepeatedCompositeFieldContainer[ConstraintResult]
    def __init__(self, best_response: _Optional[str] = ..., verdict: _Optional[_Union[_common_pb2.Verdict, str]] = ..., value: _Optional[float] = ..., outcome: _Optional[_Union[_common_pb2.SearchOutcome, str]] = ..., cost: _Optional[_Union[_common_pb2.SearchCost, _Mapping]] = ..., trace: _Optional[_Iterable[_Union[SearchNode, _Mapping]]] = ..., tree: _Optional[_Iterable[_Union[SearchNode, _Mapping]]] = ..., edit_distance: _Optional[float] = ..., constraint_results: _Optional[_Iterable[_Union[ConstraintResult, _Mapping]]] = ...) -> None: ...

class RefineEvent(_message.Message):
    __slots__ = ("kind", "node", "cost", "result")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    kind: RefineEventKind
    node: SearchNode
    cost: _common_pb2.SearchCost
    result: RefineResponse
    def __init__(self, kind: _Optional[_Union[RefineEventKind, str]] = ..., node: _Optional[_Union[SearchNode, _Mapping]] = ..., cost: _Optional[_Union[_common_pb2.SearchCost, _Mapping]] = ..., result: _Optional[_Union[RefineResponse, _Mapping]] = ...) -> None: ...

class AnswerRequest(_message.Message):
    __slots__ = ("prompt", "constraints", "sampling", "judge", "budget", "options", "include_trace", "messages", "criteria")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    JUDGE_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_TRACE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    CRITERIA_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    constraints: _containers.RepeatedCompositeFieldContainer[_common_pb2.VerifiableConstraint]
    sampling: _common_pb2.SamplingParams
    judge: _common_pb2.JudgeKind
    budget: _common_pb2.SearchBudget
    options: _common_pb2.SearchOptions
    include_trace: bool
    messages: _containers.RepeatedCompositeFieldContainer[_common_pb2.ChatMessage]
    criteria: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, prompt: _Optional[str] = ..., constraints: _Optional[_Iterable[_Union[_common_pb2.VerifiableConstraint, _Mapping]]] = ..., sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., judge: _Optional[_Union[_common_pb2.JudgeKind, str]] = ..., budget: _Optional[_Union[_common_pb2.SearchBudget, _Mapping]] = ..., options: _Optional[_Union[_common_pb2.SearchOptions, _Mapping]] = ..., include_trace: _Optional[bool] = ..., messages: _Optional[_Iterable[_Union[_common_pb2.ChatMessage, _Mapping]]] = ..., criteria: _Optional[_Iterable[str]] = ...) -> None: ...

class AnswerResponse(_message.Message):
    __slots__ = ("answer", "original", "verdict", "value", "outcome", "cost", "actor_adapter", "refiner_adapter", "trace", "edit_distance", "constraint_results", "original_constraint_results")
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ADAPTER_FIELD_NUMBER: _ClassVar[int]
    REFINER_ADAPTER_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    EDIT_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINT_RESULTS_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_CONSTRAINT_RESULTS_FIELD_NUMBER: _ClassVar[int]
    answer: str
    original: str
    verdict: _common_pb2.Verdict
    value: float
    outcome: _common_pb2.SearchOutcome
    cost: _common_pb2.SearchCost
    actor_adapter: str
    refiner_adapter: str
    trace: _containers.RepeatedCompositeFieldContainer[SearchNode]
    edit_distance: float
    constraint_results: _containers.RepeatedCompositeFieldContainer[ConstraintResult]
    original_constraint_results: _containers.RepeatedCompositeFieldContainer[ConstraintResult]
    def __init__(self, answer: _Optional[str] = ..., original: _Optional[str] = ..., verdict: _Optional[_Union[_common_pb2.Verdict, str]] = ..., value: _Optional[float] = ..., outcome: _Optional[_Union[_common_pb2.SearchOutcome, str]] = ..., cost: _Optional[_Union[_common_pb2.SearchCost, _Mapping]] = ..., actor_adapter: _Optional[str] = ..., refiner_adapter: _Optional[str] = ..., trace: _Optional[_Iterable[_Union[SearchNode, _Mapping]]] = ..., edit_distance: _Optional[float] = ..., constraint_results: _Optional[_Iterable[_Union[ConstraintResult, _Mapping]]] = ..., original_constraint_results: _Optional[_Iterable[_Union[ConstraintResult, _Mapping]]] = ...) -> None: ...
