"""The Engine protocol over vLLM's ``AsyncLLM`` (CPU build in CI, CUDA build on GPUs).

Only this module imports vLLM. Environment variables that vLLM reads at import time are
set in :func:`configure_environment`, which must run before the first ``import vllm``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import select
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from spar import tcmalloc
from spar.config import Settings
from spar.engine.inputs import fit_max_tokens, render_prompt, require_model_folder
from spar.engine.placement import cpu_native_bf16, resolve_dtype
from spar.engine.protocol import (
    AdapterRef,
    EngineInfo,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    Sample,
    StreamDelta,
    Usage,
)
from spar.errors import FailedPrecondition, InvalidArgument, SparError, Unavailable

log = logging.getLogger(__name__)

_FINISH: dict[str | None, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "abort": "abort",
    "repetition": "repetition",
}


def configure_environment(settings: Settings) -> None:
    """Sets the environment vLLM reads at import time (no-op for keys already set)."""
    cache = settings.cache_dir
    defaults = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": f"{settings.engine.kv_cache_gib:g}",
        # vLLM reserves a core for itself by default; on small machines it then idles.
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_CACHE_ROOT": str(cache / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "torchinductor"),
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_DO_NOT_TRACK": "1",
        "VLLM_CONFIGURE_LOGGING": os.environ.get("VLLM_CONFIGURE_LOGGING", "1"),
        "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    if _cpu_build():
        # The engine processes vLLM starts inherit it (vllm/platforms/cpu.py keeps a
        # tcmalloc it finds in LD_PRELOAD); the server process keeps its own allocator.
        tcmalloc.preload()


def _cpu_build() -> bool:
    """Whether the installed vLLM is the CPU build (known without importing vLLM)."""
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


# -- engine processes end with the process that started them ---------------------------
#
# vLLM runs the engine in a child process (EngineCore), which runs the model in its own
# child (the worker). Neither notices when its parent is SIGKILLed (OOM killer, a kill of
# one pid): they keep running, orphaned, holding gigabytes. So each watches its parent and,
# when the parent is gone, asks itself to stop (SIGTERM: vLLM's own orderly shutdown, which
# also ends the worker and frees shared memory), then exits hard if that does not end it.
# A prctl(PR_SET_PDEATHSIG) would fire when the *thread* that started the process ends;
# the server starts its engine from a worker thread, so a watch of the process it is.

ENGINE_STOP_TIMEOUT_S = 20.0
"""How long EngineCore may take to stop. vLLM's default, 5 s, is what EngineCore itself
waits for its worker before it tears down (about 3 s more on CPU): at 5 s it was killed
mid-teardown, and the shared memory it had not yet released was reported leaked."""

PARENT_GONE_GRACE_S = 5.0
"""How long an engine process whose parent died may take to stop before it exits hard."""

_ORIGINAL_ENTRY_POINTS: dict[str, Any] = {}
"""vLLM's process entry points, kept when they are wrapped (a forked child inherits this;
a spawned one imports vLLM afresh and finds the originals in place)."""


PARENT_ENV = "SPAR_ENGINE_PARENT_PID"
"""The pid an engine process watches: the server sets it before it starts the engine,
EngineCore before it starts the worker."""


def exit_with_parent(parent: int, grace_s: float | None = None) -> threading.Thread:
    """Starts a daemon thread that ends this process once ``parent`` has exited."""
    grace = PARENT_GONE_GRACE_S if grace_s is None else grace_s

    def wait_for_parent() -> None:
        try:
            fd = os.pidfd_open(parent)
        except ProcessLookupError:  # gone already
            fd = -2
        except OSError:  # no pidfd (Linux < 5.3): poll instead
            fd = -1
        if fd >= 0:
            select.select([fd], [], [])  # a pidfd turns readable when its process exits
            os.close(fd)
        elif fd == -1:
            while os.getppid() == parent:
                time.sleep(0.5)
        log.warning("the process that started this engine (pid %d) is gone; stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        os._exit(1)

    watch = threading.Thread(target=wait_for_parent, name="spar-parent-watch", daemon=True)
    watch.start()
    return watch


def _watch_starter() -> None:
    """Watches the process that started this one, named by PARENT_ENV (set before the
    start, so a parent that dies while this one is still importing is not missed), and
    names this one for the processes it starts."""
    parent = int(os.environ.get(PARENT_ENV) or os.getppid())
    exit_with_parent(parent)
    os.environ[PARENT_ENV] = str(os.getpid())


def _engine_core_main(*args: Any, **kwargs: Any) -> Any:
    """vLLM's EngineCore entry point, ending with the server process that started it."""
    from vllm.v1.engine.core import EngineCoreProc
    from vllm.v1.executor.multiproc_executor import WorkerProc

    _watch_starter()
    _wrap(WorkerProc, "worker_main", "worker", _worker_main)
    run = _ORIGINAL_ENTRY_POINTS.get("engine_core", EngineCoreProc.run_engine_core)
    return run(*args, **kwargs)


