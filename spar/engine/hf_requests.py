"""What both hf engines do the same way: requests, results, streams, cancellation.

An hf engine has one worker thread that owns the model; the event loop only renders
prompts, queues jobs and waits. Results and stream deltas come back through
``loop.call_soon_threadsafe``. :class:`HfEngineBase` is that plumbing plus the per-row
rules every generated token goes through (EOS, stop strings, max_tokens, streaming);
subclasses supply the worker loop (``_work``) and adapter loading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from spar.engine.batching import find_stop, streamable_length
from spar.engine.continuous import stop_may_end_with
from spar.engine.hf_model import LoadedModel, special_ids
from spar.engine.inputs import fit_max_tokens, render_prompt
from spar.engine.loops import ends_in_loop
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
from spar.errors import InvalidArgument, Unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(eq=False)
class Job:
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
    stop_chars: frozenset[str] = frozenset()
    adapter_slot: int | None = None
    """Continuous batching: the device slot of the request's adapter while it runs."""

    @property
    def rows(self) -> int:
        return self.request.n

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits
            self.loop.call_soon_threadsafe(fn, *args)


@dataclass(eq=False)
class Row:
    """One sample being generated."""

    job: Job
    index: int
    tokens: list[int] = field(default_factory=list)
    sent: int = 0
    done: bool = False
    pos: int = 0
    """Continuous batching: cache position of the row's next input token."""


def resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class HfEngineBase:
    """The request side of an hf engine; subclasses run ``_work`` on the worker thread."""

    def __init__(self, loaded: LoadedModel, thread_name: str) -> None:
        self._tokenizer = loaded.tokenizer  # event loop: prompt rendering
        self._decoder = loaded.decoder  # worker thread: decoding (tokenizers are not shared)
        self._info = loaded.info
        self._device = torch.device(loaded.info.device)
        self._wait_s = loaded.settings.batch_wait_ms / 1000.0
        self._pad_id, self._eos_ids = special_ids(loaded.model, loaded.tokenizer)
        self._adapters: dict[int, str] = {}
        self._cond = threading.Condition()
        self._queue: list[Job] = []
        self._control: list[tuple[Callable[[], None], Callable[[BaseException], None]]] = []
        self._running: list[Job] = []
        self._unfinished = 0
        self._closed = False
        self._failure = ""
        self._pieces: dict[int, str] = {}
        self._thread = threading.Thread(target=self._work, name=thread_name, daemon=True)

    @property
    def info(self) -> EngineInfo:
        return self._info

    # -- requests (event loop) --------------------------------------------------------

    def prompt_tokens(self, request: GenerationRequest) -> int:
        return len(render_prompt(self._tokenizer, request))

    def _batch_key(self, request: GenerationRequest) -> Hashable:
        return None

    def _check_request(self, request: GenerationRequest) -> None:
        if request.n < 1:
            raise InvalidArgument(f"n={request.n} must be at least 1")

    def _submit(self, request: GenerationRequest, *, stream: bool) -> Job:
        self._check_request(request)
        ids = render_prompt(self._tokenizer, request)
        max_tokens = fit_max_tokens(len(ids), request, self._info.max_model_len)
        loop = asyncio.get_running_loop()
        job = Job(
            request=request,
            prompt=ids,
            max_tokens=max_tokens,
            key=self._batch_key(request),
            loop=loop,
            arrived=time.monotonic(),
            future=None if stream else loop.create_future(),
            deltas=asyncio.Queue() if stream else None,
            stop_chars=frozenset(s[-1] for s in request.stop if s),
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

    def _cancel(self, job: Job) -> None:
        """Drops a request: at once when still queued, else at the next decode step."""
        job.cancelled = True
        with self._cond:
            if job in self._queue:
                self._queue.remove(job)
                self._release_locked(job)

    def _release_locked(self, job: Job) -> None:
        if not job.released:
            job.released = True
            self._unfinished -= 1
            self._on_release_locked(job)

    def _on_release_locked(self, job: Job) -> None:
        """Hook: a job left the engine (finished, failed or cancelled)."""

    def _release(self, job: Job) -> None:
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

    def _load_adapter(self, ref: AdapterRef) -> None:
        raise NotImplementedError

    def _remove_adapter(self, engine_id: int) -> None:
        raise NotImplementedError

    async def _in_worker(self, fn: Callable[[], T]) -> T:
        """Runs fn on the worker thread between steps (adapters change only there)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def run() -> None:
            try:
                result = fn()
            except BaseException as exc:
                fail(exc)
            else:
                loop.call_soon_threadsafe(resolve, future, result, None)

        def fail(exc: BaseException) -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(resolve, future, None, exc)

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
        for job in running:  # their rows end at the next step
            self._fail(job, gone)
            job.cancelled = True
        self._thread.join(timeout=60)
        self._drain(gone)
        self._free_model()
        if self._device.type == "cuda":
            torch.cuda.empty_cache()

    def _free_model(self) -> None:
        raise NotImplementedError

    # -- worker thread ----------------------------------------------------------------

    def _work(self) -> None:
        raise NotImplementedError

    def _next_round(self, busy: bool = False) -> bool:
        """Waits until there is work (queued requests, control calls, or ``busy``: rows the
        worker still decodes), then runs the control calls, so adapters change only between
        steps. False once the engine is closed."""
        with self._cond:
            while not (self._queue or self._control or busy or self._closed):
                self._cond.wait()
            if self._closed:
                return False
            control, self._control = self._control, []
        for run, _ in control:
            run()
        return True

    def _died(self, exc: BaseException) -> None:
        """The worker failed (a bug or a dead device): fail loudly, not silently."""
        log.exception("the hf engine's worker failed")
        with self._cond:
            self._failure = f"{type(exc).__name__}: {exc}"
        dead = Unavailable(f"the engine failed ({self._failure}); the server must restart")
        for job in list(self._running):
            self._fail(job, dead)
        self._drain(dead)

    def _drain(self, error: BaseException) -> None:
        with self._cond:
            queued, self._queue = self._queue, []
            control, self._control = self._control, []
        for job in queued:
            self._fail(job, error)
        for _, fail in control:
            fail(error)

    def _wait_for_batch_locked(self, rows: int) -> None:
        """Gives a batch that is not full (``rows``) until batch_wait_ms after its oldest
        request."""
        while self._queue and not self._closed and not self._control:
            if sum(job.rows for job in self._queue) >= rows:
                return
            left = self._queue[0].arrived + self._wait_s - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _fail(self, job: Job, error: BaseException) -> None:
        if job.future is not None:
            job.post(resolve, job.future, None, error)
        elif job.deltas is not None:
            job.post(job.deltas.put_nowait, error)
        self._release(job)

    def _decode(self, tokens: list[int]) -> str:
        text: str = self._decoder.decode(tokens, skip_special_tokens=True)
        return text

    def _piece(self, token: int) -> str:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self._decoder.decode([token])
        return piece

    def _step_row(self, row: Row, token: int) -> None:
        """Takes a row's new token: ends the row at EOS, a stop string, max_tokens or a
        loop (vLLM's order of checks), else streams the text that is safe to send."""
        row.tokens.append(token)
        job = row.job
        stops = job.request.stop
        if token in self._eos_ids:
            self._finish_row(row, "stop", self._decode(row.tokens))
            return
        if stops and stop_may_end_with(self._piece(token), job.stop_chars):
            window = 4 * max(len(s) for s in stops) + 4
            if find_stop(self._decode(row.tokens[-window:]), stops) is not None:
                text = self._decode(row.tokens)
                cut = find_stop(text, stops)
                self._finish_row(row, "stop", text if cut is None else text[:cut])
                return
        if len(row.tokens) >= job.max_tokens:
            self._finish_row(row, "length", self._decode(row.tokens))
            return
        loop_stop = job.request.loop_stop
        if loop_stop is not None and ends_in_loop(row.tokens, loop_stop):
            self._finish_row(row, "repetition", self._decode(row.tokens))
            return
        if job.deltas is not None:
            text = self._decode(row.tokens)
            end = streamable_length(text, stops)
            if end > row.sent:
                job.post(job.deltas.put_nowait, StreamDelta(row.index, text[row.sent : end]))
                row.sent = end

    def _finish_row(self, row: Row, reason: FinishReason, text: str) -> None:
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
                job.post(resolve, job.future, GenerationResult(samples, usage), None)
            self._release(job)
