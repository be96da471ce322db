"""MXFP4 (OCP microscaling FP4 E2M1 with E8M0 block-32 scales), as GPT-OSS stores its experts.

Layout (docs/numerics.md): `blocks [..., G, 16]` uint8 holds 32 elements per block `g` along the
last (input) axis, element `32g+2j` in the low nibble of byte `j` and `32g+2j+1` in the high nibble;
`scales [..., G]` uint8 holds the exponent `2^(s-127)` of each block.
"""

from __future__ import annotations

import torch

from gptoss.runtime.op_signatures import MXFP4_BLOCK_BYTES

SCALE_BIAS = 127

# FP4 E2M1 code -> value (sign | 2-bit exponent, bias 1 | 1-bit mantissa; subnormal at exponent 0).
FP4_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


def dequantize(blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Expand `blocks [..., G, 16]` and `scales [..., G]` into `[..., G*32]` values of `dtype`.

    Exact in float32 and bfloat16: every E2M1 value times a power of two is representable.
    """
    if blocks.dtype != torch.uint8 or scales.dtype != torch.uint8:
        raise TypeError(f"MXFP4 blocks and scales must be uint8, got {blocks.dtype} and {scales.dtype}")
    if blocks.shape[:-1] != scales.shape or blocks.shape[-1] != MXFP4_BLOCK_BYTES:
        raise ValueError(
            f"MXFP4 blocks {tuple(blocks.shape)} do not match scales {tuple(scales.shape)} "
            f"(expected blocks [..., G, {MXFP4_BLOCK_BYTES}] and scales [..., G])"
        )
    lut = torch.tensor(FP4_VALUES, dtype=torch.float32, device=blocks.device)
    low = lut[(blocks & 0x0F).long()]
    high = lut[(blocks >> 4).long()]
    values = torch.stack((low, high), dim=-1).flatten(-2)  # [..., G, 32]
    exponents = scales.to(torch.int32) - SCALE_BIAS
    values = torch.ldexp(values, exponents.unsqueeze(-1).to(torch.float32))
    return values.flatten(-2).to(dtype)


def scale_for_std(target_std: float) -> int:
    """E8M0 scale byte that gives uniformly random E2M1 codes roughly the standard deviation `target_std`."""
    rms_of_codes = (sum(v * v for v in FP4_VALUES) / len(FP4_VALUES)) ** 0.5
    exponent = torch.tensor(target_std / rms_of_codes).log2().round().int().item()
    return SCALE_BIAS + int(exponent)
