import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_STOP: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
    FINISH_REASON_ABORT: _ClassVar[FinishReason]
    FINISH_REASON_REPETITION: _ClassVar[FinishReason]

class JudgeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JUDGE_KIND_UNSPECIFIED: _ClassVar[JudgeKind]
    JUDGE_KIND_LLM: _ClassVar[JudgeKind]
    JUDGE_KIND_VERIFIER: _ClassVar[JudgeKind]
    JUDGE_KIND_HYBRID: _ClassVar[JudgeKind]
    JUDGE_KIND_EXTERNAL: _ClassVar[JudgeKind]

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_PASS: _ClassVar[Verdict]
    VERDICT_FAIL: _ClassVar[Verdict]
    VERDICT_UNDECIDED: _ClassVar[Verdict]

class SearchStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_STRATEGY_UNSPECIFIED: _ClassVar[SearchStrategy]
    SEARCH_STRATEGY_BFS: _ClassVar[SearchStrategy]
    SEARCH_STRATEGY_DFS: _ClassVar[SearchStrategy]

class NodeSelection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_SELECTION_UNSPECIFIED: _ClassVar[NodeSelection]
    NODE_SELECTION_GREEDY: _ClassVar[NodeSelection]
    NODE_SELECTION_PROPORTIONAL: _ClassVar[NodeSelection]

class SearchOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_OUTCOME_UNSPECIFIED: _ClassVar[SearchOutcome]
    SEARCH_OUTCOME_ALREADY_PASSING: _ClassVar[SearchOutcome]
    SEARCH_OUTCOME_REFINED: _ClassVar[SearchOutcome]
    SEARCH_OUTCOME_EXHAUSTED: _ClassVar[SearchOutcome]
    SEARCH_OUTCOME_DEADLINE: _ClassVar[SearchOutcome]
    SEARCH_OUTCOME_UNCHANGED: _ClassVar[SearchOutcome]
    SEARCH_OUTCOME_BUDGET: _ClassVar[SearchOutcome]
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_STOP: FinishReason
FINISH_REASON_LENGTH: FinishReason
FINISH_REASON_ABORT: FinishReason
FINISH_REASON_REPETITION: FinishReason
JUDGE_KIND_UNSPECIFIED: JudgeKind
JUDGE_KIND_LLM: JudgeKind
JUDGE_KIND_VERIFIER: JudgeKind
JUDGE_KIND_HYBRID: JudgeKind
JUDGE_KIND_EXTERNAL: JudgeKind
VERDICT_UNSPECIFIED: Verdict
VERDICT_PASS: Verdict
VERDICT_FAIL: Verdict
VERDICT_UNDECIDED: Verdict
SEARCH_STRATEGY_UNSPECIFIED: SearchStrategy
SEARCH_STRATEGY_BFS: SearchStrategy
SEARCH_STRATEGY_DFS: SearchStrategy
NODE_SELECTION_UNSPECIFIED: NodeSelection
NODE_SELECTION_GREEDY: NodeSelection
NODE_SELECTION_PROPORTIONAL: NodeSelection
SEARCH_OUTCOME_UNSPECIFIED: SearchOutcome
SEARCH_OUTCOME_ALREADY_PASSING: SearchOutcome
SEARCH_OUTCOME_REFINED: SearchOutcome
SEARCH_OUTCOME_EXHAUSTED: SearchOutcome
SEARCH_OUTCOME_DEADLINE: SearchOutcome
SEARCH_OUTCOME_UNCHANGED: SearchOutcome
SEARCH_OUTCOME_BUDGET: SearchOutcome

