"""Memory-bandwidth benchmark of the decode kernels at gpt-oss-20b sizes (needs an NVIDIA GPU and the built library).

Times the SinkAttention decode kernel (64 query heads over 8 KV heads of 64 dims, bf16; a 128-token ring and full
caches of 4096 and 32768 tokens) and the MoE decode path (hidden 2880, intermediate 2880, top-4 of 32 MXFP4 experts)
for several batch sizes. Each timing replays a CUDA graph of many calls between two CUDA events, so Python and
launch overhead are not counted. Bandwidth = bytes the kernels must move / time: for attention the cache slots each
row actually visits (keys and values) plus q and out; for MoE the packed blocks, scales and biases of the experts
actually selected plus hidden and out. Next to it: a device-to-device copy moving as many bytes (half read, half
written) measured in the same run, and the ratio of the two. The MoE calls cycle through several routings so that
consecutive calls touch different experts; cases marked "L2" move less than the L2 cache holds, so repeated calls
may be served from L2 rather than from memory.

Run as `python -m gptoss.tools.bench_kernels [--batch 1 8 32 64] [--calls 20]`.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from gptoss.tools import kernels

HEADS, KV_HEADS, HEAD_DIM, WINDOW = 64, 8, 64, 128
HIDDEN, INTERMEDIATE, EXPERTS, TOP_K = 2880, 2880, 32, 4
ROUTINGS = 8  # distinct routings the MoE calls cycle through


def time_calls(fn: Callable[[int], None], calls: int, repeats: int = 5) -> float:
    """Seconds per call of fn(i), i = 0..calls-1, captured once in a CUDA graph and replayed `repeats` times."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for i in range(calls):  # warm-up outside the capture (lazy module loading, allocator)
            fn(i)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(calls):
            fn(i)
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / (repeats * calls)


