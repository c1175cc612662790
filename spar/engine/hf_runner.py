"""The device side of the continuous-batching hf engine: KV slots, prefill, decode graphs.

The model's own decoder layers run unchanged; spar supplies the attention function
(through transformers' ``AttentionInterface``) and the cache it reads. Written by hand
because what transformers provides does not fit this engine on the GPU machine:

- its continuous-batching manager (``init_continuous_batching``/``generate_batch``) has
  no per-request LoRA adapters, seeds or stop strings, and its decode fast path needs
  flash-attn's ``flash_attn_with_kvcache``, which is not installed there (no package
  index; the wheel is far over the 64 MiB a transfer carries). Without it every step goes
  through its varlen path: SDPA over the whole batch's concatenated KV with a
  block-diagonal mask, i.e. attention work that grows with the square of the batch;
- ``StaticCache`` + ``torch.compile`` keeps one position for the whole batch, so rows
  cannot join and leave at different lengths, and compiling costs minutes per start.

Layout: KV tensors ``[layers, rows, kv_heads, max_len, head_dim]``; row ``i`` owns slot
``i`` and the engine keeps running rows dense in ``0..count-1``
(:func:`spar.engine.continuous.compaction`). A decode step is one CUDA graph per (row
bucket, cache-length bucket, sampling variant) captured the first time it is needed; its
inputs live in static per-row buffers (ids, positions, sampling parameters, adapter
slots), so the host does no per-row tensor work. Sampling (temperature, top-p, greedy,
per-row seeds) is tensor ops inside the graph, keyed by a counter-based hash of (row key,
position) (:func:`sample`). Prefill runs eagerly (one forward over the new prompts,
right-padded; n samples of a prompt share it and their KV is copied into their rows).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from spar.engine.continuous import bucket, length_bucket, row_buckets
from spar.engine.hf_lora import AdapterBank

ATTENTION = "spar_slots"
LENGTH_GRANULARITY = 128
"""Cache positions are read in blocks of this many (one graph per block count)."""
SUPPORTED = ("llama", "qwen2", "qwen3", "mistral")
_MASK32 = 0xFFFFFFFF


class SlotContext:
    """What the attention function needs for the forward in progress."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k = k
        self.v = v
        self.decode = True
        self.rows = torch.empty(0)
        self.write_pos = torch.empty(0)
        self.mask = torch.empty(0)
        self.length = 0


