"""Human-readable facts about a checkpoint: dimensions, layer types, parameter counts, expert format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gptoss.runtime.contract import TensorSpec

from .checkpoint import Checkpoint, all_specs
from .config import GptOssConfig, load_config


@dataclass(frozen=True)
class ParameterCounts:
    total: int
    active_per_token: int  # k of E experts, LM head included, input embedding excluded
    experts: int


def parameter_counts(config: GptOssConfig) -> ParameterCounts:
    """Parameter counts of the causal-LM model described by `config` (MXFP4 values count one each)."""
    c = config
    h, q_out, kv_out = c.hidden_size, c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    bias = int(c.attention_bias)
    attention = (q_out + 2 * kv_out) * (h + bias) + h * q_out + h * bias + c.num_attention_heads
    router = c.num_local_experts * (h + 1)
    per_expert = h * 2 * c.intermediate_size + 2 * c.intermediate_size + c.intermediate_size * h + h
    layer_dense = attention + router + 2 * h
    embedding = lm_head = c.vocab_size * h
    experts = c.num_hidden_layers * c.num_local_experts * per_expert
    total = embedding + lm_head + h + c.num_hidden_layers * layer_dense + experts
    active = total - embedding - c.num_hidden_layers * (c.num_local_experts - c.num_experts_per_tok) * per_expert
    return ParameterCounts(total, active, experts)


def describe(model_dir: str | Path) -> str:
    """A multi-line report of the checkpoint in `model_dir`, after checking every tensor's shape and dtype."""
    config = load_config(model_dir)
    checkpoint = Checkpoint(model_dir)
    head = checkpoint.head()
    for spec in all_specs(config, head):
        checkpoint.check(spec)
    files = sorted({p for p in Path(model_dir).glob("*.safetensors")})
    counts = parameter_counts(config)
    c = config
    layers = " ".join(f"{i}:{'S' if c.window_of(i) else 'F'}" for i in range(c.num_hidden_layers))
    lines = [
        f"checkpoint       {Path(model_dir).resolve()}",
        f"files            {len(files)} safetensors, {sum(f.stat().st_size for f in files) / 2**20:.1f} MiB, "
        f"{sum(1 for _ in checkpoint.names())} tensors",
        f"head             {head}",
        f"vocab / hidden   {c.vocab_size} / {c.hidden_size}",
        f"layers           {c.num_hidden_layers} ({layers}; S = sliding window {c.sliding_window}, F = full)",
        f"attention        {c.num_attention_heads} query heads, {c.num_key_value_heads} KV heads, "
        f"head_dim {c.head_dim}, sinks",
        f"experts          {c.num_local_experts} x intermediate {c.intermediate_size}, top-{c.num_experts_per_tok}, "
        f"SwiGLU alpha {c.swiglu_alpha} limit {c.swiglu_limit}",
        f"expert format    {'mxfp4 (packed E2M1 + E8M0 block-32 scales)' if c.is_mxfp4 else 'float (dense)'}",
        f"rope             {c.rope.rope_type} theta {c.rope.theta:g} factor {c.rope.factor:g} "
        f"original context {c.rope.original_max_position_embeddings}, max positions {c.max_position_embeddings}",
        f"parameters       {counts.total:,} total, {counts.active_per_token:,} active per token",
        f"special tokens   pad {c.pad_token_id}, bos {c.bos_token_id}, eos {list(c.eos_token_ids)}",
    ]
    if c.id2label:
        lines.append(f"labels           {c.id2label}")
    checkpoint.close()
    return "\n".join(lines)


def _first_specs(specs: dict[str, TensorSpec], count: int) -> str:
    return ", ".join(f"{name}{list(spec.shape)}" for name, spec in list(specs.items())[:count]) + ", ..."


def _target_info(info: dict) -> str:
    """The target info, with the list of bound weights shown by its length."""
    if "bound_weights" in info:
        info = info | {"bound_weights": f"{len(info['bound_weights'])} weights bound from model.onnx.data"}
    return str(info) if info else ""


def describe_engine(engine_dir: str | Path, verify_checksums: bool = False) -> str:
    """A multi-line report of an engine directory's manifest, after checking its files' sizes (and sha256)."""
    from gptoss.runtime.manifest import read_manifest

    manifest = read_manifest(engine_dir)
    manifest.verify_files(check_hashes=verify_checksums)
    lines = [
        f"engine directory {Path(engine_dir).resolve()}",
        f"target           {manifest.target} {_target_info(manifest.target_info)}".rstrip(),
        f"head / precision {manifest.head} / {manifest.precision}",
        f"limits           max batch {manifest.max_batch}, max sequence {manifest.max_seq_len}",
        f"ops              {manifest.ops}",
        "inputs           " + _first_specs(manifest.io.inputs, 4),
        "outputs          " + _first_specs(manifest.io.outputs, 2),
    ]
    lines += [
        f"file             {e['name']} {e['size']:,} bytes sha256 {e['sha256'][:16]}" for e in manifest.files.values()
    ]
    checked = "sizes and sha256 checked" if verify_checksums else "sizes checked (--verify also checks sha256)"
    return "\n".join([*lines, f"files            {checked}"])
