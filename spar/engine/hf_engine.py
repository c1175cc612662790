"""The Engine protocol over Hugging Face transformers (for machines without vLLM), with
continuous batching.

One worker thread owns the model and loops: run adapter changes, admit queued requests
into free rows (one prefill for all of them; the n samples of a request share theirs),
then one decode step for every running row. A request joins the running batch at the next
step and each row leaves as soon as it ends (EOS, stop string, max_tokens, cancellation),
its slot filled by the last running row so the batch stays dense. The device side —
KV slots, decode steps captured as CUDA graphs, sampling as tensor ops — is
:mod:`spar.engine.hf_runner`; per-row LoRA adapters are :mod:`spar.engine.hf_lora`.
The host touches each row once per step: append the token, check EOS/max_tokens, and
decode text only when a stop string can have ended or a stream is waiting for it.

Models the continuous-batching path does not know (see
:func:`spar.engine.hf_runner.unsupported_reason`) run on
:class:`spar.engine.hf_generate.HfGenerateEngine` instead (``model.generate`` per batch).

Memory: every row owns ``max_model_len`` cache positions, so the rows that run at once
are ``max_batch_sequences`` or fewer when the KV cache would not fit (on CUDA within
``gpu_memory_utilization`` of the GPU, counting what is already used; on CPU within
``kv_cache_gib``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from pathlib import Path

import torch

from spar.config import Settings
from spar.engine.continuous import compaction, sample_key
from spar.engine.hf_generate import HfGenerateEngine
from spar.engine.hf_lora import AdapterBank, read_adapter
from spar.engine.hf_model import LoadedModel, load_model
from spar.engine.hf_requests import HfEngineBase, Job, Row
from spar.engine.hf_runner import SlotRunner, kv_bytes_per_token, unsupported_reason
from spar.engine.inputs import adapter_load_failed, check_adapter_folder
from spar.engine.protocol import AdapterRef, GenerationRequest
from spar.errors import FailedPrecondition, InvalidArgument, SparError

log = logging.getLogger(__name__)

RESERVE_GIB = 3.0
"""GPU memory left outside the KV cache for activations, logits and captured graphs."""
PREFILL_TOKENS = {"cuda": 8192, "cpu": 1024}
"""Prompt tokens one prefill pass takes at most (a request longer than that runs alone)."""


def plan_rows(loaded: LoadedModel) -> int:
    """How many rows run at once: max_batch_sequences, fewer when their KV does not fit."""
    e = loaded.settings
    model = loaded.model
    per_row = kv_bytes_per_token(model.config, model.dtype) * e.max_model_len
    if loaded.info.device == "cuda":
        free, total = torch.cuda.mem_get_info()
        budget = e.gpu_memory_utilization * total - (total - free) - RESERVE_GIB * 2**30
        where = f"SPAR_ENGINE__GPU_MEMORY_UTILIZATION={e.gpu_memory_utilization}"
    else:
        budget = e.kv_cache_gib * 2**30
        where = f"SPAR_ENGINE__KV_CACHE_GIB={e.kv_cache_gib}"
    rows = min(e.max_batch_sequences, int(max(budget, 0) // per_row))
    if rows < 1:
        raise FailedPrecondition(
            f"the KV cache of one row ({per_row / 2**20:.0f} MiB for "
            f"SPAR_ENGINE__MAX_MODEL_LEN={e.max_model_len}) does not fit in {where}; "
            "raise it or lower the model length"
        )
    return rows


def _nucleus(request: GenerationRequest) -> bool:
    return request.temperature > 0.0 and request.top_p < 1.0


class HfEngine(HfEngineBase):
    """A transformers causal LM with per-request LoRA adapters, continuously batched."""

    def __init__(self, loaded: LoadedModel, rows: int) -> None:
        super().__init__(loaded, "hf-engine")
        e = loaded.settings
        self._model = loaded.model
        self._bank = AdapterBank(loaded.model, e.max_loras, self._layout_changed)
        runner = SlotRunner(loaded.model, self._bank, rows, e.max_model_len)
        self._runner: SlotRunner | None = runner  # None once shut down
        self._capacity = rows
        self._rows: list[Row] = []
        """Running rows; row i owns KV slot i."""
        self._prefill_tokens = PREFILL_TOKENS.get(loaded.info.device, 1024)
        self._keys = random.Random(e.seed)
        self._nucleus_rows = 0
        self._lora_rows = 0
        self._seeded_rows = 0
        self._generated = 0
        self._thread.start()

    @classmethod
    def start(cls, settings: Settings, model_path: Path | None = None) -> HfEngineBase:
        """Loads the model (blocking, seconds). Call from a worker thread in servers."""
        loaded = load_model(settings, model_path)
        reason = unsupported_reason(loaded.model)
        if reason is not None:
            log.warning("hf engine: %s; batching with model.generate instead", reason)
            return HfGenerateEngine.from_loaded(loaded)
        rows = plan_rows(loaded)
        extra = loaded.info.extra
        extra["batching"] = "continuous"
        extra["rows"] = str(rows)
        extra["cuda_graphs"] = str(loaded.info.device == "cuda").lower()
        log.info("hf engine: continuous batching, %d rows", rows)
        return cls(loaded, rows)

    def stats(self) -> dict[str, float]:
        """Counters since the start: decode steps, prefill passes, generated tokens,
        ``device_busy_s`` (GPU time inside engine steps, from CUDA events; wall time of
        the steps on CPU), captured graphs, running rows."""
        runner = self._runner
        return {
            "steps": float(runner.steps if runner else 0),
            "prefills": float(runner.prefills if runner else 0),
            "generated_tokens": float(self._generated),
            "device_busy_s": runner.busy_s if runner else 0.0,
            "graphs": float(runner.graphs if runner else 0),
            "captures": float(runner.captures if runner else 0),
            "rows": float(len(self._rows)),
            "capacity": float(self._capacity),
        }

    def _check_request(self, request: GenerationRequest) -> None:
        super()._check_request(request)
        if request.n > self._capacity:
            raise InvalidArgument(
                f"n={request.n} exceeds the {self._capacity} samples this engine generates at "
                "once (SPAR_ENGINE__MAX_BATCH_SEQUENCES and the KV cache size)"
            )

    def _layout_changed(self) -> None:
        if self._runner is not None:
            self._runner.drop_graphs()

    def _free_model(self) -> None:
        self._runner = None
        self._model = None

    # -- worker thread ----------------------------------------------------------------

    def _work(self) -> None:
        try:
            with torch.inference_mode():
                while self._next_round(busy=bool(self._rows)):
                    if not self._rows:
                        with self._cond:
                            self._wait_for_batch_locked(self._capacity)
                            if self._closed:
                                return
                    jobs = self._admit()
                    if jobs:
                        self._prefill(jobs)
                    if self._rows:
                        self._decode_step()
        except BaseException as exc:
            self._died(exc)

    def _admit(self) -> list[Job]:
        """Takes queued requests, oldest first, while their rows are free (and one prefill
        pass holds their prompts); loads and pins their adapters."""
        with self._cond:
            free = self._capacity - len(self._rows)
            budget = self._prefill_tokens
            taken: list[Job] = []
            end = 0
            for job in self._queue:
                if job.cancelled:
                    self._release_locked(job)
                elif job.rows > free or (taken and len(job.prompt) > budget):
                    break
                else:
                    taken.append(job)
                    free -= job.rows
                    budget -= len(job.prompt)
                end += 1
            del self._queue[:end]
        admitted: list[Job] = []
        for i, job in enumerate(taken):
            adapter = job.request.adapter
            if adapter is not None:
                try:
                    self._load_adapter(adapter)
                except SparError as exc:
                    self._fail(job, exc)
                    continue
                slot = self._bank.acquire(adapter.engine_id)
                if slot is None:  # every adapter slot is pinned by running rows: wait
                    with self._cond:
                        self._queue[0:0] = taken[i:]
                    break
                job.adapter_slot = slot
            admitted.append(job)
        return admitted

    def _on_release_locked(self, job: Job) -> None:
        if job.adapter_slot is not None:
            self._bank.release(job.adapter_slot)
            job.adapter_slot = None

    def _prefill(self, jobs: list[Job]) -> None:
        runner = self._runner
        assert runner is not None
        first = len(self._rows)
        firsts: list[int] = []
        keys: list[int] = []
        adapters: list[int] = []
        for job in jobs:
            firsts.append(first + len(keys))
            seed = job.request.seed
            for i in range(job.rows):
                self._rows.append(Row(job, i, pos=len(job.prompt)))
                keys.append(sample_key(seed, i) if seed is not None else self._keys.getrandbits(62))
                adapters.append(-1 if job.adapter_slot is None else job.adapter_slot)
            self._nucleus_rows += job.rows * _nucleus(job.request)
            self._lora_rows += job.rows * (job.adapter_slot is not None)
            self._seeded_rows += job.rows * (seed is not None)
        with self._cond:
            self._running.extend(jobs)
        new = range(first, len(self._rows))
        rows = [self._rows[i] for i in new]
        runner.set_rows(
            list(new),
            [r.job.request.temperature for r in rows],
            [r.job.request.top_p for r in rows],
            keys,
            adapters,
        )
        tokens = runner.prefill(
            [job.prompt for job in jobs],
            firsts,
            [job.rows for job in jobs],
            nucleus=any(_nucleus(job.request) for job in jobs),
            lora=any(job.adapter_slot is not None for job in jobs),
            exact=any(job.request.seed is not None for job in jobs),
        )
        self._advance(new, tokens, moved=False)

    def _decode_step(self) -> None:
        runner = self._runner
        assert runner is not None
        length = max(row.pos for row in self._rows) + 1
        tokens = runner.decode(
            len(self._rows),
            length,
            nucleus=self._nucleus_rows > 0,
            lora=self._lora_rows > 0,
            exact=self._seeded_rows > 0,
        )
        self._advance(range(len(self._rows)), tokens, moved=True)

    def _advance(self, indices: Iterable[int], tokens: list[int], *, moved: bool) -> None:
        """Takes one new token per row, then lets ended rows leave (compaction)."""
        ended = []
        for i, token in zip(indices, tokens, strict=True):
            row = self._rows[i]
            if moved:
                row.pos += 1
            if row.job.cancelled:
                row.done = True
                self._release(row.job)
            else:
                self._step_row(row, token)
            if row.done:
                ended.append(i)
        self._generated += len(tokens)
        if ended:
            self._compact(ended)

    def _compact(self, ended: list[int]) -> None:
        runner = self._runner
        assert runner is not None
        for i in ended:
            request = self._rows[i].job.request
            self._nucleus_rows -= _nucleus(request)
            self._lora_rows -= request.adapter is not None
            self._seeded_rows -= request.seed is not None
        left, moves = compaction(ended, len(self._rows))
        if moves:
            runner.move(moves, max(self._rows[src].pos for src, _ in moves) + 1)
            for src, dst in moves:
                self._rows[dst] = self._rows[src]
        del self._rows[left:]
        with self._cond:
            self._running = [job for job in self._running if not job.released]

    # -- adapters (worker thread) -------------------------------------------------------

    def _load_adapter(self, ref: AdapterRef) -> None:
        """Reads a peft LoRA folder into host memory (no-op when loaded); a request that
        names an adapter the engine has not loaded loads it, like vLLM."""
        if ref.engine_id in self._bank:
            return
        check_adapter_folder(ref, self._info.max_lora_rank)
        try:
            adapter = read_adapter(ref.path, self._model)
        except Exception as exc:
            raise adapter_load_failed(ref, exc) from exc
        self._bank.add(ref.engine_id, adapter)
        with self._cond:
            self._adapters[ref.engine_id] = ref.name
        log.info("loaded adapter %s (rank %d)", ref.name, adapter.rank)

    def _remove_adapter(self, engine_id: int) -> None:
        self._bank.remove(engine_id)
        with self._cond:
            self._adapters.pop(engine_id, None)
