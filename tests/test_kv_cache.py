"""The KV-cache contract: prefill then single-token steps reproduce the full-sequence outputs."""

from __future__ import annotations

import torch
from conftest import random_ids

from gptoss.exporter import load_model
from gptoss.exporter.ops import cache_slots

# Step-by-step and full-sequence runs do the same float32 arithmetic over keys in a different slot
# order (the ring buffer), so only summation order differs: observed ~1e-6.
ATOL = 1e-4


def run_steps(model, ids: torch.Tensor, prefill: int, new_len_per_row: list[int] | None = None) -> torch.Tensor:
    """Prefill `prefill` tokens, then feed the rest one at a time; returns the logits of every position."""
    batch, total = ids.shape
    caches = model.model.allocate_kv_caches(batch, total)
    past = torch.zeros(batch, dtype=torch.int32)
    logits, caches = model.step(ids[:, :prefill], past, torch.full((batch,), prefill, dtype=torch.int32), caches)
    outputs = [logits]
    for position in range(prefill, total):
        past = torch.full((batch,), position, dtype=torch.int32)
        logits, caches = model.step(ids[:, position : position + 1], past, torch.ones(batch, dtype=torch.int32),
                                    caches)  # fmt: skip
        outputs.append(logits)
    return torch.cat(outputs, dim=1)


def test_prefill_then_40_steps_match_full_sequence(checkpoint_factory):
    model = load_model(checkpoint_factory("demo", expert_format="mxfp4"))
    window = model.config.sliding_window  # 16: the ring wraps several times over 40 steps
    ids = random_ids(2, 20 + 40, seed=21)
    full = model(ids)
    stepped = run_steps(model, ids, prefill=20)
    assert window < 20
    assert (stepped - full).abs().max().item() < ATOL


def test_chunked_prefill_longer_than_window(checkpoint_factory):
    model = load_model(checkpoint_factory("odd"))  # window 8
    ids = random_ids(1, 45, seed=22)
    full = model(ids)
    caches = model.model.allocate_kv_caches(1, 45)
    outputs, start = [], 0
    for chunk in (3, 19, 1, 11, 11):  # chunks shorter and longer than the window
        past, new = torch.tensor([start], dtype=torch.int32), torch.tensor([chunk], dtype=torch.int32)
        logits, caches = model.step(ids[:, start : start + chunk], past, new, caches)
        outputs.append(logits)
        start += chunk
    assert (torch.cat(outputs, dim=1) - full).abs().max().item() < ATOL


def test_rows_with_different_lengths_step_independently(checkpoint_factory):
    model = load_model(checkpoint_factory("demo"))
    ids = random_ids(2, 30, seed=23)
    lengths = torch.tensor([30, 12], dtype=torch.int32)
    caches = model.model.allocate_kv_caches(2, 40)
    prefill, caches = model.step(ids, torch.zeros(2, dtype=torch.int32), lengths, caches)
    next_ids = random_ids(2, 1, seed=24)
    decode, _ = model.step(next_ids, lengths, torch.ones(2, dtype=torch.int32), caches)
    for row in range(2):
        n = int(lengths[row])
        alone = model(torch.cat((ids[row : row + 1, :n], next_ids[row : row + 1]), dim=1))
        assert (prefill[row, :n] - alone[0, :n]).abs().max().item() < ATOL
        assert (decode[row, 0] - alone[0, n]).abs().max().item() < ATOL


def test_sliding_cache_is_a_ring_of_window_slots(checkpoint_factory):
    model = load_model(checkpoint_factory("demo"))
    caches = model.model.allocate_kv_caches(1, 64)
    window = model.config.sliding_window
    assert caches[0].shape[3] == window and caches[1].shape[3] == 64
    ids = random_ids(1, 37, seed=25)
    _, caches = model.step(ids, torch.zeros(1, dtype=torch.int32), torch.tensor([37], dtype=torch.int32), caches)
    # Slot t holds the newest position congruent to t mod W: positions 21..36 for W=16.
    positions = cache_slots(torch.tensor([37]), window, window)[0]
    assert sorted(positions.tolist()) == list(range(37 - window, 37))
    assert all(int(p) % window == t for t, p in enumerate(positions))
    assert caches[0].abs().sum(dim=(0, 1, 2, 4)).ne(0).all()  # every slot written
