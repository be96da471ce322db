"""The custom ops against straightforward per-query / per-token references written independently."""

from __future__ import annotations

import math

import pytest
import torch

from gptoss.exporter import mxfp4
from gptoss.exporter.ops import moe, sink_attention


def naive_attention(q, k_all, v_all, sinks, query_positions, window, scale):
    """out[b,s,h] by the definition: softmax over allowed keys plus exp(sink) in the denominator.

    q `[B,S,Hq,D]`; k_all/v_all `[B,T,Hkv,D]` hold the key/value of every position 0..T-1.
    """
    batch, seq_len, heads, dim = q.shape
    group = heads // k_all.shape[2]
    out = torch.zeros(batch, seq_len, heads, dim, dtype=torch.float64)
    for b in range(batch):
        for s in range(seq_len):
            p = int(query_positions[b][s])
            keys = [j for j in range(p + 1) if not window or j > p - window]
            for h in range(heads):
                kv = h // group
                logits = torch.stack([q[b, s, h].double() @ k_all[b, j, kv].double() * scale for j in keys])
                weights = torch.exp(logits) / (torch.exp(logits).sum() + math.exp(float(sinks[h])))
                out[b, s, h] = sum(w * v_all[b, j, kv].double() for w, j in zip(weights, keys, strict=True))
    return out


@pytest.mark.parametrize("window", [0, 4, 64])
def test_sink_attention_matches_definition_across_steps(window):
    torch.manual_seed(window)
    batch, hq, hkv, dim, total = 2, 6, 2, 8, 23
    capacity = window or total
    q_all = torch.randn(batch, total, hq, dim)
    k_all = torch.randn(batch, total, hkv, dim)
    v_all = torch.randn(batch, total, hkv, dim)
    sinks = torch.randn(hq) * 2
    cache = torch.full((batch, 2, hkv, capacity, dim), float("nan")).nan_to_num(7.0)  # poisoned empty slots
    start = 0
    for chunk in (9, 1, 7, 6):  # prefill longer than a small window, one decode step, more chunks
        sl = slice(start, start + chunk)
        past = torch.full((batch,), start, dtype=torch.int32)
        new = torch.full((batch,), chunk, dtype=torch.int32)
        out, cache = sink_attention(
            q_all[:, sl].flatten(2), k_all[:, sl].flatten(2), v_all[:, sl].flatten(2), sinks, cache, past, new,
            hq, hkv, dim, window, dim**-0.5,
        )  # fmt: skip
        query_positions = [list(range(start, start + chunk))] * batch
        expected = naive_attention(q_all[:, sl], k_all, v_all, sinks, query_positions, window, dim**-0.5)
        # float32 op against a float64 definition on O(1) values: float32 rounding is ~1e-7.
        assert (out.view(batch, chunk, hq, dim).double() - expected).abs().max() < 1e-5
        start += chunk


def test_sink_attention_padded_rows_give_zeros_and_leave_cache_alone():
    hq = hkv = 2
    dim, capacity = 4, 8
    q = torch.randn(2, 3, hq * dim)
    cache = torch.randn(2, 2, hkv, capacity, dim)
    past = torch.tensor([2, 0], dtype=torch.int32)
    new = torch.tensor([1, 0], dtype=torch.int32)
    out, updated = sink_attention(q, q, q, torch.zeros(hq), cache, past, new, hq, hkv, dim, 0, 0.5)
    assert out[0, 1:].abs().max() == 0 and out[1].abs().max() == 0
    assert torch.equal(updated[1], cache[1])
    assert torch.equal(updated[0, :, :, 3:], cache[0, :, :, 3:]) and torch.equal(
        updated[0, :, :, :2], cache[0, :, :, :2]
    )


def test_sink_attention_rejects_overflowing_cache():
    q = torch.randn(1, 4, 8)
    cache = torch.zeros(1, 2, 1, 4, 8)
    with pytest.raises(ValueError, match="exceeds the KV cache capacity 4"):
        sink_attention(q, q, q, torch.zeros(1), cache, torch.tensor([1], dtype=torch.int32),
                       torch.tensor([4], dtype=torch.int32), 1, 1, 8, 0, 1.0)  # fmt: skip


def test_mxfp4_dequantize_matches_reference_example_and_hf():
    blocks = torch.zeros(1, 1, 16, dtype=torch.uint8)
    blocks[0, 0, 0] = 0x2B
    values = mxfp4.dequantize(blocks, torch.tensor([[124]], dtype=torch.uint8))
    assert values[0, :2].tolist() == [-0.1875, 0.125]  # the MXFP4 worked example in docs/numerics.md

    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    generator = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, 256, (3, 10, 4, 16), dtype=torch.uint8, generator=generator)
    scales = torch.randint(100, 140, (3, 10, 4), dtype=torch.uint8, generator=generator)
    hf = convert_moe_packed_tensors(blocks, scales, dtype=torch.float32)  # [E, in, out]
    assert torch.equal(mxfp4.dequantize(blocks, scales), hf.transpose(1, 2))  # exact, bit for bit


def naive_moe(x, ids, weights, w1, b1, w2, b2, alpha, limit):
    out = torch.zeros_like(x, dtype=torch.float64)
    for t in range(x.shape[0]):
        for slot in range(ids.shape[1]):
            e = int(ids[t, slot])
            u = w1[e].double() @ x[t].double() + b1[e].double()
            gate, up = u[0::2].clamp(max=limit), u[1::2].clamp(-limit, limit)
            h = gate * torch.sigmoid(alpha * gate) * (up + 1)
            out[t] += weights[t, slot].double() * (w2[e].double() @ h + b2[e].double())
    return out


@pytest.mark.parametrize("packed", [False, True])
def test_moe_matches_definition(packed):
    torch.manual_seed(1)
    tokens, hidden, inter, experts, top_k = 9, 64, 32, 5, 3
    x = torch.randn(tokens, hidden)
    ids = torch.stack([torch.randperm(experts)[:top_k] for _ in range(tokens)]).to(torch.int32)
    weights = torch.softmax(torch.randn(tokens, top_k), -1)
    b1, b2 = torch.randn(experts, 2 * inter), torch.randn(experts, hidden)
    if packed:
        g1 = torch.randint(0, 256, (experts, 2 * inter, hidden // 32, 16), dtype=torch.uint8)
        s1 = torch.full((experts, 2 * inter, hidden // 32), 125, dtype=torch.uint8)
        g2 = torch.randint(0, 256, (experts, hidden, inter // 32, 16), dtype=torch.uint8)
        s2 = torch.full((experts, hidden, inter // 32), 122, dtype=torch.uint8)
        w1, w2 = mxfp4.dequantize(g1, s1), mxfp4.dequantize(g2, s2)
    else:
        w1, w2 = torch.randn(experts, 2 * inter, hidden), torch.randn(experts, hidden, inter) / 6
        g1, s1, g2, s2 = w1, None, w2, None
    expected = naive_moe(x, ids, weights, w1, b1, w2, b2, 1.702, 7.0)
    gate_values = torch.einsum("eoi,ti->teo", w1, x)[..., 0::2]
    assert (gate_values > 7).any() and (gate_values < -7).any()  # both clamp branches are exercised
    out = moe(x, ids, weights, g1, s1, b1, g2, s2, b2, 1.702, 7.0)
    # float32 accumulation over 64/32-wide dot products against float64: relative error ~1e-7.
    assert (out.double() - expected).abs().max() < 1e-5 * expected.abs().max()
