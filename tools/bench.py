"""Engine benchmark: prefill and decode tokens/s, time to first token and peak memory per batch size, and, for
backends on the CPU, the decode tokens/s this machine's memory bandwidth allows. Peers (Hugging Face transformers,
ONNX Runtime GenAI: `tools/bench_peers.py`) run the same prompts on the engine's source checkpoint, each in a
process of its own, and the ratios are printed (`gptoss-export bench DIR [--vs-hf] [--vs-genai]`). Numbers are
ratios against a baseline measured in the same run, never absolute goals.
"""

from __future__ import annotations

import gc
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptoss.runtime import Engine, GptOssError
from gptoss.tools import bench_peers

HOST_BACKENDS = ("onnxruntime", "torch", "cpu")  # run on the CPU: the host's memory bandwidth bounds them


@dataclass
class Measurement:
    name: str
    batch: int
    prompt_len: int
    new_tokens: int
    ttft_s: float
    prefill_tok_s: float
    decode_tok_s: float
    peak_mib: float
    limit_tok_s: float | None = None  # decode tokens/s the memory bandwidth allows (bandwidth / bytes per step)
    repeats: tuple[float, ...] = ()  # with --repeat: decode / limit of every run, this one the median

    @property
    def limit_fraction(self) -> float | None:
        return self.decode_tok_s / self.limit_tok_s if self.limit_tok_s else None

    @classmethod
    def of(cls, name: str, prompts: np.ndarray, new_tokens: int, ttft_s: float, decode_s: float, peak_mib: float):
        """From the prefill time of `prompts` [batch, length] and the time of the `new_tokens - 1` steps after it."""
        batch, length = prompts.shape
        decode = batch * (new_tokens - 1) / max(decode_s, 1e-9)
        return cls(name, batch, length, new_tokens, ttft_s, batch * length / ttft_s, decode, peak_mib)


