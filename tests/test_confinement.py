"""Paths from manifests and checkpoint indexes stay inside their directory; malformed indexes, configs and manifests,
and numbers that are not finite (in config.json, manifest.json or the weights), are one-line errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import build_weights, tensor_ranges

from gptoss.exporter import load_model
from gptoss.exporter.build import BuildOptions, build
from gptoss.exporter.checkpoint import INDEX_FILE, Checkpoint
from gptoss.runtime import Engine
from gptoss.runtime.errors import CheckpointError, ConfigError, GptOssError
from gptoss.runtime.manifest import MANIFEST, ManifestError, read_manifest


def raises_one_line(error: type[GptOssError], call, *args, match: str) -> str:
    """The one-line message of the `error` that `call(*args)` raises, which must contain `match` (a plain string)."""
    with pytest.raises(error) as caught:
        call(*args)
    message = str(caught.value)
    assert "\n" not in message and match in message, message
    return message


# ------------------------------------------------------------------ manifests


def copied_engine(small_engine: Path, tmp_path: Path, edit=None) -> Path:
    """A copy of the small engine with `edit(manifest dict, engine dir)` applied to its manifest."""
    engine_dir = Path(shutil.copytree(small_engine, tmp_path / "engine"))
    if edit is not None:
        manifest = json.loads((engine_dir / MANIFEST).read_text())
        edit(manifest, engine_dir)
        (engine_dir / MANIFEST).write_text(json.dumps(manifest))
    return engine_dir


def onnx_named(name):
    def edit(manifest, engine_dir):
        manifest["files"]["onnx"]["name"] = name(engine_dir) if callable(name) else name

    return edit


def onnx_symlinked_out(manifest, engine_dir):
    outside = engine_dir.parent / "elsewhere.onnx"
    os.replace(engine_dir / "model.onnx", outside)
    (engine_dir / "model.onnx").symlink_to(outside)


def onnx_in_symlinked_folder(manifest, engine_dir):
    outside = engine_dir.parent / "elsewhere"
    outside.mkdir()
    os.replace(engine_dir / "model.onnx", outside / "model.onnx")
    (engine_dir / "sub").symlink_to(outside)
    manifest["files"]["onnx"]["name"] = "sub/model.onnx"


def tokenizer_named(name):
    def edit(manifest, engine_dir):
        manifest["tokenizer"] = name

    return edit


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (onnx_named(lambda d: str(d.parent / "other" / "model.onnx")), "files.onnx.name", "expected a relative path"),
        (onnx_named("../other/model.onnx"), "files.onnx.name", "expected a relative path that stays inside"),
        (onnx_named("/etc/passwd"), "files.onnx.name", "expected a relative path"),
        (onnx_symlinked_out, "files.onnx.name", "leads outside"),
        (onnx_in_symlinked_folder, "files.onnx.name", "leads outside"),
        (onnx_named(""), "files.onnx.name", "is '', expected a file name"),
        (tokenizer_named("../other/tokenizer.json"), "tokenizer", "expected a relative path that stays inside"),
        (tokenizer_named("/etc/passwd"), "tokenizer", "expected a relative path"),
    ],
)
def test_manifest_names_stay_inside_the_engine(small_engine, tmp_path, edit, field, message):
    shutil.copytree(small_engine, tmp_path / "other")  # a valid engine next door, which must not be used
    engine_dir = copied_engine(small_engine, tmp_path, edit)
    text = raises_one_line(ManifestError, Engine.load, engine_dir, match=message)
    assert text.startswith(f"{engine_dir / MANIFEST}: {field}")


def test_symlinks_inside_the_engine_are_followed(small_engine, tmp_path):
    def inside(manifest, engine_dir):
        os.replace(engine_dir / "model.onnx", engine_dir / "real.onnx")
        (engine_dir / "model.onnx").symlink_to("real.onnx")

    engine_dir = copied_engine(small_engine, tmp_path, inside)
    engine = Engine.load(engine_dir)
    assert engine.manifest.path("onnx") == engine_dir / "model.onnx"
    assert engine.manifest.tokenizer_path() == engine_dir / "tokenizer.json"
    assert engine.generate([5, 6, 7], max_new_tokens=2, stop=[])[0].token_ids


def field(path: str, value):
    """An edit setting the manifest field at dotted `path` (`files.onnx.size`) to `value`."""

    def edit(manifest, engine_dir):
        *parents, last = path.split(".")
        target = manifest
        for key in parents:
            target = target[key]
        target[last] = value

    return edit


def dropped(path: str):
    def edit(manifest, engine_dir):
        *parents, last = path.split(".")
        target = manifest
        for key in parents:
            target = target[key]
        del target[last]

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (field("max_batch", "4"), "max_batch must be a positive integer (int32), got '4'"),
        (field("max_batch", True), "max_batch must be a positive integer (int32), got True"),
        (field("max_batch", 0), "max_batch must be a positive integer (int32), got 0"),
        (field("max_seq_len", -64), "max_seq_len must be a positive integer (int32), got -64"),
        (field("max_seq_len", 2**40), "max_seq_len must be a positive integer (int32), got 1099511627776"),
        (field("max_seq_len", 10**9), "max_seq_len 1000000000 exceeds the config's max_position_embeddings 4096"),
        (field("files", {}), "files must be a non-empty object of file entries, got {}"),
        (field("files", []), "files must be a non-empty object of file entries, got []"),
        (field("files.onnx", "model.onnx"), "files.onnx must be an object with name, size and sha256"),
        (dropped("files.onnx.sha256"), "files.onnx: missing or unexpected field (sha256)"),
        (field("files.onnx.size", "12"), "files.onnx: size must be a non-negative integer, got '12'"),
        (field("files.onnx.sha256", "abc"), "files.onnx: sha256 must be 64 lowercase hex digits, got 'abc'"),
        (field("tokenizer", 5), "tokenizer must be a file name or null, got 5"),
        (field("head", "regression"), "head must be one of causal-lm, sequence-classification, token-classification"),
        (field("all_positions", 1), "all_positions must be true or false, got 1"),
        (field("extra", 1), "missing or unexpected field (extra)"),
        (field("contract_version", True), "I/O contract version True"),
        (field("config.hidden_size", "128"), "config: hidden_size must be an int32 integer, got '128'"),
        (field("config.rope.theta", "nan"), "config: rope.theta must be a finite float32 number, got 'nan'"),
        (field("config.id2label", {"x": "y"}), "malformed config, inputs or outputs"),
        (field("inputs.input_ids.dtype", "float32"), "input 'input_ids' differs from the graph contract"),
        (lambda m, d: m.update(outputs=dict(reversed(m["outputs"].items()))), "output 'kv_cache_out.3' differs"),
    ],
)
def test_malformed_manifest_fields_are_one_line_errors(small_engine, tmp_path, edit, message):
    engine_dir = copied_engine(small_engine, tmp_path, edit)
    text = raises_one_line(GptOssError, read_manifest, engine_dir, match=message)
    assert text.startswith(str(engine_dir / MANIFEST))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('"rms_norm_eps": 1e-05', '"rms_norm_eps": NaN', "config.rms_norm_eps is nan, expected a finite number"),
        ('"max_batch": 8', '"max_batch": Infinity', "max_batch is inf, expected a finite number"),
        ('"swiglu_limit": 7.0', '"swiglu_limit": -1e999', "config.swiglu_limit is -inf, expected a finite number"),
    ],
)
def test_manifest_numbers_must_be_finite(small_engine, tmp_path, old, new, message):
    engine_dir = copied_engine(small_engine, tmp_path)
    text = (engine_dir / MANIFEST).read_text()
    assert old in text
    (engine_dir / MANIFEST).write_text(text.replace(old, new))
    raises_one_line(ManifestError, read_manifest, engine_dir, match=f"{engine_dir / MANIFEST}: {message}")


def test_manifest_is_written_as_strict_json(small_engine):
    manifest = read_manifest(small_engine)
    assert json.loads(manifest.dumps()) == json.loads((small_engine / MANIFEST).read_text())
    manifest.target_info = {"ratio": float("nan")}
    raises_one_line(ManifestError, manifest.dumps, match="manifest.json: cannot be written (Out of range float")


# ------------------------------------------------------------------ checkpoint indexes


@pytest.fixture
def sharded(checkpoint_factory, tmp_path):
    """A copy of the two-shard demo checkpoint, and the original beside it (a valid checkpoint elsewhere)."""
    original = checkpoint_factory("demo", shards=2)
    return Path(shutil.copytree(original, tmp_path / "checkpoint")), original


def edit_index(checkpoint: Path, edit) -> None:
    index = json.loads((checkpoint / INDEX_FILE).read_text())
    edit(index)
    (checkpoint / INDEX_FILE).write_text(json.dumps(index))


def shard_of(checkpoint: Path, tensor: str) -> str:
    return json.loads((checkpoint / INDEX_FILE).read_text())["weight_map"][tensor]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (lambda original, shard: str(original / shard), "expected a relative path that stays inside"),
        (lambda original, shard: f"../{original.name}/{shard}", "expected a relative path that stays inside"),
        (lambda original, shard: "/etc/passwd", "is '/etc/passwd', expected a relative path that stays"),
        (lambda original, shard: 7, "is 7, expected a file name"),
    ],
)
def test_index_entries_stay_inside_the_checkpoint(sharded, entry, message):
    checkpoint, original = sharded
    shutil.copytree(original, checkpoint.parent / original.name, dirs_exist_ok=True)
    shard = shard_of(checkpoint, "lm_head.weight")
    edit_index(checkpoint, lambda index: index["weight_map"].update({"lm_head.weight": entry(original, shard)}))
    text = raises_one_line(CheckpointError, Checkpoint, checkpoint, match=message)
    assert text.startswith(f"{checkpoint / INDEX_FILE}: weight_map['lm_head.weight']")


def test_index_entries_through_symlinks_stay_inside(sharded, tmp_path):
    checkpoint, original = sharded
    shard = shard_of(checkpoint, "lm_head.weight")
    (checkpoint / shard).unlink()
    (checkpoint / shard).symlink_to(original / shard)  # the same bytes, but from outside
    raises_one_line(CheckpointError, build_weights, checkpoint, tmp_path / "data", match="leads outside")
    (checkpoint / shard).unlink()
    (checkpoint / "copy.safetensors").write_bytes((original / shard).read_bytes())
    (checkpoint / shard).symlink_to("copy.safetensors")  # inside: followed
    build_weights(checkpoint, tmp_path / "data")


def moved_tensor(checkpoint: Path) -> None:
    """The index lists lm_head.weight in a shard that does not hold it."""
    shards = sorted({*json.loads((checkpoint / INDEX_FILE).read_text())["weight_map"].values()})
    other = next(s for s in shards if s != shard_of(checkpoint, "lm_head.weight"))
    edit_index(checkpoint, lambda index: index["weight_map"].update({"lm_head.weight": other}))


def not_safetensors(checkpoint: Path) -> None:
    (checkpoint / shard_of(checkpoint, "lm_head.weight")).write_text("hello")


@pytest.mark.parametrize(
    ("edit", "file", "message"),
    [
        (lambda c: edit_index(c, lambda index: index.update(weight_map=[1, 2])), INDEX_FILE, "with a weight_map"),
        (lambda c: (c / INDEX_FILE).write_text("[]"), INDEX_FILE, "with a weight_map object"),
        (lambda c: (c / INDEX_FILE).write_text('{"weight_map": '), INDEX_FILE, "not valid JSON"),
        (lambda c: (c / INDEX_FILE).write_bytes(b'{"weight_map": {"\xff": 1}}'), INDEX_FILE, "'utf-8' codec"),
        (lambda c: edit_index(c, lambda index: index["metadata"].update(total_size=float("nan"))), INDEX_FILE,
         "metadata.total_size is nan, expected a finite number"),
        (moved_tensor, "safetensors", "has no tensor 'lm_head.weight' (model.safetensors.index.json lists it there)"),
        (not_safetensors, "safetensors", "truncated or not a safetensors file"),
        (lambda c: (c / "config.json").write_bytes(b'{"vocab_size": "\xe9"}'), "config.json", "not valid JSON"),
        (lambda c: (c / "config.json").write_text("{"), "config.json", "not valid JSON"),
        (lambda c: (c / "config.json").write_text("[1]"), "config.json", "expected a JSON object"),
    ],
)  # fmt: skip
def test_malformed_indexes_and_configs_are_one_line_errors(sharded, tmp_path, edit, file, message):
    checkpoint, _ = sharded
    edit(checkpoint)
    text = raises_one_line(GptOssError, build_weights, checkpoint, tmp_path / "data", match=message)
    assert text.startswith(str(checkpoint)) and file in text.split(": ")[0]


# ------------------------------------------------------------------ numbers that are not finite


def with_config(checkpoint: Path, text_edit) -> None:
    path = checkpoint / "config.json"
    path.write_text(text_edit(path.read_text()))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace('"rope_theta": 150000.0', '"rope_theta": NaN'), "rope_theta is nan"),
        (lambda t: t.replace('"factor": 32.0', '"factor": Infinity'), "rope_scaling.factor is inf"),
        (lambda t: t.replace('"swiglu_limit": 7.0', '"swiglu_limit": 1e999'), "swiglu_limit is inf"),
        (lambda t: t.replace('"rms_norm_eps": 1e-05', '"rms_norm_eps": -Infinity'), "rms_norm_eps is -inf"),
        (lambda t: t.replace('"rope_theta": 150000.0', '"rope_theta": "nan"'),
         "rope_theta must be a finite float32 number, got 'nan'"),
        (lambda t: t.replace('"factor": 32.0', '"factor": 1e39'),
         "rope_scaling.factor must be a finite float32 number, got 1e+39"),
        (lambda t: t.replace('"swiglu_limit": 7.0', '"swiglu_limit": 1e300'), "swiglu_limit must be a positive number"),
        (lambda t: t.replace('"factor": 32.0', '"factor": 1e-300'), "its RoPE parameters make model.inv_freq NaN"),
    ],
)  # fmt: skip
def test_config_numbers_must_be_finite(checkpoint_factory, tmp_path, edit, message):
    checkpoint = Path(shutil.copytree(checkpoint_factory("demo", expert_format="mxfp4"), tmp_path / "checkpoint"))
    with_config(checkpoint, edit)
    text = raises_one_line(ConfigError, build, checkpoint, tmp_path / "engine", match=message)
    assert text.startswith(str(checkpoint / "config.json"))


def patch_element(file: Path, tensor: str, index: int, value: bytes) -> None:
    """Overwrite element `index` of `tensor` in a safetensors file with the stored bytes `value`."""
    _, begin, _ = tensor_ranges(file)[tensor]
    with open(file, "r+b") as handle:
        handle.seek(begin + index * len(value))
        handle.write(value)


BF16_NAN, BF16_INF = b"\xc0\x7f", b"\x80\xff"


@pytest.mark.parametrize(
    ("expert_format", "tensor", "value", "precision", "message"),
    [
        ("bf16", "model.layers.0.self_attn.q_proj.weight", BF16_NAN, "bf16", "holds NaN or infinity"),
        ("mxfp4", "model.layers.1.mlp.experts.down_proj_scales", b"\xff", "fp32",
         "holds the scale byte 0xFF (E8M0 NaN)"),
    ],
)  # fmt: skip
def test_weights_that_are_not_finite_fail_the_build(checkpoint_factory, tmp_path, expert_format, tensor, value,
                                                    precision, message):  # fmt: skip
    checkpoint = Path(shutil.copytree(checkpoint_factory("demo", expert_format=expert_format), tmp_path / "ckpt"))
    patch_element(checkpoint / "model.safetensors", tensor, 1000, value)
    expected = f"{checkpoint / 'model.safetensors'}: tensor {tensor!r} {message}, expected finite values"
    raises_one_line(CheckpointError, build, checkpoint, tmp_path / "engine", BuildOptions(precision=precision),
                    match=expected)  # fmt: skip
    raises_one_line(CheckpointError, load_model, checkpoint, match=expected)  # the torch backend's path


@pytest.mark.parametrize("value", [BF16_INF, BF16_NAN])
def test_weights_converted_to_the_build_precision_are_checked_too(checkpoint_factory, tmp_path, value):
    checkpoint = Path(shutil.copytree(checkpoint_factory("demo", expert_format="bf16"), tmp_path / "ckpt"))
    tensor = "model.layers.1.mlp.experts.down_proj"  # transposed and widened to float32 on its way
    patch_element(checkpoint / "model.safetensors", tensor, 1000, value)
    raises_one_line(CheckpointError, build_weights, checkpoint, tmp_path / "data", match=f"{tensor!r} holds NaN")


def test_finite_extremes_and_blocks_pass(checkpoint_factory, tmp_path):
    """The largest finite values, and FP4 block bytes of 0xFF (two -6.0 nibbles), are weights like any other."""
    checkpoint = Path(shutil.copytree(checkpoint_factory("demo", expert_format="mxfp4"), tmp_path / "ckpt"))
    file = checkpoint / "model.safetensors"
    patch_element(file, "lm_head.weight", 3, b"\x7f\x7f")  # bf16 max
    patch_element(file, "model.layers.0.mlp.experts.gate_up_proj_blocks", 5, b"\xff")
    patch_element(file, "model.layers.0.mlp.experts.gate_up_proj_scales", 5, b"\xfe")  # 2**127
    build_weights(checkpoint, tmp_path / "data", torch.bfloat16)
