from __future__ import annotations

import pytest

from spar.config import Limits, SamplingDefaults
from spar.engine.protocol import Message
from spar.errors import InvalidArgument
from spar.sampling import generation_request, messages_from
from spar.v1 import common_pb2

LIMITS = Limits(max_n=4, max_tokens=100, default_max_tokens=50, max_prompt_chars=1000)
DEFAULTS = SamplingDefaults(temperature=0.9, top_p=0.9)


def build(**sampling: object) -> object:
    return generation_request(
        [Message("user", "hi")],
        common_pb2.SamplingParams(**sampling),  # type: ignore[arg-type]
        limits=LIMITS,
        defaults=DEFAULTS,
    )


def test_defaults_fill_unset_fields() -> None:
    req = build()
    assert req.n == 1 and req.max_tokens == 50  # type: ignore[attr-defined]
    assert req.temperature == pytest.approx(0.9)  # type: ignore[attr-defined]
    assert req.clamp_to_context  # type: ignore[attr-defined]


def test_explicit_zero_temperature_is_greedy_not_default() -> None:
    assert build(temperature=0.0).temperature == 0.0  # type: ignore[attr-defined]


def test_explicit_max_tokens_is_not_clamped() -> None:
    assert not build(max_tokens=10).clamp_to_context  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("sampling", "needle"),
    [
        ({"n": 5}, "sampling.n=5 exceeds the server limit 4"),
        ({"max_tokens": 101}, "sampling.max_tokens=101 exceeds the server limit 100"),
        ({"temperature": 3.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"stop": [""]}, "stop string"),
        ({"stop": ["a"] * 9}, "stop strings"),
    ],
)
def test_limits(sampling: dict[str, object], needle: str) -> None:
    with pytest.raises(InvalidArgument, match=needle):
        build(**sampling)


def test_prompt_checks() -> None:
    with pytest.raises(InvalidArgument, match="empty"):
        messages_from("", [])
    with pytest.raises(InvalidArgument, match="empty"):
        messages_from("   \n", [])
    with pytest.raises(InvalidArgument, match="not both"):
        messages_from("x", [common_pb2.ChatMessage(role="user", content="y")])
    with pytest.raises(InvalidArgument, match="role"):
        messages_from("", [common_pb2.ChatMessage(role="wizard", content="y")])
    with pytest.raises(InvalidArgument, match="1001 characters"):
        generation_request(
            [Message("user", "x" * 1001)],
            common_pb2.SamplingParams(),
            limits=LIMITS,
            defaults=DEFAULTS,
        )
