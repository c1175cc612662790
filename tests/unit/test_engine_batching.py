"""Pure logic of the hf engine: batch keys, batch taking, stop strings, placement."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import pytest

from spar.config import EngineSettings
from spar.engine.batching import (
    batch_key,
    find_stop,
    queued_rows,
    streamable_length,
    take_batch,
)
from spar.engine.placement import native_bf16, resolve_device, resolve_dtype
from spar.engine.protocol import GenerationRequest, Message
from spar.errors import FailedPrecondition


@dataclass
class Item:
    name: str
    key: Hashable
    rows: int = 1


def request(**kwargs: object) -> GenerationRequest:
    return GenerationRequest(messages=[Message("user", "hi")], **kwargs)  # type: ignore[arg-type]


def test_batch_keys() -> None:
    assert batch_key(request(temperature=0.0), 1) == batch_key(request(temperature=0.0, n=3), 2)
    assert batch_key(request(temperature=0.0), 1) != batch_key(request(temperature=0.7), 2)
    assert batch_key(request(temperature=0.7), 1) != batch_key(
        request(temperature=0.7, top_p=0.9), 2
    )
    assert batch_key(request(temperature=0.7, top_p=0.9), 1) == batch_key(
        request(temperature=0.7, top_p=0.9, max_tokens=3, stop=["x"]), 2
    )
    # Seeded requests never share a batch, not even with the same seed.
    assert batch_key(request(seed=1), 1) != batch_key(request(seed=1), 2)


def test_take_batch_groups_by_key_in_order_within_rows() -> None:
    queue = [
        Item("a", "g", 2),
        Item("b", "s"),
        Item("c", "g", 3),
        Item("d", "g", 2),
        Item("e", "g"),
    ]
    batch = take_batch(queue, max_rows=6)
    assert [i.name for i in batch] == ["a", "c", "e"]  # d (2 rows) does not fit, e does
    assert [i.name for i in queue] == ["b", "d"]
    assert queued_rows(queue) == 3
    assert [i.name for i in take_batch(queue, max_rows=6)] == ["b"]
    assert [i.name for i in take_batch(queue, max_rows=6)] == ["d"]
    assert take_batch(queue, max_rows=6) == [] and queue == []


def test_take_batch_runs_an_oversized_request_alone() -> None:
    queue = [Item("big", "g", 10), Item("small", "g", 1)]
    assert [i.name for i in take_batch(queue, max_rows=4)] == ["big"]
    assert [i.name for i in queue] == ["small"]


def test_find_stop_takes_the_earliest() -> None:
    assert find_stop("hello world. bye", ["bye", "."]) == 11
    assert find_stop("hello", ["x", "yz"]) is None
    assert find_stop("hello", []) is None


@pytest.mark.parametrize(
    ("text", "stops", "expected"),
    [
        ("Hello wor", [], 9),
        ("Hello wor", ["world!"], 6),  # "wor" may become the stop string
        ("Hello wor", ["xyz"], 9),
        ("Hello w", ["w", "wx"], 6),
        ("caf\ufffd", [], 3),  # an incomplete UTF-8 character waits for its bytes
        ("ab", ["abc"], 0),
    ],
)
def test_streamable_length(text: str, stops: list[str], expected: int) -> None:
    assert streamable_length(text, stops) == expected


def test_resolve_device() -> None:
    assert resolve_device("auto", cuda_available=True) == "cuda"
    assert resolve_device("auto", cuda_available=False) == "cpu"
    assert resolve_device("cpu", cuda_available=True) == "cpu"
    with pytest.raises(FailedPrecondition, match="no CUDA device"):
        resolve_device("cuda", cuda_available=False)


def test_resolve_dtype() -> None:
    auto = EngineSettings()
    assert auto.dtype == "auto"
    assert resolve_dtype(auto, "cpu", native_cpu_bf16=False) == "float32"
    assert resolve_dtype(auto, "cpu", native_cpu_bf16=True) == "bfloat16"
    assert resolve_dtype(auto, "cuda", native_cpu_bf16=False) == "bfloat16"
    assert resolve_dtype(EngineSettings(dtype="float32"), "cuda", True) == "float32"
    assert resolve_dtype(EngineSettings(dtype="float32"), "cpu", True) == "float32"
    assert resolve_dtype(EngineSettings(dtype="bfloat16"), "cpu", False) == "bfloat16"
    with pytest.raises(FailedPrecondition, match="not a dtype"):
        resolve_dtype(EngineSettings(dtype="int8"), "cpu", True)


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ("fpu sse2 avx2 avx512f avx512_bf16 amx_tile", True),
        ("fpu sse2 avx2 avx512f amx_bf16 amx_tile", True),
        ("fpu sse2 avx2 fma avx512f avx512_vnni", False),  # AVX-512 without BF16
        ("fpu neon", False),
    ],
)
def test_native_bf16_reads_the_cpu_flags(flags: str, native: bool) -> None:
    cpuinfo = f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\nbugs\t\t: avx512_bf16\n"
    assert native_bf16(cpuinfo) is native
    assert native_bf16("processor : 0\n") is False  # no flags line (not x86 Linux)
