"""Per-row LoRA adapters for the continuous-batching hf engine (stacked slots).

Written by hand because peft's mixed-adapter batches (``adapter_names=``) split every
batch into one sub-batch per adapter with boolean indexing inside each layer: host work
per step whose shapes follow the batch's adapter mix, which a CUDA graph cannot capture
(and transformers' own continuous batching has no adapters at all). Here every loaded
adapter owns one *slot* of two stacked matrices per projection, and each token selects its
slot through a one-hot mask, so one captured graph serves every mix of adapters:

    y = W x + B_all^T ((A_all x) * onehot(slot))        (LoRA scaling folded into B_all)

With S slots of rank R that is two GEMMs of width S·R per projection (small next to the
projection for S·R ≤ 128) and no gather of per-row weights. Rows without an adapter have
an all-zero mask. Adapters are read from peft folders (``adapter_config.json`` +
weights) and kept in host memory; a slot is (re)filled when a request needs an adapter
that is not in one, like vLLM's ``max_loras`` GPU slots over ``max_cpu_loras``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig
from peft.utils import load_peft_weights
from torch import nn

# peft is imported with the engine, not at the first adapter load: the import takes about a
# second, which would otherwise delay a fresh replica's stage step of every rollout.
PEFT_PREFIX = "base_model.model."


@dataclass
class HostAdapter:
    """One adapter's weights in host memory: module path -> (A [r, in], B·scale [out, r])."""

    rank: int
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]]


def read_adapter(path: Path, model: nn.Module) -> HostAdapter:
    """Reads a peft LoRA folder for ``model``; raises ValueError naming what is unusable."""
    config = LoraConfig.from_pretrained(str(path))
    refused = {
        "use_dora": bool(getattr(config, "use_dora", False)),
        "bias": getattr(config, "bias", "none") != "none",
        "lora_bias": bool(getattr(config, "lora_bias", False)),
        "modules_to_save": bool(getattr(config, "modules_to_save", None)),
        "rank_pattern": bool(getattr(config, "rank_pattern", None)),
        "alpha_pattern": bool(getattr(config, "alpha_pattern", None)),
    }
    if any(refused.values()):
        names = ", ".join(k for k, v in refused.items() if v)
        raise ValueError(f"adapter_config.json uses {names}, which the hf engine does not serve")
    tensors = load_peft_weights(str(path), device="cpu")
    modules = dict(model.named_modules())
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        lora = key.endswith((".lora_A.weight", ".lora_B.weight"))
        if not key.startswith(PEFT_PREFIX) or not lora:
            raise ValueError(f"unexpected tensor {key!r} (only LoRA A/B weights of linear layers)")
        module, part, _ = key[len(PEFT_PREFIX) :].rsplit(".", 2)
        pairs.setdefault(module, {})[part] = value
    if not pairs:
        raise ValueError("the weights hold no LoRA tensors")
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    rank = 0
    for module, parts in pairs.items():
        linear = modules.get(module)
        if isinstance(linear, StackedLoraLinear):
            linear = linear.base
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"{module!r} is not a linear layer of the model")
        if set(parts) != {"lora_A", "lora_B"}:
            raise ValueError(f"{module!r} lacks its lora_A or lora_B weight")
        a, b = parts["lora_A"], parts["lora_B"]
        r = a.shape[0]
        if a.shape != (r, linear.in_features) or b.shape != (linear.out_features, r):
            raise ValueError(
                f"{module!r}: LoRA shapes {tuple(a.shape)} / {tuple(b.shape)} do not fit "
                f"the layer ({linear.in_features} -> {linear.out_features})"
            )
        scale = config.lora_alpha / (math.sqrt(r) if config.use_rslora else r)
        weights[module] = (a.float(), b.float() * scale)
        rank = max(rank, r)
    return HostAdapter(rank, weights)


class LoraSelection:
    """The slot each token of the current forward uses, shared by every LoRA layer:
    ``mask`` is [tokens, slots] one-hot (model dtype), or None when no row has an adapter."""

    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None


