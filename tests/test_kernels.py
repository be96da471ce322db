"""The kernels of the C ABI (through gptoss.tools.kernels) against the PyTorch reference ops, on CPU and on CUDA.

Every case runs on two devices: "cpu" calls the kernel sources built for the host (libgptoss_kernels_host.so, see
docs/kernels-on-cpu.md) in the default `pytest` run; "cuda" calls the CUDA build on a GPU and is marked `gpu`
(`pytest -m gpu tests/test_kernels.py`). The reference runs on CPU in float32 on the very inputs the kernels get
(already rounded to the tested dtype). Outputs are pre-filled with NaN, so an element a kernel forgets to write fails
the comparison.

Tolerances: both sides accumulate in float32 and differ only in summation order and exp2 versus exp, about 1e-6
of the magnitudes involved, so float32 outputs must agree to 1e-5 relative (and 1e-5 of the largest output
magnitude, for values that cancel). Half-precision outputs are the float32 result rounded once: they may sit half an
ulp from the float32 reference, or one ulp when the tiny float32 difference crosses a rounding boundary, so they
must agree to one ulp of the output magnitude: eps(dtype) relative, eps(dtype) * max|reference| absolute.
Cache updates are copies and must be bit exact.
"""

from __future__ import annotations

import math

import pytest
import torch

from gptoss.exporter import mxfp4, ops
from gptoss.tools import kernels

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
HOST_LIBRARY = kernels.library_path("cpu")


@pytest.fixture(
    params=[
        pytest.param("cpu", marks=pytest.mark.skipif(not HOST_LIBRARY.is_file(), reason=f"{HOST_LIBRARY} not built")),
        pytest.param("cuda", marks=[pytest.mark.gpu,
                                    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]),
    ]
)  # fmt: skip
def device(request: pytest.FixtureRequest) -> str:
    """Where the kernels run: "cpu" (the host build) or "cuda"."""
    return request.param


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    """`actual` (kernel, any device) against the float32 `expected` with the tolerance of `dtype` (module doc)."""
    tol = 1e-5 if dtype == torch.float32 else torch.finfo(dtype).eps
    actual = actual.float().cpu()
    scale = max(float(expected.abs().max()), 1e-6)
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale)


def rounded(shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator, device: str,
            std: float = 1.0) -> torch.Tensor:  # fmt: skip
    """Fresh normal draws rounded to `dtype`, on `device`."""
    return (torch.randn(shape, generator=generator) * std).to(dtype).to(device)


def test_version(device: str) -> None:
    assert kernels.version(device) == "1.0.0"


# ---------------------------------------------------------------- SinkAttention


class AttentionCase:
    """A KV cache driven through several steps, checked against `ops.sink_attention` after each one."""

    def __init__(self, batch: int, heads: int, kv_heads: int, head_dim: int, window: int, capacity: int,
                 dtype: torch.dtype, in_place: bool, seed: int, device: str) -> None:  # fmt: skip
        self.heads, self.kv_heads, self.head_dim, self.window = heads, kv_heads, head_dim, window
        self.dtype, self.in_place, self.device = dtype, in_place, device
        self.gen = torch.Generator().manual_seed(seed)
        self.scale = 1.0 / math.sqrt(head_dim)
        self.sinks = (torch.randn(heads, generator=self.gen) * 2).to(device)
        self.past = torch.zeros(batch, dtype=torch.int32)
        # Garbage in the empty slots.
        self.cache = rounded((batch, 2, kv_heads, capacity, head_dim), dtype, self.gen, device)

    def step(self, new_len: list[int], seq_len: int) -> None:
        """One call with `seq_len` padded tokens per row, `new_len[b]` of them valid."""
        batch = len(new_len)
        q = rounded((batch, seq_len, self.heads * self.head_dim), self.dtype, self.gen, self.device)
        k = rounded((batch, seq_len, self.kv_heads * self.head_dim), self.dtype, self.gen, self.device)
        v = rounded((batch, seq_len, self.kv_heads * self.head_dim), self.dtype, self.gen, self.device)
        new = torch.tensor(new_len, dtype=torch.int32)
        expected_out, expected_cache = ops.sink_attention(
            q.float().cpu(), k.float().cpu(), v.float().cpu(), self.sinks.cpu(), self.cache.float().cpu(),
            self.past, new, self.heads, self.kv_heads, self.head_dim, self.window, self.scale,
        )  # fmt: skip

        cache_in = self.cache.clone()
        cache_out = cache_in if self.in_place else torch.full_like(cache_in, float("nan"))
        out = torch.full_like(q, float("nan"))
        result, _ = kernels.sink_attention(
            q, k, v, self.sinks, cache_in, self.past.to(self.device), new.to(self.device), self.heads, self.kv_heads,
            self.head_dim, self.window, self.scale, out=out, kv_cache_out=cache_out,
        )  # fmt: skip
        assert result is out
        assert_close(out, expected_out, self.dtype)
        padded = torch.arange(seq_len).unsqueeze(0) >= new.unsqueeze(1)  # [B, S]
        assert not out.cpu()[padded].any(), "padded queries must output zeros"
        assert torch.equal(cache_out.float().cpu(), expected_cache), "cache update differs"
        self.cache = cache_out
        self.past += new


