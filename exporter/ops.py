"""The two custom operators of gptoss-export, as PyTorch ops with real eager implementations.

`gptoss::sink_attention` and `gptoss::moe` are what the ONNX export turns into the `gptoss` domain nodes
`SinkAttention` and `MoE`, and what the TensorRT plugins implement in CUDA; the eager code here is the reference
the other two are checked against (docs/ops.md). Each op's schema and fake come from its declaration in
`gptoss.runtime.op_signatures`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from gptoss.runtime.op_signatures import MOE, SINK_ATTENTION, OpSignature

from . import mxfp4

_SCHEMA_TYPES = {int: "int", float: "float", str: "str"}


def torch_schema(signature: OpSignature) -> str:
    """The PyTorch schema of `signature`'s op, e.g. `(Tensor q, Tensor? s, int n, float a=1.0) -> (Tensor, Tensor)`."""
    tensors = [f"Tensor{'?' if t.optional else ''} {t.name}" for t in signature.inputs]
    attributes = [
        f"{_SCHEMA_TYPES[a.kind]} {a.name}" + ("" if a.default is None else f"={a.default!r}")
        for a in signature.passed_attributes
    ]
    outputs = ", ".join("Tensor" for _ in signature.outputs)
    return f"({', '.join(tensors + attributes)}) -> " + (outputs if len(signature.outputs) == 1 else f"({outputs})")


def define(signature: OpSignature, implementation: Callable) -> Callable:
    """Register `implementation` as `gptoss::<torch_name>` with the schema and fake derived from `signature`."""

    def run(*args, **kwargs):  # the dispatcher passes what the caller gave: fill in the defaults
        return implementation(**signature.bind(args, kwargs))

    op = torch.library.custom_op(
        f"gptoss::{signature.torch_name}", run, mutates_args=(), schema=torch_schema(signature)
    )

    def fake(*args, **kwargs):
        values = signature.bind(args, kwargs)
        outputs = tuple(torch.empty_like(values[t.like]) for t in signature.outputs)
        return outputs if len(outputs) > 1 else outputs[0]

    op.register_fake(fake)
    return op


def cache_slots(past_len: torch.Tensor, capacity: int, sliding_window: int) -> torch.Tensor:
    """Absolute position held by each cache slot before this step, `[B, capacity]`; -1 for empty slots.

    Full layers keep position `p` in slot `p`. Sliding layers keep a ring of `sliding_window` slots with
    position `p` in slot `p mod W`, so slot `t` holds the newest cached position congruent to `t`.
    """
    past = past_len.to(torch.int64).unsqueeze(-1)
    slot = torch.arange(capacity, dtype=torch.int64, device=past_len.device).unsqueeze(0)
    if sliding_window:
        position = past - 1 - torch.remainder(past - 1 - slot, sliding_window)
    else:
        position = slot.expand(past.shape[0], capacity)
    return torch.where((position >= 0) & (position < past), position, -1)


def attention_mask(
    past_len: torch.Tensor, new_len: torch.Tensor, capacity: int, seq_len: int, sliding_window: int
) -> torch.Tensor:
    """Which keys (cached slots, then new tokens) each new query may see, `[B, S, capacity + S]`."""
    step = torch.arange(seq_len, dtype=torch.int64, device=past_len.device).unsqueeze(0)
    query_pos = past_len.to(torch.int64).unsqueeze(-1) + step  # [B, S]
    new_valid = step < new_len.to(torch.int64).unsqueeze(-1)
    cached_pos = cache_slots(past_len, capacity, sliding_window)
    key_pos = torch.cat((cached_pos, torch.where(new_valid, query_pos, -1)), dim=1)  # [B, C+S]
    key_pos = key_pos.unsqueeze(1)
    allowed = (key_pos >= 0) & (key_pos <= query_pos.unsqueeze(-1))
    if sliding_window:
        allowed &= key_pos > query_pos.unsqueeze(-1) - sliding_window
    return allowed & new_valid.unsqueeze(-1)


def update_cache(
    kv_cache: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    past_len: torch.Tensor,
    new_len: torch.Tensor,
    sliding_window: int,
) -> torch.Tensor:
    """Cache with the valid new keys/values written to their slots. `k`, `v`: `[B, Hkv, S, D]`.

    Sliding layers keep only the last `sliding_window` new tokens (earlier ones would be overwritten
    in the ring anyway). Writes that must not land go to a scratch slot that is cut off afterwards.
    """
    batch, _, heads, capacity, head_dim = kv_cache.shape
    seq_len = k.shape[2]
    step = torch.arange(seq_len, dtype=torch.int64, device=k.device).unsqueeze(0)
    position = past_len.to(torch.int64).unsqueeze(-1) + step
    new = new_len.to(torch.int64).unsqueeze(-1)
    keep = step < new
    if sliding_window:
        keep &= step >= new - sliding_window
        slot = torch.remainder(position, sliding_window)
    else:
        slot = position
    slot = torch.where(keep, slot, capacity)  # [B, S]
    scratch = kv_cache.new_zeros(batch, 2, heads, 1, head_dim)
    padded = torch.cat((kv_cache, scratch), dim=3)
    index = slot.view(batch, 1, 1, seq_len, 1).expand(batch, 2, heads, seq_len, head_dim)
    updates = torch.stack((k, v), dim=1).to(kv_cache.dtype)
    return padded.scatter(3, index, updates)[:, :, :, :capacity]


