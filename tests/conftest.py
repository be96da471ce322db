"""Shared fixtures: small GPT-OSS checkpoints written on demand, and their Hugging Face twins."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gptoss.tools.compare import load_hf  # noqa: F401  (the external oracle, shared by the tests)
from gptoss.tools.demo_model import write_demo_model

# Configurations the model must match Hugging Face on (issue #2): each differs from the demo in
# something that breaks a careless implementation.
CONFIGS = {
    # The demo itself: window 16 < sequence, 8 heads over 2 KV heads, top-4 of 8 experts.
    "demo": {},
    # Odd layer count, top-3, 6 query heads (not a multiple of 8) over 3 KV heads, YaRN factor 4 with a
    # 64-token original context, window 8.
    "odd": {
        "num_hidden_layers": 3, "num_experts_per_tok": 3, "num_attention_heads": 6, "num_key_value_heads": 3,
        "head_dim": 16, "hidden_size": 96, "intermediate_size": 64, "sliding_window": 8,
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0,
                         "truncate": False, "original_max_position_embeddings": 64},
    },
    # Newer `rope_parameters` form with rope_theta inside, explicit layer_types starting with a full
    # layer, MHA-like 5 heads over 5 KV heads, top-2 of 16 experts, factor 8 with 256 original context.
    "explicit": {
        "num_hidden_layers": 3, "layer_types": ["full_attention", "sliding_attention", "sliding_attention"],
        "num_attention_heads": 5, "num_key_value_heads": 5, "head_dim": 24, "hidden_size": 64,
        "intermediate_size": 96, "num_local_experts": 16, "num_experts_per_tok": 2, "sliding_window": 12,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0, "beta_fast": 16.0,
                            "beta_slow": 2.0, "truncate": False, "original_max_position_embeddings": 256},
    },
}  # fmt: skip


@pytest.fixture(scope="session")
def checkpoint_factory(tmp_path_factory):
    """`checkpoint_factory(name, expert_format, head, shards)` -> directory of a written checkpoint."""
    cache: dict[tuple, Path] = {}

    def make(name: str = "demo", expert_format: str = "bf16", head: str = "causal-lm", shards: int = 1) -> Path:
        key = (name, expert_format, head, shards)
        if key not in cache:
            out = tmp_path_factory.mktemp("ckpt") / f"{name}-{expert_format}-{head}-{shards}"
            cache[key] = write_demo_model(out, expert_format=expert_format, head=head, shards=shards, **CONFIGS[name])
        return cache[key]

    return make


@pytest.fixture(scope="session")
def engines(checkpoint_factory, tmp_path_factory):
    """Engine directories of the demo model: causal LM (batch 4 and batch 2) and both classifiers."""
    from gptoss.exporter.build import BuildOptions, build  # not at the top: the GPU check runs without ONNX

    root = tmp_path_factory.mktemp("runtime")
    causal = checkpoint_factory("demo", expert_format="mxfp4")
    dirs = {
        "causal": build(causal, root / "causal", BuildOptions(max_seq_len=256, max_batch=4)).engine_dir,
        "batch2": build(causal, root / "batch2", BuildOptions(max_seq_len=128, max_batch=2)).engine_dir,
    }
    for head in ("sequence-classification", "token-classification"):
        checkpoint = checkpoint_factory("demo", expert_format="bf16", head=head)
        dirs[head] = build(checkpoint, root / head, BuildOptions(head=head, max_seq_len=64)).engine_dir
    dirs["checkpoint"] = causal
    return dirs


def hf_greedy(model, ids: torch.Tensor, new_tokens: int) -> list[list[int]]:
    """Hugging Face `generate`, greedy, exactly `new_tokens` per row: no end token stops it and none is
    suppressed (`min_new_tokens` would mask the end tokens' logits and change the choice)."""
    model.generation_config.eos_token_id = None
    out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=model.config.pad_token_id)
    return out[:, ids.shape[1] :].tolist()


def random_ids(batch: int, seq_len: int, vocab: int = 512, seed: int = 0, low: int = 9) -> torch.Tensor:
    """Token ids that avoid the special tokens (ids below `low`), so no id is mistaken for padding."""
    return torch.randint(low, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="session")
def small_engine(checkpoint_factory, tmp_path_factory) -> Path:
    """One small engine directory (demo model, MXFP4 experts, max_seq_len 64), for tests that copy and alter it."""
    from gptoss.exporter.build import BuildOptions, build

    checkpoint = checkpoint_factory("demo", expert_format="mxfp4")
    return build(checkpoint, tmp_path_factory.mktemp("small") / "engine", BuildOptions(max_seq_len=64)).engine_dir


def tensor_ranges(path: Path) -> dict[str, tuple[str, int, int]]:
    """Each tensor of a safetensors file: its dtype name and the absolute byte range of its data in the file."""
    import json

    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(size))
    header.pop("__metadata__", None)
    start = 8 + size
    return {name: (info["dtype"], *(start + o for o in info["data_offsets"])) for name, info in header.items()}


def build_weights(checkpoint_dir: Path, data_path: Path, dtype: torch.dtype = torch.float32) -> None:
    """What `gptoss-export build` does with a checkpoint besides tracing: read its config, plan the weights (checking
    the whole checkpoint) and write them into `data_path`."""
    from gptoss.exporter.config import load_config
    from gptoss.exporter.external_data import plan_weights, write_weights
    from gptoss.exporter.loading import empty_model

    model = empty_model(load_config(checkpoint_dir), "causal-lm", dtype, source=checkpoint_dir / "config.json")
    write_weights(plan_weights(model, checkpoint_dir), data_path)
