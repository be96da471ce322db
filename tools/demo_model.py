"""Write GPT-OSS checkpoints in Hugging Face layout with deterministic random weights: small ones (bf16 or
MXFP4 experts) for tests and demos, and the hub's own gpt-oss-20b / gpt-oss-120b layout at real size.

Run as `python -m gptoss.tools.demo_model --out DIR [--experts mxfp4|bf16] [--head ...] [--size demo|large]`,
or `--preset gpt-oss-20b|gpt-oss-120b [--layers N]` for the hub layout (config keys, tensor names, shard names
and index, `generation_config.json`, a tokenizer with the o200k_harmony special-token ids).
Weights are scaled so that every code path matters: clamped SwiGLU gates above the limit, sinks that
take real probability mass, and routers with clear top-k margins.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from gptoss.exporter import mxfp4
from gptoss.exporter.checkpoint import SINGLE_FILE, TensorSpec, all_specs
from gptoss.exporter.config import GptOssConfig, default_layer_types, parse_config
from gptoss.exporter.tensor_stream import PlannedTensor
from gptoss.runtime.tokenizer import DEFAULT_STOP_TOKENS

from .checkpoint_writer import shard_files, split_by_size, staged_directory, write_shards

HARMONY_SPECIAL_TOKENS = (
    "<|startoftext|>", "<|endoftext|>", "<|return|>", "<|constrain|>", "<|channel|>",
    "<|start|>", "<|end|>", "<|message|>", "<|call|>",
)  # fmt: skip
# o200k_harmony: 199998 ordinary tokens, then special tokens up to the hub's vocab_size (unnamed ones are
# `<|reserved_N|>`). Smaller vocabularies put the special tokens at 0-8 instead.
HUB_VOCAB_SIZE = 201088
HUB_SPECIAL_IDS = {
    "<|startoftext|>": 199998, "<|endoftext|>": 199999, "<|return|>": 200002, "<|constrain|>": 200003,
    "<|channel|>": 200005, "<|start|>": 200006, "<|end|>": 200007, "<|message|>": 200008, "<|call|>": 200012,
}  # fmt: skip

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

MXFP4_QUANTIZATION = {
    "quant_method": "mxfp4",
    "modules_to_not_convert": [
        "model.layers.*.self_attn",
        "model.layers.*.mlp.router",
        "model.embed_tokens",
        "lm_head",
    ],
}

# The hub's config.json, shared by both sizes (the hub writes its keys sorted). `experts_per_token` and
# `initial_context_length` are leftovers of OpenAI's original config that transformers ignores; depth, experts,
# `layer_types` and `experts_per_token` come from the preset (`hub_config`).
HUB_CONFIG: dict[str, Any] = {
    "architectures": ["GptOssForCausalLM"],
    "attention_bias": True,
    "attention_dropout": 0.0,
    "eos_token_id": HUB_SPECIAL_IDS["<|return|>"],
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 2880,
    "initial_context_length": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 2880,
    "max_position_embeddings": 131072,
    "model_type": "gpt_oss",
    "num_attention_heads": 64,
    "num_experts_per_tok": 4,
    "num_key_value_heads": 8,
    "output_router_logits": False,
    "pad_token_id": HUB_SPECIAL_IDS["<|endoftext|>"],
    "quantization_config": MXFP4_QUANTIZATION,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "factor": 32.0,
        "original_max_position_embeddings": 4096,
        "rope_type": "yarn",
        "truncate": False,
    },  # fmt: skip
    "rope_theta": 150000,
    "router_aux_loss_coef": 0.9,
    "sliding_window": 128,
    "swiglu_limit": 7.0,
    "tie_word_embeddings": False,
    "transformers_version": "4.55.0.dev0",
    "use_cache": True,
    "vocab_size": HUB_VOCAB_SIZE,
}


@dataclass(frozen=True)
class HubPreset:
    """What differs between the hub's two checkpoints."""

    layers: int
    experts: int
    files: int  # safetensors files of the full-depth checkpoint (about 4-5 GB each)


