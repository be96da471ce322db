"""Write small GPT-OSS checkpoints in Hugging Face layout: deterministic random weights, bf16 or MXFP4
experts, and a `tokenizer.json` with the harmony special tokens trained with `tokenizers`.

Run as `python -m gptoss.tools.demo_model --out DIR [--experts mxfp4|bf16] [--head ...]`.
Weights are scaled so that every code path matters: clamped SwiGLU gates above the limit, sinks that
take real probability mass, and routers with clear top-k margins.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from gptoss.exporter import mxfp4
from gptoss.exporter.checkpoint import INDEX_FILE, SINGLE_FILE, all_specs
from gptoss.exporter.config import GptOssConfig, parse_config

HARMONY_SPECIAL_TOKENS = (
    "<|startoftext|>", "<|endoftext|>", "<|return|>", "<|constrain|>", "<|channel|>",
    "<|start|>", "<|end|>", "<|message|>", "<|call|>",
)  # fmt: skip

DEMO_CONFIG: dict[str, Any] = {
    "architectures": ["GptOssForCausalLM"],
    "model_type": "gpt_oss",
    "vocab_size": 512,
    "hidden_size": 128,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "num_local_experts": 8,
    "num_experts_per_tok": 4,
    "sliding_window": 16,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "rope_theta": 150000.0,
    "rope_scaling": {
        "rope_type": "yarn",
        "factor": 32.0,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "truncate": False,
        "original_max_position_embeddings": 128,
    },  # fmt: skip
    "swiglu_limit": 7.0,
    "attention_bias": True,
    "tie_word_embeddings": False,
    "initializer_range": 0.02,
    "torch_dtype": "bfloat16",
}

# Sizes beyond the demo, for benchmarks: `large` is ~60x the demo's compute per token.
PRESETS: dict[str, dict[str, Any]] = {
    "demo": {},
    "large": {
        "vocab_size": 2048, "hidden_size": 512, "intermediate_size": 512, "num_hidden_layers": 8,
        "num_attention_heads": 16, "num_key_value_heads": 4, "head_dim": 64, "num_local_experts": 16,
        "sliding_window": 64,
    },
}  # fmt: skip

_CORPUS = """\
GPT-OSS is a mixture of experts transformer with attention sinks and alternating sliding window layers.
The exporter turns a Hugging Face checkpoint into an ONNX graph with custom operators for attention and experts.
TensorRT plugins implement those operators in CUDA, and the runtime binds the key value cache in place.
Engineers deploy the engines in production services and compare every answer with the PyTorch model.
The quick brown fox jumps over the lazy dog while the compiler builds an engine for the graphics card.
Hello world! This is a small demo model with random weights, so its answers are not meant to make sense.
Numbers such as 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 42 and 2880 appear in configurations and benchmarks.
"""


def demo_config(expert_format: str = "mxfp4", num_labels: int = 0, **overrides: Any) -> dict[str, Any]:
    """The demo `config.json` content, with special-token ids from the demo tokenizer and `overrides`
    (an override of None removes that key)."""
    config = json.loads(json.dumps(DEMO_CONFIG)) | overrides
    config = {key: value for key, value in config.items() if value is not None}
    ids = {token: i for i, token in enumerate(HARMONY_SPECIAL_TOKENS)}
    config.setdefault("bos_token_id", ids["<|startoftext|>"])
    config.setdefault("pad_token_id", ids["<|endoftext|>"])
    config.setdefault("eos_token_id", [ids["<|return|>"], ids["<|endoftext|>"], ids["<|call|>"]])
    if expert_format == "mxfp4":
        config["quantization_config"] = {
            "quant_method": "mxfp4",
            "modules_to_not_convert": [
                "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head",
            ],
        }  # fmt: skip
    elif expert_format != "bf16":
        raise ValueError(f"unknown expert format {expert_format!r}, expected 'mxfp4' or 'bf16'")
    if num_labels:
        config["id2label"] = {str(i): f"label_{i}" for i in range(num_labels)}
        config["label2id"] = {f"label_{i}": i for i in range(num_labels)}
    return config


def random_weights(config: GptOssConfig, head: str = "causal-lm", seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic random tensors for every checkpoint name `config` and `head` need."""
    generator = torch.Generator().manual_seed(seed)
    h, i = config.hidden_size, config.intermediate_size

    def normal(shape: tuple[int, ...], std: float) -> torch.Tensor:
        return (torch.randn(shape, generator=generator) * std).to(torch.bfloat16)

    def packed(spec_shape: tuple[int, ...], fan_in: int, gain: float) -> torch.Tensor:
        if len(spec_shape) == 4:  # blocks: uniformly random E2M1 code pairs
            return torch.randint(0, 256, spec_shape, generator=generator, dtype=torch.uint8)
        scale = mxfp4.scale_for_std(gain / math.sqrt(fan_in))
        jitter = torch.randint(-1, 2, spec_shape, generator=generator)
        return (scale + jitter).to(torch.uint8)

    tensors = {}
    for spec in all_specs(config, head):
        if spec.dtypes == (torch.uint8,):
            gate_up = "gate_up" in spec.name
            tensors[spec.name] = packed(spec.shape, h if gate_up else i, 3.0 if gate_up else 1.0)
        elif spec.name.endswith("norm.weight"):
            tensors[spec.name] = (1.0 + normal(spec.shape, 0.2).float()).to(torch.bfloat16)
        else:
            tensors[spec.name] = normal(spec.shape, _std(spec.name, config))
    return tensors


