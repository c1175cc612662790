"""The OpenAI chat-completions protocol of the refiner's HTTP endpoint, and its mapping
spar's protobuf messages (requests in, errors out). Pure logic: no I/O, no web framework.

Requests are pydantic models that refuse what spar cannot honour (a 400 naming the
field) instead of ignoring it. spar's own options travel under one body key, ``spar``
(what ``extra_body={"spar": {...}}`` sends from the ``openai`` SDK).

Responses (completions, chunks, usage) are services.refiner.openai_completions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import grpc
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from spar.client.enums import JUDGE_KIND, NODE_SELECTION, SEARCH_STRATEGY
from spar.proto_time import duration
from spar.v1 import common_pb2
from spar.v1 import refiner_pb2 as pb

UINT32 = 2**32 - 1
UINT64 = 2**64 - 1

# -- requests ----------------------------------------------------------------------------


class _Strict(BaseModel):
    """Unknown fields, wrong types and non-finite numbers are errors, never ignored."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class TextPart(_Strict):
    """A text part of a message's content (other part types carry images or audio)."""

    type: Literal["text"]
    text: str


class ChatMessageIn(_Strict):
    """One message of the chat. ``developer`` is OpenAI's newer name for ``system``."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None
    """Accepted and ignored: the chat template has no participant names."""

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class StreamOptions(_Strict):
    """OpenAI's ``stream_options``."""

    include_usage: bool = False
    """Usage in a last chunk of its own (choices empty) instead of on the finish chunk."""


class ConstraintIn(_Strict):
    """A verifiable IFEval constraint: its instruction id and its checker's kwargs."""

    instruction_id: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


class BudgetIn(_Strict):
    """Limits of the search; unset fields take the server defaults."""

    max_nodes: Annotated[int, Field(ge=1, le=UINT32)] | None = None
    max_generated_tokens: Annotated[int, Field(ge=1, le=UINT64)] | None = None
    max_wall_time_s: Annotated[float, Field(gt=0, le=1e6)] | None = None


class SearchIn(_Strict):
    """Shape of the tree search; unset fields take the server defaults (the paper's)."""

    strategy: Literal["bfs", "dfs"] | None = None
    selection: Literal["greedy", "proportional"] | None = None
    branch: Annotated[int, Field(ge=1, le=UINT32)] | None = None
    keep_top: Annotated[int, Field(ge=1, le=UINT32)] | None = None
    max_depth: Annotated[int, Field(ge=1, le=UINT32)] | None = None
    end_gate: float | None = None
    judge_samples: Annotated[int, Field(ge=1, le=UINT32)] | None = None


class SparOptions(_Strict):
    """spar's options of one request (body key ``spar``), for the refined model."""

    constraints: list[ConstraintIn] = Field(default_factory=list)
    judge: Literal["llm", "verifier", "hybrid"] | None = None
    budget: BudgetIn | None = None
    search: SearchIn | None = None
    include_trace: bool = False
    """Add the path from the actor's answer to the returned one to the extension."""


#: OpenAI's newer name for the system role.
ROLES = {"developer": "system"}


def _default_only(value: Any) -> bool:
    return value in (None, False, 0, 0.0, "", [], {}, "none", "auto", {"type": "text"})