HUB_PRESETS = {"gpt-oss-20b": HubPreset(24, 32, 3), "gpt-oss-120b": HubPreset(36, 128, 15)}
_PIECE = 1 << 22  # elements per piece of a large tensor drawn for the hub layout (8 MiB of bf16)
_HUB_BPE_SIZE = 1024  # ordinary tokens trained for the hub tokenizer (the small corpus yields fewer)
log = logging.getLogger(__name__)

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
    config = _without_nulls(_copy(DEMO_CONFIG) | overrides)
    for key, value in generation_defaults(config["vocab_size"]).items():
        config.setdefault(key, value)
    return _with_format_and_labels(config, expert_format, num_labels)


def hub_config(
    preset: str = "gpt-oss-20b", expert_format: str = "mxfp4", num_labels: int = 0, **overrides: Any
) -> dict[str, Any]:
    """The hub's `config.json` of `preset`, with `overrides` (None removes a key); `layer_types` follows
    `num_hidden_layers` and `experts_per_token` follows `num_experts_per_tok` unless overridden themselves."""
    if preset not in HUB_PRESETS:
        raise ValueError(f"unknown preset {preset!r}, expected one of {', '.join(HUB_PRESETS)}")
    shape = {"num_hidden_layers": HUB_PRESETS[preset].layers, "num_local_experts": HUB_PRESETS[preset].experts}
    config = _copy(HUB_CONFIG) | shape | overrides
    config.setdefault("layer_types", default_layer_types(config["num_hidden_layers"]))
    config.setdefault("experts_per_token", config["num_experts_per_tok"])
    return _with_format_and_labels(_without_nulls(config), expert_format, num_labels)


def special_token_ids(vocab_size: int) -> dict[str, int]:
    """Ids of the harmony special tokens in the tokenizer written for `vocab_size` (`train_tokenizer`)."""
    if vocab_size >= HUB_VOCAB_SIZE:
        return dict(HUB_SPECIAL_IDS)
    return {token: i for i, token in enumerate(HARMONY_SPECIAL_TOKENS)}


def generation_defaults(vocab_size: int) -> dict[str, Any]:
    """bos, eos and pad ids as the hub's generation_config.json sets them (eos: the runtime's default stops)."""
    ids = special_token_ids(vocab_size)
    return {
        "bos_token_id": ids["<|startoftext|>"],
        "eos_token_id": [ids[token] for token in DEFAULT_STOP_TOKENS],
        "pad_token_id": ids["<|endoftext|>"],
    }


def _copy(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(config))


def _without_nulls(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if value is not None}


def _with_format_and_labels(config: dict[str, Any], expert_format: str, num_labels: int) -> dict[str, Any]:
    """`config` with MXFP4 or bf16 experts declared, and `num_labels` classification labels when non-zero."""
    if expert_format == "mxfp4":
        config["quantization_config"] = _copy(MXFP4_QUANTIZATION)
    elif expert_format == "bf16":
        config.pop("quantization_config", None)
    else:
        raise ValueError(f"unknown expert format {expert_format!r}, expected 'mxfp4' or 'bf16'")
    if num_labels:
        config["id2label"] = {str(i): f"label_{i}" for i in range(num_labels)}
        config["label2id"] = {f"label_{i}": i for i in range(num_labels)}
    return config


