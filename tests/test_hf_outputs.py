"""Hugging Face parity of the PyTorch model's forward beyond the head's output: losses, router logits and the
load-balancing loss, hidden states, `logits_to_keep`, `position_ids`, and the bare model (`GptOssModel`).

Two configurations throughout: the demo with MXFP4 experts, and `odd` (3 layers, top-3, window 8) with bf16 experts.
Batches are right-padded; labels are -100 on padding, as training code sets them.
"""

from __future__ import annotations

import pytest
import torch
from conftest import CONFIGS, load_hf, random_ids
from test_heads import padded_batch

from gptoss.exporter import load_model
from gptoss.exporter.config import parse_config
from gptoss.exporter.errors import ConfigError
from gptoss.exporter.losses import IGNORE_INDEX
from gptoss.tools.demo_model import demo_config, write_demo_model

# Both sides compute in float32 from the same stored weights and differ only in operation order. Outputs (logits,
# scores, router logits, hidden states) are compared relative to their largest magnitude: the residual stream grows
# to ~100 in the demo, where float32 rounding alone is ~1e-5 absolute, and the observed differences are ~1e-6 of
# the magnitude; a semantic slip (a wrong position, a missing norm, a layer off by one) moves them by 1e-2 or more.
TOLERANCE = 1e-4
# Losses are means over many positions of float32 log-probabilities; observed relative differences are ~3e-7. The
# smallest term tested, the aux loss times router_aux_loss_coef (0.001 × ~4 on a loss of ~8), is 5e-4 relative.
LOSS_TOLERANCE = 1e-5
SETUPS = [("demo", "mxfp4"), ("odd", "bf16")]


def assert_close(ours: torch.Tensor, theirs: torch.Tensor, tolerance: float = TOLERANCE) -> None:
    assert ours.shape == theirs.shape
    scale = max(1.0, theirs.abs().max().item())
    assert (ours - theirs).abs().max().item() <= tolerance * scale


def assert_loss_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.ndim == theirs.ndim == 0
    assert abs(ours.item() - theirs.item()) <= LOSS_TOLERANCE * abs(theirs.item())


@pytest.fixture(scope="module")
def models(checkpoint_factory, tmp_path_factory):
    """`models(name, expert_format, head, num_labels=3)` -> (ours, Hugging Face's), loaded once per module."""
    cache = {}

    def make(name: str, expert_format: str, head: str, num_labels: int = 3):
        key = (name, expert_format, head, num_labels)
        if key not in cache:
            if num_labels == 3:
                path = checkpoint_factory(name, expert_format=expert_format, head=head)
            else:
                out = tmp_path_factory.mktemp("labels") / "_".join(map(str, key))
                path = write_demo_model(out, expert_format=expert_format, head=head, num_labels=num_labels,
                                        **CONFIGS[name])  # fmt: skip
            cache[key] = (load_model(path, head=head), load_hf(path, head))
        return cache[key]

    return make


