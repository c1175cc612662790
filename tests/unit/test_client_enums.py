"""Proto enums by short name: derived from the descriptors, checked against Literals."""

from typing import Literal, get_args

import pytest

from spar.client.enums import JUDGE_KIND, SEARCH_OUTCOME, ProtoEnum
from spar.errors import InvalidArgument
from spar.v1 import common_pb2


def test_names_are_the_values_without_their_prefix() -> None:
    assert JUDGE_KIND.names == ("llm", "verifier", "hybrid", "external")
    assert JUDGE_KIND.value("hybrid", "judge kind") == common_pb2.JUDGE_KIND_HYBRID
    assert JUDGE_KIND.name(common_pb2.JUDGE_KIND_EXTERNAL) == "external"
    assert SEARCH_OUTCOME.name(common_pb2.SEARCH_OUTCOME_ALREADY_PASSING) == "already_passing"


def test_unspecified_and_unknown_values() -> None:
    assert JUDGE_KIND.value("", "judge kind") == common_pb2.JUDGE_KIND_UNSPECIFIED
    with pytest.raises(InvalidArgument, match=r"judge kind 'llama' is unknown; use one of \["):
        JUDGE_KIND.value("llama", "judge kind")
    assert JUDGE_KIND.get(common_pb2.JUDGE_KIND_UNSPECIFIED, "llm") == "llm"
    assert JUDGE_KIND.get(99) is None
    with pytest.raises(ValueError, match="JudgeKind 0 has no name"):
        JUDGE_KIND.name(common_pb2.JUDGE_KIND_UNSPECIFIED)
    with pytest.raises(ValueError, match="JudgeKind 99"):
        JUDGE_KIND.name(99)
    assert JUDGE_KIND.label(0) == "unspecified"
    assert JUDGE_KIND.label(99) == "99"


def test_a_literal_that_drifts_from_the_proto_fails_at_once() -> None:
    Kind = Literal["llm", "verifier", "hybrid", "external"]
    typed: ProtoEnum[common_pb2.JudgeKind, Kind] = ProtoEnum(common_pb2.JudgeKind, get_args(Kind))
    assert typed.names == JUDGE_KIND.names
    with pytest.raises(TypeError, match="JudgeKind has the names"):
        ProtoEnum(common_pb2.JudgeKind, ("llm", "verifier", "hybrid"))