@dataclass(frozen=True)
class _Rule:
    """How a tensor's values are drawn: `bytes` uniformly random (MXFP4 blocks: random E2M1 code pairs),
    `scale` an E8M0 byte with a jitter of -1, 0 or +1 (MXFP4 scales), or `normal` stored as bf16."""

    kind: Literal["bytes", "scale", "normal"]
    scale: int = 0
    mean: float = 0.0
    std: float = 1.0

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.kind == "normal" else torch.uint8

    def draw(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """Values of `shape`, taken from `generator`."""
        if self.kind == "bytes":  # eight bytes per draw, four times faster than one (sizes are multiples of 16)
            words = torch.randint(-(2**63), 2**63 - 1, (math.prod(shape) // 8,), generator=generator)
            return words.view(torch.uint8).view(shape)
        if self.kind == "scale":
            return (self.scale + torch.randint(-1, 2, shape, generator=generator)).to(torch.uint8)
        values = (torch.randn(shape, generator=generator) * self.std).to(torch.bfloat16)
        return (self.mean + values.float()).to(torch.bfloat16) if self.mean else values


def _rule(spec: TensorSpec, config: GptOssConfig) -> _Rule:
    """The distribution of one checkpoint tensor (see `_std` for the float tensors' scales)."""
    if spec.dtypes == (torch.uint8,):
        if len(spec.shape) == 4:
            return _Rule("bytes")
        gate_up = "gate_up" in spec.name
        fan_in, gain = (config.hidden_size, 3.0) if gate_up else (config.intermediate_size, 1.0)
        return _Rule("scale", scale=mxfp4.scale_for_std(gain / math.sqrt(fan_in)))
    if spec.name.endswith("norm.weight"):
        return _Rule("normal", mean=1.0, std=0.2)
    return _Rule("normal", std=_std(spec.name, config))


def random_weights(config: GptOssConfig, head: str = "causal-lm", seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic random tensors for every checkpoint name `config` and `head` need (all in memory)."""
    generator = torch.Generator().manual_seed(seed)
    return {spec.name: _rule(spec, config).draw(spec.shape, generator) for spec in all_specs(config, head)}


def planned_weights(config: GptOssConfig, head: str = "causal-lm", seed: int = 0) -> list[PlannedTensor]:
    """The tensors of `random_weights` (same distributions), drawn only when written, in pieces of at most `_PIECE`
    elements each seeded from (seed, tensor name, piece): deterministic whatever the number of threads or shards."""
    planned = []
    for spec in all_specs(config, head):
        rule, count = _rule(spec, config), math.prod(spec.shape)
        pieces = [
            partial(_draw_piece, rule, min(_PIECE, count - start), f"{seed}/{spec.name}/{start}")
            for start in range(0, count, _PIECE)
        ]
        planned.append(PlannedTensor(spec.name, rule.dtype, spec.shape, pieces))
    return planned


def _draw_piece(rule: _Rule, count: int, key: str) -> torch.Tensor:
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return rule.draw((count,), torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1))


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
    """A byte-level BPE tokenizer trained on a small corpus: the harmony special tokens at ids 0-8, or, for the
    hub's vocabulary size or more, at the o200k_harmony ids (`hub_tokenizer`)."""
    if vocab_size >= HUB_VOCAB_SIZE:
        return hub_tokenizer(vocab_size)
    return _trained(vocab_size, HARMONY_SPECIAL_TOKENS)


def hub_tokenizer(vocab_size: int = HUB_VOCAB_SIZE) -> Tokenizer:
    """The corpus's BPE tokens from id 0, `<|reserved_N|>` placeholders (never produced by encoding) up to the
    first special id, 199998, then special tokens up to `vocab_size - 1`: the harmony ones at their o200k_harmony
    ids, `<|reserved_N|>` in between, as on the hub."""
    model = json.loads(_trained(_HUB_BPE_SIZE, ()).to_str())["model"]
    first = min(HUB_SPECIAL_IDS.values())
    vocab = model["vocab"] | {f"<|reserved_{i}|>": i for i in range(len(model["vocab"]), first)}
    merges = [tuple(m.split(" ") if isinstance(m, str) else m) for m in model["merges"]]
    tokenizer = _byte_level(models.BPE(vocab=vocab, merges=merges))
    names = {i: token for token, i in HUB_SPECIAL_IDS.items()}
    tokenizer.add_special_tokens([names.get(i, f"<|reserved_{i}|>") for i in range(first, vocab_size)])
    return tokenizer


def _trained(vocab_size: int, special_tokens: tuple[str, ...]) -> Tokenizer:
    """Byte-level BPE trained on the small corpus, `special_tokens` first."""
    tokenizer = _byte_level(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    return tokenizer


def _byte_level(model: models.Model) -> Tokenizer:
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def write_checkpoint(
    out_dir: str | Path, config: dict[str, Any], tensors: dict[str, torch.Tensor], shards: int = 1
) -> Path:
    """Write `config.json`, safetensors (one file, or `shards` files numbered from 1 plus an index, each taking
    every `shards`-th tensor by name) and `tokenizer.json`, through a staging directory."""
    planned = [PlannedTensor.of(name, tensors[name]) for name in sorted(tensors)]
    if shards == 1:
        return _write(out_dir, config, [planned], [SINGLE_FILE])
    groups = [planned[shard::shards] for shard in range(shards)]
    return _write(out_dir, config, groups, shard_files(shards, zero_based=False))


def _write(
    out_dir: str | Path,
    config: dict[str, Any],
    groups: list[list[PlannedTensor]],
    files: list[str],
    generation: dict[str, Any] | None = None,
    workers: int | None = None,
) -> Path:
    """Write a checkpoint directory: config, optional generation config, tokenizer, then the weights."""
    with staged_directory(out_dir) as staging:
        (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if generation is not None:
            (staging / "generation_config.json").write_text(json.dumps(generation, indent=2, sort_keys=True) + "\n")
        train_tokenizer(config["vocab_size"]).save(str(staging / "tokenizer.json"))
        write_shards(staging, groups, files, workers)
    return Path(out_dir)


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


def write_hub_model(
    out_dir: str | Path,
    preset: str = "gpt-oss-20b",
    *,
    expert_format: str = "mxfp4",
    head: str = "causal-lm",
    num_labels: int = 3,
    seed: int = 0,
    shards: int | None = None,
    workers: int | None = None,
    **overrides: Any,
) -> Path:
    """Write a checkpoint in the hub's layout of `preset` (`hub_config` with `overrides`, for example fewer
    layers or, in tests, smaller dimensions), shards numbered from 0 with their index, and the hub's
    generation_config.json. Tensors are drawn piece by piece as they are written (on `workers` threads), so memory
    holds a few pieces whatever the size; `shards` defaults to the hub's count scaled to the size."""
    raw = hub_config(preset, expert_format, num_labels if head != "causal-lm" else 0, **overrides)
    planned = planned_weights(parse_config(raw), head, seed)
    total = sum(t.nbytes for t in planned)
    groups = split_by_size(planned, shards or hub_shard_count(preset, total))
    log.info("writing %s to %s: %.2f GiB in %d files", preset, out_dir, total / 2**30, len(groups))
    generation = generation_defaults(raw["vocab_size"]) | {
        "do_sample": True, "transformers_version": HUB_CONFIG["transformers_version"],
    }  # fmt: skip
    return _write(out_dir, raw, groups, shard_files(len(groups), zero_based=True), generation, workers)


def hub_shard_count(preset: str, nbytes: int) -> int:
    """Files for `nbytes` of `preset`'s weights: the full-depth checkpoint's bytes per file on the hub, and at
    least two files so that a shallower checkpoint is still sharded like the hub's."""
    full = parse_config(hub_config(preset))
    full_bytes = sum(math.prod(spec.shape) * _rule(spec, full).dtype.itemsize for spec in all_specs(full, "causal-lm"))
    return max(2, round(nbytes * HUB_PRESETS[preset].files / full_bytes))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory to write the checkpoint into")
    parser.add_argument("--experts", choices=("mxfp4", "bf16"), default="mxfp4", help="expert weight format")
    parser.add_argument("--head", choices=("causal-lm", "sequence-classification", "token-classification"),
                        default="causal-lm")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shards", type=int, help="safetensors files (default 1; with --preset the hub's count)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--size", choices=sorted(PRESETS), help="small model dimensions (default demo)")
    size.add_argument("--preset", choices=sorted(HUB_PRESETS), help="a hub checkpoint's exact layout and size")
    parser.add_argument("--layers", type=int, help="with --preset: this many layers instead of the preset's")
    args = parser.parse_args(argv)
    if args.layers is not None and (args.preset is None or args.layers < 1):
        parser.error("--layers takes a positive number and needs --preset")
    if args.shards is not None and args.shards < 1:
        parser.error("--shards must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = dict(expert_format=args.experts, head=args.head, seed=args.seed)
    if args.preset:
        layers = {} if args.layers is None else {"num_hidden_layers": args.layers}
        path = write_hub_model(args.out, args.preset, shards=args.shards, **options, **layers)
    else:
        path = write_demo_model(args.out, shards=args.shards or 1, **options, **PRESETS[args.size or "demo"])
    print(f"wrote checkpoint to {path}")


if __name__ == "__main__":
    main()
