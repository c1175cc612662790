"""The hf engine's first design: one ``model.generate`` per batch (the fallback path).

:mod:`spar.engine.hf_engine` (continuous batching, CUDA graphs) serves the model
architectures it knows; this engine serves any causal LM transformers can load, and is
the "old path" of ``bench/hf_engine.py``. It is host-bound on a GPU: every decode step
runs eager ``generate`` plus a Python stopping criterion over all rows, and a request
that arrives while a batch runs waits for the whole batch.

The worker thread collects queued requests into batches (:mod:`spar.engine.batching`),
runs each batch as one left-padded ``model.generate`` under ``torch.inference_mode``, and
loads/unloads adapters between batches, so an adapter is never changed under a running
batch. A :class:`_BatchMonitor` stopping criterion hands every generated token to the
shared row rules (:class:`spar.engine.hf_requests.HfEngineBase`) and drops the rows of
cancelled requests.

Adapters: mixed-adapter batches (peft's ``adapter_names=``; base rows are
``"__base__"``). Rows of different adapters share one batch, so the active, previous and
candidate adapters of a rollout never wait for each other's batches.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from spar.config import Settings
from spar.engine.batching import batch_key, take_batch
from spar.engine.hf_model import LoadedModel, load_model
from spar.engine.hf_requests import HfEngineBase, Job, Row
from spar.engine.inputs import adapter_load_failed, check_adapter_folder
from spar.engine.protocol import AdapterRef, GenerationRequest
from spar.errors import SparError, Unavailable

log = logging.getLogger(__name__)

BASE_ROW = "__base__"
"""peft's name for rows of a mixed-adapter batch that use no adapter."""