def _std(name: str, config: GptOssConfig) -> float:
    """Standard deviation of a float tensor: gate/up large enough that some gates pass the clamp limit,
    sinks that take real probability mass, routers with clear top-k margins."""
    h, attn = config.hidden_size, config.num_attention_heads * config.head_dim
    rules = (
        ("embed_tokens.weight", 1.0), ("self_attn.sinks", 1.0), ("router.bias", 0.5), ("bias", 0.1),
        ("q_proj.weight", 1.5 / math.sqrt(h)), ("k_proj.weight", 1.5 / math.sqrt(h)),
        ("v_proj.weight", 1.0 / math.sqrt(h)), ("o_proj.weight", 1.0 / math.sqrt(attn)),
        ("router.weight", 2.0 / math.sqrt(h)), ("gate_up_proj", 3.0 / math.sqrt(h)),
        ("down_proj", 1.0 / math.sqrt(config.intermediate_size)),
    )  # fmt: skip
    return next((std for suffix, std in rules if name.endswith(suffix)), 2.0 / math.sqrt(h))


def train_tokenizer(vocab_size: int) -> Tokenizer:
    """A byte-level BPE tokenizer with the harmony special tokens at ids 0-8."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(HARMONY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    return tokenizer


def write_checkpoint(
    out_dir: str | Path, config: dict[str, Any], tensors: dict[str, torch.Tensor], shards: int = 1
) -> Path:
    """Write `config.json`, safetensors (one file, or `shards` files plus an index) and `tokenizer.json`.

    Everything is written into a temporary directory beside `out_dir` and renamed into place at the end.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    staging.chmod(0o755)
    try:
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        metadata = {"format": "pt"}
        if shards == 1:
            save_file(tensors, str(staging / SINGLE_FILE), metadata=metadata)
        else:
            names = sorted(tensors)
            weight_map = {}
            for shard in range(shards):
                file = f"model-{shard + 1:05d}-of-{shards:05d}.safetensors"
                part = {name: tensors[name] for name in names[shard::shards]}
                save_file(part, str(staging / file), metadata=metadata)
                weight_map |= dict.fromkeys(part, file)
            index = {
                "metadata": {"total_size": sum(t.nbytes for t in tensors.values())},
                "weight_map": weight_map,
            }
            (staging / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        train_tokenizer(config["vocab_size"]).save(str(staging / "tokenizer.json"))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def write_demo_model(
    out_dir: str | Path,
    *,
    expert_format: str = "mxfp4",
    head: str = "causal-lm",
    num_labels: int = 3,
    seed: int = 0,
    shards: int = 1,
    **overrides: Any,
) -> Path:
    """Write a complete demo checkpoint directory and return its path."""
    raw = demo_config(expert_format, num_labels if head != "causal-lm" else 0, **overrides)
    config = parse_config(raw)
    return write_checkpoint(out_dir, raw, random_weights(config, head, seed), shards)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory to write the checkpoint into")
    parser.add_argument("--experts", choices=("mxfp4", "bf16"), default="mxfp4", help="expert weight format")
    parser.add_argument("--head", choices=("causal-lm", "sequence-classification", "token-classification"),
                        default="causal-lm")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--size", choices=sorted(PRESETS), default="demo", help="model dimensions")
    args = parser.parse_args(argv)
    path = write_demo_model(
        args.out, expert_format=args.experts, head=args.head, seed=args.seed, shards=args.shards, **PRESETS[args.size]
    )
    print(f"wrote demo checkpoint to {path}")


if __name__ == "__main__":
    main()
