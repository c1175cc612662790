"""The settings group of each service: the refiner and its OpenAI-compatible endpoint,
the trainer, and the coordinator with its discovery of replicas (``SPAR_<SERVICE>__*``).

They are fields of :class:`spar.config.Settings`, and imported from there; the process-wide
groups (engine, limits, TLS, auth, criteria) stay in :mod:`spar.config`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from spar.engine.protocol import LoopStop

Role = Literal["actor", "refiner", "trainer", "coordinator"]

#: Default gRPC and metrics ports of each service (the embedded default uses them all).
DEFAULT_PORTS: dict[str, tuple[int, int]] = {
    "actor": (50051, 9401),
    "refiner": (50052, 9402),
    "trainer": (50053, 9403),
    "coordinator": (50054, 9404),
}


class RefinerSettings(BaseModel):
    """Settings of the refiner: judge, tree search, budgets and admission (``SPAR_REFINER__*``)."""

    actor_target: str = f"127.0.0.1:{DEFAULT_PORTS['actor'][0]}"
    """HOST:PORT (or a gRPC target such as ``dns:///actor:50051``) of the actor service."""
    judge_kind: Literal["llm", "verifier", "hybrid", "external"] = "hybrid"
    """Judge of requests that leave it unset; hybrid is the LLM judge when a request has
    no verifiable constraints."""
    judge_samples: int = 5
    """LLM judge samples (votes) per judgement (the paper's 5)."""
    judge_temperature: float = 0.7
    """Sampling temperature of the judge samples (the paper's 0.7)."""
    judge_top_p: float = 1.0
    """Nucleus mass of the judge samples."""
    judge_max_tokens: int = 256
    """Tokens per judge sample; the critique must end with its final line within it."""
    tie_policy: Literal["resample", "undecided"] = "resample"
    """A tied vote draws more samples (resample) or is reported undecided at once."""
    tie_resample_rounds: int = 2
    """Extra rounds of judge samples a tie may draw before it is reported undecided."""
    tie_resample_samples: int = 2
    """Judge samples drawn per tie re-sample round."""
    refine_temperature: float = 0.7
    """Sampling temperature of refinements."""
    refine_top_p: float = 1.0
    """Nucleus mass of refinements."""
    refine_max_tokens: int = 0
    """Tokens per refinement. 0 (default): the response's own max_tokens plus
    ``refine_extra_tokens``, so a complete rewrite always fits (Answer: the answer's
    max_tokens; Refine: the larger of the response's length and
    ``SPAR_LIMITS__DEFAULT_MAX_TOKENS``)."""
    refine_extra_tokens: int = 64
    """Room beyond the response's own max_tokens that an automatic refine_max_tokens adds."""
    refine_growth: float = Field(default=2.0, ge=0)
    """A refinement may run to at most this many times the refined response's tokens
    plus 64 (never capped below half of refine_max_tokens), when the program checks
    decided every failure of that response and none asks for more length (at least N
    words, sentences or paragraphs; two responses; the prompt repeated). A search level
    lasts as long as its longest refinement, and the longest are runaway text thrown
    away at refine_max_tokens. 0 turns the cap off."""
    loop_stop_max_pattern: int = Field(default=64, ge=0)
    """A refinement that ends in a loop is stopped early and not used (``loop``): its
    last tokens are a run of ``loop_stop_min_pattern`` to this many tokens repeated
    ``loop_stop_repeats`` times in a row (vLLM's repetition detection). Loops are what
    the default model most often writes instead of a rewrite, and without the stop each
    runs to refine_max_tokens. 0 turns the stop off."""
    loop_stop_min_pattern: int = Field(default=6, ge=1)
    """The shortest run a loop stop looks for (shorter runs count once their repeats add
    up to this; a short run like ``| --- |`` in legitimate text is left alone)."""
    loop_stop_repeats: int = Field(default=3, ge=2)
    """How many times in a row a run must repeat to stop a refinement (at least 2)."""
    parse_retries: int = 1
    """Extra refine requests for refinements that came back unusable."""
    refine_style: Literal["direct", "paper"] = "direct"
    """direct: one user turn (instruction, response, problems) and the model writes only
    the new response (for small models). paper: SPaR's format, the judge conversation
    continued, a reflection and ``[[start]] … [[end]]`` markers."""
    judge_template: str = ""
    """Judge prompt with {instruction} and {response} (and optionally {notes}: the
    requirements a program checked, rubrics); empty means the built-in one."""
    refine_template: str = ""
    """Refine prompt: direct style with {instruction}, {response} and {critique}; paper
    style continuing the judge conversation. Empty means the built-in one of the style."""
    refine_prefill: str = ""
    """Text the refiner's answer to a refine request starts with (an assistant-turn
    prefill the engine continues), for templates that want one; empty: none."""
    judge_votes: Literal["when_needed", "always"] = "when_needed"
    """hybrid: ask the LLM only where its vote can change a decision (when_needed), or
    for every response (always; costs more, for comparisons)."""
    llm_veto: bool = False
    """hybrid: a majority No of the LLM turns a full verifier PASS into FAIL."""
    guardrails: bool = True
    """Answer guardrails (repetition loops, talk about the task, the instruction said back,
    off-topic text) fail the search's end gate in every judge kind (docs/refinement.md)."""
    strategy: Literal["bfs", "dfs"] = "bfs"
    """Search strategy of requests that leave it unset."""
    selection: Literal["greedy", "proportional"] = "greedy"
    """Node selection of requests that leave it unset."""
    branch: int = 3
    """Children per expanded node (the paper's 3)."""
    root_branch: int = Field(default=5, ge=0)
    """Children of the original response, the first expansion (0: ``branch``); a request
    that sets its own ``branch`` gets that at the root too. The original is the node
    closest to the answer (its critique names just what it fails) and a small model's
    rewrites are often worse than what they rewrite, so its refinements are the likeliest
    to pass: five (a one-shot rewrite's best of 5) at no more wall time on a batching
    engine."""
    keep_top: int = 2
    """Children kept per BFS level (the paper's 2)."""
    max_depth: int = 3
    """Tree depth (the paper's 3)."""
    end_gate: float = 0.5
    """Where the LLM vote decides (llm judge; hybrid with llm_veto), a node passes only
    with a value above this."""
    default_max_nodes: int = 20
    """Node budget of requests that leave it unset: room for the default BFS tree (5 + 2×3
    + 2×3 = 17 nodes) and a few for DFS. The default token budget is rarely what ends a
    search before it (bench/RESULTS.md)."""
    default_max_generated_tokens: int = 16_384
    """Generated-token budget (judge and refine) of requests that leave it unset."""
    default_max_wall_time_s: float = 120.0
    """Wall-time budget of requests that leave it unset."""
    max_nodes_limit: int = 64
    """Largest node budget a request may ask for."""
    max_generated_tokens_limit: int = 131_072
    """Largest generated-token budget a request may ask for."""
    max_wall_time_limit_s: float = 600.0
    """Largest wall-time budget a request may ask for."""
    max_branch: int = 8
    """Largest branch a request may ask for."""
    max_keep_top: int = 8
    """Largest keep_top a request may ask for."""
    max_depth_limit: int = 6
    """Largest max_depth a request may ask for."""
    max_judge_samples: int = 16
    """Largest judge sample count a request may ask for."""
    max_concurrent_searches: int = 4
    """Searches (Refine, RefineStream, Answer) that run at once."""
    max_queue: int = 16
    """Searches that may wait for a slot; more get RESOURCE_EXHAUSTED."""

    @model_validator(mode="after")
    def _loop_stop_sizes(self) -> RefinerSettings:
        if self.loop_stop_max_pattern and self.loop_stop_min_pattern > self.loop_stop_max_pattern:
            raise ValueError(
                f"loop_stop_min_pattern={self.loop_stop_min_pattern} exceeds "
                f"loop_stop_max_pattern={self.loop_stop_max_pattern}; lower the first, or set "
                "SPAR_REFINER__LOOP_STOP_MAX_PATTERN=0 to turn the loop stop off"
            )
        return self

    def loop_stop(self) -> LoopStop | None:
        """The refinements' loop stop; None when loop_stop_max_pattern is 0."""
        if not self.loop_stop_max_pattern:
            return None
        return LoopStop(
            self.loop_stop_min_pattern, self.loop_stop_max_pattern, self.loop_stop_repeats
        )


class TrainerSettings(BaseModel):
    """Settings of the trainer service: where artifacts and jobs live, limits, defaults."""

    store_dir: str = ""
    """Artifact store folder (a PersistentVolume in Kubernetes); empty: cache_dir/store."""
    state_dir: str = ""
    """Datasets, job records and job scratch space; empty: cache_dir/trainer."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where jobs train: CUDA in bf16 when a GPU is there (auto), else CPU in float32."""
    threads: int = 0
    """torch threads of a CPU job; 0 means torch's default (one per core)."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass: much less memory for ~30% more compute
    (TRL's default); turn it off for small models where speed matters more."""
    world_size: int = Field(default=0, ge=0)
    """Processes (GPUs) of a job that leaves world_size 0: 0 means every GPU the trainer sees
    (1 on CPU). More than one runs torchrun with DDP (or FSDP) over NCCL; on CPU with gloo,
    for testing. The chart sets it to trainer.gpu."""
    base_models: list[str] = Field(default_factory=list)
    """Model folders a job may name besides the configured model."""
    max_record_bytes: int = 256 * 1024
    """Largest dataset record (canonical JSON) in bytes."""
    max_dataset_records: int = 100_000
    """Records one dataset may hold."""
    max_dataset_bytes: int = 256 * 1024 * 1024
    """Largest dataset (canonical JSON Lines) in bytes."""
    max_queued_jobs: int = 32
    """Jobs that may wait; more get RESOURCE_EXHAUSTED."""
    max_idempotency_key_chars: int = 128
    """Longest idempotency_key of a SubmitJob request."""
    default_max_length: int = 1024
    """Longest tokenized example when a job leaves max_length unset."""
    max_length_limit: int = 8192
    """Largest max_length a job may ask for."""
    max_lora_rank: int = 64
    """Largest LoRA rank a job may ask for (keep it within the engines' max_lora_rank)."""
    max_epochs: int = 100
    """Most passes over the data a job may ask for."""
    fetch_chunk_bytes: int = 1024 * 1024
    """Bytes per FetchAdapter chunk."""


class DiscoverySettings(BaseModel):
    """Where the replicas of a role are (``SPAR_COORDINATOR__ACTOR__*`` / ``__REFINER__*``)."""

    targets: list[str] = Field(default_factory=list)
    """Static list of HOST:PORT (used when service is empty)."""
    service: str = ""
    """Headless Service whose EndpointSlices list the replicas (Kubernetes discovery)."""
    namespace: str = ""
    """Namespace of the Service; empty: the coordinator pod's own namespace."""
    port: str = "grpc"
    """Port of the replicas: a number, or the name of the Service port."""


class CoordinatorSettings(BaseModel):
    """The self-play loop and rollout (``SPAR_COORDINATOR__*``). Defaults are the paper's."""

    state_dir: str = ""
    """Checkpoints of every iteration and the desired versions; empty: cache_dir/coordinator."""
    actor_target: str = f"127.0.0.1:{DEFAULT_PORTS['actor'][0]}"
    """Actor service for sampling and evaluation (``dns:///<headless>:50051`` in Kubernetes)."""
    refiner_target: str = f"127.0.0.1:{DEFAULT_PORTS['refiner'][0]}"
    """Refiner service for judging and search."""
    trainer_target: str = f"127.0.0.1:{DEFAULT_PORTS['trainer'][0]}"
    """Trainer service (and artifact store)."""
    store_target: str = ""
    """Artifact store address the replicas fetch from; empty: trainer_target."""
    actor: DiscoverySettings = Field(
        default_factory=lambda: DiscoverySettings(
            targets=[f"127.0.0.1:{DEFAULT_PORTS['actor'][0]}"]
        )
    )
    """Actor replicas to roll out to."""
    refiner: DiscoverySettings = Field(
        default_factory=lambda: DiscoverySettings(
            targets=[f"127.0.0.1:{DEFAULT_PORTS['refiner'][0]}"]
        )
    )
    """Refiner replicas to roll out to."""
    prompts_path: str = ""
    """IFEval-format or plain jsonl prompts; empty: synthesised verifiable prompts."""
    num_prompts: int = 64
    """Prompts per iteration."""
    eval_path: str = ""
    """Held-out IFEval-format prompts; empty: synthesised with a disjoint seed."""
    eval_prompts: int = 32
    """Held-out prompts evaluated per iteration."""
    eval_max_tokens: int = 512
    """Tokens per evaluation answer (greedy); answers cut short fail length checks."""
    samples_per_prompt: int = 5
    """Actor samples per prompt (the paper's 5)."""
    sample_temperature: float = 0.9
    sample_top_p: float = 0.9
    sample_max_tokens: int = 256
    """Tokens per actor sample."""
    judge: Literal["llm", "verifier", "hybrid", "external"] = "hybrid"
    """Judge of negative collection and search."""
    judge_samples: int = 5
    """Judge samples per response (the paper's 5)."""
    strategy: Literal["bfs", "dfs"] = "bfs"
    search_max_nodes: int = 0
    """Node budget per search; 0: the refiner's default."""
    search_max_tokens: int = 0
    """Generated-token budget per search; 0: the refiner's default."""
    search_max_wall_time_s: float = 600.0
    """Wall-time budget per search (offline data collection can afford more than the
    refiner's interactive default); capped by the refiner's limit."""
    dpo_max_edit_distance: float = 0.6
    """A DPO pair is kept only when its chosen answer is a repair of the rejected one:
    normalised word edit distance (spar.edits) at most this; farther is a rewrite."""
    warmup: bool = False
    """Before iteration 1, fine-tune the refiner (SFT) on refinements that the verifier
    checked: searches on failing actor answers to synthesised prompts, plus exact
    programmatic repairs (services/coordinator/warmup.py); the result is rolled out as the
    refiner's version before iteration 1 samples anything."""
    warmup_prompts: int = 256
    """Synthesised prompts of the warm-up (drawn from the training side of the split)."""
    warmup_samples: int = 2
    """Actor samples per warm-up prompt."""
    warmup_repairs: bool = True
    """Warm-up: also add exact programmatic repairs (letter case, commas, wrapping
    quotation marks, an end phrase, a postscript, a title) of failing answers."""
    warmup_repairs_per_type: int = 24
    """Warm-up: at most this many repair records per constraint type (balance)."""
    warmup_epochs: int = 2
    """Epochs of the warm-up SFT job."""
    concurrency: int = 8
    """Requests each stage keeps in flight (so vLLM batches them)."""
    epochs: int = 1
    """Training epochs of both jobs."""
    lora_rank: int = 16
    learning_rate_dpo: float = 5e-6
    learning_rate_sft: float = 1e-5
    max_length: int = 1024
    promote_metric: str = "prompt_level_strict"
    """IFEval metric that decides promotion."""
    promote_margin: float = 0.0
    """Promote the candidate unless it is worse than the served actor by more than this."""
    require_approval: bool = False
    """Approval mode: a candidate that passes evaluation waits for ``spar promote N`` or
    ``spar reject N`` instead of rolling out by itself."""
    audit_path: str = ""
    """Append-only audit log of rollouts, rollbacks and promotion decisions (JSON Lines);
    empty: <state_dir>/audit.jsonl."""
    reconcile_interval_s: float = 30.0
    """How often every replica is checked against the desired versions (0: never)."""

    def store_address(self) -> str:
        """The artifact store the replicas fetch adapter versions from."""
        return self.store_target or self.trainer_target


class OpenAISettings(BaseModel):
    """The refiner's OpenAI-compatible HTTP endpoint (``SPAR_OPENAI__*``; docs/openai.md).

    ``POST /v1/chat/completions`` and ``GET /v1/models`` beside the gRPC port, with the
    same TLS settings and bearer tokens; off unless enabled (or ``--openai``)."""

    enabled: bool = False
    """Serve the endpoint (``spar refiner serve --openai``)."""
    port: int = 8000
    """HTTP port on the service's host (0: a free port)."""
    refined_model: str = "spar-refined"
    """Model name whose answers are refined: the Answer RPC (actor, judge, tree search)."""
    actor_model: str = "spar-actor"
    """Model name whose answers are the actor's own, unjudged and unrefined."""
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest request body; larger ones get 413 before they are read whole."""
    request_timeout_s: float = Field(default=600.0, gt=0)
    """Deadline of one request on the server (a search ends early enough to answer)."""
    keepalive_s: float = Field(default=5.0, gt=0)
    """Interval of SSE keep-alive comments while a streamed search runs."""
    retry_after_s: int = Field(default=2, ge=1)
    """Retry-After of 429 (searches and queue full) and 503 answers."""
    max_connections: int = Field(default=256, ge=1)
    """Concurrent HTTP connections; more get 503 at once."""
