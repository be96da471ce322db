"""The hub's exact layout (gpt-oss-20b's config keys, tensor and shard names, index, generation config) and the
o200k_harmony special-token ids, through loading, `inspect`, generation and chat; small dimensions keep it fast."""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from gptoss.exporter import load_model
from gptoss.exporter.checkpoint import Checkpoint, all_specs
from gptoss.exporter.config import parse_config
from gptoss.exporter.errors import CheckpointError
from gptoss.exporter.inspection import parameter_counts
from gptoss.runtime import Engine
from gptoss.runtime.chat import Message, encode_conversation, render
from gptoss.tools.checkpoint_writer import shard_files, split_by_size
from gptoss.tools.compare import load_hf
from gptoss.tools.demo_model import hub_config, hub_shard_count, main, planned_weights, write_hub_model

# gpt-oss-20b's layout with the hub vocabulary and everything else small.
TINY = {
    "hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "num_local_experts": 8,
}  # fmt: skip
HUB_IDS = {
    "<|startoftext|>": 199998, "<|endoftext|>": 199999, "<|return|>": 200002, "<|constrain|>": 200003,
    "<|channel|>": 200005, "<|start|>": 200006, "<|end|>": 200007, "<|message|>": 200008, "<|call|>": 200012,
}  # fmt: skip
SHARDS = ["model-00000-of-00001.safetensors", "model-00001-of-00001.safetensors"]


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory):
    return write_hub_model(tmp_path_factory.mktemp("hub") / "gpt-oss-20b-tiny", "gpt-oss-20b", **TINY)


@pytest.fixture(scope="module")
def engine(hub_dir):
    return Engine.load(hub_dir, backend="torch")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gptoss.exporter", *args], capture_output=True, text=True)


def test_presets_are_the_hub_models():
    twenty, big = parse_config(hub_config("gpt-oss-20b")), parse_config(hub_config("gpt-oss-120b"))
    assert (twenty.num_hidden_layers, twenty.num_local_experts, big.num_hidden_layers, big.num_local_experts) == (
        24, 32, 36, 128,
    )  # fmt: skip
    assert parameter_counts(twenty).total == 20_914_757_184 and parameter_counts(big).total == 116_829_156_672
    assert twenty.layer_types[:2] == ("sliding_attention", "full_attention") and twenty.sliding_window == 128
    rope = twenty.rope
    assert (rope.factor, rope.beta_fast, rope.beta_slow, rope.original_max_position_embeddings, rope.theta) == (
        32.0, 32.0, 1.0, 4096, 150000.0,
    )  # fmt: skip
    assert parse_config(hub_config("gpt-oss-20b", num_hidden_layers=3)).layer_types == (
        "sliding_attention", "full_attention", "sliding_attention",
    )  # fmt: skip


def test_full_depth_shards_as_on_the_hub():
    planned = planned_weights(parse_config(hub_config("gpt-oss-20b")))
    total = sum(t.nbytes for t in planned)
    assert (len(planned), total) == (459, 13_761_264_768)  # 12.8 GiB: 10.2 GB of MXFP4 experts, the rest bf16
    groups = split_by_size(planned, hub_shard_count("gpt-oss-20b", total))
    assert len(groups) == 3 and all(4.4e9 < sum(t.nbytes for t in group) < 4.8e9 for group in groups)
    assert shard_files(len(groups), zero_based=True)[-1] == "model-00002-of-00002.safetensors"
    big = planned_weights(parse_config(hub_config("gpt-oss-120b")))
    assert hub_shard_count("gpt-oss-120b", sum(t.nbytes for t in big)) == 15
    two_layers = planned_weights(parse_config(hub_config("gpt-oss-20b", num_hidden_layers=2)))
    assert hub_shard_count("gpt-oss-20b", sum(t.nbytes for t in two_layers)) == 2


def test_files_index_and_configs(hub_dir):
    assert sorted(p.name for p in hub_dir.iterdir()) == sorted(
        ["config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.json", *SHARDS]
    )
    config = json.loads((hub_dir / "config.json").read_text())
    index = json.loads((hub_dir / "model.safetensors.index.json").read_text())
    # embed_tokens and lm_head 2 x 201088 x 64 bf16, the final norm, and 81560 bytes per layer
    assert index["metadata"]["total_size"] == 2 * 201088 * 64 * 2 + 64 * 2 + 2 * 81560
    assert set(index["weight_map"].values()) == set(SHARDS)
    assert set(index["weight_map"]) == {spec.name for spec in all_specs(parse_config(config), "causal-lm")}
    assert len(index["weight_map"]) == 2 * 19 + 3  # the hub's 24 x 19 + 3 at two layers
    assert index["weight_map"]["model.layers.1.mlp.experts.gate_up_proj_blocks"] == SHARDS[1]
    leftovers = ("experts_per_token", "initial_context_length", "transformers_version", "use_cache",
                 "output_router_logits", "router_aux_loss_coef", "hidden_act", "attention_dropout")  # fmt: skip
    assert [config[key] for key in leftovers] == [4, 4096, "4.55.0.dev0", True, False, 0.9, "silu", 0.0]
    assert (config["vocab_size"], config["eos_token_id"], config["pad_token_id"], "bos_token_id" in config) == (
        201088, 200002, 199999, False,
    )  # fmt: skip
    assert config["quantization_config"]["modules_to_not_convert"] == [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head",
    ]  # fmt: skip
    assert config["layer_types"] == ["sliding_attention", "full_attention"]
    assert json.loads((hub_dir / "generation_config.json").read_text()) == {
        "bos_token_id": 199998, "do_sample": True, "eos_token_id": [200002, 199999, 200012], "pad_token_id": 199999,
        "transformers_version": "4.55.0.dev0",
    }  # fmt: skip
    with safe_open(str(hub_dir / SHARDS[1]), framework="pt") as shard:
        assert shard.get_slice("model.layers.1.mlp.experts.down_proj_blocks").get_dtype() == "U8"
        assert shard.get_slice("lm_head.weight").get_dtype() == "BF16"