class AdapterVersion(_message.Message):
    __slots__ = ("name", "digest", "role", "iteration")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    digest: str
    role: str
    iteration: int
    def __init__(self, name: _Optional[str] = ..., digest: _Optional[str] = ..., role: _Optional[str] = ..., iteration: _Optional[int] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "cached_prompt_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cached_prompt_tokens: _Optional[int] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class SamplingParams(_message.Message):
    __slots__ = ("n", "temperature", "top_p", "max_tokens", "stop", "seed")
    N_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    n: int
    temperature: float
    top_p: float
    max_tokens: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    def __init__(self, n: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., max_tokens: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ...) -> None: ...

class VerifiableConstraint(_message.Message):
    __slots__ = ("instruction_id", "kwargs")
    INSTRUCTION_ID_FIELD_NUMBER: _ClassVar[int]
    KWARGS_FIELD_NUMBER: _ClassVar[int]
    instruction_id: str
    kwargs: _struct_pb2.Struct
    def __init__(self, instruction_id: _Optional[str] = ..., kwargs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class SearchBudget(_message.Message):
    __slots__ = ("max_nodes", "max_generated_tokens", "max_wall_time")
    MAX_NODES_FIELD_NUMBER: _ClassVar[int]
    MAX_GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_WALL_TIME_FIELD_NUMBER: _ClassVar[int]
    max_nodes: int
    max_generated_tokens: int
    max_wall_time: _duration_pb2.Duration
    def __init__(self, max_nodes: _Optional[int] = ..., max_generated_tokens: _Optional[int] = ..., max_wall_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SearchOptions(_message.Message):
    __slots__ = ("strategy", "selection", "branch", "keep_top", "max_depth", "end_gate", "judge_samples")
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    BRANCH_FIELD_NUMBER: _ClassVar[int]
    KEEP_TOP_FIELD_NUMBER: _ClassVar[int]
    MAX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    END_GATE_FIELD_NUMBER: _ClassVar[int]
    JUDGE_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    strategy: SearchStrategy
    selection: NodeSelection
    branch: int
    keep_top: int
    max_depth: int
    end_gate: float
    judge_samples: int
    def __init__(self, strategy: _Optional[_Union[SearchStrategy, str]] = ..., selection: _Optional[_Union[NodeSelection, str]] = ..., branch: _Optional[int] = ..., keep_top: _Optional[int] = ..., max_depth: _Optional[int] = ..., end_gate: _Optional[float] = ..., judge_samples: _Optional[int] = ...) -> None: ...

class UnusableRefinements(_message.Message):
    __slots__ = ("cut_at_max_tokens", "empty", "identical_to_parent", "duplicate", "over_context", "loop")
    CUT_AT_MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    EMPTY_FIELD_NUMBER: _ClassVar[int]
    IDENTICAL_TO_PARENT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    OVER_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    LOOP_FIELD_NUMBER: _ClassVar[int]
    cut_at_max_tokens: int
    empty: int
    identical_to_parent: int
    duplicate: int
    over_context: int
    loop: int
    def __init__(self, cut_at_max_tokens: _Optional[int] = ..., empty: _Optional[int] = ..., identical_to_parent: _Optional[int] = ..., duplicate: _Optional[int] = ..., over_context: _Optional[int] = ..., loop: _Optional[int] = ...) -> None: ...

class GuardrailFailures(_message.Message):
    __slots__ = ("empty", "repetition", "meta", "off_topic", "echo")
    EMPTY_FIELD_NUMBER: _ClassVar[int]
    REPETITION_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    OFF_TOPIC_FIELD_NUMBER: _ClassVar[int]
    ECHO_FIELD_NUMBER: _ClassVar[int]
    empty: int
    repetition: int
    meta: int
    off_topic: int
    echo: int
    def __init__(self, empty: _Optional[int] = ..., repetition: _Optional[int] = ..., meta: _Optional[int] = ..., off_topic: _Optional[int] = ..., echo: _Optional[int] = ...) -> None: ...

class PhaseTokens(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "requests")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    requests: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., requests: _Optional[int] = ...) -> None: ...

class SearchCost(_message.Message):
    __slots__ = ("nodes_expanded", "judge_samples", "judge", "refine", "generate", "wall_time", "outcome", "unusable", "guardrail_failures", "judgements", "votes_skipped", "search_time", "actor_time")
    NODES_EXPANDED_FIELD_NUMBER: _ClassVar[int]
    JUDGE_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    JUDGE_FIELD_NUMBER: _ClassVar[int]
    REFINE_FIELD_NUMBER: _ClassVar[int]
    GENERATE_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    UNUSABLE_FIELD_NUMBER: _ClassVar[int]
    GUARDRAIL_FAILURES_FIELD_NUMBER: _ClassVar[int]
    JUDGEMENTS_FIELD_NUMBER: _ClassVar[int]
    VOTES_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    SEARCH_TIME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_TIME_FIELD_NUMBER: _ClassVar[int]
    nodes_expanded: int
    judge_samples: int
    judge: PhaseTokens
    refine: PhaseTokens
    generate: PhaseTokens
    wall_time: _duration_pb2.Duration
    outcome: SearchOutcome
    unusable: UnusableRefinements
    guardrail_failures: GuardrailFailures
    judgements: int
    votes_skipped: int
    search_time: _duration_pb2.Duration
    actor_time: _duration_pb2.Duration
    def __init__(self, nodes_expanded: _Optional[int] = ..., judge_samples: _Optional[int] = ..., judge: _Optional[_Union[PhaseTokens, _Mapping]] = ..., refine: _Optional[_Union[PhaseTokens, _Mapping]] = ..., generate: _Optional[_Union[PhaseTokens, _Mapping]] = ..., wall_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., outcome: _Optional[_Union[SearchOutcome, str]] = ..., unusable: _Optional[_Union[UnusableRefinements, _Mapping]] = ..., guardrail_failures: _Optional[_Union[GuardrailFailures, _Mapping]] = ..., judgements: _Optional[int] = ..., votes_skipped: _Optional[int] = ..., search_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., actor_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