def padded_labels(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    labels = ids.clone()
    labels[mask == 0] = IGNORE_INDEX
    return labels


@pytest.mark.parametrize(("name", "expert_format"), SETUPS)
def test_causal_lm_loss_router_logits_and_hidden_states_match_hf(models, name, expert_format):
    ours, theirs = models(name, expert_format, "causal-lm")
    ids, mask = padded_batch()
    options = dict(attention_mask=mask, labels=padded_labels(ids, mask), output_router_logits=True,
                   output_hidden_states=True)  # fmt: skip
    with torch.no_grad():
        mine, reference = ours(ids, **options), theirs(ids, **options)
    valid, tokens = mask.bool(), mask.bool().reshape(-1)
    assert_close(mine.logits[valid], reference.logits[valid])
    assert_loss_close(mine.aux_loss, reference.aux_loss)
    assert_loss_close(mine.loss, reference.loss)  # cross-entropy + router_aux_loss_coef × aux loss
    layers = ours.config.num_hidden_layers
    assert len(mine.router_logits) == len(reference.router_logits) == layers
    for a, b in zip(mine.router_logits, reference.router_logits, strict=True):
        assert_close(a[tokens], b[tokens])  # [B·S, E]; padded tokens are hidden from attention differently
    assert len(mine.hidden_states) == len(reference.hidden_states) == layers + 1
    for a, b in zip(mine.hidden_states, reference.hidden_states, strict=True):
        assert_close(a[valid], b[valid])


@pytest.mark.parametrize(("name", "expert_format"), SETUPS)
def test_loss_without_router_logits_and_unpadded_aux_loss_match_hf(models, name, expert_format):
    ours, theirs = models(name, expert_format, "causal-lm")
    ids = random_ids(2, 19, seed=12)
    with torch.no_grad():
        assert_loss_close(ours(ids, labels=ids).loss, theirs(ids, labels=ids).loss)
        mine, reference = ours(ids, output_router_logits=True), theirs(ids, output_router_logits=True)
    assert mine.loss is None and reference.loss is None
    assert_loss_close(mine.aux_loss, reference.aux_loss)


@pytest.mark.parametrize(("name", "expert_format"), SETUPS)
def test_logits_to_keep_and_position_ids_match_hf(models, name, expert_format):
    ours, theirs = models(name, expert_format, "causal-lm")
    ids = random_ids(2, 21, seed=13)
    keeps = [3, torch.tensor([0, 5, 20]), torch.tensor([[1, 2], [7, 19]]), torch.rand(2, 21) < 0.5]
    shifted = torch.arange(21).unsqueeze(0) + 9  # one row of positions for the batch
    per_row = torch.stack([torch.arange(21) + 3, torch.arange(21) * 2])
    with torch.no_grad():
        for keep in keeps:
            assert_close(ours(ids, logits_to_keep=keep), theirs(ids, logits_to_keep=keep).logits)
        for positions in (shifted, per_row):
            assert_close(ours(ids, position_ids=positions), theirs(ids, position_ids=positions).logits)
        # RoPE is relative, so a shift alone changes nothing; other distances must change the logits.
        assert (ours(ids, position_ids=per_row) - ours(ids)).abs().max() > 1e-2


def sequence_labels(problem: str, batch: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(14)
    if problem == "single_label_classification":
        return torch.randint(0, 3, (batch,), generator=generator)
    if problem == "multi_label_classification":
        return (torch.rand(batch, 3, generator=generator) < 0.5).float()
    return torch.randn(batch, generator=generator)  # regression, one label


@pytest.mark.parametrize(("name", "expert_format"), SETUPS)
@pytest.mark.parametrize("problem", ["regression", "single_label_classification", "multi_label_classification"])
def test_sequence_classification_losses_match_hf(models, name, expert_format, problem):
    ours, theirs = models(name, expert_format, "sequence-classification", 1 if problem == "regression" else 3)
    theirs.config.problem_type = None  # Hugging Face infers it from the labels, as we do, and keeps the first guess
    ids, mask = padded_batch()
    labels = sequence_labels(problem)
    with torch.no_grad():
        mine = ours(ids, attention_mask=mask, labels=labels, output_hidden_states=True)
        reference = theirs(ids, attention_mask=mask, labels=labels, output_hidden_states=True)
    assert theirs.config.problem_type == problem
    assert_close(mine.logits, reference.logits)
    assert_loss_close(mine.loss, reference.loss)
    assert len(mine.hidden_states) == len(reference.hidden_states)


@pytest.mark.parametrize(("name", "expert_format"), SETUPS)
def test_token_classification_loss_matches_hf(models, name, expert_format):
    ours, theirs = models(name, expert_format, "token-classification")
    ids, mask = padded_batch()
    labels = torch.randint(0, 3, ids.shape, generator=torch.Generator().manual_seed(15))
    labels[mask == 0] = IGNORE_INDEX
    with torch.no_grad():
        mine = ours(ids, attention_mask=mask, labels=labels)
        reference = theirs(ids, attention_mask=mask, labels=labels)
    valid = mask.bool()
    assert_close(mine.logits[valid], reference.logits[valid])
    assert_loss_close(mine.loss, reference.loss)


@pytest.mark.parametrize(("name", "expert_format"), SETUPS)
def test_bare_model_matches_hf_gpt_oss_model(models, name, expert_format):
    ours, theirs = models(name, expert_format, "model")  # read from a causal-LM checkpoint, as Hugging Face does
    ids, mask = padded_batch()
    with torch.no_grad():
        hidden = ours(ids, attention_mask=mask)
        mine = ours(ids, attention_mask=mask, output_hidden_states=True, output_router_logits=True)
        reference = theirs(ids, attention_mask=mask, output_hidden_states=True, output_router_logits=True)
    valid = mask.bool()
    assert hidden.shape == (3, 37, ours.config.hidden_size)
    assert torch.equal(hidden, mine.last_hidden_state) and mine.logits is None
    assert_close(hidden[valid], reference.last_hidden_state[valid])
    for a, b in zip(mine.hidden_states, reference.hidden_states, strict=True):
        assert_close(a[valid], b[valid])
    for a, b in zip(mine.router_logits, reference.router_logits, strict=True):
        assert_close(a[valid.reshape(-1)], b[valid.reshape(-1)])


def test_bare_model_has_no_loss_and_classifiers_no_logits_to_keep(models):
    bare, _ = models("demo", "mxfp4", "model")
    ids = random_ids(1, 5)
    with pytest.raises(ValueError, match="labels: the model model has no loss"):
        bare(ids, labels=ids)
    classifier, _ = models("demo", "mxfp4", "token-classification")
    with pytest.raises(TypeError, match="logits_to_keep"):
        classifier(ids, logits_to_keep=1)


def test_config_reads_the_loss_settings():
    config = parse_config(demo_config("bf16", 3, problem_type="multi_label_classification",
                                      router_aux_loss_coef=0.9, output_router_logits=True))  # fmt: skip
    assert (config.problem_type, config.router_aux_loss_coef, config.output_router_logits) == (
        "multi_label_classification", 0.9, True,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="problem_type 'ranking' is not supported"):
        parse_config(demo_config("bf16", 3, problem_type="ranking"))
