"""Where and in which dtype the hf engine runs (pure logic over EngineSettings)."""

from __future__ import annotations

from spar.config import EngineSettings
from spar.errors import FailedPrecondition

DTYPES = ("float32", "bfloat16", "float16")


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


def resolve_dtype(engine: EngineSettings, device: str) -> str:
    """float32 on CPU and bfloat16 on CUDA unless SPAR_ENGINE__DTYPE is set explicitly."""
    if "dtype" not in engine.model_fields_set or engine.dtype == "auto":
        return "bfloat16" if device == "cuda" else "float32"
    if engine.dtype not in DTYPES:
        raise FailedPrecondition(
            f"SPAR_ENGINE__DTYPE={engine.dtype!r} is not a dtype the hf engine runs; use "
            f"auto, {', '.join(DTYPES)}"
        )
    return engine.dtype