def _worker_main(*args: Any, **kwargs: Any) -> Any:
    """vLLM's worker entry point, ending with the EngineCore that started it."""
    from vllm.v1.executor.multiproc_executor import WorkerProc

    _watch_starter()
    run = _ORIGINAL_ENTRY_POINTS.get("worker", WorkerProc.worker_main)
    return run(*args, **kwargs)


def _wrap(cls: Any, attr: str, key: str, wrapper: Any) -> None:
    """Replaces a static entry point of ``cls`` with ``wrapper`` once, keeping the original.
    vLLM looks the entry point up when it starts the process, and a spawned child unpickles
    the target by its module path, so the wrapper runs in the child either way."""
    current = cls.__dict__[attr]
    if getattr(current, "__func__", current) is wrapper:
        return
    _ORIGINAL_ENTRY_POINTS[key] = getattr(cls, attr)
    setattr(cls, attr, staticmethod(wrapper))


def watch_engine_processes() -> None:
    """Makes the engine processes this process starts end when it does (see above)."""
    from vllm.v1.engine.core import EngineCoreProc

    os.environ[PARENT_ENV] = str(os.getpid())
    _wrap(EngineCoreProc, "run_engine_core", "engine_core", _engine_core_main)


class VllmEngine:
    """An ``AsyncLLM`` with LoRA enabled, prefix caching on and a chat-template renderer."""

    def __init__(self, llm: Any, tokenizer: Any, info: EngineInfo, is_cpu: bool) -> None:
        self._llm = llm
        self._tokenizer = tokenizer
        self._info = info
        self._is_cpu = is_cpu

    @classmethod
    def start(cls, settings: Settings, model_path: Path | None = None) -> VllmEngine:
        """Starts the engine (blocking, ~35 s on CPU). Call from a worker thread in servers."""
        configure_environment(settings)
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        path = require_model_folder(model_path or settings.model_path())
        e = settings.engine
        is_cpu = bool(current_platform.is_cpu())
        dtype = resolve_dtype(e, "cpu" if is_cpu else "cuda", is_cpu and cpu_native_bf16())
        log.info("vLLM engine: %s in %s", path.name, dtype)
        args = AsyncEngineArgs(
            model=str(path),
            dtype=dtype,
            max_model_len=e.max_model_len,
            enforce_eager=e.enforce_eager,
            enable_prefix_caching=e.enable_prefix_caching,
            enable_lora=True,
            max_lora_rank=e.max_lora_rank,
            max_loras=e.max_loras,
            max_cpu_loras=e.max_cpu_loras,
            max_num_seqs=e.max_num_seqs,
            seed=e.seed,
            disable_log_stats=True,
            **({} if is_cpu else {"gpu_memory_utilization": e.gpu_memory_utilization}),
        )
        watch_engine_processes()
        llm = AsyncLLM.from_engine_args(args)
        tokenizer = AutoTokenizer.from_pretrained(path)
        info = EngineInfo(
            model=str(path),
            max_model_len=e.max_model_len,
            max_lora_rank=e.max_lora_rank,
            device="cpu" if is_cpu else "cuda",
            extra={"engine": "vllm", "dtype": dtype},
        )
        return cls(llm, tokenizer, info, is_cpu)

    @property
    def info(self) -> EngineInfo:
        return self._info

    # -- prompts ---------------------------------------------------------------------

    def _render(self, request: GenerationRequest) -> list[int]:
        return render_prompt(self._tokenizer, request)

    def prompt_tokens(self, request: GenerationRequest) -> int:
        return len(self._render(request))

    def _prepare(self, request: GenerationRequest, delta: bool) -> tuple[Any, Any, int]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RepetitionDetectionParams, RequestOutputKind

        ids = self._render(request)
        max_tokens = fit_max_tokens(len(ids), request, self._info.max_model_len)
        if request.seed is not None and self._is_cpu:
            # vLLM-CPU 0.32 crashes the engine on per-request generators
            # ("CPU Generator does not use offset"); refuse instead of dying.
            raise InvalidArgument(
                "a per-request seed is not supported by the CPU engine (vLLM-CPU 0.32); "
                "leave sampling.seed unset: the engine itself is seeded (SPAR_ENGINE__SEED)."
            )
        params = SamplingParams(
            n=request.n,
            temperature=request.temperature,
            top_p=request.top_p,
            max_tokens=max_tokens,
            stop=list(request.stop) or None,
            seed=request.seed,
            output_kind=RequestOutputKind.DELTA if delta else RequestOutputKind.FINAL_ONLY,
            repetition_detection=None
            if request.loop_stop is None
            else RepetitionDetectionParams(
                max_pattern_size=request.loop_stop.max_pattern,
                min_pattern_size=request.loop_stop.min_pattern,
                min_count=request.loop_stop.repeats,
            ),
        )
        return TokensPrompt(prompt_token_ids=ids), params, len(ids)

    def _lora(self, adapter: AdapterRef | None) -> Any:
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        return LoRARequest(adapter.name, adapter.engine_id, str(adapter.path))

    # -- generation ------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        prompt, params, n_prompt = self._prepare(request, delta=False)
        rid = request.request_id or uuid.uuid4().hex
        final = None
        try:
            async for out in self._llm.generate(
                prompt, params, rid, lora_request=self._lora(request.adapter)
            ):
                final = out
        except SparError:
            raise
        except (asyncio.CancelledError, GeneratorExit):
            await self._abort(rid)
            raise
        except Exception as exc:
            raise _engine_error(exc) from exc
        if final is None:
            raise Unavailable("the engine returned no output; it may be shutting down")
        samples = [
            Sample(
                index=o.index,
                text=o.text,
                finish_reason=_FINISH.get(o.finish_reason, "stop"),
                completion_tokens=len(o.token_ids),
            )
            for o in sorted(final.outputs, key=lambda o: o.index)
        ]
        usage = Usage(
            prompt_tokens=n_prompt,
            completion_tokens=sum(s.completion_tokens for s in samples),
            cached_prompt_tokens=int(final.num_cached_tokens or 0),
        )
        return GenerationResult(samples=samples, usage=usage)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        prompt, params, n_prompt = self._prepare(request, delta=True)
        rid = request.request_id or uuid.uuid4().hex
        tokens = [0] * request.n
        finished = False
        try:
            async for out in self._llm.generate(
                prompt, params, rid, lora_request=self._lora(request.adapter)
            ):
                for i, o in enumerate(out.outputs):
                    tokens[o.index] += len(o.token_ids)
                    last = out.finished and i == len(out.outputs) - 1
                    usage = (
                        Usage(n_prompt, sum(tokens), int(out.num_cached_tokens or 0))
                        if last
                        else None
                    )
                    reason = _FINISH.get(o.finish_reason) if o.finish_reason else None
                    if o.text or reason or usage:
                        yield StreamDelta(o.index, o.text, reason, usage)
                finished = out.finished
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except SparError:
            raise
        except Exception as exc:
            raise _engine_error(exc) from exc
        finally:
            if not finished:
                await self._abort(rid)

    async def _abort(self, request_id: str) -> None:
        try:
            await asyncio.shield(self._llm.abort(request_id))
        except Exception:  # the engine may already be gone; nothing left to abort then
            log.debug("abort of %s failed", request_id, exc_info=True)

    # -- adapters --------------------------------------------------------------------

    async def add_adapter(self, adapter: AdapterRef) -> None:
        try:
            ok = await self._llm.add_lora(self._lora(adapter))
        except Exception as exc:
            raise FailedPrecondition(
                f"the engine could not load adapter {adapter.name!r}: {exc}"
            ) from exc
        if ok is False:
            raise FailedPrecondition(f"the engine refused to load adapter {adapter.name!r}")

    async def remove_adapter(self, adapter: AdapterRef) -> None:
        try:
            await self._llm.remove_lora(adapter.engine_id)
        except Exception as exc:
            raise _engine_error(exc) from exc

    async def list_adapters(self) -> set[int]:
        return set(await self._llm.list_loras())

    async def unfinished_requests(self) -> int:
        return int(self._llm.output_processor.get_num_unfinished_requests())

    async def check_health(self) -> None:
        try:
            await self._llm.check_health()
        except Exception as exc:
            raise Unavailable(f"the engine is not healthy: {exc}") from exc

    def shutdown(self) -> None:
        if self._llm is None:
            return
        llm, self._llm = self._llm, None
        llm.shutdown(timeout=ENGINE_STOP_TIMEOUT_S)
        # AsyncLLM.__del__ shuts down again; at interpreter exit (modules half torn down)
        # that second call prints a TypeError. The instance attribute shadows the method.
        llm.shutdown = lambda *args, **kwargs: None


def _engine_error(exc: Exception) -> SparError:
    name = type(exc).__name__
    if name in {"EngineDeadError", "EngineGenerateError"}:
        return Unavailable(f"the engine failed ({name}: {exc}); the server must restart")
    if isinstance(exc, ValueError):
        return InvalidArgument(str(exc))
    return Unavailable(f"engine error: {name}: {exc}")
