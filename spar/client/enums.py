"""Proto enums by short lowercase names, derived from the enums themselves.

``JUDGE_KIND_LLM`` is ``"llm"``: the name without the prefix that every value of its
enum shares (proto style puts the enum's name in front of each value, and the zero
value, ``JUDGE_KIND_UNSPECIFIED``, shows it). The client takes these names, the CLI
prints them, and the services map their own string types to the wire through them, so
no table of names is written by hand. A service whose core
types a name as a ``Literal`` passes its arguments, which are checked against the enum
when the module loads: a value added to the proto but not to the core fails at import,
not in the middle of a request.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Generic, get_args, overload

from google.protobuf.descriptor import EnumDescriptor
from typing_extensions import TypeVar

from spar.engine.protocol import FinishReason
from spar.errors import InvalidArgument
from spar.v1 import adapter_host_pb2, common_pb2, coordinator_pb2, refiner_pb2, trainer_pb2

V = TypeVar("V", bound=int)
N = TypeVar("N", bound=str, default=str)


class ProtoEnum(Generic[V, N]):
    """One proto enum's values and their short names."""

    def __init__(self, enum: type[V] | EnumDescriptor, names: Sequence[N] | None = None) -> None:
        wrapper: Any = enum  # a generated enum type is protobuf's EnumTypeWrapper at run time
        descriptor: EnumDescriptor = (
            enum if isinstance(enum, EnumDescriptor) else wrapper.DESCRIPTOR
        )
        self.enum_name: str = descriptor.name
        zero = descriptor.values[0]
        self.unspecified: V = zero.number
        """The zero value (``<PREFIX>_UNSPECIFIED``), which an unset field holds."""
        prefix = zero.name.removesuffix("UNSPECIFIED")
        self._values: dict[str, V] = {}
        self._names: dict[int, str] = {}
        for v in descriptor.values:
            if not v.name.startswith(prefix) or not prefix:
                raise TypeError(f"{self.enum_name}.{v.name} does not start with {prefix!r}")
            short = v.name.removeprefix(prefix).lower()
            self._names[v.number] = short
            if v.number != self.unspecified:
                self._values[short] = v.number
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

    def parse(self, value: int, what: str) -> N | None:
        """The name of a value a peer sent; None for the unspecified value. ``what`` names
        the field in the error an unknown number raises (InvalidArgument, with the
        choices)."""
        if value == self.unspecified:
            return None
        name = self.get(value)
        if name is None:
            choices = ", ".join(f"{n.upper()} ({self._values[n]})" for n in self.names)
            raise InvalidArgument(f"{what} {value} is unknown; use one of {choices}")
        return name

    def name(self, value: int) -> N:
        """The name of a value; a ValueError for the unspecified value or an unknown one."""
        name = self.get(value)
        if name is None:
            raise ValueError(f"{self.enum_name} {value} has no name here")
        return name

    @overload
    def get(self, value: int) -> N | None: ...
    @overload
    def get(self, value: int, default: N) -> N: ...
    def get(self, value: int, default: N | None = None) -> N | None:
        """The name of a value; ``default`` for the unspecified value or an unknown
        number (from a newer peer, say)."""
        if value == self.unspecified or value not in self._names:
            return default
        name: Any = self._names[value]
        return name  # type: ignore[no-any-return]

    def label(self, value: int) -> str:
        """A name to show: ``"unspecified"`` for the zero value, the number for an
        unknown one."""
        return self._names.get(value, str(value))


@functools.cache
def enum_of(descriptor: EnumDescriptor) -> ProtoEnum[int]:
    """The enum of a descriptor (of a message's field, say), when its type is not known."""
    return ProtoEnum(descriptor)


FINISH_REASON: ProtoEnum[common_pb2.FinishReason, FinishReason] = ProtoEnum(
    common_pb2.FinishReason, get_args(FinishReason)
)
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
