"""Checkpoint reading: sharded files, and one-line errors for malformed input (API and CLI)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import random_ids
from safetensors.torch import load_file, save_file

from gptoss.exporter import load_model
from gptoss.exporter.checkpoint import Checkpoint
from gptoss.exporter.errors import GptOssError


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gptoss.exporter", *args], capture_output=True, text=True)


def test_sharded_checkpoint_loads_like_single_file(checkpoint_factory):
    single = checkpoint_factory("demo", expert_format="mxfp4")
    sharded = checkpoint_factory("demo", expert_format="mxfp4", shards=3)
    assert len(list(sharded.glob("*.safetensors"))) == 3
    ids = random_ids(1, 10)
    assert torch.equal(load_model(single)(ids), load_model(sharded)(ids))


def test_inspect_prints_layers_counts_and_format(checkpoint_factory):
    result = cli("inspect", str(checkpoint_factory("odd", expert_format="mxfp4")))
    assert result.returncode == 0, result.stderr
    assert "0:S 1:F 2:S" in result.stdout and "mxfp4" in result.stdout and "top-3" in result.stdout
    assert "parameters" in result.stdout


def broken_copy(tmp_path, source, edit):
    target = tmp_path / "broken"
    shutil.copytree(source, target)
    edit(target)
    return target


def drop_tensor(path):
    tensors = load_file(path / "model.safetensors")
    del tensors["model.layers.1.self_attn.sinks"]
    save_file(tensors, path / "model.safetensors")


def reshape_tensor(path):
    tensors = load_file(path / "model.safetensors")
    tensors["model.layers.0.mlp.router.bias"] = torch.zeros(7, dtype=torch.bfloat16)
    save_file(tensors, path / "model.safetensors")


def truncate_file(path):
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])


def bad_config_value(path):
    config = json.loads((path / "config.json").read_text())
    config["num_key_value_heads"] = 3
    (path / "config.json").write_text(json.dumps(config))


def drop_shard(path):
    next(path.glob("model-00002-*.safetensors")).unlink()


@pytest.mark.parametrize(
    ("edit", "shards", "message"),
    [
        (drop_tensor, 1, "tensor 'model.layers.1.self_attn.sinks' is missing"),
        (reshape_tensor, 1, r"tensor 'model.layers.0.mlp.router.bias' has shape \[7\], expected \[8\]"),
        (truncate_file, 1, "truncated or not a safetensors file"),
        (bad_config_value, 1, r"num_attention_heads \(8\) must be a multiple of num_key_value_heads \(3\)"),
        (
            drop_shard,
            2,
            "model-00002-of-00002.safetensors: listed in model.safetensors.index.json but missing",
        ),
    ],
)
def test_malformed_checkpoints_give_one_line_errors(checkpoint_factory, tmp_path, edit, shards, message):
    path = broken_copy(tmp_path, checkpoint_factory("demo", shards=shards), edit)
    with pytest.raises(GptOssError, match=message):
        load_model(path)
    result = cli("inspect", str(path))
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def cut_last_bytes(path):
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[:-100])  # header intact, the last tensor's data short


@pytest.mark.parametrize(
    ("edit", "message"),
    [(drop_tensor, "is missing"), (reshape_tensor, "has shape"), (truncate_file, "truncated"),
     (cut_last_bytes, "truncated")],
)  # fmt: skip
def test_bad_checkpoints_fail_the_build_before_anything_is_written(
    checkpoint_factory, tmp_path, monkeypatch, edit, message
):
    import gptoss.exporter.build as build_module
    from gptoss.exporter.build import build

    path = broken_copy(tmp_path, checkpoint_factory("demo"), edit)
    writes = []
    monkeypatch.setattr(build_module, "write_weights", lambda *args: writes.append(args))
    with pytest.raises(GptOssError, match=message):
        build(path, tmp_path / "engine")
    assert writes == [] and not (tmp_path / "engine").exists()


def test_unknown_head_and_missing_head_weights(checkpoint_factory):
    with pytest.raises(GptOssError, match="unknown head 'regression'"):
        load_model(checkpoint_factory("demo"), head="regression")
    causal_only = checkpoint_factory("demo", head="causal-lm")
    with pytest.raises(GptOssError, match="needs id2label or num_labels"):
        load_model(causal_only, head="sequence-classification")


def test_reader_does_not_load_whole_files(checkpoint_factory):
    checkpoint = Checkpoint(checkpoint_factory("demo"))
    assert checkpoint.shape("lm_head.weight") == (512, 128)
    assert "model.norm.weight" in checkpoint
