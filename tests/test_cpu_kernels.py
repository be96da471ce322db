"""The CPU kernels of plugins/cpu (libgptoss_cpu_kernels.so) against the PyTorch reference ops and torch.

Every case runs on each instruction set the CPU supports ("avx512", "avx2", "scalar": the library's three builds of
the same kernels), through the binding tools/cpu_kernels.py, whose op calls pass the descriptors that
gptoss.tools.kernels derives for the CUDA library. The library is built here with CMake when it is missing (or
stale); the module is skipped only when cmake or a C++ compiler is absent.

Tolerances. Both sides multiply exactly (bf16/fp16/MXFP4 values are exact in float32) and accumulate in float32;
they differ in summation order, and our exp is a polynomial within about 2 ulp of the reference's. Float32 results
therefore agree to about 1e-6 of the magnitudes summed: we allow 1e-5 of the largest reference magnitude (absolute,
for values that cancel) and 1e-5 relative. Half-precision outputs are that float32 result rounded once: half an ulp
from the rounded reference, or one ulp when the tiny float32 difference crosses a rounding boundary, so they must
agree to eps(dtype) relative and eps(dtype) * max|reference| absolute. Cache updates are copies: bit exact.
Results do not depend on the thread count (each output element is computed by one thread, in a fixed order).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator

import pytest
import torch
from torch.nn import functional as F

from gptoss.exporter import mxfp4, ops
from gptoss.tools import cpu_kernels, kernels

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@pytest.fixture(scope="module")
def lib():
    """The library, built (incrementally) into build/cpu; skipped without cmake or a C++ compiler."""
    if not shutil.which("cmake") or not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("cmake and a C++ compiler are needed to build plugins/cpu")
    return cpu_kernels.CpuKernels(cpu_kernels.build())


ISAS = ["avx512", "avx2", "scalar"]


@pytest.fixture(params=ISAS)
def isa(request: pytest.FixtureRequest, lib) -> Iterator[str]:
    """Each instruction set this CPU runs; the library's choice is restored afterwards."""
    default = lib.isa()
    try:
        lib.set_isa(request.param)
    except ValueError:
        pytest.skip(f"this CPU lacks {request.param}")
    yield request.param
    lib.set_isa(default)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    """`actual` against the float32/float64 `expected` with the tolerance of `dtype` (module doc)."""
    tol = 1e-5 if dtype == torch.float32 else torch.finfo(dtype).eps
    scale = max(float(expected.abs().max()), 1e-6)
    torch.testing.assert_close(actual.double(), expected.double(), rtol=tol, atol=tol * scale)


def rounded(shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator, std: float = 1.0) -> torch.Tensor:
    """Normal draws rounded to `dtype`."""
    return (torch.randn(shape, generator=gen) * std).to(dtype)


def single_threaded(lib, call):
    """`call()` run on one thread, then on the default count: the results must be identical."""
    lib.set_num_threads(1)
    try:
        first = call()
    finally:
        lib.set_num_threads(0)
    second = call()
    for a, b in zip(first if isinstance(first, tuple) else (first,), second if isinstance(second, tuple) else (second,),
                    strict=True):  # fmt: skip
        assert torch.equal(a, b), "results depend on the thread count"
    return second


def test_library_identity(lib) -> None:
    assert lib.version() == "1.0.0"
    assert lib.isa() in ISAS
    assert lib.num_threads() >= 1
    with pytest.raises(ValueError, match="unknown"):
        lib.set_isa("sse9")
    assert lib.read(torch.ones(1_000_003)) == 1_000_003.0  # sums of ones are exact below 2^24


# ---------------------------------------------------------------- linear


# With AMX (bf16 x bf16 on "avx512"), "decode" has whole 16-row tiles and a tail of 12 rows, "tiles" pairs and single
# tiles over 3 chunks of tokens, "token-chunks" a second task of tokens; K of "k-tail" is no multiple of 32.
@pytest.mark.parametrize(("tokens", "k", "n"), [(1, 2880, 300), (3, 100, 37), (40, 96, 48), (70, 64, 40)],
                         ids=["decode", "k-tail", "tiles", "token-chunks"])  # fmt: skip
