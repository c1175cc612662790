"""The refiner's OpenAI-compatible HTTP endpoint: ``POST /v1/chat/completions`` and
``GET /v1/models`` beside the gRPC port (docs/openai.md).

A thin transport over one narrow interface,
:class:`services.refiner.openai_backend.AnswerBackend`: the refined model is
the Answer use case, called in-process; the actor's model is a plain Generate call to
the actor. What a request means and what a reply looks like is in
:mod:`services.refiner.openai_protocol`; this module does HTTP: Starlette on uvicorn,
bearer tokens and TLS from the same settings as the gRPC port, body limits, errors as
OpenAI error objects with HTTP codes mapped from gRPC codes, streaming responses, and
request metrics. The events of a stream are made in :mod:`services.refiner.openai_streaming`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from services.refiner import openai_completions as oc
from services.refiner import openai_protocol as op
from services.refiner.metrics import HttpMetrics
from services.refiner.openai_backend import AnswerBackend
from services.refiner.openai_streaming import actor_events, cancel, refined_events, sse
from spar.config import OpenAISettings, Settings
from spar.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    SparError,
    Unavailable,
)
from spar.metrics import Metrics
from spar.security import BearerAuth, ssl_options, tls_mode

log = logging.getLogger(__name__)

#: A streamed answer that is ready (or refused) this soon gets a plain HTTP reply: bad
#: options are a 400, not an error event inside a 200 stream.
FIRST_BYTE_S = 1.0
#: How often a non-streamed request checks whether its client is still there.
DISCONNECT_POLL_S = 1.0
ROUTES = ("/v1/chat/completions", "/v1/models", "/v1/models/{model}", "/health")

T = TypeVar("T")


# -- errors -------------------------------------------------------------------------------


class HttpError(Exception):
    """An error reply: status, OpenAI error object and headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = op.error_body(status, message, param=param, code=code)
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, status_code=self.status, headers=self.headers)


