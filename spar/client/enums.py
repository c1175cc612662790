"""Proto enums by short lowercase names, derived from the enums themselves.

``JUDGE_KIND_LLM`` is ``"llm"``: the name without the prefix that every value of its
enum shares (proto style puts the enum's name in front of each value, and the zero
value, ``JUDGE_KIND_UNSPECIFIED``, shows it). The client
takes these names, the CLI prints them, and the services map their own string types to
the wire through them, so no table of names is written by hand. A service whose core
types a name as a ``Literal`` passes its arguments, which are checked against the enum
when the module loads: a value added to the proto but not to the core fails at import,
not in the middle of a request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic

from typing_extensions import TypeVar

from spar.errors import InvalidArgument
from spar.v1 import adapter_host_pb2, common_pb2, coordinator_pb2, refiner_pb2, trainer_pb2

V = TypeVar("V", bound=int)
N = TypeVar("N", bound=str, default=str)


class ProtoEnum(Generic[V, N]):
    """One proto enum's values and their short names."""

    def __init__(self, enum: type[V], names: Sequence[N] | None = None) -> None:
        wrapper: Any = enum  # at run time, protobuf's EnumTypeWrapper
        self.enum_name: str = wrapper.DESCRIPTOR.name
        self.unspecified: V = wrapper.Value(wrapper.DESCRIPTOR.values[0].name)
        """The zero value (``<PREFIX>_UNSPECIFIED``), which an unset field holds."""
        prefix = wrapper.DESCRIPTOR.values[0].name.removesuffix("UNSPECIFIED")
        self._values: dict[str, V] = {}
        self._names: dict[int, str] = {}
        for v in wrapper.DESCRIPTOR.values:
            if not v.name.startswith(prefix) or not prefix:
                raise TypeError(f"{self.enum_name}.{v.name} does not start with {prefix!r}")
            short = v.name.removeprefix(prefix).lower()
            self._names[v.number] = short
            if v.number != self.unspecified:
                self._values[short] = wrapper.Value(v.name)
        derived: list[Any] = list(self._values)
        if names is not None and sorted(names) != sorted(derived):
            raise TypeError(f"{self.enum_name} has the names {derived}, not {list(names)}")
        self.names: tuple[N, ...] = tuple(derived)
        """Every value's name but the unspecified one's, in the order of the proto."""

    def value(self, name: str, what: str) -> V:
        """The value of a name; "" is the unspecified value. ``what`` names the field in
        the error an unknown name raises (InvalidArgument, with the choices)."""
        if not name:
            return self.unspecified
        if name not in self._values:
            raise InvalidArgument(f"{what} {name!r} is unknown; use one of {sorted(self.names)}")
        return self._values[name]

    def name(self, value: int, default: N | None = None) -> N:
        """The name of a value; the unspecified value (or an unknown number, from a
        newer peer) is ``default``, or a ValueError without one."""
        if value != self.unspecified and value in self._names:
            name: Any = self._names[value]
            return name  # type: ignore[no-any-return]
        if default is None:
            raise ValueError(f"{self.enum_name} {value} has no name here")
        return default

    def label(self, value: int) -> str:
        """A name to show: as :meth:`name`, but ``"unspecified"`` for the zero value and
        the number for an unknown one."""
        return self._names.get(value, str(value))


FINISH_REASON: ProtoEnum[common_pb2.FinishReason] = ProtoEnum(common_pb2.FinishReason)
JUDGE_KIND: ProtoEnum[common_pb2.JudgeKind] = ProtoEnum(common_pb2.JudgeKind)
VERDICT: ProtoEnum[common_pb2.Verdict] = ProtoEnum(common_pb2.Verdict)
SEARCH_STRATEGY: ProtoEnum[common_pb2.SearchStrategy] = ProtoEnum(common_pb2.SearchStrategy)
NODE_SELECTION: ProtoEnum[common_pb2.NodeSelection] = ProtoEnum(common_pb2.NodeSelection)
SEARCH_OUTCOME: ProtoEnum[common_pb2.SearchOutcome] = ProtoEnum(common_pb2.SearchOutcome)
TIE_POLICY: ProtoEnum[refiner_pb2.TiePolicy] = ProtoEnum(refiner_pb2.TiePolicy)
REFINE_EVENT_KIND: ProtoEnum[refiner_pb2.RefineEventKind] = ProtoEnum(refiner_pb2.RefineEventKind)
JOB_KIND: ProtoEnum[trainer_pb2.JobKind] = ProtoEnum(trainer_pb2.JobKind)
JOB_STATE: ProtoEnum[trainer_pb2.JobState] = ProtoEnum(trainer_pb2.JobState)
DISTRIBUTED_STRATEGY: ProtoEnum[trainer_pb2.DistributedStrategy] = ProtoEnum(
    trainer_pb2.DistributedStrategy
)
ITERATION_STAGE: ProtoEnum[coordinator_pb2.IterationStage] = ProtoEnum(
    coordinator_pb2.IterationStage
)
ITERATION_STATE: ProtoEnum[coordinator_pb2.IterationState] = ProtoEnum(
    coordinator_pb2.IterationState
)
HOSTED_ADAPTER_STATE: ProtoEnum[adapter_host_pb2.HostedAdapterState] = ProtoEnum(
    adapter_host_pb2.HostedAdapterState
)