def copy_seconds(nbytes: int, calls: int) -> float:
    """Seconds of a device-to-device copy that reads nbytes / 2 and writes nbytes / 2."""
    import torch

    half = max(nbytes // 2, 1)
    src = torch.empty(half, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return time_calls(lambda _: dst.copy_(src), calls)


@dataclass(frozen=True)
class Row:
    """One timed case: the kernel's bandwidth and that of a copy of as many bytes, measured in the same run."""

    case: str
    batch: int
    us_per_call: float
    mb_per_call: float
    gb_per_s: float
    copy_gb_per_s: float
    in_l2: bool

    @property
    def ratio(self) -> float:
        return self.gb_per_s / self.copy_gb_per_s

    def line(self) -> str:
        return (
            f"{self.case:<22} {self.batch:>5} {self.us_per_call:>9.1f} {self.mb_per_call:>10.2f} {self.gb_per_s:>9.0f} "
            f"{self.copy_gb_per_s:>9.0f} {self.ratio:>6.2f} {'L2' if self.in_l2 else ''}"
        )


HEADER = f"{'case':<22} {'batch':>5} {'us/call':>9} {'MB/call':>10} {'GB/s':>9} {'copy GB/s':>9} {'ratio':>6}"


def _row(name: str, batch: int, nbytes: int, seconds: float, calls: int, l2_bytes: int) -> Row:
    copy = copy_seconds(nbytes, calls)
    return Row(name, batch, seconds * 1e6, nbytes / 1e6, nbytes / seconds / 1e9, nbytes / copy / 1e9, nbytes < l2_bytes)


def bench_attention(batch: int, capacity: int, window: int, calls: int, l2_bytes: int) -> Row:
    """Decode step with every row at the end of its cache (sliding: a full ring)."""
    import torch

    dtype, elem = torch.bfloat16, 2
    past = 4096 if window else capacity - 1
    q = torch.randn(batch, 1, HEADS * HEAD_DIM, device="cuda", dtype=dtype)
    k = torch.randn(batch, 1, KV_HEADS * HEAD_DIM, device="cuda", dtype=dtype)
    v = torch.randn_like(k)
    sinks = torch.randn(HEADS, device="cuda")
    cache = torch.randn(batch, 2, KV_HEADS, capacity, HEAD_DIM, device="cuda", dtype=dtype)
    past_len = torch.full((batch,), past, dtype=torch.int32, device="cuda")
    new_len = torch.ones(batch, dtype=torch.int32, device="cuda")
    out = torch.empty_like(q)
    arguments = (q, k, v, sinks, cache, past_len, new_len, HEADS, KV_HEADS, HEAD_DIM, window, 0.125)
    size = kernels.sink_attention.workspace_size(*arguments)
    workspace = torch.empty(max(size, 1), dtype=torch.uint8, device="cuda")

    def step(_: int) -> None:
        kernels.sink_attention(*arguments, out=out, kv_cache_out=cache, workspace=workspace)

    keys = min(past + 1, window) if window else past + 1
    nbytes = batch * (2 * KV_HEADS * keys * HEAD_DIM + 2 * HEADS * HEAD_DIM) * elem
    name = f"attention w{window}" if window else f"attention full {capacity}"
    return _row(name, batch, nbytes, time_calls(step, calls), calls, l2_bytes)


def bench_moe(batch: int, calls: int, l2_bytes: int) -> Row:
    """MoE of `batch` decode tokens with MXFP4 experts, cycling through ROUTINGS random routings."""
    import torch

    dtype, elem = torch.bfloat16, 2
    blocks_up = torch.randint(0, 256, (EXPERTS, 2 * INTERMEDIATE, HIDDEN // 32, 16), dtype=torch.uint8, device="cuda")
    scales_up = torch.randint(118, 124, (EXPERTS, 2 * INTERMEDIATE, HIDDEN // 32), dtype=torch.uint8, device="cuda")
    blocks_down = torch.randint(0, 256, (EXPERTS, HIDDEN, INTERMEDIATE // 32, 16), dtype=torch.uint8, device="cuda")
    scales_down = torch.randint(118, 124, (EXPERTS, HIDDEN, INTERMEDIATE // 32), dtype=torch.uint8, device="cuda")
    bias_up = torch.randn(EXPERTS, 2 * INTERMEDIATE, device="cuda")
    bias_down = torch.randn(EXPERTS, HIDDEN, device="cuda")
    hidden = torch.randn(batch, HIDDEN, device="cuda", dtype=dtype)
    routings = [torch.rand(batch, EXPERTS, device="cuda").topk(TOP_K, dim=-1).indices.int() for _ in range(ROUTINGS)]
    expert_weights = torch.full((batch, TOP_K), 1.0 / TOP_K, device="cuda", dtype=dtype)
    out = torch.empty_like(hidden)
    weights = (blocks_up, scales_up, bias_up, blocks_down, scales_down, bias_down)
    size = kernels.moe.workspace_size(hidden, routings[0], expert_weights, *weights)
    workspace = torch.empty(size, dtype=torch.uint8, device="cuda")

    def step(i: int) -> None:
        kernels.moe(hidden, routings[i % ROUTINGS], expert_weights, *weights, out=out, workspace=workspace)

    per_expert = sum(t[0].numel() * t.element_size() for t in (blocks_up, scales_up, blocks_down, scales_down))
    per_expert += (2 * INTERMEDIATE + HIDDEN) * 4  # biases
    calls = math.ceil(calls / ROUTINGS) * ROUTINGS
    touched = sum(len(torch.unique(ids)) for ids in routings) / ROUTINGS
    nbytes = int(touched * per_expert) + 2 * batch * HIDDEN * elem
    return _row("moe mxfp4", batch, nbytes, time_calls(step, calls), calls, l2_bytes)


def run(batches: list[int], calls: int) -> Iterator[Row]:
    """Every case at every batch size, as it is measured."""
    import torch

    l2_bytes = torch.cuda.get_device_properties(0).L2_cache_size
    for batch in batches:
        yield bench_attention(batch, WINDOW, WINDOW, calls, l2_bytes)
        for capacity in (4096, 32768):
            yield bench_attention(batch, capacity, 0, calls, l2_bytes)
        yield bench_moe(batch, calls, l2_bytes)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32, 64], help="decode batch sizes")
    parser.add_argument("--calls", type=int, default=20, help="calls captured per CUDA graph")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("bench_kernels needs an NVIDIA GPU: torch.cuda.is_available() is False", file=sys.stderr)
        return 1
    try:
        print(f"gptoss kernels {kernels.version()} on {torch.cuda.get_device_name()}")
    except kernels.KernelError as err:
        print(err, file=sys.stderr)
        return 1
    print(HEADER)
    for row in run(args.batch, args.calls):
        print(row.line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