@pytest.mark.parametrize(("x_dtype", "w_dtype", "y_dtype", "bias_dtype"), [
    ("bf16", "bf16", "bf16", "bf16"), ("bf16", "bf16", "fp32", None), ("fp32", "bf16", "fp32", "fp32"),
    ("fp16", "fp16", "fp16", "fp16"), ("fp32", "fp32", "bf16", "bf16"),
])  # fmt: skip
def test_linear(lib, isa, tokens, k, n, x_dtype, w_dtype, y_dtype, bias_dtype) -> None:
    gen = torch.Generator().manual_seed(tokens * k + n)
    x = rounded((tokens, k), DTYPES[x_dtype], gen)
    w = rounded((n, k), DTYPES[w_dtype], gen, std=k**-0.5)
    bias = rounded((n,), DTYPES[bias_dtype], gen) if bias_dtype else None
    y = single_threaded(lib, lambda: lib.linear(x, w, bias, out_dtype=DTYPES[y_dtype]))
    assert y.dtype == DTYPES[y_dtype]
    expected = F.linear(x.double(), w.double(), None if bias is None else bias.double())
    assert_close(y, expected, DTYPES[y_dtype])


def test_linear_keeps_leading_dims(lib) -> None:
    x, w = torch.randn(2, 3, 64), torch.randn(5, 64)
    assert_close(lib.linear(x, w), F.linear(x.double(), w.double()), torch.float32)


# ---------------------------------------------------------------- SinkAttention


class AttentionCase:
    """A KV cache driven through several calls, each checked against `ops.sink_attention`."""

    def __init__(self, lib, batch: int, heads: int, kv_heads: int, head_dim: int, window: int, capacity: int,
                 dtype: torch.dtype, in_place: bool, seed: int) -> None:  # fmt: skip
        self.lib, self.heads, self.kv_heads, self.head_dim, self.window = lib, heads, kv_heads, head_dim, window
        self.dtype, self.in_place = dtype, in_place
        self.gen = torch.Generator().manual_seed(seed)
        self.sinks = torch.randn(heads, generator=self.gen) * 2
        self.past = torch.zeros(batch, dtype=torch.int32)
        self.cache = rounded((batch, 2, kv_heads, capacity, head_dim), dtype, self.gen)  # garbage in empty slots

    def step(self, new_len: list[int], seq_len: int) -> None:
        batch, width = len(new_len), self.head_dim
        q = rounded((batch, seq_len, self.heads * width), self.dtype, self.gen)
        k, v = (rounded((batch, seq_len, self.kv_heads * width), self.dtype, self.gen) for _ in range(2))
        new = torch.tensor(new_len, dtype=torch.int32)
        args = (self.sinks, self.cache, self.past, new, self.heads, self.kv_heads, width, self.window, width**-0.5)
        expected_out, expected_cache = ops.sink_attention(q.float(), k.float(), v.float(), args[0],
                                                          args[1].float(), *args[2:])  # fmt: skip

        def call():
            cache = self.cache.clone()
            return self.lib.sink_attention(q, k, v, *args[:1], cache, *args[2:],
                                           kv_cache_out=cache if self.in_place else None)  # fmt: skip

        out, cache = single_threaded(self.lib, call)
        assert_close(out, expected_out, self.dtype)
        padded = torch.arange(seq_len).unsqueeze(0) >= new.unsqueeze(1)
        assert not out[padded].any(), "padded queries must output zeros"
        assert torch.equal(cache.float(), expected_cache), "cache update differs"
        self.cache = cache
        self.past += new


