"""YaRN rotary position embedding of GPT-OSS (docs/numerics.md), computed in float32 like HF."""

from __future__ import annotations

import math

import torch

from .config import RopeConfig


def _correction_dim(rotations: float, dim: int, base: float, context: int) -> float:
    return (dim * math.log(context / (rotations * 2 * math.pi))) / (2 * math.log(base))


def yarn_inv_freq(rope: RopeConfig, head_dim: int) -> tuple[torch.Tensor, float]:
    """Per-pair inverse frequencies `[head_dim/2]` (float32) and the cos/sin scale ("mscale")."""
    pos_freqs = rope.theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    if rope.rope_type == "default":
        return 1.0 / pos_freqs, 1.0
    extrapolation = 1.0 / pos_freqs
    interpolation = 1.0 / (rope.factor * pos_freqs)
    context = rope.original_max_position_embeddings
    low = _correction_dim(rope.beta_fast, head_dim, rope.theta, context)
    high = _correction_dim(rope.beta_slow, head_dim, rope.theta, context)
    if rope.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # as HF: avoid a zero-width ramp
    ramp = ((torch.arange(head_dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrapolation_weight = 1 - ramp
    inv_freq = interpolation * (1 - extrapolation_weight) + extrapolation * extrapolation_weight
    return inv_freq, _attention_factor(rope)


def _attention_factor(rope: RopeConfig) -> float:
    if rope.attention_factor is not None:
        return rope.attention_factor

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if rope.mscale and rope.mscale_all_dim:
        return mscale(rope.factor, rope.mscale) / mscale(rope.factor, rope.mscale_all_dim)
    return mscale(rope.factor)


def cos_sin(
    positions: torch.Tensor, inv_freq: torch.Tensor, scale: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin `[..., head_dim/2]` for integer `positions`, computed in float32, cast to `dtype`."""
    freqs = positions.unsqueeze(-1).float() * inv_freq
    return (freqs.cos() * scale).to(dtype), (freqs.sin() * scale).to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Half-split (NeoX) rotation of `x [B,S,heads,D]` with `cos`/`sin [B,S,D/2]`."""
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)
    first, second = x.chunk(2, dim=-1)
    return torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)