# Windows below and above the sequence length; the last case has 16 query heads per KV head (two head tiles in the
# decode kernel) and head_dim 128, the first head_dim 24 (padded lanes).
ATTENTION_SHAPES = [
    pytest.param(4, 2, 24, 0, id="full-d24"),
    pytest.param(8, 2, 32, 8, id="window8-d32"),
    pytest.param(8, 1, 64, 64, id="window64-d64"),
    pytest.param(6, 3, 64, 0, id="full-g2"),
    pytest.param(32, 2, 128, 5, id="window5-g16-d128"),
]


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("in_place", [True, False], ids=["in-place", "out-of-place"])
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim", "window"), ATTENTION_SHAPES)
def test_sink_attention_prefill_then_decode(heads, kv_heads, head_dim, window, in_place, dtype, device) -> None:
    # Rows with different new_len (0 included) through two prefill chunks and decode steps; 47 tokens at most,
    # so small windows wrap the ring several times and a 33-token chunk overwrites slots earlier queries read.
    seed = heads * head_dim + window
    case = AttentionCase(3, heads, kv_heads, head_dim, window, window or 48, dtype, in_place, seed=seed, device=device)
    case.step([33, 7, 0], seq_len=33)
    case.step([9, 0, 21], seq_len=21)
    for new_len in ([1, 1, 1], [1, 0, 1], [0, 1, 1], [1, 1, 1]):
        case.step(new_len, seq_len=1)
    case.step([2, 5, 3], seq_len=5)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(16, 2, 64), (64, 8, 64), (4, 4, 128)])
def test_sink_attention_long_cache_decode(heads, kv_heads, head_dim, dtype, device) -> None:
    # Long full-attention caches: the decode kernel splits the keys across blocks and merges the splits.
    capacity = 4096
    case = AttentionCase(4, heads, kv_heads, head_dim, 0, capacity, dtype, in_place=True, seed=7, device=device)
    case.past = torch.tensor([4095, 1, 2500, 0], dtype=torch.int32)
    case.step([1, 1, 1, 0], seq_len=1)
    case.step([0, 1, 1, 1], seq_len=1)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_sink_attention_long_prefill(dtype, device) -> None:
    # Several query tiles and key tiles per row, sliding and full, with a row that starts from a cached prefix.
    for window in (0, 128):
        case = AttentionCase(2, 8, 2, 64, window, window or 512, dtype, in_place=True, seed=window + 1, device=device)
        case.step([300, 77], seq_len=300)
        case.step([150, 211], seq_len=211)


@pytest.mark.parametrize(
    ("heads", "kv_heads", "head_dim", "window", "capacity"),
    [
        pytest.param(8, 3, 32, 0, 16, id="heads-not-multiple"),
        pytest.param(8, 2, 12, 0, 16, id="head-dim-not-multiple-of-8"),
        pytest.param(8, 2, 256, 0, 16, id="head-dim-too-large"),
        pytest.param(8, 2, 32, 8, 16, id="capacity-not-window"),
    ],
)
def test_sink_attention_rejects_bad_shapes(heads, kv_heads, head_dim, window, capacity, device) -> None:
    q = torch.zeros(1, 1, heads * head_dim, device=device)
    kv = torch.zeros(1, 1, kv_heads * head_dim, device=device)
    cache = torch.zeros(1, 2, kv_heads, capacity, head_dim, device=device)
    lengths = torch.ones(1, dtype=torch.int32, device=device)
    sinks = torch.zeros(heads, device=device)
    with pytest.raises(kernels.KernelError, match=r"gptoss_sink_attention failed with CUDA error 1\b"):
        kernels.sink_attention(q, kv, kv, sinks, cache, lengths, lengths, heads, kv_heads, head_dim, window, 1.0,
                               kv_cache_out=cache)  # fmt: skip


# ---------------------------------------------------------------- MoE


