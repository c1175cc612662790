"""Where and in which dtype an engine runs (pure logic over EngineSettings, and the one
read of the CPU's features)."""

from __future__ import annotations

from pathlib import Path

from spar.config import EngineSettings
from spar.errors import FailedPrecondition

DTYPES = ("float32", "bfloat16", "float16")

#: CPU flags (Linux /proc/cpuinfo) of native bfloat16 matrix arithmetic: AMX tiles or
#: AVX-512 BF16 dot products. Without them bf16 is emulated and slower than float32.
NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def resolve_device(setting: str, cuda_available: bool) -> str:
    """``cuda`` or ``cpu`` for EngineSettings.device (auto: CUDA when there is a GPU)."""
    if setting == "auto":
        return "cuda" if cuda_available else "cpu"
    if setting == "cuda" and not cuda_available:
        raise FailedPrecondition(
            "SPAR_ENGINE__DEVICE=cuda but torch sees no CUDA device; install a CUDA build "
            "of torch, check the GPU, or set SPAR_ENGINE__DEVICE=auto/cpu"
        )
    return setting


def native_bf16(cpuinfo: str) -> bool:
    """Whether a CPU computes bfloat16 natively, from the text of /proc/cpuinfo."""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return not NATIVE_BF16_FLAGS.isdisjoint(value.split())
    return False


def cpu_native_bf16() -> bool:
    """:func:`native_bf16` of this machine's CPU (False where /proc/cpuinfo is missing)."""
    try:
        return native_bf16(Path("/proc/cpuinfo").read_text())
    except OSError:
        return False


def resolve_dtype(engine: EngineSettings, device: str, native_cpu_bf16: bool) -> str:
    """The dtype an engine runs in. ``auto``: bfloat16 on CUDA and, where the caller says
    so, on a CPU that computes it natively (AMX or AVX-512 BF16: 1.6-2x float32's
    tokens/s for the default model on vLLM, bench/cpu_dtype.py), float32 on other CPUs
    (emulated bf16 is slower)."""
    if engine.dtype == "auto":
        return "bfloat16" if device == "cuda" or native_cpu_bf16 else "float32"
    if engine.dtype not in DTYPES:
        raise FailedPrecondition(
            f"SPAR_ENGINE__DTYPE={engine.dtype!r} is not a dtype spar's engines run; use "
            f"auto, {', '.join(DTYPES)}"
        )
    return engine.dtype