class StackedLoraLinear(nn.Module):  # type: ignore[misc]
    """A linear layer plus the LoRA deltas of every adapter slot."""

    def __init__(self, base: nn.Linear, slots: int, rank: int, selection: LoraSelection) -> None:
        super().__init__()
        self.base = base
        self.selection = selection
        self.slots = slots
        self.rank = rank
        weight = base.weight
        place = {"device": weight.device, "dtype": weight.dtype}
        self.a = torch.zeros(slots * rank, base.in_features, **place)
        self.b = torch.zeros(slots * rank, base.out_features, **place)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.base(x)
        mask = self.selection.mask
        if mask is None:
            return y
        flat = x.reshape(-1, x.shape[-1])
        xa = (flat @ self.a.t()).view(-1, self.slots, self.rank) * mask[:, :, None]
        return y + (xa.view(-1, self.slots * self.rank) @ self.b).view(y.shape)

    def fill(self, slot: int, weights: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """Writes one slot (zeros when the slot's adapter does not touch this layer)."""
        rows = slice(slot * self.rank, (slot + 1) * self.rank)
        self.a[rows].zero_()
        self.b[rows].zero_()
        if weights is not None:
            a, b = weights
            r = a.shape[0]
            self.a[rows][:r].copy_(a)
            self.b[rows][:r].copy_(b.t())

    def with_rank(self, rank: int) -> StackedLoraLinear:
        """A copy with room for rank ``rank`` per slot, keeping every slot's weights."""
        grown = StackedLoraLinear(self.base, self.slots, rank, self.selection)
        for s in range(self.slots):
            old = slice(s * self.rank, (s + 1) * self.rank)
            new = slice(s * rank, s * rank + self.rank)
            grown.a[new].copy_(self.a[old])
            grown.b[new].copy_(self.b[old])
        return grown


class AdapterBank:
    """Adapters of one model: host copies by engine id, ``slots`` device slots.

    A slot is pinned while requests that use it run; an unpinned slot is reused for
    another adapter (least recently used first). ``on_layout_change`` is called when
    layers are wrapped or slots grow, so captured graphs that baked the old tensors in
    are dropped.
    """

    def __init__(self, model: nn.Module, slots: int, on_layout_change: Callable[[], None]) -> None:
        self._model = model
        self.slots = slots
        self.selection = LoraSelection()
        self._on_layout_change = on_layout_change
        self._layers: dict[str, StackedLoraLinear] = {}
        self._rank = 0
        self._host: dict[int, HostAdapter] = {}
        self._owner: list[int | None] = [None] * slots
        self._pins = [0] * slots
        self._used = [0] * slots
        self._clock = 0
        first = next(model.parameters())
        self._arange = torch.arange(slots, device=first.device)
        self._dtype = first.dtype

    def __contains__(self, engine_id: int) -> bool:
        return engine_id in self._host

    def add(self, engine_id: int, adapter: HostAdapter) -> None:
        """Keeps an adapter in host memory, wrapping the layers it needs."""
        missing = [m for m in adapter.weights if m not in self._layers]
        if missing or adapter.rank > self._rank:
            self._wrap(missing, max(self._rank, adapter.rank))
        self._host[engine_id] = adapter

    def remove(self, engine_id: int) -> None:
        """Forgets an adapter; its slot is reused once the requests using it end."""
        self._host.pop(engine_id, None)
        for slot, owner in enumerate(self._owner):
            if owner == engine_id and self._pins[slot] == 0:
                self._owner[slot] = None

    def acquire(self, engine_id: int) -> int | None:
        """Pins and returns the adapter's slot, filling one if needed; None when every
        slot is pinned by running requests (the request waits)."""
        self._clock += 1
        if engine_id in self._owner:
            slot = self._owner.index(engine_id)
        else:
            free = [s for s in range(self.slots) if self._pins[s] == 0]
            if not free:
                return None
            slot = min(free, key=lambda s: (self._owner[s] is not None, self._used[s]))
            adapter = self._host[engine_id]
            for module, layer in self._layers.items():
                layer.fill(slot, adapter.weights.get(module))
            self._owner[slot] = engine_id
        self._pins[slot] += 1
        self._used[slot] = self._clock
        return slot

    def release(self, slot: int) -> None:
        self._pins[slot] -= 1
        owner = self._owner[slot]
        if self._pins[slot] == 0 and owner is not None and owner not in self._host:
            self._owner[slot] = None

    def onehot(self, slots: torch.Tensor) -> torch.Tensor:
        """[rows, slots] selection mask of per-row slots (-1: no adapter)."""
        return (slots[:, None] == self._arange[None, :]).to(self._dtype)

    def _wrap(self, modules: list[str], rank: int) -> None:
        named = dict(self._model.named_modules())
        for path in list(self._layers):
            self._replace(named, path, self._layers[path].with_rank(rank))
        for path in modules:
            base = named[path]
            assert isinstance(base, nn.Linear)
            self._replace(named, path, StackedLoraLinear(base, self.slots, rank, self.selection))
        self._rank = rank
        for slot, owner in enumerate(self._owner):  # a new layer starts with zeros: refill
            if owner is not None and owner in self._host:
                adapter = self._host[owner]
                for path in modules:
                    self._layers[path].fill(slot, adapter.weights.get(path))
        self._on_layout_change()

    def _replace(self, named: dict[str, Any], path: str, layer: StackedLoraLinear) -> None:
        parent, _, name = path.rpartition(".")
        setattr(named[parent] if parent else self._model, name, layer)
        self._layers[path] = layer