def make_moe_weights(experts: int, hidden: int, inter: int, weights: str, gen: torch.Generator) -> dict:
    """Random expert weights in the layout `ops.moe` takes: MXFP4 blocks + scales, or float tensors."""
    result = {}
    for name, rows, cols in (("gate_up", 2 * inter, hidden), ("down", hidden, inter)):
        if weights == "mxfp4":
            blocks = torch.randint(0, 256, (experts, rows, cols // 32, 16), generator=gen, dtype=torch.uint8)
            base = mxfp4.scale_for_std(1.0 / math.sqrt(cols))
            scales = base + torch.randint(-2, 3, (experts, rows, cols // 32), generator=gen)
            result[f"{name}_weight"], result[f"{name}_scales"] = blocks, scales.to(torch.uint8)
        else:
            weight = torch.randn(experts, rows, cols, generator=gen) / math.sqrt(cols)
            result[f"{name}_weight"], result[f"{name}_scales"] = weight.to(DTYPES[weights]), None
        result[f"{name}_bias"] = torch.randn(experts, rows, generator=gen) * 0.1
    return result


def check_moe(tokens: int, hidden: int, inter: int, experts: int, top_k: int, dtype: torch.dtype, weights: str,
              seed: int, device: str) -> None:  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    w = make_moe_weights(experts, hidden, inter, weights, gen)
    x = (torch.randn(tokens, hidden, generator=gen) * 2).to(dtype)
    logits = torch.randn(tokens, experts, generator=gen)
    top_logits, ids = logits.topk(top_k, dim=-1)
    expert_weights = torch.softmax(top_logits, dim=-1).to(dtype)
    ids = ids.to(torch.int32)
    alpha, limit = 1.702, 7.0

    def reference_weight(name: str) -> torch.Tensor:
        tensor = w[f"{name}_weight"]
        return tensor if w[f"{name}_scales"] is not None else tensor.float()

    expected = ops.moe(
        x.float(), ids, expert_weights.float(), reference_weight("gate_up"), w["gate_up_scales"], w["gate_up_bias"],
        reference_weight("down"), w["down_scales"], w["down_bias"], alpha, limit,
    )  # fmt: skip

    def dev(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device)

    out = torch.full((tokens, hidden), float("nan"), dtype=dtype, device=device)
    result = kernels.moe(
        dev(x), dev(ids), dev(expert_weights), dev(w["gate_up_weight"]), dev(w["gate_up_scales"]),
        dev(w["gate_up_bias"]), dev(w["down_weight"]), dev(w["down_scales"]), dev(w["down_bias"]), alpha, limit,
        out=out,
    )  # fmt: skip
    assert result is out
    assert_close(out, expected, dtype)


# (tokens, experts, top_k): decode sizes (one assignment per tile), prefill sizes (8-assignment tiles), and 600
# tokens (two passes of at most 512 tokens).
MOE_ROUTING = [(1, 8, 4), (3, 32, 4), (5, 4, 1), (37, 16, 2), (64, 32, 4), (600, 8, 4)]


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("weights", ["mxfp4", "fp32", "bf16"])
@pytest.mark.parametrize(("tokens", "experts", "top_k"), MOE_ROUTING)
def test_moe_matches_reference(tokens, experts, top_k, weights, dtype, device) -> None:
    check_moe(tokens, 128, 96, experts, top_k, dtype, weights, seed=tokens * experts + top_k, device=device)


@pytest.mark.parametrize("weights", ["mxfp4", "fp16"])
@pytest.mark.parametrize("tokens", [2, 40])
def test_moe_long_input_dimension(tokens, weights, device) -> None:
    # Hidden 1056 = 33 blocks: the gate_up input is staged in two 1024-element chunks, the second one partial.
    check_moe(tokens, 1056, 64, 8, 2, torch.bfloat16, weights, seed=tokens, device=device)


def test_moe_rejects_bad_shapes(device) -> None:
    # hidden_size not a multiple of 32.
    w = make_moe_weights(4, 64, 32, "fp32", torch.Generator().manual_seed(0))
    x = torch.zeros(2, 48, device=device)
    ids = torch.zeros(2, 1, dtype=torch.int32, device=device)
    gate_up = w["gate_up_weight"][:, :, :48].contiguous().to(device)
    down = w["down_weight"][:, :48].contiguous().to(device)
    with pytest.raises(kernels.KernelError, match=r"gptoss_moe failed with CUDA error 1\b"):
        kernels.moe(x, ids, torch.ones(2, 1, device=device), gate_up, None, w["gate_up_bias"].to(device), down, None,
                    w["down_bias"][:, :48].contiguous().to(device), 1.702, 7.0)  # fmt: skip