# (query heads, KV heads, head_dim, window): GQA groups of 1, 3 and 8 (and 12: two head tiles), a head_dim that is
# not a multiple of 16 (vector tails), windows below and above the sequence.
ATTENTION_SHAPES = [
    pytest.param(4, 4, 8, 0, id="full-g1-d8"),
    pytest.param(6, 2, 24, 5, id="window5-g3-d24"),
    pytest.param(8, 1, 64, 0, id="full-g8-d64"),
    pytest.param(24, 2, 16, 16, id="window16-g12-d16"),
]


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim", "window"), ATTENTION_SHAPES)
def test_sink_attention(lib, isa, heads, kv_heads, head_dim, window, dtype) -> None:
    # Right-padded rows (new_len 0 included) through two prefill chunks, decode steps and a chunk: small windows
    # wrap the ring several times, and a 20-token chunk overwrites slots that its own first queries read.
    in_place = heads % 2 == 0
    case = AttentionCase(lib, 3, heads, kv_heads, head_dim, window, window or 48, dtype, in_place, seed=heads)
    case.step([20, 7, 0], seq_len=20)
    case.step([9, 0, 17], seq_len=17)
    for new_len in ([1, 1, 1], [1, 0, 1], [0, 1, 1]):
        case.step(new_len, seq_len=1)
    case.step([2, 5, 3], seq_len=5)


def test_sink_attention_long_cache(lib, isa) -> None:
    # Hundreds of cached keys (many key blocks, each prefetching the next) on full and sliding layers.
    for window in (0, 128):
        case = AttentionCase(lib, 2, 16, 2, 64, window, window or 600, torch.bfloat16, True, seed=window)
        case.past = torch.tensor([590, 300], dtype=torch.int32)
        case.step([1, 1], seq_len=1)
        case.step([3, 9], seq_len=9)


@pytest.mark.parametrize(("heads", "kv_heads", "head_dim", "window", "capacity"), [
    (8, 3, 32, 0, 16), (8, 2, 12, 0, 16), (8, 2, 256, 0, 16), (8, 2, 32, 8, 16),
], ids=["heads-not-multiple", "head-dim-not-multiple-of-8", "head-dim-too-large", "capacity-not-window"])  # fmt: skip
def test_sink_attention_rejects_bad_shapes(lib, heads, kv_heads, head_dim, window, capacity) -> None:
    q, kv = torch.zeros(1, 1, heads * head_dim), torch.zeros(1, 1, kv_heads * head_dim)
    cache, ones = torch.zeros(1, 2, kv_heads, capacity, head_dim), torch.ones(1, dtype=torch.int32)
    with pytest.raises(kernels.KernelError, match="error 1$"):
        lib.sink_attention(q, kv, kv, torch.zeros(heads), cache, ones, ones, heads, kv_heads, head_dim, window, 1.0)


# ---------------------------------------------------------------- MoE


