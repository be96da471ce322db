"""Engine benchmark: prefill and decode tokens/s, time to first token and peak memory per batch size;
with `vs_hf`, Hugging Face transformers runs the same prompts in the same process and the ratios are
printed (`gptoss-export bench DIR [--vs-hf]`). Numbers are ratios against a baseline measured in the same
run, never absolute goals.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptoss.runtime import Engine, GptOssError

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


def bench_engine(engine: Engine, batch: int, prompt_len: int, new_tokens: int, seed: int = 0) -> Measurement:
    """Prefill `batch` prompts of `prompt_len` tokens together, then decode `new_tokens` greedily."""
    prompts = _prompts(batch, prompt_len, engine.config.vocab_size, seed)
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
    return Measurement(
        engine.backend.name, batch, prompt_len, new_tokens, ttft, batch * prompt_len / ttft,
        batch * (new_tokens - 1) / max(decode, 1e-9), _peak_mib(),
    )  # fmt: skip


def bench_hf(checkpoint: Path, batch: int, prompt_len: int, new_tokens: int, vocab: int, seed: int = 0) -> Measurement:
    """The same prompts through Hugging Face transformers (float32, eager, its own KV cache)."""
    import torch

    from gptoss.tools.compare import load_hf

    model = load_hf(checkpoint)
    ids = torch.from_numpy(_prompts(batch, prompt_len, vocab, seed)).long()
    with torch.no_grad():
        start = time.perf_counter()
        out = model(ids, use_cache=True)
        ttft = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(new_tokens - 1):
            out = model(out.logits[:, -1:].argmax(-1), past_key_values=out.past_key_values, use_cache=True)
        decode = time.perf_counter() - start
    return Measurement(
        "huggingface", batch, prompt_len, new_tokens, ttft, batch * prompt_len / ttft,
        batch * (new_tokens - 1) / max(decode, 1e-9), _peak_mib(),
    )  # fmt: skip


def run(
    engine_dir: str | Path,
    *,
    backend: str | None = None,
    batch_sizes: list[int] = (1, 4),
    prompt_len: int = 64,
    new_tokens: int = 32,
    vs_hf: bool = False,
) -> list[tuple[Measurement, Measurement | None]]:
    """Measure the engine (and Hugging Face when `vs_hf`) for each batch size."""
    engine = Engine.load(engine_dir, backend)
    if engine.manifest.head != "causal-lm":
        raise GptOssError(f"{engine_dir}: bench measures causal-LM engines, this one is {engine.manifest.head}")
    if vs_hf and not engine.manifest.source_checkpoint:
        raise GptOssError(f"{engine_dir}: --vs-hf needs the source checkpoint recorded in the manifest")
    bench_engine(engine, 1, min(8, prompt_len), 2)  # warm-up: first-run allocations are not the engine's speed
    bandwidth = memory_read_bandwidth() if engine.backend.name in HOST_BACKENDS else None
    results = []
    for batch in batch_sizes:
        ours = bench_engine(engine, batch, prompt_len, new_tokens)
        if bandwidth:
            ours.limit_tok_s = decode_limit(engine, batch, prompt_len + new_tokens // 2, bandwidth)
        theirs = None
        if vs_hf:
            checkpoint = Path(engine.manifest.source_checkpoint)
            theirs = bench_hf(checkpoint, batch, prompt_len, new_tokens, engine.config.vocab_size)
        results.append((ours, theirs))
    return results


def table(results: list[tuple[Measurement, Measurement | None]]) -> str:
    header = f"{'backend':<14}{'batch':>6}{'prompt':>7}{'new':>5}{'TTFT ms':>10}{'prefill tok/s':>15}"
    header += f"{'decode tok/s':>14}{'peak MiB':>10}"
    lines = [header]
    for ours, theirs in results:
        for m in (ours, theirs):
            if m is not None:
                lines.append(
                    f"{m.name:<14}{m.batch:>6}{m.prompt_len:>7}{m.new_tokens:>5}{m.ttft_s * 1e3:>10.1f}"
                    f"{m.prefill_tok_s:>15.1f}{m.decode_tok_s:>14.1f}{m.peak_mib:>10.0f}"
                )
        if ours.limit_tok_s:
            lines.append(
                f"{'  limit':<14}{'':>43}{ours.limit_tok_s:>14.1f}   (memory bandwidth; decode at "
                f"{ours.decode_tok_s / ours.limit_tok_s:.0%} of it)"
            )
        if theirs is not None:
            ttft = theirs.ttft_s / ours.ttft_s
            prefill = ours.prefill_tok_s / theirs.prefill_tok_s
            decode = ours.decode_tok_s / theirs.decode_tok_s
            lines.append(
                f"{'  ratio':<14}{'':>18}{ttft:>9.2f}x{prefill:>14.2f}x{decode:>13.2f}x"
                "   (engine vs Hugging Face, higher is faster)"
            )
    return "\n".join(lines)