def _check_cache(kv_cache: torch.Tensor, past_len: torch.Tensor, new_len: torch.Tensor, window: int) -> None:
    capacity = kv_cache.shape[3]
    if window and capacity != window:
        raise ValueError(f"sliding-window cache must have {window} slots (the window), got {capacity}")
    if not window and int((past_len + new_len).max()) > capacity:
        raise ValueError(
            f"sequence of {int((past_len + new_len).max())} tokens exceeds the KV cache capacity {capacity}"
        )
    if int(past_len.min()) < 0 or int(new_len.min()) < 0:
        raise ValueError("past_len and new_len must be non-negative")


def _sink_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sinks: torch.Tensor,
    kv_cache: torch.Tensor,
    past_len: torch.Tensor,
    new_len: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    sliding_window: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grouped-query attention with per-head sinks over a KV cache (docs/ops.md, `SinkAttention`).

    q `[B,S,Hq*D]`, k/v `[B,S,Hkv*D]` (RoPE applied), sinks `[Hq]`, kv_cache `[B,2,Hkv,C,D]`,
    past_len/new_len `[B]` int32. Returns `out [B,S,Hq*D]` (zeros for padded queries) and the updated cache.
    """
    _check_cache(kv_cache, past_len, new_len, sliding_window)
    batch, seq_len, _ = q.shape
    capacity = kv_cache.shape[3]
    group = num_heads // num_kv_heads
    qh = q.view(batch, seq_len, num_heads, head_dim).transpose(1, 2).float()
    kh = k.view(batch, seq_len, num_kv_heads, head_dim).transpose(1, 2)
    vh = v.view(batch, seq_len, num_kv_heads, head_dim).transpose(1, 2)
    keys = torch.cat((kv_cache[:, 0].to(kh.dtype), kh), dim=2).float().repeat_interleave(group, dim=1)
    values = torch.cat((kv_cache[:, 1].to(vh.dtype), vh), dim=2).float().repeat_interleave(group, dim=1)

    allowed = attention_mask(past_len, new_len, capacity, seq_len, sliding_window).unsqueeze(1)
    scores = torch.matmul(qh, keys.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~allowed, float("-inf"))
    sink = sinks.float().view(1, num_heads, 1, 1).expand(batch, num_heads, seq_len, 1)
    probs = torch.softmax(torch.cat((scores, sink), dim=-1), dim=-1)[..., :-1]
    out = torch.matmul(probs, values)  # [B, Hq, S, D]; padded queries see no key, so they are zero
    out = out.transpose(1, 2).reshape(batch, seq_len, num_heads * head_dim).to(q.dtype)
    return out, update_cache(kv_cache, kh, vh, past_len, new_len, sliding_window)


sink_attention = define(SINK_ATTENTION, _sink_attention)


def expert_weight(weight: torch.Tensor, scales: torch.Tensor | None, expert: int) -> torch.Tensor:
    """Dense float32 `[out, in]` weight of one expert, dequantized on the fly when MXFP4."""
    if scales is None:
        return weight[expert].float()
    return mxfp4.dequantize(weight[expert], scales[expert])


def swiglu(gate_up: torch.Tensor, alpha: float, limit: float) -> torch.Tensor:
    """GPT-OSS clamped SwiGLU over interleaved columns (even = gate, odd = up)."""
    gate = gate_up[..., 0::2].clamp(max=limit)
    up = gate_up[..., 1::2].clamp(min=-limit, max=limit)
    return gate * torch.sigmoid(gate * alpha) * (up + 1)


def _moe(
    hidden: torch.Tensor,
    expert_ids: torch.Tensor,
    expert_weights: torch.Tensor,
    gate_up_weight: torch.Tensor,
    gate_up_scales: torch.Tensor | None,
    gate_up_bias: torch.Tensor,
    down_weight: torch.Tensor,
    down_scales: torch.Tensor | None,
    down_bias: torch.Tensor,
    swiglu_alpha: float,
    swiglu_limit: float,
) -> torch.Tensor:
    """Routed experts with clamped SwiGLU (docs/ops.md, `MoE`).

    hidden `[T,H]`, expert_ids `[T,K]` int32, expert_weights `[T,K]`. Weights are `[out, in]` per expert:
    gate_up `[E,2I,H]`, down `[E,H,I]` as floats, or MXFP4 `blocks [E,out,in/32,16]` with
    `scales [E,out,in/32]`. Accumulates in float32 and returns `[T,H]` in the dtype of `hidden`.
    """
    x = hidden.float()
    out = torch.zeros_like(x)
    ids = expert_ids.long()
    for expert in torch.unique(ids).tolist():
        token, slot = torch.nonzero(ids == expert, as_tuple=True)
        w1 = expert_weight(gate_up_weight, gate_up_scales, expert)
        w2 = expert_weight(down_weight, down_scales, expert)
        h = swiglu(x[token] @ w1.T + gate_up_bias[expert].float(), swiglu_alpha, swiglu_limit)
        y = h @ w2.T + down_bias[expert].float()
        out.index_add_(0, token, y * expert_weights[token, slot].float().unsqueeze(-1))
    return out.to(hidden.dtype)


moe = define(MOE, _moe)