def moe_weights(experts: int, hidden: int, inter: int, weights: str, gen: torch.Generator) -> dict:
    """Random expert weights in the layout `ops.moe` takes: MXFP4 blocks + scales (every code), or floats."""
    result = {}
    for name, rows, cols in (("gate_up", 2 * inter, hidden), ("down", hidden, inter)):
        if weights == "mxfp4":
            blocks = torch.randint(0, 256, (experts, rows, cols // 32, 16), generator=gen, dtype=torch.uint8)
            scales = mxfp4.scale_for_std(cols**-0.5) + torch.randint(-2, 3, (experts, rows, cols // 32), generator=gen)
            result[f"{name}_weight"], result[f"{name}_scales"] = blocks, scales.to(torch.uint8)
        else:
            weight = torch.randn(experts, rows, cols, generator=gen) * cols**-0.5
            result[f"{name}_weight"], result[f"{name}_scales"] = weight.to(DTYPES[weights]), None
        result[f"{name}_bias"] = torch.randn(experts, rows, generator=gen) * 0.1
    return result


def routing(tokens: int, experts: int, top_k: int, dtype: torch.dtype, gen: torch.Generator):
    top_logits, ids = torch.randn(tokens, experts, generator=gen).topk(top_k, dim=-1)
    return ids.to(torch.int32), torch.softmax(top_logits, dim=-1).to(dtype)


# (tokens, hidden, intermediate, experts, top_k): decode of one row and of two (experts with one token, on digits in
# bf16 calls, next to experts with two in float32), a few tokens, and 300 tokens (two passes of the kernel, token
# chunks of 64 per expert); hidden 64 with intermediate 96 keeps H != I.
MOE_SHAPES = [(1, 64, 96, 8, 4), (2, 64, 96, 8, 4), (7, 96, 64, 6, 3), (300, 64, 32, 4, 2)]


@pytest.mark.parametrize(("weights", "dtype"), [("mxfp4", "bf16"), ("mxfp4", "fp32"), ("bf16", "bf16"),
                                                ("fp32", "fp16"), ("fp16", "fp32")])  # fmt: skip
@pytest.mark.parametrize(("tokens", "hidden", "inter", "experts", "top_k"), MOE_SHAPES,
                         ids=["decode", "decode2", "few", "passes"])  # fmt: skip
def test_moe(lib, isa, tokens, hidden, inter, experts, top_k, weights, dtype) -> None:
    gen = torch.Generator().manual_seed(tokens + hidden + len(weights))
    w = moe_weights(experts, hidden, inter, weights, gen)
    x = rounded((tokens, hidden), DTYPES[dtype], gen, std=2.0)
    ids, expert_weights = routing(tokens, experts, top_k, DTYPES[dtype], gen)
    args = (w["gate_up_weight"], w["gate_up_scales"], w["gate_up_bias"], w["down_weight"], w["down_scales"],
            w["down_bias"], 1.702, 7.0)  # fmt: skip
    out = single_threaded(lib, lambda: lib.moe(x, ids, expert_weights, *args))
    float_args = [a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
    expected = ops.moe(x.float(), ids, expert_weights.float(), *float_args)
    assert out.dtype == x.dtype
    assert_close(out, expected, DTYPES[dtype])


def test_moe_skips_unrouted_ids(lib) -> None:
    # Ids outside [0, E) contribute nothing: the same as slot weight 0 on any real expert.
    gen = torch.Generator().manual_seed(3)
    w = moe_weights(4, 64, 32, "mxfp4", gen)
    x = torch.randn(3, 64, generator=gen)
    ids = torch.tensor([[0, -1], [4, 2], [1, 3]], dtype=torch.int32)
    weights = torch.rand(3, 2, generator=gen)
    out = lib.moe(x, ids, weights, **w)
    routed = (ids >= 0) & (ids < 4)
    expected = ops.moe(x, torch.where(routed, ids, 0), torch.where(routed, weights, 0.0), **w)
    assert_close(out, expected, torch.float32)


def test_moe_rejects_bad_shapes(lib) -> None:
    gen = torch.Generator().manual_seed(0)
    w = moe_weights(2, 48, 32, "bf16", gen)  # hidden 48: not a multiple of 32
    ids, weights = routing(1, 2, 1, torch.float32, gen)
    with pytest.raises(kernels.KernelError, match="error 1$"):
        lib.moe(torch.zeros(1, 48), ids, weights, **w)


def test_mxfp4_decoding_example(lib, isa) -> None:
    # docs/numerics.md: byte 0x2B with scale 124 decodes to -0.1875 then 0.125. As the only byte of gate row 0, with
    # x = e0 + 2 e1: gate = 0.0625; the up rows are zero, so h0 = gate * sigmoid(1.702 gate), and every down row
    # (code 2 = 1.0 on h0) outputs h0.
    hidden = inter = 32
    blocks = torch.zeros(1, 2 * inter, 1, 16, dtype=torch.uint8)
    blocks[0, 0, 0, 0] = 0x2B  # gate row 0: -0.1875 x0 + 0.125 x1
    scales = torch.full((1, 2 * inter, 1), 124, dtype=torch.uint8)
    down = torch.zeros(1, hidden, 1, 16, dtype=torch.uint8)
    down[0, :, 0, 0] = 0x02  # every output row: 1.0 * h0
    down_scales = torch.full((1, hidden, 1), 127, dtype=torch.uint8)
    x = torch.zeros(1, hidden)
    x[0, 0], x[0, 1] = 1.0, 2.0
    out = lib.moe(x, torch.zeros(1, 1, dtype=torch.int32), torch.ones(1, 1), blocks, scales,
                  torch.zeros(1, 2 * inter), down, down_scales, torch.zeros(1, hidden))  # fmt: skip
    gate = -0.1875 + 2 * 0.125
    expected = gate / (1 + math.exp(-1.702 * gate))
    assert_close(out, torch.full((1, hidden), expected, dtype=torch.float64), torch.float32)
