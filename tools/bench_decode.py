"""End-to-end decode speed of the `cuda` backend at real GPT-OSS sizes, with random weights made on the GPU.

Builds a preset's model (gpt-oss-20b: 24 layers, 32 MXFP4 experts, bf16) directly in GPU memory, prefills
`prompt_len` random tokens per row, then times decode steps as generation runs them: a CUDA-graph replay of the
step, the logits copied to the host and the next token chosen there. Next to the measured tokens/s: the limit the
GPU's memory bandwidth puts on them. A decode step must read the dense weights it uses (attention, router, norms,
the output projection), the experts its tokens select (expected count for uniform routing) and the KV cache; at
the speed of a device-to-device copy measured in the same run, that takes `limit` seconds per step.

Run as `python -m gptoss.tools.bench_decode [--preset gpt-oss-20b] [--layers N] [--batch 1 8]`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gptoss.exporter.config import GptOssConfig, parse_config
from gptoss.tools.demo_model import hub_config


@dataclass(frozen=True)
class DecodeResult:
    preset: str
    layers: int
    batch: int
    prompt_len: int
    new_tokens: int
    tokens_per_s: float
    limit_tokens_per_s: float
    copy_gb_per_s: float

    @property
    def ratio(self) -> float:
        return self.tokens_per_s / self.limit_tokens_per_s

    def line(self) -> str:
        return (
            f"{self.preset + ':' + str(self.layers):<16} {self.batch:>5} {self.tokens_per_s:>10.1f} "
            f"{self.limit_tokens_per_s:>10.1f} {self.ratio:>6.2f} {self.copy_gb_per_s:>9.0f}"
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"ratio": self.ratio}


HEADER = f"{'model':<16} {'batch':>5} {'tokens/s':>10} {'limit':>10} {'ratio':>6} {'copy GB/s':>9}"


def random_model(config: GptOssConfig, device: str = "cuda") -> Any:
    """The causal-LM model of `config` in bf16 on `device`, with random weights drawn there: MXFP4 blocks random
    bytes, scales of about 2^-4, norms near 1, other floats N(0, 0.02)."""
    import torch

    from gptoss.exporter.loading import empty_model

    model = empty_model(config, "causal-lm", torch.bfloat16, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("_scales"):
                parameter.copy_(torch.randint(121, 124, parameter.shape, generator=generator, device=device))
            elif parameter.dtype == torch.uint8:
                parameter.copy_(torch.randint(0, 256, parameter.shape, generator=generator, device=device))
            elif name.endswith("norm.weight"):
                parameter.fill_(1.0)
            else:
                parameter.normal_(0.0, 0.02, generator=generator)
    return model


def step_bytes(model: Any, config: GptOssConfig, batch: int, cached: int) -> float:
    """Bytes one decode step of `batch` rows must read, `cached` tokens in each row's cache."""
    dense = expert = 0
    for name, parameter in model.named_parameters():
        nbytes = parameter.numel() * parameter.element_size()
        if ".experts." in name:
            expert += nbytes
        elif "embed_tokens" not in name:  # the embedding is read one row per token
            dense += nbytes
    experts, top_k = config.num_local_experts, config.num_experts_per_tok
    touched = experts * (1 - (1 - top_k / experts) ** batch)  # expected distinct experts per layer
    per_expert = expert / (config.num_hidden_layers * experts)
    elem = model.model.embed_tokens.weight.element_size()  # activations and caches are in the model's dtype
    cache = sum(
        2 * config.num_key_value_heads * min(cached, config.window_of(i) or cached) * config.head_dim * elem
        for i in range(config.num_hidden_layers)
    )
    return dense + config.num_hidden_layers * touched * per_expert + batch * (cache + config.hidden_size * elem)


def run(preset: str, layers: int | None, batches: list[int], prompt_len: int, new_tokens: int) -> list[DecodeResult]:
    """Decode speed for each batch size (one model, built once)."""
    from gptoss.runtime.backends.cuda import CudaBackend
    from gptoss.runtime.backends.torch import model_manifest
    from gptoss.runtime.engine import Engine
    from gptoss.tools.bench import bench_engine
    from gptoss.tools.bench_kernels import copy_seconds

    config = parse_config(hub_config(preset, **({"num_hidden_layers": layers} if layers else {})), source=preset)
    model = random_model(config)
    manifest = model_manifest(config, Path("."), precision="bf16", max_seq_len=prompt_len + new_tokens,
                              max_batch=max(batches))  # fmt: skip
    engine = Engine(manifest, CudaBackend(manifest, model=model), tokenizer=None)
    results = []
    for batch in batches:
        measured = bench_engine(engine, batch, prompt_len, new_tokens)
        nbytes = step_bytes(model, config, batch, prompt_len + new_tokens // 2)
        copy_gb_per_s = nbytes / copy_seconds(int(nbytes), calls=4) / 1e9
        limit = batch / (nbytes / (copy_gb_per_s * 1e9))
        results.append(DecodeResult(preset, config.num_hidden_layers, batch, prompt_len, new_tokens,
                                    measured.decode_tok_s, limit, copy_gb_per_s))  # fmt: skip
    return results


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="gpt-oss-20b", help="gpt-oss-20b or gpt-oss-120b")
    parser.add_argument("--layers", type=int, help="fewer layers than the preset's (default: all)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("bench_decode needs an NVIDIA GPU: torch.cuda.is_available() is False", file=sys.stderr)
        return 1
    print(HEADER)
    for result in run(args.preset, args.layers, args.batch, args.prompt_len, args.new_tokens):
        print(result.line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