def test_loads_through_the_index_like_transformers(hub_dir):
    assert Checkpoint(hub_dir).shape("lm_head.weight") == (201088, 64)
    ids = torch.tensor([[200006, 17, 42, 200008, 300, 5000, 200007]])
    ours = load_model(hub_dir)(ids)
    theirs = load_hf(hub_dir)(ids).logits
    assert ours.shape == (1, 7, 201088)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_inspect(hub_dir):
    result = cli("inspect", str(hub_dir))
    assert result.returncode == 0, result.stderr
    for expected in ("2 safetensors", "41 tensors", "vocab / hidden   201088 / 64", "0:S 1:F", "top-4", "mxfp4",
                     "pad 199999, bos None, eos [200002]"):  # fmt: skip
        assert expected in result.stdout


def test_tokenizer_holds_the_hub_ids(engine):
    tokenizer = engine.tokenizer
    assert {token: tokenizer.special_id(token) for token in HUB_IDS} == HUB_IDS
    assert tokenizer.token_id("<|reserved_200013|>") == 200013 and tokenizer.token_id("<|reserved_201087|>") == 201087
    assert tokenizer.token_id("<|reserved_201088|>") is None and tokenizer.decode([199997]) == "<|reserved_199997|>"
    ids = tokenizer.encode("Hello world")
    assert ids and max(ids) < 1000 and tokenizer.decode(ids) == "Hello world"


def test_generate_stops_at_the_hub_end_tokens(engine):
    assert engine.default_stop_ids() == {200002, 199999, 200012}
    result = engine.generate("Hello world", max_new_tokens=6, stop=[])[0]
    assert len(result.token_ids) == 6 and all(0 <= t < 201088 for t in result.token_ids)
    first = result.token_ids[0]
    stopped = engine.generate("Hello world", max_new_tokens=6, stop=[first])[0]
    assert (stopped.token_ids, stopped.finish_reason) == ([first], "stop")


def test_chat_renders_the_hub_ids(engine, monkeypatch):
    messages = [Message("user", "Hello world")]
    date = datetime.date(2025, 8, 5)
    ids = encode_conversation(engine.tokenizer, messages, date=date)
    specials = [t for t in ids if t >= 199998]
    assert specials == [200006, 200008, 200007, 200006, 200008, 200007, 200006]  # system, user, assistant prompt
    assert ids[0] == 200006 and engine.tokenizer.decode(ids) == render(messages, date=date)
    stops = []
    generate = engine.generate
    monkeypatch.setattr(engine, "generate", lambda ids, **kw: stops.append(kw["stop"]) or generate(ids, **kw))
    reply = engine.chat(messages, max_new_tokens=3)
    assert stops == [[200002, 200012]] and reply.messages


def test_weights_do_not_depend_on_threads_or_shards(hub_dir, tmp_path):
    other = write_hub_model(tmp_path / "one-thread", "gpt-oss-20b", shards=3, workers=1, **TINY)
    assert sorted(p.name for p in other.glob("*.safetensors"))[-1] == "model-00002-of-00002.safetensors"
    ours, theirs = Checkpoint(hub_dir), Checkpoint(other)
    for spec in all_specs(parse_config(json.loads((hub_dir / "config.json").read_text())), "causal-lm"):
        assert torch.equal(ours.read(spec), theirs.read(spec)), spec.name


def test_missing_shard_is_a_one_line_error(hub_dir, tmp_path):
    broken = shutil.copytree(hub_dir, tmp_path / "broken")
    (broken / SHARDS[1]).unlink()
    message = rf"{SHARDS[1]}: listed in model\.safetensors\.index\.json but missing"
    with pytest.raises(CheckpointError, match=message):
        load_model(broken)
    result = cli("inspect", str(broken))
    assert result.returncode == 1 and result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1 and SHARDS[1] in result.stderr


@pytest.mark.parametrize(
    "args",
    [["--layers", "2"], ["--preset", "gpt-oss-20b", "--size", "large"], ["--preset", "gpt-oss-20b", "--layers", "0"]],
)
def test_tool_rejects_conflicting_options(tmp_path, args):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "never"), *args])
    assert not (tmp_path / "never").exists()