def http_error(exc: BaseException, retry_after_s: int) -> HttpError:
    """The HTTP error for an exception of the Answer use case or the actor."""
    if isinstance(exc, HttpError):
        return exc
    if isinstance(exc, op.RequestError):
        return HttpError(exc.status, exc.message, param=exc.param, code="invalid_request")
    if isinstance(exc, TimeoutError):
        exc = DeadlineExceeded("the request's deadline passed; its work was aborted")
    if not isinstance(exc, SparError):
        log.exception("unexpected error in the HTTP endpoint", exc_info=exc)
        return HttpError(500, f"internal error: {type(exc).__name__}: {exc}", code="internal")
    status = op.HTTP_STATUS.get(exc.code, 500)
    message = exc.detail  # without the status name that errors relayed from the actor carry
    param = None
    if status == 400:
        message, param = op.http_field_names(message)
    headers = {"Retry-After": str(retry_after_s)} if status in (429, 503) else {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return HttpError(status, message, param=param, code=exc.code.name.lower(), headers=headers)


# -- the app ------------------------------------------------------------------------------


class OpenAIEndpoint:
    """The Starlette app of the endpoint and its uvicorn server on the refiner's loop."""

    def __init__(self, backend: AnswerBackend, settings: Settings, metrics: Metrics) -> None:
        self.backend = backend
        self.config: OpenAISettings = settings.openai
        self.grace_s = settings.grace_period_s
        self.ssl = ssl_options(settings.tls)
        self.tls_mode = tls_mode(settings.tls) if self.ssl else "plaintext"
        self.auth = BearerAuth(settings.auth.tokens_file) if settings.auth.tokens_file else None
        self.models = {
            self.config.refined_model: "refined",
            self.config.actor_model: "actor",
        }
        if len(self.models) != 2:
            raise FailedPrecondition(
                "SPAR_OPENAI__REFINED_MODEL and SPAR_OPENAI__ACTOR_MODEL must differ"
            )
        self.metrics = HttpMetrics(metrics, list(self.models))
        self.draining = False
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/v1/models", self.list_models, methods=["GET"]),
                Route("/v1/models/{model:path}", self.get_model, methods=["GET"]),
                Route("/health", self.health, methods=["GET"]),
            ],
            exception_handlers={HTTPException: self._http_exception},  # type: ignore[dict-item]
        )
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    # -- serving ------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        """Binds host:port (0: a free port) and serves; returns the bound port."""
        sock = _bind(host, port)
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,
            access_log=False,
            limit_concurrency=self.config.max_connections,
            timeout_graceful_shutdown=max(int(self.grace_s), 1),
            server_header=False,
            **self.ssl,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise OSError(f"the HTTP endpoint on {host}:{port} did not start")
            await asyncio.sleep(0.01)
        self.port = int(sock.getsockname()[1])
        log.info(
            "OpenAI-compatible HTTP on %s:%d: %s, %s; models %s",
            host, self.port, self.tls_mode,
            "bearer tokens required" if self.auth else "no token auth", ", ".join(self.models),
        )  # fmt: skip
        return self.port

    async def stop(self) -> None:
        """Refuses new requests at once; in-flight ones get the grace period to finish."""
        self.draining = True
        if self._server is None or self._task is None:
            return
        self._server.exit()
        with contextlib.suppress(asyncio.CancelledError, SystemExit):
            await self._task

    # -- handlers -----------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        serving = self.backend.ready() and not self.draining
        return JSONResponse(
            {"status": "serving" if serving else "not_serving"},
            status_code=200 if serving else 503,
        )

    async def list_models(self, request: Request) -> Response:
        return await self._observed("/v1/models", "", lambda: self._list_models(request))

    async def _list_models(self, request: Request) -> Response:
        self._authenticate(request)
        return JSONResponse({"object": "list", "data": [self._model(m) for m in self.models]})

    async def get_model(self, request: Request) -> Response:
        name = request.path_params["model"]

        async def handle() -> Response:
            self._authenticate(request)
            self._kind(name, "model")
            return JSONResponse(self._model(name))

        return await self._observed("/v1/models/{model}", name, handle)

    def _model(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "spar"}

    async def chat_completions(self, request: Request) -> Response:
        start = time.perf_counter()
        route = "/v1/chat/completions"
        model = ""
        try:
            self._authenticate(request)
            if self.draining or not self.backend.ready():
                raise Unavailable(
                    "the refiner is shutting down" if self.draining else "the refiner is starting"
                )
            body = await self._read_json(request)
            raw_model = body.get("model") if isinstance(body, dict) else None
            model = raw_model if isinstance(raw_model, str) else ""  # for the metrics label
            parsed = op.parse_request(body)
            model = parsed.model
            field = parsed.unsupported()
            if field is not None:
                raise op.RequestError(f"{field} is not supported by spar; leave it unset", field)
            kind = self._kind(parsed.model, "model")
            if kind == "refined":
                response = await self._refined(request, parsed, start)
            else:
                response = await self._actor(request, parsed, start)
        except Exception as exc:
            response = http_error(exc, self.config.retry_after_s).response()
        if not isinstance(response, StreamingResponse):
            self.metrics.observe(route, model, response.status_code, time.perf_counter() - start)
        return response

    async def _observed(
        self, route: str, model: str, handle: Callable[[], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        try:
            response = await handle()
        except Exception as exc:
            response = http_error(exc, self.config.retry_after_s).response()
        self.metrics.observe(route, model, response.status_code, time.perf_counter() - start)
        return response

    async def _http_exception(self, request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; spar serves {ROUTES[:3]}"
        else:
            message = f"{request.method} is not allowed on {request.url.path}"
        error = HttpError(
            exc.status_code, message, code="not_found" if exc.status_code == 404 else None
        )
        return error.response()

    # -- request plumbing ---------------------------------------------------------------

    def _authenticate(self, request: Request) -> None:
        if self.auth is not None:
            header = request.headers.get("authorization")
            self.auth.check([("authorization", header)] if header is not None else [])

    def _kind(self, model: str, param: str) -> str:
        if model not in self.models:
            raise HttpError(
                404,
                f"model {model[:200]!r} is not served here; use {' or '.join(self.models)} "
                "(GET /v1/models)",
                param=param,
                code="model_not_found",
            )
        return self.models[model]

    async def _read_json(self, request: Request) -> Any:
        limit = self.config.max_body_bytes
        too_large = HttpError(
            413,
            f"the request body is larger than the server limit of {limit} bytes "
            "(SPAR_OPENAI__MAX_BODY_BYTES)",
            code="request_too_large",
        )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
        try:
            return json.loads(bytes(body), parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise op.RequestError(f"the request body is not valid JSON: {exc}") from None

    async def _until_done(self, request: Request, work: Awaitable[T]) -> T:
        """Awaits the work; a client that goes away cancels it (and its engine work)."""
        task = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
                if done:
                    return task.result()
                if await request.is_disconnected():
                    raise HttpError(499, "the client went away; the work was cancelled")
        finally:
            await cancel(task)

    # -- the refined model --------------------------------------------------------------

    async def _refined(
        self, request: Request, parsed: op.ChatCompletionRequest, start: float
    ) -> Response:
        answer_request = op.answer_request(parsed)
        trace = answer_request.include_trace
        timeout = self.config.request_timeout_s
        if not parsed.stream:
            reply = await self._until_done(request, self.backend.answer(answer_request, timeout))
            return JSONResponse(oc.answer_completion(reply, parsed.model, trace=trace))
        task = asyncio.create_task(self.backend.answer(answer_request, timeout))
        await asyncio.wait({task}, timeout=min(FIRST_BYTE_S, self.config.keepalive_s))
        if task.done() and task.exception() is not None:
            raise cast(BaseException, task.exception())
        include_usage = bool(parsed.stream_options and parsed.stream_options.include_usage)
        events = refined_events(
            task,
            parsed.model,
            trace=trace,
            include_usage=include_usage,
            keepalive_s=self.config.keepalive_s,
        )
        return self._sse(events, parsed.model, start, cleanup=functools.partial(cancel, task))

    # -- the actor's model --------------------------------------------------------------

    async def _actor(
        self, request: Request, parsed: op.ChatCompletionRequest, start: float
    ) -> Response:
        messages, sampling = op.actor_request(parsed)
        timeout = self.config.request_timeout_s
        if not parsed.stream:
            reply = await self._until_done(
                request, self.backend.generate(messages, sampling, timeout)
            )
            return JSONResponse(
                oc.actor_completion(reply, parsed.model, time.perf_counter() - start)
            )
        stream = self.backend.generate_stream(messages, sampling, timeout)
        # The first delta (or the actor's refusal) before the status line: bad sampling
        # is a 400, not an error event.
        try:
            first = await anext(stream)
        except StopAsyncIteration:
            first = None
        include_usage = bool(parsed.stream_options and parsed.stream_options.include_usage)
        events = actor_events(
            stream,
            first,
            parsed.model,
            n=parsed.n or 1,
            include_usage=include_usage,
            start=start,
        )
        return self._sse(events, parsed.model, start, cleanup=cast(Any, stream).aclose)

    # -- SSE ----------------------------------------------------------------------------

    def _sse(
        self,
        events: AsyncIterator[bytes],
        model: str,
        start: float,
        *,
        cleanup: Callable[[], Awaitable[Any]],
    ) -> StreamingResponse:
        """A text/event-stream response; errors after the status line become an error
        event (the openai SDK raises it), and the request is counted when it ends.
        ``cleanup`` runs when the response is over, also when a client left before the
        first event (then the events never start, and their own cleanup never runs)."""
        route = "/v1/chat/completions"

        async def body() -> AsyncIterator[bytes]:
            status = 200
            try:
                async for event in events:
                    yield event
            except asyncio.CancelledError:
                status = 499
                raise
            except Exception as exc:
                error = http_error(exc, self.config.retry_after_s)
                status = error.status
                yield sse(error.body)
            finally:
                self.metrics.observe(route, model, status, time.perf_counter() - start)

        return StreamingResponse(
            body(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            background=BackgroundTask(cleanup),
        )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio turns Nagle's algorithm off (TCP_NODELAY) only
    # on sockets whose proto says TCP; with the default 0 a response's body waited ~40 ms
    # behind its headers on a kept-alive connection, and stream events likewise.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(
            f"cannot bind the HTTP endpoint to {host}:{port}: {exc.strerror} (SPAR_OPENAI__PORT)"
        ) from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the refiner's server owns SIGTERM and
    stops HTTP and gRPC together, each with the grace period."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._exit = asyncio.Event()

    def exit(self) -> None:
        """Starts the shutdown now, not at uvicorn's next 0.1 s poll of should_exit."""
        self.should_exit = True
        self._exit.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000  # uvicorn's own wrap-around
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit.wait(), 0.1)