def slot_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Writes the new keys/values into the rows' slots and attends (transformers'
    attention-function signature; queries/keys arrive rotated, [batch, heads, q, dim])."""
    ctx: SlotContext = module._spar_slots
    kc, vc = ctx.k[module.layer_idx], ctx.v[module.layer_idx]
    if not ctx.decode:  # prefill: fresh slots, causal attention over the prompt itself
        length = key.shape[2]
        kc[ctx.rows, :, :length] = key
        vc[ctx.rows, :, :length] = value
        out = F.scaled_dot_product_attention(
            query, key, value, is_causal=True, scale=scaling, enable_gqa=True
        )
        return out.transpose(1, 2), None
    b, heads, _, dim = query.shape
    kv_heads = kc.shape[1]
    kc[ctx.rows, :, ctx.write_pos] = key[:, :, 0]
    vc[ctx.rows, :, ctx.write_pos] = value[:, :, 0]
    # The query heads that share a KV head become that head's query rows: plain
    # multi-head attention shapes, so no repeated KV and any SDPA kernel takes the mask.
    q = query.reshape(b, kv_heads, heads // kv_heads, dim)
    out = F.scaled_dot_product_attention(
        q,
        kc[:b, :, : ctx.length],
        vc[:b, :, : ctx.length],
        attn_mask=ctx.mask[:, None, None, :],
        scale=scaling,
    )
    return out.reshape(b, 1, heads, dim), None


AttentionInterface.register(ATTENTION, slot_attention)


def unsupported_reason(model: Any) -> str | None:
    """Why the slot runner cannot serve this model (None: it can)."""
    config = model.config
    kind = getattr(config, "model_type", "")
    if kind not in SUPPORTED:
        return f"model type {kind!r} (the continuous-batching path knows {', '.join(SUPPORTED)})"
    if "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        return "sliding-window attention layers"
    if kind == "mistral" and getattr(config, "sliding_window", None):
        return "sliding-window attention"
    inner = getattr(model, "model", None)
    for part in ("embed_tokens", "layers", "norm", "rotary_emb"):
        if not hasattr(inner, part):
            return f"no model.{part}"
    return None


def kv_bytes_per_token(config: Any, dtype: torch.dtype) -> int:
    dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    size = torch.tensor([], dtype=dtype).element_size()
    return int(2 * config.num_hidden_layers * config.num_key_value_heads * dim * size)


def _mix32(x: torch.Tensor) -> torch.Tensor:
    # lowbias32-style mixing; multipliers < 2**31 keep every product inside int64.
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x68E31DA5) & _MASK32
    return x ^ (x >> 16)


def _row_bits(keys: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    return _mix32((keys & _MASK32) ^ _mix32((keys >> 32) ^ _mix32(counters & _MASK32)))


def _unit(bits: torch.Tensor) -> torch.Tensor:
    return ((bits >> 8).float() + 0.5) * (1.0 / (1 << 24))  # (0, 1), 24 bits


def uniform(keys: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """One number in (0, 1) per row, a pure function of (key, counter): a row's draw
    depends on its own seed and position, not on the rows next to it."""
    return _unit(_row_bits(keys, counters))


def sample(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    keys: torch.Tensor,
    counters: torch.Tensor,
    nucleus: bool,
    exact: bool = False,
) -> torch.Tensor:
    """Next token per row: greedy where temperature is 0, else temperature + top-p (the
    smallest set of tokens whose mass reaches top_p; ``nucleus`` False skips the sort
    when no row needs it).

    The draw is keyed by (row key, position). Default: inverse CDF of one uniform number
    per row — cheap, but a rounding-level change of the logits (another batch shape, another
    row of the same GEMM) can move the pick across tokens of tiny mass. ``exact`` (any
    seeded row in the batch): an exponential race, argmax p_i / E_i with E_i ~ Exp(1) keyed
    by (row key, position, token), which only flips when two candidates tie to rounding,
    so a seeded request samples the same tokens whatever runs next to it; it costs one hash
    per vocabulary entry and row.
    """
    greedy = temperature <= 0
    scaled = logits / torch.where(greedy, 1.0, temperature)[:, None]
    probs = torch.softmax(scaled, dim=-1)
    bits = _row_bits(keys, counters)
    last = probs.shape[-1] - 1
    if nucleus:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = (sorted_p.cumsum(-1) - sorted_p) < top_p[:, None]
        if exact:
            probs = probs * torch.zeros_like(keep).scatter_(1, order, keep)
        else:
            cdf = (sorted_p * keep).cumsum(-1)
            u = _unit(bits)[:, None] * cdf[:, -1:]
            pick = torch.searchsorted(cdf, u, right=True).clamp_(max=last)
            drawn = order.gather(1, pick).squeeze(1)
    if exact:
        vocab = torch.arange(probs.shape[-1], device=probs.device)
        token_bits = (vocab * 0x9E3779B1) & _MASK32
        race = probs / -torch.log(_unit(_mix32(bits[:, None] ^ token_bits[None, :])))
        drawn = race.argmax(-1)
    elif not nucleus:
        cdf = probs.cumsum(-1)
        u = _unit(bits)[:, None] * cdf[:, -1:]
        drawn = torch.searchsorted(cdf, u, right=True).clamp_(max=last).squeeze(1)
    return torch.where(greedy, logits.argmax(-1), drawn)


class SlotRunner:
    """Runs prefill and decode steps for up to ``rows`` rows of at most ``max_len`` tokens."""

    def __init__(self, model: Any, bank: AdapterBank, rows: int, max_len: int) -> None:
        self.model = model
        self.bank = bank
        self.rows = rows
        self.max_len = max_len
        config = model.config
        first = next(model.parameters())
        self.device, self.dtype = first.device, first.dtype
        self.graphs_enabled = self.device.type == "cuda"
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        shape = (config.num_hidden_layers, rows, config.num_key_value_heads, max_len, dim)
        self.k = torch.zeros(shape, device=self.device, dtype=self.dtype)
        self.v = torch.zeros(shape, device=self.device, dtype=self.dtype)
        self.ctx = SlotContext(self.k, self.v)
        for layer in model.model.layers:
            layer.self_attn._spar_slots = self.ctx
        model.set_attn_implementation(ATTENTION)
        d = self.device
        self.ids = torch.zeros(rows, dtype=torch.long, device=d)
        self.pos = torch.zeros(rows, dtype=torch.long, device=d)
        self.temperature = torch.ones(rows, dtype=torch.float32, device=d)
        self.top_p = torch.ones(rows, dtype=torch.float32, device=d)
        self.keys = torch.zeros(rows, dtype=torch.long, device=d)
        self.adapter = torch.full((rows,), -1, dtype=torch.long, device=d)
        self.out = torch.zeros(rows, dtype=torch.long, device=d)
        self.row_index = torch.arange(rows, device=d)
        self.positions = torch.arange(max_len, device=d)
        self.buckets = row_buckets(rows)
        self._graphs: dict[tuple[int, int, bool, bool, bool], torch.cuda.CUDAGraph] = {}
        self._pool: Any = torch.cuda.graph_pool_handle() if self.graphs_enabled else None
        self.busy_s = 0.0
        self.steps = 0
        self.prefills = 0
        self.captures = 0

    # -- per-row parameters -------------------------------------------------------------

    def set_rows(
        self,
        rows: Sequence[int],
        temperature: Sequence[float],
        top_p: Sequence[float],
        keys: Sequence[int],
        adapters: Sequence[int],
    ) -> None:
        idx = torch.tensor(rows, device=self.device)
        self.temperature[idx] = torch.tensor(temperature, dtype=torch.float32).to(self.device)
        self.top_p[idx] = torch.tensor(top_p, dtype=torch.float32).to(self.device)
        self.keys[idx] = torch.tensor(keys, dtype=torch.long).to(self.device)
        self.adapter[idx] = torch.tensor(adapters, dtype=torch.long).to(self.device)

    def move(self, moves: Sequence[tuple[int, int]], length: int) -> None:
        """Moves rows (source -> destination) with their first ``length`` cache positions."""
        if not moves:
            return
        src = torch.tensor([m[0] for m in moves], device=self.device)
        dst = torch.tensor([m[1] for m in moves], device=self.device)
        n = length_bucket(length, LENGTH_GRANULARITY, self.max_len)
        self.k[:, dst, :, :n] = self.k[:, src, :, :n]
        self.v[:, dst, :, :n] = self.v[:, src, :, :n]
        for buf in (self.ids, self.pos, self.temperature, self.top_p, self.keys, self.adapter):
            buf[dst] = buf[src]

    def drop_graphs(self) -> None:
        """Forgets captured graphs (the model's layers or adapter tensors changed)."""
        self._graphs.clear()
        if self.graphs_enabled:  # the old pool goes with its last graph: capture into a new one
            self._pool = torch.cuda.graph_pool_handle()

    # -- forward --------------------------------------------------------------------------

    def _hidden(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        inner = self.model.model
        h = inner.embed_tokens(ids)
        rotary = inner.rotary_emb(h, positions)
        for layer in inner.layers:
            out = layer(h, position_embeddings=rotary, position_ids=positions)
            h = out[0] if isinstance(out, tuple) else out
        hidden: torch.Tensor = inner.norm(h)
        return hidden

    def prefill(
        self,
        prompts: Sequence[Sequence[int]],
        first_rows: Sequence[int],
        samples: Sequence[int],
        nucleus: bool,
        lora: bool,
        exact: bool,
    ) -> list[int]:
        """Runs the prompts into the rows ``first_rows[i] .. + samples[i] - 1`` and
        samples each row's first token. Returns the tokens, row by row."""
        t0, start, end = self._begin()
        d = self.device
        width = max(len(p) for p in prompts)
        ids = torch.zeros(len(prompts), width, dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids[i, : len(prompt)] = torch.tensor(prompt, dtype=torch.long)
        lengths = torch.tensor([len(p) for p in prompts], device=d)
        firsts = torch.tensor(first_rows, device=d)
        counts = torch.tensor(samples, device=d)
        ctx = self.ctx
        ctx.decode = False
        ctx.rows = firsts
        self.bank.selection.mask = (
            self.bank.onehot(self.adapter[firsts]).repeat_interleave(width, dim=0) if lora else None
        )
        positions = self.positions[:width][None, :].expand(len(prompts), width)
        hidden = self._hidden(ids.to(d), positions)
        last = hidden[torch.arange(len(prompts), device=d), lengths - 1]
        logits = self.model.lm_head(last).float()
        rows = torch.tensor(
            [first + k for first, n in zip(first_rows, samples, strict=True) for k in range(n)],
            device=d,
        )
        sources = firsts.repeat_interleave(counts)
        siblings = rows != sources
        if bool(max(samples) > 1):  # n samples share the prompt's KV: copy it to each row
            dst, src = rows[siblings], sources[siblings]
            self.k[:, dst, :, :width] = self.k[:, src, :, :width]
            self.v[:, dst, :, :width] = self.v[:, src, :, :width]
        counters = lengths.repeat_interleave(counts)
        tokens = sample(
            logits.repeat_interleave(counts, dim=0),
            self.temperature[rows],
            self.top_p[rows],
            self.keys[rows],
            counters,
            nucleus,
            exact,
        )
        self.ids[rows] = tokens
        self.pos[rows] = counters
        self.bank.selection.mask = None
        self.prefills += 1
        return self._end(tokens, t0, start, end)

    def decode(self, count: int, length: int, nucleus: bool, lora: bool, exact: bool) -> list[int]:
        """One decode step of rows 0..count-1; ``length``: cache positions to read (the
        largest row position + 1). Returns each row's new token."""
        t0, start, end = self._begin()
        key = (
            bucket(count, self.buckets),
            length_bucket(length, LENGTH_GRANULARITY, self.max_len),
            nucleus,
            lora,
            exact,
        )
        graph = self._graphs.get(key)
        if graph is not None:
            graph.replay()
        else:
            self._decode_body(*key)  # this step runs eagerly; later ones replay
            if self.graphs_enabled:
                self._capture(key)
        b = key[0]
        # State moves on outside the graph, so capturing it has no side effects.
        self.ids[:b].copy_(self.out[:b])
        self.pos[:b] += 1
        self.steps += 1
        return self._end(self.out[:count], t0, start, end)

    def _decode_body(self, rows: int, length: int, nucleus: bool, lora: bool, exact: bool) -> None:
        ctx = self.ctx
        pos = self.pos[:rows]
        ctx.decode = True
        ctx.length = length
        ctx.rows = self.row_index[:rows]
        ctx.write_pos = pos.clamp(max=self.max_len - 1)  # idle padding rows keep counting
        ctx.mask = self.positions[:length][None, :] <= pos[:, None]
        self.bank.selection.mask = self.bank.onehot(self.adapter[:rows]) if lora else None
        hidden = self._hidden(self.ids[:rows, None], pos[:, None])
        logits = self.model.lm_head(hidden[:, -1]).float()
        tokens = sample(
            logits,
            self.temperature[:rows],
            self.top_p[:rows],
            self.keys[:rows],
            pos + 1,
            nucleus,
            exact,
        )
        self.out[:rows].copy_(tokens)
        self.bank.selection.mask = None

    def _capture(self, key: tuple[int, int, bool, bool, bool]) -> None:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            self._decode_body(*key)
        self._graphs[key] = graph
        self.captures += 1

    # -- device time --------------------------------------------------------------------

    def _begin(self) -> tuple[float, Any, Any]:
        if self.device.type != "cuda":
            return time.perf_counter(), None, None
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        return 0.0, start, end

    def _end(self, tokens: torch.Tensor, t0: float, start: Any, end: Any) -> list[int]:
        if end is not None:
            end.record()
        result: list[int] = tokens.tolist()  # waits for the step
        if end is not None:
            self.busy_s += start.elapsed_time(end) / 1000.0
        else:
            self.busy_s += time.perf_counter() - t0
        return result

    @property
    def graphs(self) -> int:
        return len(self._graphs)
