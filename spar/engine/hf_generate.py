"""The Engine protocol over Hugging Face transformers + peft (for machines without vLLM).

One worker thread owns the model: it collects queued requests into batches
(:mod:`spar.engine.batching`), runs each batch as one left-padded ``model.generate``
under ``torch.inference_mode``, and loads/unloads adapters between batches, so GPU work
is serialized and an adapter is never changed under a running batch. The event loop only
renders prompts and waits; results and stream deltas come back through
``loop.call_soon_threadsafe``.

A :class:`_BatchMonitor` stopping criterion sees every generated token: it ends a row at
EOS, at its own max_tokens or at a stop string, drops the rows of cancelled requests,
streams deltas and delivers each request's result as soon as its rows are done.

Adapters: mixed-adapter batches (peft's ``adapter_names=``; base rows are
``"__base__"``). Rows of different adapters share one batch, so the active, previous and
candidate adapters of a rollout never wait for each other's batches; a batch per adapter
with ``set_adapter`` would split concurrent traffic into smaller, serialized batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from spar.adapter_files import validate_adapter_dir
from spar.config import EngineSettings, Settings
from spar.engine.batching import (
    batch_key,
    find_stop,
    queued_rows,
    streamable_length,
    take_batch,
)
from spar.engine.hf_placement import resolve_device, resolve_dtype
from spar.engine.inputs import fit_max_tokens, render_prompt, require_model_folder
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

T = TypeVar("T")
BASE_ROW = "__base__"
"""peft's name for rows of a mixed-adapter batch that use no adapter."""


@dataclass(eq=False)
class _Job:
    """One request inside the engine. ``cancelled`` is set by the event loop; the rest
    of the state after submission belongs to the worker thread."""

    request: GenerationRequest
    prompt: list[int]
    max_tokens: int
    key: Hashable
    loop: asyncio.AbstractEventLoop
    arrived: float
    future: asyncio.Future[GenerationResult] | None = None
    deltas: asyncio.Queue[StreamDelta | BaseException] | None = None
    cancelled: bool = False
    released: bool = False
    samples: dict[int, Sample] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.request.n

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits
            self.loop.call_soon_threadsafe(fn, *args)


