"""Sequence- and token-classification heads against Hugging Face's GptOssFor*Classification."""

from __future__ import annotations

import pytest
import torch
from conftest import load_hf, random_ids

from gptoss.exporter import load_model

# Same float32 argument as test_model_vs_hf: only operation order differs, observed ~1e-6.
ATOL = 1e-4
PAD = 1  # the demo tokenizer's <|endoftext|>, the config's pad_token_id


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three rows of 37, 20 and 5 real tokens, right-padded with the pad token (rows end in padding)."""
    ids = random_ids(3, 37, seed=11)
    mask = torch.ones_like(ids)
    for row, length in ((1, 20), (2, 5)):
        ids[row, length:] = PAD
        mask[row, length:] = 0
    return ids, mask


@pytest.mark.parametrize("expert_format", ["bf16", "mxfp4"])
def test_sequence_classification_matches_hf(checkpoint_factory, expert_format):
    path = checkpoint_factory("demo", expert_format=expert_format, head="sequence-classification")
    ids, mask = padded_batch()
    ours = load_model(path, head="sequence-classification")(ids, attention_mask=mask)
    with torch.no_grad():
        theirs = load_hf(path, "sequence-classification")(ids, attention_mask=mask).logits
    assert ours.shape == theirs.shape == (3, 3)
    assert (ours - theirs).abs().max().item() < ATOL


def test_token_classification_matches_hf(checkpoint_factory):
    path = checkpoint_factory("odd", head="token-classification")
    ids, mask = padded_batch()
    ours = load_model(path, head="token-classification")(ids, attention_mask=mask)
    with torch.no_grad():
        theirs = load_hf(path, "token-classification")(ids, attention_mask=mask).logits
    valid = mask.bool()
    assert ours.shape == theirs.shape == (3, 37, 3)
    assert (ours[valid] - theirs[valid]).abs().max().item() < ATOL