class HfGenerateEngine(HfEngineBase):
    """A transformers causal LM (SDPA attention) with peft LoRA adapters, batched."""

    def __init__(self, loaded: LoadedModel) -> None:
        super().__init__(loaded, "hf-generate")
        self._model = loaded.model
        self._peft: Any = None
        self._max_rows = loaded.settings.max_batch_sequences
        self._serial = itertools.count()
        self._thread.start()

    @classmethod
    def start(cls, settings: Settings, model_path: Path | None = None) -> HfGenerateEngine:
        """Loads the model (blocking, seconds). Call from a worker thread in servers."""
        return cls.from_loaded(load_model(settings, model_path))

    @classmethod
    def from_loaded(cls, loaded: LoadedModel) -> HfGenerateEngine:
        loaded.info.extra["batching"] = "per batch (model.generate)"
        return cls(loaded)

    def _batch_key(self, request: GenerationRequest) -> Hashable:
        return batch_key(request, next(self._serial))

    def _free_model(self) -> None:
        self._model = self._peft = None

    # -- worker thread ----------------------------------------------------------------

    def _work(self) -> None:
        try:
            while self._next_round():
                with self._cond:
                    self._wait_for_batch_locked(self._max_rows)
                    if self._closed:
                        return
                    batch = take_batch(self._queue, self._max_rows)
                    self._running = batch
                if batch:
                    self._run_batch(batch)
                with self._cond:
                    self._running = []
        except BaseException as exc:
            self._died(exc)

    def _startable(self, jobs: list[Job]) -> list[Job]:
        """The jobs still wanted, with their adapters loaded (a request may name an
        adapter the engine has not loaded: like vLLM, it loads it from its folder)."""
        live: list[Job] = []
        for job in jobs:
            if job.cancelled:
                self._release(job)
                continue
            if job.request.adapter is not None:
                try:
                    self._load_adapter(job.request.adapter)
                except SparError as exc:
                    self._fail(job, exc)
                    continue
            live.append(job)
        return live

    def _run_batch(self, jobs: list[Job]) -> None:
        live = self._startable(jobs)
        if not live:
            return
        rows = [Row(job, i) for job in live for i in range(job.request.n)]
        monitor = _BatchMonitor(self, rows)
        try:
            self._generate(live, rows, monitor)
        except Exception as exc:
            log.exception("a batch of %d rows failed", len(rows))
            error = Unavailable(f"generation failed: {type(exc).__name__}: {exc}")
            for job in live:
                if not job.released:
                    self._fail(job, error)
            if self._device.type == "cuda":
                torch.cuda.empty_cache()
            return
        for row in rows:  # rows the monitor did not end (e.g. cancelled at the last step)
            if not row.done and not row.job.cancelled:
                self._finish_row(row, "length", self._decode(row.tokens))
        for job in live:
            self._release(job)

    def _generate(self, jobs: list[Job], rows: list[Row], monitor: _BatchMonitor) -> None:
        width = max(len(job.prompt) for job in jobs)
        ids = [[self._pad_id] * (width - len(r.job.prompt)) + r.job.prompt for r in rows]
        mask = [[0] * (width - len(r.job.prompt)) + [1] * len(r.job.prompt) for r in rows]
        first = jobs[0].request
        options: dict[str, Any] = {
            "max_new_tokens": max(job.max_tokens for job in jobs),
            "pad_token_id": self._pad_id,
            "eos_token_id": sorted(self._eos_ids),
            "stopping_criteria": StoppingCriteriaList([monitor]),
        }
        if first.temperature > 0.0:
            options.update(do_sample=True, temperature=first.temperature, top_p=first.top_p)
            options["top_k"] = 0
        else:
            options["do_sample"] = False
        model = self._model
        if self._peft is not None:
            model = self._peft
            options["adapter_names"] = [
                self._adapters[r.job.request.adapter.engine_id]
                if r.job.request.adapter is not None
                else BASE_ROW
                for r in rows
            ]
        input_ids = torch.tensor(ids, dtype=torch.long, device=self._device)
        attention_mask = torch.tensor(mask, dtype=torch.long, device=self._device)
        seed = first.seed
        devices = [self._device.index or 0] if self._device.type == "cuda" else []
        with torch.inference_mode(), torch.random.fork_rng(devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            model.generate(input_ids=input_ids, attention_mask=attention_mask, **options)

    def _load_adapter(self, ref: AdapterRef) -> None:
        """Loads a peft LoRA folder as adapter ``spar-<engine_id>`` (no-op when loaded)."""
        from peft import LoraConfig, PeftModelForCausalLM
        from peft.utils import load_peft_weights, set_peft_model_state_dict

        if ref.engine_id in self._adapters:
            return
        name = f"spar-{ref.engine_id}"
        check_adapter_folder(ref, self._info.max_lora_rank)
        try:
            config = LoraConfig.from_pretrained(str(ref.path))
            config.inference_mode = True
            # Weights first: a corrupted file fails before the model is touched.
            weights = load_peft_weights(str(ref.path), device=str(self._device))
            if self._peft is None:
                self._peft = PeftModelForCausalLM(
                    self._model, config, adapter_name=name, autocast_adapter_dtype=False
                )
                self._peft.eval()
            else:
                self._peft.add_adapter(name, config, autocast_adapter_dtype=False)
            loaded = set_peft_model_state_dict(self._peft, weights, adapter_name=name)
            missing = [k for k in getattr(loaded, "missing_keys", []) if f".{name}." in k]
            if missing:
                raise ValueError(f"the weights lack {len(missing)} tensors, e.g. {missing[0]}")
        except Exception as exc:
            self._discard(name)
            raise adapter_load_failed(ref, exc) from exc
        with self._cond:
            self._adapters[ref.engine_id] = name
        log.info("loaded adapter %s as %s", ref.name, name)

    def _remove_adapter(self, engine_id: int) -> None:
        with self._cond:
            name = self._adapters.pop(engine_id, None)
        if name is not None:
            self._discard(name)

    def _discard(self, name: str) -> None:
        if self._peft is None:
            return
        if name in self._peft.peft_config:
            self._peft.delete_adapter(name)
        if not self._peft.peft_config:  # peft cannot run without an adapter: unwrap
            self._model = self._peft.unload()
            self._peft = None


class _BatchMonitor(StoppingCriteria):  # type: ignore[misc]
    """Called after every generated token of a batch; True ends a row."""

    def __init__(self, engine: HfGenerateEngine, rows: list[Row]) -> None:
        self.engine = engine
        self.rows = rows

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        last = input_ids[:, -1].tolist()
        done = []
        for row, token in zip(self.rows, last, strict=True):
            if not row.done:
                if row.job.cancelled:
                    row.done = True
                    self.engine._release(row.job)
                else:
                    self.engine._step_row(row, token)
            done.append(row.done)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