@dataclass(eq=False)
class _Row:
    job: _Job
    index: int
    tokens: list[int] = field(default_factory=list)
    sent: int = 0
    done: bool = False


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class HfEngine:
    """A transformers causal LM (SDPA attention) with peft LoRA adapters, batched."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        decoder: Any,
        info: EngineInfo,
        settings: EngineSettings,
    ) -> None:
        self._model = model
        self._peft: Any = None
        self._tokenizer = tokenizer  # event loop: prompt rendering
        self._decoder = decoder  # worker thread: decoding (tokenizers are not shared)
        self._info = info
        self._device = torch.device(info.device)
        self._max_rows = settings.max_batch_sequences
        self._wait_s = settings.batch_wait_ms / 1000.0
        self._pad_id, self._eos_ids = _special_ids(model, tokenizer)
        self._adapters: dict[int, str] = {}
        self._cond = threading.Condition()
        self._queue: list[_Job] = []
        self._control: list[tuple[Callable[[], None], Callable[[BaseException], None]]] = []
        self._running: list[_Job] = []
        self._unfinished = 0
        self._serial = itertools.count()
        self._closed = False
        self._failure = ""
        self._thread = threading.Thread(target=self._work, name="hf-engine", daemon=True)
        self._thread.start()

    @classmethod
    def start(cls, settings: Settings, model_path: Path | None = None) -> HfEngine:
        """Loads the model (blocking, seconds). Call from a worker thread in servers."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = require_model_folder(model_path or settings.model_path())
        e = settings.engine
        device = resolve_device(e.device, torch.cuda.is_available())
        dtype = resolve_dtype(e, device)
        torch.manual_seed(e.seed)
        try:
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=getattr(torch, dtype), attn_implementation="sdpa"
            )
            tokenizer = AutoTokenizer.from_pretrained(path)
            decoder = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise FailedPrecondition(f"could not load the model from {path}: {exc}") from exc
        positions = getattr(model.config, "max_position_embeddings", None)
        if isinstance(positions, int) and e.max_model_len > positions:
            raise FailedPrecondition(
                f"SPAR_ENGINE__MAX_MODEL_LEN={e.max_model_len} exceeds the {positions} "
                f"positions of the model in {path}; lower it to at most {positions}"
            )
        model.to(device).eval()
        info = EngineInfo(
            model=str(path),
            max_model_len=e.max_model_len,
            max_lora_rank=e.max_lora_rank,
            device=device,
            extra={
                "engine": "hf",
                "dtype": dtype,
                "max_batch_sequences": str(e.max_batch_sequences),
            },
        )
        log.info("hf engine: %s on %s in %s", path.name, device, dtype)
        return cls(model, tokenizer, decoder, info, e)

    @property
    def info(self) -> EngineInfo:
        return self._info

    # -- requests (event loop) --------------------------------------------------------

    def prompt_tokens(self, request: GenerationRequest) -> int:
        return len(render_prompt(self._tokenizer, request))

    def _submit(self, request: GenerationRequest, *, stream: bool) -> _Job:
        if request.n < 1:
            raise InvalidArgument(f"n={request.n} must be at least 1")
        ids = render_prompt(self._tokenizer, request)
        max_tokens = fit_max_tokens(len(ids), request, self._info.max_model_len)
        loop = asyncio.get_running_loop()
        job = _Job(
            request=request,
            prompt=ids,
            max_tokens=max_tokens,
            key=batch_key(request, next(self._serial)),
            loop=loop,
            arrived=time.monotonic(),
            future=None if stream else loop.create_future(),
            deltas=asyncio.Queue() if stream else None,
        )
        with self._cond:
            self._check_alive()
            self._queue.append(job)
            self._unfinished += 1
            self._cond.notify_all()
        return job

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        job = self._submit(request, stream=False)
        assert job.future is not None
        try:
            return await job.future
        except asyncio.CancelledError:
            self._cancel(job)
            raise

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        job = self._submit(request, stream=True)
        assert job.deltas is not None
        finished = False
        try:
            while True:
                item = await job.deltas.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                if item.usage is not None:
                    finished = True
                yield item
                if finished:
                    return
        finally:
            if not finished:
                self._cancel(job)

    def _cancel(self, job: _Job) -> None:
        """Drops a request: at once when still queued, else at the batch's next step."""
        job.cancelled = True
        with self._cond:
            if job in self._queue:
                self._queue.remove(job)
                self._release_locked(job)

    def _release_locked(self, job: _Job) -> None:
        if not job.released:
            job.released = True
            self._unfinished -= 1

    def _release(self, job: _Job) -> None:
        with self._cond:
            self._release_locked(job)

    def _check_alive(self) -> None:
        if self._failure:
            raise Unavailable(f"the engine failed ({self._failure}); the server must restart")
        if self._closed:
            raise Unavailable("the engine is shutting down")

    # -- adapters ---------------------------------------------------------------------

    async def add_adapter(self, adapter: AdapterRef) -> None:
        await self._in_worker(lambda: self._load_adapter(adapter))

    async def remove_adapter(self, adapter: AdapterRef) -> None:
        await self._in_worker(lambda: self._remove_adapter(adapter.engine_id))

    async def list_adapters(self) -> set[int]:
        with self._cond:
            return set(self._adapters)

    async def _in_worker(self, fn: Callable[[], T]) -> T:
        """Runs fn on the worker thread between batches (adapters change only there)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def run() -> None:
            try:
                result = fn()
            except BaseException as exc:
                fail(exc)
            else:
                loop.call_soon_threadsafe(_resolve, future, result, None)

        def fail(exc: BaseException) -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future, None, exc)

        with self._cond:
            self._check_alive()
            self._control.append((run, fail))
            self._cond.notify_all()
        return await future

    # -- engine state -----------------------------------------------------------------

    async def unfinished_requests(self) -> int:
        with self._cond:
            return self._unfinished

    async def check_health(self) -> None:
        with self._cond:
            self._check_alive()
        if not self._thread.is_alive():
            raise Unavailable("the engine's worker thread is gone; the server must restart")

    def shutdown(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            running = list(self._running)
            self._cond.notify_all()
        gone = Unavailable("the engine shut down")
        for job in running:  # the batch ends at its next step
            self._fail(job, gone)
            job.cancelled = True
        self._thread.join(timeout=60)
        with self._cond:
            queued, self._queue = self._queue, []
            control, self._control = self._control, []
        for job in queued:
            self._fail(job, gone)
        for _, fail in control:
            fail(gone)
        self._model = self._peft = None
        if self._device.type == "cuda":
            torch.cuda.empty_cache()

    # -- worker thread ----------------------------------------------------------------

    def _work(self) -> None:
        try:
            while True:
                with self._cond:
                    while not (self._queue or self._control or self._closed):
                        self._cond.wait()
                    if self._closed:
                        return
                    control, self._control = self._control, []
                for run, _ in control:
                    run()
                with self._cond:
                    self._wait_for_batch_locked()
                    if self._closed:
                        return
                    batch = take_batch(self._queue, self._max_rows)
                    self._running = batch
                if batch:
                    self._run_batch(batch)
                with self._cond:
                    self._running = []
        except BaseException as exc:  # a bug or a dead device: fail loudly, not silently
            log.exception("the hf engine's worker failed")
            with self._cond:
                self._failure = f"{type(exc).__name__}: {exc}"
                queued, self._queue = self._queue, []
                control, self._control = self._control, []
            dead = Unavailable(f"the engine failed ({self._failure}); the server must restart")
            for job in queued:
                self._fail(job, dead)
            for _, fail in control:
                fail(dead)

    def _wait_for_batch_locked(self) -> None:
        """Gives a batch that is not full until batch_wait_ms after its oldest request."""
        while self._queue and not self._closed and not self._control:
            if queued_rows(self._queue) >= self._max_rows:
                return
            left = self._queue[0].arrived + self._wait_s - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _startable(self, jobs: list[_Job]) -> list[_Job]:
        """The jobs still wanted, with their adapters loaded (a request may name an
        adapter the engine has not loaded: like vLLM, it loads it from its folder)."""
        live: list[_Job] = []
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

    def _run_batch(self, jobs: list[_Job]) -> None:
        live = self._startable(jobs)
        if not live:
            return
        rows = [_Row(job, i) for job in live for i in range(job.request.n)]
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
                monitor.finish(row, "length", self._decode(row.tokens))
        for job in live:
            self._release(job)

    def _generate(self, jobs: list[_Job], rows: list[_Row], monitor: _BatchMonitor) -> None:
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

    def _decode(self, tokens: list[int]) -> str:
        text: str = self._decoder.decode(tokens, skip_special_tokens=True)
        return text

    def _fail(self, job: _Job, error: BaseException) -> None:
        if job.future is not None:
            job.post(_resolve, job.future, None, error)
        elif job.deltas is not None:
            job.post(job.deltas.put_nowait, error)
        self._release(job)

    def _load_adapter(self, ref: AdapterRef) -> None:
        """Loads a peft LoRA folder as adapter ``spar-<engine_id>`` (no-op when loaded)."""
        from peft import LoraConfig, PeftModelForCausalLM
        from peft.utils import load_peft_weights, set_peft_model_state_dict

        if ref.engine_id in self._adapters:
            return
        name = f"spar-{ref.engine_id}"
        try:
            validate_adapter_dir(ref.path, self._info.max_lora_rank)
        except SparError as exc:
            raise FailedPrecondition(
                f"the engine could not load adapter {ref.name!r}: {exc.message}"
            ) from exc
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
            raise FailedPrecondition(
                f"the engine could not load adapter {ref.name!r}: {type(exc).__name__}: {exc}"
            ) from exc
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

    def __init__(self, engine: HfEngine, rows: list[_Row]) -> None:
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
                    self.step(row, token)
            done.append(row.done)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def step(self, row: _Row, token: int) -> None:
        row.tokens.append(token)
        job = row.job
        stops = job.request.stop
        decode = self.engine._decode
        if token in self.engine._eos_ids:
            self.finish(row, "stop", decode(row.tokens))
            return
        if stops:
            window = 4 * max(len(s) for s in stops) + 4
            if find_stop(decode(row.tokens[-window:]), stops) is not None:
                text = decode(row.tokens)
                cut = find_stop(text, stops)
                self.finish(row, "stop", text if cut is None else text[:cut])
                return
        if len(row.tokens) >= job.max_tokens:
            self.finish(row, "length", decode(row.tokens))
            return
        if job.deltas is not None:
            text = decode(row.tokens)
            end = streamable_length(text, stops)
            if end > row.sent:
                job.post(job.deltas.put_nowait, StreamDelta(row.index, text[row.sent : end]))
                row.sent = end

    def finish(self, row: _Row, reason: FinishReason, text: str) -> None:
        row.done = True
        job = row.job
        job.samples[row.index] = Sample(row.index, text, reason, len(row.tokens))
        last = len(job.samples) == job.request.n
        usage = None
        if last:
            usage = Usage(
                prompt_tokens=len(job.prompt),
                completion_tokens=sum(s.completion_tokens for s in job.samples.values()),
            )
        if job.deltas is not None:
            delta = StreamDelta(row.index, text[row.sent :], reason, usage)
            job.post(job.deltas.put_nowait, delta)
        if last:
            if job.future is not None:
                samples = [job.samples[i] for i in sorted(job.samples)]
                assert usage is not None
                job.post(_resolve, job.future, GenerationResult(samples, usage), None)
            self.engine._release(job)


def _special_ids(model: Any, tokenizer: Any) -> tuple[int, set[int]]:
    """The pad id of left padding and the ids that end a sample (EOS)."""
    eos: set[int] = set()
    configured = model.generation_config.eos_token_id
    if isinstance(configured, int):
        eos.add(configured)
    elif configured:
        eos.update(configured)
    if tokenizer.eos_token_id is not None:
        eos.add(int(tokenizer.eos_token_id))
    if not eos:
        raise FailedPrecondition("the model defines no EOS token; the hf engine needs one")
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = model.generation_config.pad_token_id
    if pad is None:
        pad = min(eos)
    return int(pad), eos
