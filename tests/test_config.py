"""Config parsing: both RoPE forms, defaults, and clear errors for inconsistent values."""

from __future__ import annotations

import pytest
import torch

from gptoss.exporter.config import FULL, SLIDING, parse_config
from gptoss.exporter.errors import ConfigError
from gptoss.exporter.inspection import parameter_counts
from gptoss.exporter.rope import yarn_inv_freq

HUB_20B = {
    "num_hidden_layers": 24, "num_local_experts": 32, "experts_per_token": 4, "head_dim": 64,
    "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0, "original_max_position_embeddings": 4096,
                     "rope_type": "yarn", "truncate": False},
    "rope_theta": 150000, "pad_token_id": 199999, "eos_token_id": 200002, "swiglu_limit": 7.0,
    "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": ["lm_head"]},
    # keys the hub's config.json has and transformers' class ignores
    "initial_context_length": 4096, "transformers_version": "4.55.0.dev0", "use_cache": True,
    "output_router_logits": False, "router_aux_loss_coef": 0.9, "hidden_act": "silu", "attention_dropout": 0.0,
    "initializer_range": 0.02, "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss",
}  # fmt: skip


def test_hub_20b_config_and_published_parameter_counts():
    config = parse_config(HUB_20B)
    assert config.layer_types[:3] == (SLIDING, FULL, SLIDING) and config.num_key_value_heads == 8
    assert config.is_mxfp4 and config.eos_token_ids == (200002,) and config.pad_token_id == 199999
    counts = parameter_counts(config)
    assert (counts.total, counts.active_per_token) == (20_914_757_184, 3_608_307_264)  # "20.9B / 3.6B"
    big = parameter_counts(parse_config({}))  # class defaults describe 120b
    assert (big.total, big.active_per_token) == (116_829_156_672, 5_132_849_472)


def test_experts_per_token_leftover_defers_to_num_experts_per_tok(caplog):
    assert parse_config(HUB_20B).num_experts_per_tok == 4 and not caplog.records
    # transformers ignores the leftover; so does the exporter, with a warning naming both keys
    config = parse_config({**HUB_20B, "experts_per_token": 8}, source="cfg.json")
    assert config.num_experts_per_tok == 4
    assert "cfg.json: experts_per_token=8 is ignored" in caplog.text and "num_experts_per_tok=4" in caplog.text
    assert parse_config({**HUB_20B, "num_experts_per_tok": 2}).num_experts_per_tok == 2


def test_yarn_frequencies_match_reference_table():
    inv_freq, scale = yarn_inv_freq(parse_config(HUB_20B).rope, 64)
    assert scale == pytest.approx(1.3465736, abs=1e-7)
    # Values of the YaRN worked example in docs/numerics.md (no truncation of the correction range).
    for i, expected in {
        0: 1.0,
        9: 3.170570e-02,
        13: 3.860359e-03,
        17: 1.293187e-04,
        31: 3.023511e-07,
    }.items():
        assert inv_freq[i].item() == pytest.approx(expected, rel=1e-5)


def test_rope_parameters_form_equals_rope_scaling_form():
    old = parse_config(HUB_20B)
    new_form = {k: v for k, v in HUB_20B.items() if k not in ("rope_scaling", "rope_theta")}
    new_form["rope_parameters"] = {**HUB_20B["rope_scaling"], "rope_theta": 150000.0}
    assert parse_config(new_form).rope == old.rope


def test_truncate_defaults_to_hf_generic_yarn():
    rope = {k: v for k, v in HUB_20B["rope_scaling"].items() if k != "truncate"}
    truncated = parse_config({**HUB_20B, "rope_scaling": rope}).rope
    assert truncated.truncate
    assert not torch.equal(yarn_inv_freq(truncated, 64)[0], yarn_inv_freq(parse_config(HUB_20B).rope, 64)[0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_attention_heads": 6, "num_key_value_heads": 4}, "must be a multiple of num_key_value_heads"),
        ({"num_experts_per_tok": 40}, "exceeds num_local_experts"),
        ({"layer_types": ["full_attention"]}, "layer_types has 1 entries"),
        ({"num_hidden_layers": 2, "layer_types": ["full_attention", "global"]}, "layer_types contains"),
        ({"hidden_size": -1}, "hidden_size must be a positive integer"),
        ({"rms_norm_eps": "small"}, "rms_norm_eps must be a positive number"),
        ({"pad_token_id": 300000}, "outside the vocabulary"),
        ({"quantization_config": {"quant_method": "gptq"}}, "only 'mxfp4' is supported"),
        ({"rope_scaling": {"rope_type": "longrope", "factor": 2.0}}, "rope type 'longrope' is not supported"),
        ({"model_type": "llama"}, "expected 'gpt_oss'"),
        ({"intermediate_size": 100}, "divisible by 32"),
    ],
)
def test_inconsistent_configs_are_rejected(change, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({**HUB_20B, **change}, source="cfg.json")
