"""The one settings model of spar (pydantic settings, environment prefix ``SPAR_``).

Nested fields are set with a double underscore, e.g. ``SPAR_ENGINE__MAX_MODEL_LEN=4096``
or ``SPAR_LIMITS__MAX_N=8``. CLI flags override the environment.

The process-wide groups (engine, limits, sampling, TLS, auth, criteria, the outside judge)
are here; each service's own group is in :mod:`spar.service_settings`. Every group is
imported from here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from spar.service_settings import (
    DEFAULT_PORTS,
    CoordinatorSettings,
    DiscoverySettings,
    OpenAISettings,
    RefinerSettings,
    Role,
    TrainerSettings,
)

__all__ = [
    "DEFAULT_MODEL_NAME",
    "DEFAULT_PORTS",
    "AuthSettings",
    "CoordinatorSettings",
    "CriteriaSettings",
    "DiscoverySettings",
    "EngineSettings",
    "ExternalJudgeSettings",
    "Limits",
    "OpenAISettings",
    "RefinerSettings",
    "Role",
    "SamplingDefaults",
    "Settings",
    "TlsSettings",
    "TrainerSettings",
]

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spar"


class EngineSettings(BaseModel):
    """Settings of the inference engine of the actor and the refiner."""

    kind: Literal["vllm", "hf"] = "vllm"
    """Engine implementation: vLLM, or Hugging Face transformers + peft (no vLLM needed)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the hf engine runs: CUDA when a GPU is there (auto), else CPU (vLLM picks its
    own platform)."""
    dtype: str = "auto"
    """Weights and activations dtype: auto, float32, bfloat16 or float16. auto is bfloat16
    on GPUs; on a CPU, vLLM runs bfloat16 where the CPU computes it natively (AMX or
    AVX-512 BF16 flags: 1.6-2x float32's tokens/s, bench/cpu_dtype.py) and float32
    elsewhere (AVX2 emulates bf16, 2.5x slower); the hf engine runs float32 on any CPU
    (in bf16 its greedy answers change with the batch)."""
    max_model_len: int = 2048
    """Context length: prompt plus generated tokens of one sample."""
    enforce_eager: bool = True
    """Skip graph compilation (it costs minutes at every start on CPU for ~10%)."""
    kv_cache_gib: float = 2.0
    """KV cache size on CPU (``VLLM_CPU_KVCACHE_SPACE``)."""
    gpu_memory_utilization: float = 0.9
    """Share of GPU memory vLLM may use (GPU only)."""
    enable_prefix_caching: bool = True
    """Reuse KV blocks of shared prompt prefixes (judge and refine prompts share a lot)."""
    max_lora_rank: int = 64
    """Largest LoRA rank an adapter may have."""
    max_loras: int = 4
    """Adapters usable in one batch (active, previous, staged candidate, one spare)."""
    max_cpu_loras: int = 8
    """Adapters kept loaded in host memory."""
    seed: int = 0
    """Engine seed; sampling of the whole engine is reproducible from it."""
    max_num_seqs: int = 64
    """Sequences scheduled together (vLLM)."""
    max_batch_sequences: int = Field(default=256, ge=1)
    """Rows (samples) the hf engine generates together in one batch."""
    batch_wait_ms: float = Field(default=5.0, ge=0.0)
    """How long the hf engine waits for more requests before it starts a batch that is
    not full."""


class Limits(BaseModel):
    """Request limits enforced by the servers (bad requests get INVALID_ARGUMENT)."""

    max_n: int = 16
    """Samples per Generate request."""
    max_tokens: int = 1024
    """Largest max_tokens a request may ask for."""
    default_max_tokens: int = 256
    """max_tokens when a request leaves it unset."""
    max_prompt_chars: int = 32_000
    """Longest prompt (all messages together) in characters, checked before tokenising."""
    max_stop_strings: int = 8
    """Stop strings per request."""
    max_stop_chars: int = 256
    """Longest stop string in characters."""
    max_messages: int = 64
    """Chat messages per request."""
    max_request_id_chars: int = 128
    """Longest client request_id (printable ASCII)."""
    max_response_chars: int = 32_000
    """Longest response text a Judge or Refine request may carry."""
    max_constraints: int = 32
    """Verifiable constraints per Judge, Refine or Answer request."""
    max_constraint_kwargs_chars: int = 4096
    """Largest kwargs of one constraint, as compact JSON, in characters."""
    max_path_chars: int = 4096
    """Longest file path a request may name (adapter local_path, base_model, prompts_path)."""
    max_message_bytes: int = 16 * 1024 * 1024
    """Largest gRPC message the servers accept or send."""


class SamplingDefaults(BaseModel):
    """Sampling settings a request gets when it leaves them unset."""

    temperature: float = 0.9
    """The paper's actor sampling temperature."""
    top_p: float = 0.9
    """The paper's actor nucleus mass."""


class TlsSettings(BaseModel):
    """Transport security of every server and client (``SPAR_TLS__*``; docs/operations.md).

    With cert_file, key_file and ca_file servers use mutual TLS (clients must present a
    certificate signed by the CA) and clients verify servers with the CA; with cert_file
    and key_file only, servers use TLS without client certificates. A server with no
    certificate refuses to start unless plaintext is true.
    """

    cert_file: str = ""
    """PEM certificate (chain) a server presents, and spar's clients present for mutual TLS."""
    key_file: str = ""
    """PEM private key of cert_file."""
    ca_file: str = ""
    """PEM CA bundle: servers require client certificates it signed (mutual TLS), clients
    verify servers with it. Empty: no client certificates; clients use the system roots."""
    plaintext: bool = False
    """Serve and connect without TLS when no certificate is configured (local use only;
    ``spar up`` and ``--plaintext`` set it)."""
    server_name: str = ""
    """Name clients check the server certificate against instead of the target's host
    (replicas are reached by pod IP; the chart sets a name the shared certificate covers)."""
    require_client_cert: bool = True
    """With ca_file: require client certificates (mutual TLS). False lets clients without a
    certificate connect (e.g. external refiner clients that authenticate with a token)."""


class AuthSettings(BaseModel):
    """Bearer-token auth of the spar gRPC services (``SPAR_AUTH__*``); health stays open."""

    tokens_file: str = ""
    """Tokens a server accepts, one a line (re-read when it changes). Empty: no auth."""
    token_file: str = ""
    """Token spar's own clients send as ``authorization: Bearer <token>`` (re-read when it
    changes). Empty: they send none."""


class CriteriaSettings(BaseModel):
    """Criteria packs (``SPAR_CRITERIA__*``; spar/criteria.py, docs/criteria-pack.schema.json)."""

    dir: str = ""
    """Folder of criteria pack files (.yaml, .yml, .json) the refiner and the coordinator
    load (a ConfigMap in the chart); empty: IFEval's ids only."""
    reload_interval_s: float = Field(default=2.0, ge=0.0)
    """How often, at most, the folder is checked for changed packs (when packs are used)."""


class ExternalJudgeSettings(BaseModel):
    """The outside judge: any OpenAI-compatible chat endpoint (``SPAR_EXTERNAL_JUDGE__*``).

    With a URL set, the refiner and the coordinator also send ``sample_fraction`` of their
    judgements to it and export the agreement per criterion; the judge kind ``external``
    uses it as the judge itself."""

    url: str = ""
    """Base URL of the API, e.g. ``https://api.openai.com/v1`` or ``http://host:8000/v1``
    (``/chat/completions`` is appended); empty: no outside judge."""
    model: str = ""
    """Model name sent with every request."""
    api_key: str = ""
    """API key sent as ``Authorization: Bearer``; prefer api_key_file (a mounted Secret)."""
    api_key_file: str = ""
    """File holding the API key (re-read when it changes); wins over api_key."""
    sample_fraction: float = Field(default=0.05, ge=0.0, le=1.0)
    """Share of judgements also sent to the outside judge (0.05: one in twenty)."""
    timeout_s: float = Field(default=60.0, gt=0.0)
    """Deadline of one request to the outside judge."""
    max_tokens: int = Field(default=512, ge=16)
    """Tokens the outside judge may write per judgement."""
    response_format: Literal["json_schema", "json_object", "none"] = "json_schema"
    """How the reply is forced into JSON: a JSON Schema (OpenAI and vLLM support it), a
    JSON object, or only by the prompt."""
    max_in_flight: int = Field(default=4, ge=1)
    """Sampled judgements sent at once; more are dropped (counted) rather than queued."""
    retry_after_failure_s: float = Field(default=30.0, ge=0.0)
    """After a failed call, sampled judgements skip the outside judge this long."""


class Settings(BaseSettings):
    """Settings of every spar process."""

    model_config = SettingsConfigDict(env_prefix="SPAR_", env_nested_delimiter="__", extra="ignore")

    cache_dir: Path = Field(default_factory=_default_cache_dir)
    """Where the default model, staged adapters and engine caches live."""
    model: str = ""
    """Hugging Face model folder; empty means the default model, prepared in cache_dir."""
    host: str = "127.0.0.1"
    """Address the gRPC server binds to."""
    port: int | None = None
    """gRPC port; unset means the service's default port, 0 a free port."""
    metrics_port: int | None = None
    """Prometheus metrics HTTP port; unset means the service's default, 0 a free port,
    -1 turns the metrics endpoint off."""
    log_level: str = "INFO"
    """Python log level of spar's loggers."""
    engine: EngineSettings = Field(default_factory=EngineSettings)
    limits: Limits = Field(default_factory=Limits)
    sampling: SamplingDefaults = Field(default_factory=SamplingDefaults)
    refiner: RefinerSettings = Field(default_factory=RefinerSettings)
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)
    coordinator: CoordinatorSettings = Field(default_factory=CoordinatorSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    criteria: CriteriaSettings = Field(default_factory=CriteriaSettings)
    external_judge: ExternalJudgeSettings = Field(default_factory=ExternalJudgeSettings)
    coordinator_target: str = ""
    """Coordinator a starting actor/refiner replica asks for its desired adapter version
    before it reports SERVING; empty: no reconciliation (serve the base model)."""
    reconcile_timeout_s: float = 300.0
    """How long a starting replica retries an unreachable coordinator before it fails."""
    grace_period_s: float = 10.0
    """How long in-flight requests may run after SIGTERM before they are cancelled."""

    def default_model_dir(self) -> Path:
        return self.cache_dir / "models" / DEFAULT_MODEL_NAME

    def model_path(self) -> Path:
        """The model folder to serve."""
        return Path(self.model).expanduser() if self.model else self.default_model_dir()

    def adapters_dir(self) -> Path:
        """Local copies of staged adapters."""
        return self.cache_dir / "adapters"

    def store_dir(self) -> Path:
        """The trainer's artifact store folder."""
        return (
            Path(self.trainer.store_dir).expanduser()
            if self.trainer.store_dir
            else (self.cache_dir / "store")
        )

    def trainer_state_dir(self) -> Path:
        """The trainer's datasets, job records and job scratch space."""
        return (
            Path(self.trainer.state_dir).expanduser()
            if self.trainer.state_dir
            else (self.cache_dir / "trainer")
        )

    def address(self, role: Role) -> tuple[str, int, int]:
        """(host, grpc port, metrics port) of a service, defaults filled in."""
        port, metrics = DEFAULT_PORTS[role]
        return (
            self.host,
            port if self.port is None else self.port,
            metrics if self.metrics_port is None else self.metrics_port,
        )