def _peak_mib() -> float:
    """Peak resident memory of this process so far (MiB); CUDA backends add torch's peak device memory."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        import torch

        if torch.cuda.is_available():
            peak += torch.cuda.max_memory_allocated() / 2**20
    except ImportError:
        pass
    return peak


def memory_read_bandwidth(gib: int = 1) -> float | None:
    """Bytes/s this machine reads from memory on all cores (best of 3 streaming reads of `gib` GiB through the CPU
    kernels' `gptoss_cpu_read`); None when the CPU kernels are not built."""
    import torch

    from gptoss.tools.cpu_kernels import BUILD_DIR, LIBRARY_NAME, CpuKernels

    if not (BUILD_DIR / LIBRARY_NAME).is_file():
        return None
    kernels, data = CpuKernels(BUILD_DIR / LIBRARY_NAME), torch.ones(gib << 28)
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        kernels.read(data)
        seconds.append(time.perf_counter() - start)
    return data.numel() * 4 / min(seconds)


def probe_bandwidth() -> float | None:
    """`memory_read_bandwidth()` measured by a process of its own, so that its buffer stays out of this process's
    peak memory; None when the CPU kernels are not built."""
    code = "from gptoss.tools.bench import memory_read_bandwidth; print(memory_read_bandwidth())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    value = done.stdout.strip()
    return float(value) if done.returncode == 0 and value != "None" else None


def decode_limit(engine: Engine, batch: int, cached: int, bandwidth: float) -> float:
    """Decode tokens/s at `bandwidth` bytes/s: the bytes one step reads in the engine's precision (weights used,
    experts selected, cache), from the model's shapes on the meta device."""
    import torch

    from gptoss.exporter.loading import empty_model
    from gptoss.runtime.contract import precision
    from gptoss.tools.bench_decode import step_bytes

    model = empty_model(engine.config, "causal-lm", getattr(torch, precision(engine.manifest.precision).name))
    return batch * bandwidth / step_bytes(model, engine.config, batch, cached)


def _prompts(batch: int, prompt_len: int, vocab: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(9, vocab, size=(batch, prompt_len), dtype=np.int32)


def bench_engine(engine: Engine, prompts: np.ndarray, new_tokens: int) -> Measurement:
    """Prefill `prompts` [batch, length] together, then decode `new_tokens` greedily."""
    batch, prompt_len = prompts.shape
    if batch > engine.manifest.max_batch or prompt_len + new_tokens > engine.manifest.max_seq_len:
        raise GptOssError(f"batch {batch} x {prompt_len + new_tokens} tokens exceeds this engine's limits")
    with engine.exclusive_rows(batch) as rows:
        taken = [rows.acquire() for _ in range(batch)]
        start = time.perf_counter()
        logits = rows.step({row: prompts[i].tolist() for i, row in enumerate(taken)})
        ttft = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(new_tokens - 1):
            logits = rows.step({row: [int(logits[row].argmax())] for row in taken})
        decode = time.perf_counter() - start
    return Measurement.of(engine.backend.name, prompts, new_tokens, ttft, decode, _peak_mib())


def _measure(engine: Engine, prompts: np.ndarray, new_tokens: int) -> Measurement:
    """`bench_engine`, with the bandwidth limit for backends on the CPU. The bandwidth of a shared machine drifts
    within a minute: it is read right before and right after the run."""
    before = probe_bandwidth() if engine.backend.name in HOST_BACKENDS else None
    measurement = bench_engine(engine, prompts, new_tokens)
    after = before and probe_bandwidth()
    if before and after:
        batch, prompt_len = prompts.shape
        measurement.limit_tok_s = decode_limit(engine, batch, prompt_len + new_tokens // 2, (before + after) / 2)
    return measurement


def run(
    engine_dir: str | Path,
    *,
    backend: str | None = None,
    batch_sizes: list[int] = (1, 4),
    prompt_len: int = 64,
    new_tokens: int = 32,
    peers: list[str] = (),
    repeat: int = 1,
) -> list[list[Measurement]]:
    """For each batch size: the engine's measurement, then each peer's (`bench_peers.PEERS`) on the engine's source
    checkpoint. The engine runs first, in this process, and is released before the peers run in theirs. With
    `repeat` > 1 the engine runs that many times per batch size and its measurement is the run at the median
    fraction of its bandwidth limit (or of decode speed where there is no limit), every run's fraction kept."""
    if repeat < 1:
        raise GptOssError(f"--repeat must be at least 1, got {repeat}")
    engine = Engine.load(engine_dir, backend)
    if engine.manifest.head != "causal-lm":
        raise GptOssError(f"{engine_dir}: bench measures causal-LM engines, this one is {engine.manifest.head}")
    if peers and not engine.manifest.source_checkpoint:
        raise GptOssError(
            f"{engine_dir}: comparing with {', '.join(peers)} needs the source checkpoint in the manifest"
        )
    prompts = [_prompts(batch, prompt_len, engine.config.vocab_size, seed=0) for batch in batch_sizes]
    bench_engine(engine, prompts[0][:1, :8], 2)  # warm-up: first-run allocations are not the engine's speed
    ours = []
    for batch in prompts:
        runs = [_measure(engine, batch, new_tokens) for _ in range(repeat)]
        runs.sort(key=lambda m: m.limit_fraction or m.decode_tok_s)
        median = runs[(len(runs) - 1) // 2]
        if repeat > 1 and median.limit_tok_s:
            median.repeats = tuple(m.limit_fraction for m in runs)
        ours.append(median)
    checkpoint = Path(engine.manifest.source_checkpoint or ".")
    del engine
    gc.collect()
    results = [[measurement] for measurement in ours]
    for peer in peers:
        timings = bench_peers.measure(peer, checkpoint, prompts, new_tokens)
        for row, batch, times in zip(results, prompts, timings, strict=True):
            row.append(Measurement.of(peer, batch, new_tokens, **times))
    return results


def table(results: list[list[Measurement]]) -> str:
    """One line per measurement; under each batch's engine line its bandwidth limit and its ratio to each peer."""
    header = f"{'backend':<14}{'batch':>6}{'prompt':>7}{'new':>5}{'TTFT ms':>10}{'prefill tok/s':>15}"
    lines = [header + f"{'decode tok/s':>14}{'peak MiB':>10}"]
    for ours, *peers in results:
        for m in (ours, *peers):
            lines.append(
                f"{m.name:<14}{m.batch:>6}{m.prompt_len:>7}{m.new_tokens:>5}{m.ttft_s * 1e3:>10.1f}"
                f"{m.prefill_tok_s:>15.1f}{m.decode_tok_s:>14.1f}{m.peak_mib:>10.0f}"
            )
        if ours.limit_tok_s:
            lines.append(
                f"{'  limit':<14}{'':>43}{ours.limit_tok_s:>14.1f}   (memory bandwidth; decode at "
                f"{ours.limit_fraction:.0%} of it)"
            )
        if ours.repeats:
            fractions = " ".join(f"{f:.0%}" for f in ours.repeats)
            lines.append(f"{'  repeats':<14}{'':>43}{'':>14}   ({len(ours.repeats)} runs at {fractions} of their"
                         f" limits; the median one above)")  # fmt: skip
        for peer in peers:
            ttft = peer.ttft_s / ours.ttft_s
            prefill = ours.prefill_tok_s / peer.prefill_tok_s
            decode = ours.decode_tok_s / peer.decode_tok_s
            lines.append(
                f"{'  ratio':<14}{'':>18}{ttft:>9.2f}x{prefill:>14.2f}x{decode:>13.2f}x"
                f"   (engine vs {peer.name}, higher is faster)"
            )
    return "\n".join(lines)
