"""Shared pieces of the fuzz tests: hypothesis strategies over the proto fields, the
status codes each service may answer with, a raw-bytes caller, and a case counter.

Strategies lean on the edges: empty values, extreme ints, NaN and infinities, huge and
odd unicode strings, enum numbers no proto defines. Generation-bearing fields are kept
tiny (max_tokens <= 4, token budgets <= 8) so a valid request costs little engine time.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Awaitable, Callable, Iterable
from types import ModuleType

import grpc
from google.protobuf.descriptor import MethodDescriptor
from grpc import StatusCode as Code
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spar.v1 import common_pb2

#: Every fuzz case sent, by service; the session summary prints it (tests/fuzz/conftest.py).
CASES: collections.Counter[str] = collections.Counter()
#: Status codes seen, by service and code name.
CODES: collections.Counter[tuple[str, str]] = collections.Counter()

#: What a live service may answer to any request (docs/operations.md "Status codes"):
#: what every service may answer, and what each adds. Never INTERNAL or UNKNOWN.
_EVERY_SERVICE = frozenset(
    {
        Code.OK,
        Code.INVALID_ARGUMENT,
        Code.NOT_FOUND,
        Code.FAILED_PRECONDITION,
        Code.DEADLINE_EXCEEDED,
    }
)
ALLOWED: dict[str, frozenset[Code]] = {
    "actor": _EVERY_SERVICE | {Code.RESOURCE_EXHAUSTED},
    "refiner": _EVERY_SERVICE | {Code.RESOURCE_EXHAUSTED},
    # UNAVAILABLE: a store_target nobody answers on.
    "adapter_host": _EVERY_SERVICE | {Code.ALREADY_EXISTS, Code.UNAVAILABLE},
    "trainer": _EVERY_SERVICE | {Code.ALREADY_EXISTS, Code.RESOURCE_EXHAUSTED},
    # UNAVAILABLE: the trainer it asks is not there.
    "coordinator": _EVERY_SERVICE | {Code.UNAVAILABLE},
}

#: Few examples each, no per-example deadline (engine calls vary), no shrinking
#: phases that would re-run slow engine calls many times over.
FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)

U32 = 2**32 - 1
U64 = 2**64 - 1

# -- strategies ----------------------------------------------------------------------

plain_text = st.one_of(
    st.sampled_from(["Say hi.", "Name a colour.", "Write one word without commas."]),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=30),
)
odd_text = st.one_of(
    st.just(""),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=200),
    st.sampled_from(
        [
            " ",
            "\0",
            "../../etc/passwd",
            "/abs",
            "a/b",
            "..",
            "\u202eevil",
            "ｆｕｌｌ",
            "Say hi.",
            "x\n",
            "🙂" * 50,
        ]
    ),
    st.integers(10_000, 70_000).map(lambda n: "y" * n),  # over and under the limits
)
names = st.one_of(
    odd_text,
    st.from_regex(r"\A[a-z][a-z0-9._-]{0,20}\Z"),
    st.sampled_from(["base", "actor-1-0123456789ab", "x" * 129]),
)
ints_u32 = st.one_of(st.integers(0, 8), st.sampled_from([16, 17, 64, 65, 1025, U32]))
enum_values = st.one_of(st.integers(0, 4), st.sampled_from([99, 2**31 - 1, -1, -(2**31)]))
floats32 = st.one_of(
    st.floats(width=32, allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1.0, 2.0, 2.0000001, -0.0, math.nan, math.inf, -math.inf]),
)
floats64 = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 0.5, 0.999, 1.0, -1.0, math.nan, math.inf]),
)


@st.composite
def sampling_params(draw: st.DrawFn) -> common_pb2.SamplingParams:
    """Sampling with max_tokens 1-4 or over the limit (never 0: the default is 256);
    half of the draws are sane ones, so valid requests reach the engine too."""
    if draw(st.booleans()):
        return common_pb2.SamplingParams(
            n=draw(st.integers(0, 2)),
            max_tokens=draw(st.integers(1, 4)),
            temperature=draw(st.sampled_from([0.0, 0.7, 2.0])),
            stop=draw(st.lists(st.sampled_from(["\n", ".", "🙂"]), max_size=2)),
        )
    p = common_pb2.SamplingParams(
        n=draw(st.one_of(st.integers(0, 2), st.sampled_from([17, U32]))),
        max_tokens=draw(st.one_of(st.integers(1, 4), st.sampled_from([1025, U32]))),
        stop=draw(st.lists(st.one_of(odd_text, st.just("\n")), max_size=10)),
    )
    if draw(st.booleans()):
        p.temperature = draw(floats32)
    if draw(st.booleans()):
        p.top_p = draw(floats32)
    if draw(st.integers(0, 5)) == 0:
        p.seed = draw(st.integers(0, U64))
    return p


@st.composite
def struct_kwargs(draw: st.DrawFn, message: common_pb2.VerifiableConstraint) -> None:
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.one_of(st.sampled_from(["num_words", "relation", "keywords", "letter"]),
                             st.text(max_size=10)))  # fmt: skip
        value = draw(
            st.one_of(
                floats64,
                st.integers(-(2**53), 2**53).map(float),
                st.sampled_from(["less than", "at least", "a", ""]),
                odd_text,
                st.booleans(),
                st.lists(st.text(max_size=5), max_size=3),
            )
        )
        message.kwargs[key] = value


IFEVAL_IDS = [
    "punctuation:no_comma",
    "length_constraints:number_words",
    "keywords:existence",
    "change_case:english_lowercase",
    "keywords:letter_frequency",
    "detectable_format:title",
    "language:response_language",
]


@st.composite
def constraints(draw: st.DrawFn) -> list[common_pb2.VerifiableConstraint]:
    out = []
    count = draw(st.one_of(st.integers(0, 3), st.just(33)))
    for _ in range(count):
        c = common_pb2.VerifiableConstraint(
            instruction_id=draw(st.one_of(st.sampled_from(IFEVAL_IDS), odd_text))
        )
        draw(struct_kwargs(c))
        out.append(c)
    return out


@st.composite
def search_options(draw: st.DrawFn) -> common_pb2.SearchOptions:
    o = common_pb2.SearchOptions(strategy=draw(enum_values), selection=draw(enum_values))
    for field in ("branch", "keep_top", "max_depth", "judge_samples"):
        if draw(st.booleans()):
            setattr(o, field, draw(ints_u32))
    if draw(st.booleans()):
        o.end_gate = draw(floats64)
    return o


@st.composite
def search_budget(draw: st.DrawFn) -> common_pb2.SearchBudget:
    """Token budgets of 1-8 (the search spends nothing) or over the limit."""
    b = common_pb2.SearchBudget(
        max_nodes=draw(ints_u32),
        max_generated_tokens=draw(st.one_of(st.integers(1, 8), st.sampled_from([2**17 + 1, U64]))),
    )
    if draw(st.booleans()):
        b.max_wall_time.seconds = draw(
            st.one_of(st.integers(-5, 5), st.sampled_from([601, 315_576_000_000]))
        )
        b.max_wall_time.nanos = draw(st.sampled_from([0, 1, 999_999_999, -1]))
    return b


raw_bytes = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"\xff" * 16,  # truncated varints
            b"\x0a\xff\xff\xff\xff\x0f",  # a string field claiming 4 GiB
            b"\x0a\x02\xc3\x28",  # invalid UTF-8 in a string field
            b"\x08\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",  # an 11-byte varint
            b"\x12\x03\x0a\x01",  # a nested message cut short
            b"\x0b\x0c",  # deprecated group tags
            b"\x00",
        ]
    ),
)

# -- calling -------------------------------------------------------------------------


def record(service: str, code: Code) -> Code:
    CASES[service] += 1
    CODES[(service, code.name)] += 1
    return code


def check(service: str, code: Code, detail: str = "") -> None:
    record(service, code)
    assert code in ALLOWED[service], f"{service} answered {code.name}: {detail[:500]}"


async def call_unary(
    service: str, fn: grpc.aio.UnaryUnaryMultiCallable, request: object, timeout: float
) -> object | None:
    """Calls fn; checks the status; returns the reply (None on an error status)."""
    try:
        reply = await fn(request, timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        check(service, exc.code(), exc.details() or "")
        return None
    check(service, Code.OK)
    return reply


async def call_stream(
    service: str, fn: grpc.aio.UnaryStreamMultiCallable, request: object, timeout: float
) -> list[object]:
    out = []
    try:
        async for item in fn(request, timeout=timeout):
            out.append(item)
    except grpc.aio.AioRpcError as exc:
        check(service, exc.code(), exc.details() or "")
        return out
    check(service, Code.OK)
    return out


#: What malformed request bytes may get: the framework's answer to bytes that are no
#: message of the method's type, or the service's answer when they happen to parse.
RAW_ALLOWED = _EVERY_SERVICE | {Code.ALREADY_EXISTS, Code.RESOURCE_EXHAUSTED, Code.UNAVAILABLE}


async def call_raw(
    service: str, channel: grpc.aio.Channel, method: str, data: bytes, *, streaming: bool
) -> Code:
    """Sends data as the request bytes of method (unary or server-streaming response)."""
    code = Code.OK
    detail = ""
    try:
        if streaming:
            call = channel.unary_stream(method)
            async for _ in call(data, timeout=3.0):
                pass
        else:
            await channel.unary_unary(method)(data, timeout=3.0)
    except grpc.aio.AioRpcError as exc:
        code, detail = exc.code(), exc.details() or ""
    record(service + ":raw", code)
    assert code in RAW_ALLOWED, f"{method} answered {code.name} to {data[:40]!r}: {detail[:300]}"
    return code


def rpc_methods(*protos: ModuleType) -> list[MethodDescriptor]:
    """Every method of the services that these generated ``*_pb2`` modules define."""
    return [m for p in protos for s in p.DESCRIPTOR.services_by_name.values() for m in s.methods]


def method_path(method: MethodDescriptor) -> str:
    """The method's name on the wire: ``/spar.v1.Actor/Generate``."""
    return f"/{method.containing_service.full_name}/{method.name}"


def malformed_bytes_test(service: str, *protos: ModuleType) -> Callable[..., Awaitable[None]]:
    """A test that sends malformed bytes as the request of any method of the services in
    ``protos`` over the test module's ``channel``."""

    @FUZZ
    @given(data=raw_bytes, method=st.sampled_from(rpc_methods(*protos)))
    async def test(channel: grpc.aio.Channel, data: bytes, method: MethodDescriptor) -> None:
        path, streaming = method_path(method), method.server_streaming
        await call_raw(service, channel, path, data, streaming=streaming)

    return test


async def assert_serving(channel: grpc.aio.Channel, services: Iterable[str] = ("",)) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for name in services:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
