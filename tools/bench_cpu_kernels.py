"""Memory bandwidth of the CPU kernels at gpt-oss-20b shapes, next to the machine's read bandwidth.

    python -m gptoss.tools.bench_cpu_kernels [--repeat N] [--threads N] [--isa avx512|avx2|scalar]

Decode kernels (one token) read each weight byte once, so their speed is bytes read / time; each call reads weights
or caches that the previous calls did not touch (rotating through more memory than the last-level cache holds), and
goes through a prepared call (descriptor and pointers fixed, as a decode loop would keep them). The reference is
gptoss_cpu_read over 1 GiB, timed between the kernel's calls, so that both see the same machine: on a shared
machine the bandwidth drifts by tens of percent within a minute. Rates are medians (best in brackets). Prefill rows
print GFLOP/s instead, next to torch.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn import functional as F

from gptoss.exporter import mxfp4
from gptoss.tools import kernels
from gptoss.tools.cpu_kernels import BUILD_DIR, LIBRARY_NAME, CpuKernels, build

# gpt-oss-20b
HIDDEN, INTERMEDIATE, EXPERTS, TOP_K, VOCAB = 2880, 2880, 32, 4, 201088
HEADS, KV_HEADS, HEAD_DIM, WINDOW = 64, 8, 64, 128
ROTATION_BYTES = 768 << 20  # more than any last-level cache here: each call reads memory the last ones did not
LAYERS, CONTEXT = 4, 4096  # the decode step summed at the end: lm_head + 4 layers (about 1.6 GB), 4096 cached


def seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def timed(calls: list[Callable[[], object]], repeat: int) -> tuple[float, float]:
    """Median and best seconds of `repeat` calls taken in turn from `calls`, after one warm-up call."""
    calls[-1]()
    times = [seconds(calls[i % len(calls)]) for i in range(repeat)]
    return statistics.median(times), min(times)


def copies(make: Callable[[], torch.Tensor], nbytes: int) -> list[torch.Tensor]:
    """Enough independent tensors from `make` (nbytes each) to exceed ROTATION_BYTES."""
    return [make() for _ in range(max(1, -(-ROTATION_BYTES // nbytes)))]


class Report:
    """Rows of kernel rates, each next to the read bandwidth measured between its calls."""

    def __init__(self, lib: CpuKernels, repeat: int) -> None:
        self.repeat = repeat
        self.data = torch.ones(1 << 28)
        self.read = lambda: lib.read(self.data)
        self.decode: dict[str, tuple[float, float]] = {}  # row -> (median seconds, seconds at the read bandwidth)
        print(f"{'kernel':58s} {'GB/s [best]':>14s} {'read GB/s':>10s} {'ratio':>6s}")

    def bandwidth_row(self, name: str, nbytes: int, calls: list[Callable[[], object]]) -> None:
        """Times `calls` and gptoss_cpu_read alternately; prints the kernel's rate and its ratio to the read's."""
        calls[-1]()
        kernel, read = [], []
        for i in range(self.repeat):
            kernel.append(seconds(calls[i % len(calls)]))
            read.append(seconds(self.read))
        median, bandwidth = statistics.median(kernel), self.data.numel() * 4 / statistics.median(read)
        rate = f"{nbytes / median / 1e9:.2f} [{nbytes / min(kernel) / 1e9:.2f}]"
        print(f"{name:58s} {rate:>14s} {bandwidth / 1e9:10.2f} {nbytes / median / bandwidth:6.2f}")
        self.decode[name] = median, nbytes / bandwidth

    def step(self, parts: list[str]) -> None:
        """The decode step made of these rows (repeated names count again), against the read bandwidth."""
        taken, limit = (sum(self.decode[p][i] for p in parts) for i in range(2))
        print(f"decode step, {LAYERS} layers, {CONTEXT} cached (sum of the rows): {taken * 1e3:.1f} ms, "
              f"{limit * 1e3:.1f} ms at the read bandwidth: ratio {limit / taken:.2f}")  # fmt: skip

    @staticmethod
    def flops_row(name: str, flops: float, ours: tuple[float, float], theirs: tuple[float, float] | None) -> None:
        versus = f" (torch {flops / theirs[0] / 1e9:.1f})" if theirs else ""
        print(f"{name:58s} {flops / ours[0] / 1e9:9.1f} GFLOP/s{versus}")


def bench_linear(lib: CpuKernels, report: Report, name: str, n: int, k: int) -> str:
    weights = copies(lambda: torch.randn(n, k).bfloat16(), n * k * 2)
    bias = torch.randn(n).bfloat16()
    x, y = torch.randn(1, k).bfloat16(), torch.empty(1, n).bfloat16()
    row = f"bf16 linear {name} [{n}x{k}], 1 token"
    report.bandwidth_row(row, n * k * 2, [lib.prepared_linear(x, w, bias, y) for w in weights])
    report.bandwidth_row("  torch F.linear, same shape", n * k * 2, [lambda w=w: F.linear(x, w, bias) for w in weights])
    return row


def mxfp4_experts() -> dict[str, torch.Tensor]:
    """One layer of 32 random MXFP4 experts of gpt-oss-20b size (425 MB)."""
    scale = mxfp4.scale_for_std(0.02)

    def tensor(rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
        blocks = torch.randint(0, 256, (EXPERTS, rows, cols // 32, 16), dtype=torch.uint8)
        return blocks, torch.full((EXPERTS, rows, cols // 32), scale, dtype=torch.uint8)

    gate_up, gate_up_scales = tensor(2 * INTERMEDIATE, HIDDEN)
    down, down_scales = tensor(HIDDEN, INTERMEDIATE)
    return dict(gate_up_weight=gate_up, gate_up_scales=gate_up_scales,
                gate_up_bias=torch.zeros(EXPERTS, 2 * INTERMEDIATE), down_weight=down, down_scales=down_scales,
                down_bias=torch.zeros(EXPERTS, HIDDEN))  # fmt: skip


def bench_moe(lib: CpuKernels, report: Report) -> str:
    layers = [mxfp4_experts() for _ in range(2)]
    hidden, out = torch.randn(1, HIDDEN).bfloat16(), torch.empty(1, HIDDEN).bfloat16()
    weights = torch.full((1, TOP_K), 1 / TOP_K).bfloat16()
    groups = [torch.arange(g * TOP_K, (g + 1) * TOP_K, dtype=torch.int32).view(1, TOP_K)
              for g in range(EXPERTS // TOP_K)]  # fmt: skip
    calls = [lib.prepared(kernels.moe, hidden, ids, weights, out=out, **layer) for ids in groups for layer in layers]
    nbytes = TOP_K * sum(layers[0][name][0].numel() for name in ("gate_up_weight", "gate_up_scales",
                                                                   "down_weight", "down_scales"))  # fmt: skip
    row = f"MXFP4 MoE, 1 token, {TOP_K} of {EXPERTS} experts"
    report.bandwidth_row(row, nbytes, calls)
    binding = timed([lambda: lib.moe(hidden, groups[0], weights, **layers[0])], report.repeat)[0]
    print(f"  (the same call through the binding's lib.moe, unprepared: {binding * 1e3:.2f} ms)")
    return row


def bench_attention(lib: CpuKernels, report: Report, window: int) -> str:
    capacity = window or CONTEXT + 1
    caches = copies(lambda: torch.randn(1, 2, KV_HEADS, capacity, HEAD_DIM).bfloat16(),
                    2 * KV_HEADS * capacity * HEAD_DIM * 2)  # fmt: skip
    q, out = torch.randn(1, 1, HEADS * HEAD_DIM).bfloat16(), torch.empty(1, 1, HEADS * HEAD_DIM).bfloat16()
    k, v = (torch.randn(1, 1, KV_HEADS * HEAD_DIM).bfloat16() for _ in range(2))
    sinks = torch.zeros(HEADS)
    past, new = torch.tensor([CONTEXT], dtype=torch.int32), torch.ones(1, dtype=torch.int32)
    calls = [lib.prepared(kernels.sink_attention, q, k, v, sinks, cache, past, new, HEADS, KV_HEADS, HEAD_DIM,
                          window, HEAD_DIM**-0.5, out=out, kv_cache_out=cache) for cache in caches]  # in place
    nbytes = 2 * KV_HEADS * min(CONTEXT, capacity) * HEAD_DIM * 2  # the cached keys and values read
    row = f"sink attention decode, {f'window {window}' if window else 'full'}, {CONTEXT} cached, bf16"
    report.bandwidth_row(row, nbytes, calls)
    return row


def bench_prefill(lib: CpuKernels, report: Report, tokens: int, repeat: int) -> None:
    w = torch.randn(5120, HIDDEN).bfloat16()
    for rows in (4, tokens):  # torch's GEMM (oneDNN, AMX) overtakes ours between 4 and 8 tokens
        x = torch.randn(rows, HIDDEN).bfloat16()
        ours = timed([lambda x=x: lib.linear(x, w)], repeat)
        theirs = timed([lambda x=x: F.linear(x, w)], repeat)
        report.flops_row(f"bf16 linear [5120x{HIDDEN}], {rows} tokens", 2 * rows * w.numel(), ours, theirs)
    experts = mxfp4_experts()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, HIDDEN).bfloat16()
    ids = torch.stack([torch.randperm(EXPERTS, generator=gen)[:TOP_K] for _ in range(tokens)]).int()
    weights = torch.full((tokens, TOP_K), 1 / TOP_K).bfloat16()
    report.flops_row(f"MXFP4 MoE, {tokens} tokens, {TOP_K} of {EXPERTS} experts",
                     2 * tokens * TOP_K * 3 * HIDDEN * INTERMEDIATE,
                     timed([lambda: lib.moe(x, ids, weights, **experts)], repeat), None)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="threads of our kernels and of torch (0: default)")
    parser.add_argument("--isa", help="force an instruction set of our kernels")
    parser.add_argument("--library", type=Path, help=f"the library (default: build it into {BUILD_DIR})")
    args = parser.parse_args()
    lib = CpuKernels(args.library or build())
    if args.threads:
        lib.set_num_threads(args.threads)
        torch.set_num_threads(args.threads)
    if args.isa:
        lib.set_isa(args.isa)
    print(f"{LIBRARY_NAME} {lib.version()}: {lib.isa()}, {lib.num_threads()} threads; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    report = Report(lib, args.repeat)
    lm_head = bench_linear(lib, report, "lm_head", VOCAB, HIDDEN)
    qkv = bench_linear(lib, report, "q|k|v", (HEADS + 2 * KV_HEADS) * HEAD_DIM, HIDDEN)
    bench_linear(lib, report, "q", HEADS * HEAD_DIM, HIDDEN)
    o = bench_linear(lib, report, "o", HIDDEN, HEADS * HEAD_DIM)
    moe = bench_moe(lib, report)
    sliding, full = bench_attention(lib, report, WINDOW), bench_attention(lib, report, 0)
    # The LM head, then per layer q|k|v, attention (sliding and full layers alternate), o and the experts.
    report.step([lm_head] + LAYERS * [qkv, o, moe] + LAYERS // 2 * [sliding, full])
    bench_prefill(lib, report, 128, max(3, args.repeat // 4))


if __name__ == "__main__":
    main()