class ChatCompletionRequest(_Strict):
    """``POST /v1/chat/completions``. Fields spar cannot honour are accepted only at their
    neutral value (see :func:`unsupported`)."""

    model: str
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_tokens: Annotated[int, Field(ge=1, le=UINT32)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=UINT32)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    n: Annotated[int, Field(ge=1, le=UINT32)] | None = None
    stop: str | list[str] | None = None
    seed: Annotated[int, Field(ge=0, le=UINT64)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    spar: SparOptions | None = None
    # Accepted and ignored: they change nothing about the answer.
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    # Not supported: allowed only at their neutral value.
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: Any = None
    prediction: Any = None
    reasoning_effort: str | None = None
    web_search_options: Any = None

    def unsupported(self) -> str | None:
        """The first field set to something spar cannot do, if any."""
        for name in (
            "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
            "tools", "tool_choice", "functions", "function_call", "response_format", "audio",
            "prediction", "reasoning_effort", "web_search_options",
        ):  # fmt: skip
            if not _default_only(getattr(self, name)):
                return name
        if self.modalities not in (None, [], ["text"]):
            return "modalities"
        return None

    def token_limit(self) -> int | None:
        both = self.max_tokens is not None and self.max_completion_tokens is not None
        if both and self.max_tokens != self.max_completion_tokens:
            raise RequestError(
                "max_tokens and max_completion_tokens disagree; set one of them",
                "max_completion_tokens",
            )
        return self.max_completion_tokens or self.max_tokens

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def chat(self) -> list[common_pb2.ChatMessage]:
        return [
            common_pb2.ChatMessage(role=ROLES.get(m.role, m.role), content=m.text())
            for m in self.messages
        ]


class RequestError(Exception):
    """A request spar refuses before it reaches the refiner: HTTP status, message, param."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


def _loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_FIELDS_OF: dict[str, type[BaseModel]] = {
    "": ChatCompletionRequest, "spar": SparOptions, "spar.budget": BudgetIn,
    "spar.search": SearchIn, "stream_options": StreamOptions,
}  # fmt: skip


def _validation_error(exc: ValidationError) -> RequestError:
    # The deepest error is the most specific one (a union reports each branch); at one
    # depth, an unknown field (a misspelling) explains the rest.
    e = max(exc.errors(), key=lambda err: (len(err["loc"]), err["type"] == "extra_forbidden"))
    # Unions report one error per branch, named in the path; a field's path leaves it out.
    loc = [p for i, p in enumerate(e["loc"]) if not (i and p in _BRANCHES)]
    param = _loc(loc)
    if e["type"] == "extra_forbidden" and loc:
        parent = _loc(loc[:-1])
        model = _FIELDS_OF.get(re.sub(r"\[\d+\]", "", parent))
        known = f"; known fields: {', '.join(sorted(model.model_fields))}" if model else ""
        where = f" in {parent}" if parent else ""
        return RequestError(f"unknown field {loc[-1]!r}{where}{known}", param)
    if e["type"] == "missing":
        return RequestError(f"{param} is required", param)
    return RequestError(f"{param or 'the body'}: {e['msg']}", param or None)


#: The union branches of the request models (message content, stop), as pydantic names them.
_BRANCHES = {"str", "list[TextPart]", "list[str]"}


def parse_request(body: Any) -> ChatCompletionRequest:
    """The request from decoded JSON; RequestError naming the first bad field."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise _validation_error(exc) from None


# -- to spar ----------------------------------------------------------------------------


def sampling(request: ChatCompletionRequest) -> common_pb2.SamplingParams:
    """max_tokens, temperature, top_p, stop, n and seed as spar's SamplingParams."""
    out = common_pb2.SamplingParams(
        n=request.n or 1, max_tokens=request.token_limit() or 0, stop=request.stops()
    )
    if request.temperature is not None:
        out.temperature = request.temperature
    if request.top_p is not None:
        out.top_p = request.top_p
    if request.seed is not None:
        out.seed = request.seed
    return out


def answer_request(request: ChatCompletionRequest) -> pb.AnswerRequest:
    """The Answer RPC's request for a refined answer (one answer: n must be 1)."""
    if (request.n or 1) != 1:
        raise RequestError(
            f"n={request.n}: the refined model returns one refined answer; use n=1 (or the "
            "actor's model for several plain samples)",
            "n",
        )
    options = request.spar or SparOptions()
    out = pb.AnswerRequest(
        messages=request.chat(),
        sampling=sampling(request),
        judge=JUDGE_KIND.value(options.judge or "", "judge kind"),
        include_trace=options.include_trace,
    )
    for c in options.constraints:
        constraint = out.constraints.add(instruction_id=c.instruction_id)
        try:
            constraint.kwargs.update(c.kwargs)
        except (ValueError, TypeError) as exc:
            index = options.constraints.index(c)
            raise RequestError(
                f"spar.constraints[{index}].kwargs: {exc}", f"spar.constraints[{index}].kwargs"
            ) from None
    if options.budget is not None:
        b = options.budget
        out.budget.max_nodes = b.max_nodes or 0
        out.budget.max_generated_tokens = b.max_generated_tokens or 0
        if b.max_wall_time_s is not None:
            out.budget.max_wall_time.CopyFrom(duration(b.max_wall_time_s))
    if options.search is not None:
        s = options.search
        o = out.options
        if s.strategy:
            o.strategy = SEARCH_STRATEGY.value(s.strategy, "strategy")
        if s.selection:
            o.selection = NODE_SELECTION.value(s.selection, "selection")
        for name in ("branch", "keep_top", "max_depth", "end_gate", "judge_samples"):
            value = getattr(s, name)
            if value is not None:
                setattr(o, name, value)
    return out


def actor_request(
    request: ChatCompletionRequest,
) -> tuple[list[tuple[str, str]], common_pb2.SamplingParams]:
    """The chat and sampling of a plain actor answer (no spar options apply)."""
    if request.spar is not None:
        raise RequestError(
            f"spar options apply to the refined model only; model {request.model!r} is the "
            "actor's plain answer",
            "spar",
        )
    return [(m.role, m.content) for m in request.chat()], sampling(request)


# -- errors ------------------------------------------------------------------------------

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    499: "cancelled",
    501: "not_implemented_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}

#: spar's protobuf field names in error messages, and what the HTTP request calls them.
_PARAMS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"(?<![\w.])budget\.max_wall_time(?!_)"), "spar.budget.max_wall_time_s"),
    (re.compile(r"(?<![\w.])budget\.(\w+)"), r"spar.budget.\1"),
    (re.compile(r"(?<![\w.])options\.(\w+)"), r"spar.search.\1"),
    (re.compile(r"(?<![\w.])constraints\[(\d+)\]((?:\.\w+)?)"), r"spar.constraints[\1]\2"),
    (re.compile(r"(?<![\w.])sampling\.(\w+)"), r"\1"),
    (re.compile(r"(?<![\w.])judge kind"), "spar.judge"),
]
_PARAM = re.compile(
    r"(?<![\w.])(spar\.[\w.\[\]]*[\w\]]|max_tokens|max_completion_tokens|temperature|top_p"
    r"|seed|n|messages(?:\[\d+\])?(?:\.\w+)?)(?==|:| is | must )"
)


def http_field_names(message: str) -> tuple[str, str | None]:
    """An error message with spar's field names as the HTTP request spells them, and the
    first field it names (OpenAI's ``param``)."""
    for pattern, replacement in _PARAMS:
        message = pattern.sub(replacement, message)
    found = _PARAM.search(message)
    return message, found.group(1) if found else None


def error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object."""
    return {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(status, "server_error"),
            "param": param,
            "code": code,
        }
    }
