"""Pure logic of the continuous-batching hf engine: buckets, compaction, stop filter,
per-row sampling and stacked LoRA (tiny CPU tensors, no model)."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from torch import nn

from spar.engine.continuous import (
    bucket,
    compaction,
    length_bucket,
    row_buckets,
    sample_key,
    stop_may_end_with,
)
from spar.engine.hf_lora import AdapterBank, HostAdapter, LoraSelection, StackedLoraLinear
from spar.engine.hf_runner import sample, uniform


def test_row_buckets_end_at_the_row_count() -> None:
    assert row_buckets(1) == [1]
    assert row_buckets(11) == [1, 2, 4, 8, 11]
    assert row_buckets(256)[-3:] == [128, 192, 256]
    big = row_buckets(2000)
    assert big[-1] == 2000 and big == sorted(set(big))
    assert all(b / a <= 2 for a, b in itertools.pairwise(big))


def test_bucket_and_length_bucket() -> None:
    buckets = row_buckets(256)
    assert [bucket(v, buckets) for v in (1, 3, 65, 256)] == [1, 4, 96, 256]
    with pytest.raises(ValueError):
        bucket(257, buckets)
    assert [length_bucket(v, 128, 300) for v in (1, 128, 129, 299)] == [128, 128, 256, 300]


@pytest.mark.parametrize("seed", range(20))
def test_compaction_keeps_every_survivor_dense(seed: int) -> None:
    rng = random.Random(seed)
    count = rng.randint(1, 40)
    finished = set(rng.sample(range(count), rng.randint(0, count)))
    rows = list(range(count))  # row i holds "request i"
    left, moves = compaction(finished, count)
    assert left == count - len(finished)
    sources, targets = [s for s, _ in moves], [d for _, d in moves]
    assert not set(sources) & set(targets)
    for src, dst in moves:
        rows[dst] = rows[src]
    assert sorted(rows[:left]) == sorted(set(range(count)) - finished)


def test_stop_filter_only_skips_tokens_that_cannot_end_a_stop() -> None:
    chars = frozenset({"]", "\n"})
    assert not stop_may_end_with("hello", chars)
    assert stop_may_end_with("end]]", chars)
    assert stop_may_end_with("\ufffd", chars)  # half a UTF-8 character
    assert stop_may_end_with("", chars)
    assert stop_may_end_with("word", frozenset({" "}))  # spaces can be normalised away


def test_sample_keys_are_stable_and_distinct() -> None:
    assert sample_key(1234, 0) == sample_key(1234, 0)
    keys = {sample_key(s, i) for s in range(50) for i in range(5)}
    assert len(keys) == 250
    assert all(0 <= k < 2**62 for k in keys)


def test_uniform_depends_only_on_key_and_counter() -> None:
    keys = torch.tensor([5, 6, 5, 2**61 + 3])
    counters = torch.tensor([10, 10, 10, 7])
    u = uniform(keys, counters)
    assert u[0] == u[2] and u[0] != u[1]
    assert bool(((u >= 0) & (u < 1)).all())
    many = uniform(torch.arange(20000), torch.full((20000,), 3))
    assert abs(float(many.mean()) - 0.5) < 0.01


def _logits(probs: list[float], rows: int) -> torch.Tensor:
    return torch.tensor(probs).log().repeat(rows, 1)


def test_sample_greedy_and_distribution() -> None:
    rows = 20000
    logits = _logits([0.5, 0.3, 0.15, 0.05], rows)
    ones = torch.ones(rows)
    keys = torch.arange(rows)
    counters = torch.full((rows,), 9)
    greedy = sample(logits, torch.zeros(rows), ones, keys, counters, nucleus=False)
    assert bool((greedy == 0).all())
    drawn = sample(logits, ones, ones, keys, counters, nucleus=False)
    freq = torch.bincount(drawn, minlength=4).float() / rows
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.015)
    # top_p 0.7: only the two tokens whose mass reaches 0.7 remain, renormalised.
    nucleus = sample(logits, ones, ones * 0.7, keys, counters, nucleus=True)
    freq = torch.bincount(nucleus, minlength=4).float() / rows
    assert torch.allclose(freq, torch.tensor([0.625, 0.375, 0.0, 0.0]), atol=0.015)


def test_a_row_samples_the_same_token_whatever_its_neighbours() -> None:
    logits = torch.randn(6, 50)
    params = (torch.full((6,), 0.8), torch.full((6,), 0.9), torch.arange(6) * 7, torch.arange(6))
    together = sample(logits, *params, nucleus=True)
    alone = [
        int(sample(logits[i : i + 1], *(p[i : i + 1] for p in params), nucleus=True))
        for i in range(6)
    ]
    assert together.tolist() == alone


def test_stacked_lora_matches_each_rows_own_adapter() -> None:
    torch.manual_seed(0)
    base = nn.Linear(8, 6, bias=False)
    selection = LoraSelection()
    layer = StackedLoraLinear(base, slots=3, rank=2, selection=selection)
    adapters = [(torch.randn(2, 8), torch.randn(6, 2)), (torch.randn(1, 8), torch.randn(6, 1))]
    layer.fill(0, adapters[0])
    layer.fill(2, adapters[1])
    x = torch.randn(4, 8)
    slots = torch.tensor([0, -1, 2, 0])
    selection.mask = (slots[:, None] == torch.arange(3)[None, :]).float()
    with torch.no_grad():
        got = layer(x)
        want = base(x)
        for i, slot in enumerate(slots.tolist()):
            if slot >= 0:
                a, b = adapters[0 if slot == 0 else 1]
                want[i] += b @ (a @ x[i])
        assert torch.allclose(got, want, atol=1e-5)
        grown = layer.with_rank(4)
        assert torch.allclose(grown(x), want, atol=1e-5)
        selection.mask = None
        assert torch.allclose(layer(x), base(x))


class _Tiny(nn.Module):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(4, 4, bias=False)
        self.v_proj = nn.Linear(4, 4, bias=False)


def _adapter(rank: int, modules: tuple[str, ...] = ("q_proj",)) -> HostAdapter:
    return HostAdapter(rank, {m: (torch.ones(rank, 4), torch.ones(4, rank)) for m in modules})


def test_adapter_bank_slots_are_pinned_while_used_and_reused_after() -> None:
    model = _Tiny()
    changes: list[int] = []
    bank = AdapterBank(model, slots=2, on_layout_change=lambda: changes.append(1))
    bank.add(1, _adapter(2))
    assert isinstance(model.q_proj, StackedLoraLinear) and changes == [1]
    bank.add(2, _adapter(2))
    bank.add(3, _adapter(4, ("q_proj", "v_proj")))  # a larger rank and a new layer
    assert isinstance(model.v_proj, StackedLoraLinear) and model.q_proj.rank == 4
    assert len(changes) == 2
    a, b = bank.acquire(1), bank.acquire(2)
    assert {a, b} == {0, 1} and bank.acquire(1) == a
    assert bank.acquire(3) is None  # both slots pinned: the request waits
    bank.release(a)
    assert bank.acquire(3) is None  # adapter 1 still pinned once
    bank.release(a)
    assert bank.acquire(3) == a  # slot reused; adapter 3's weights written into it
    assert bool(model.v_proj.a[a * 4 : a * 4 + 4].eq(1).all())
    bank.remove(2)  # still pinned: its slot stays until its requests end
    assert 2 not in bank
    assert bank.acquire(1) is None
    bank.release(b)
    assert bank.acquire(1) == b
