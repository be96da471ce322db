"""`load_model`: a checkpoint directory to a ready PyTorch GPT-OSS module."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from gptoss.runtime.contract import HEADS

from .checkpoint import Checkpoint, TensorSpec, expert_specs, head_specs, layer_specs
from .config import GptOssConfig, load_config
from .errors import ConfigError
from .model import MODEL_CLASSES, GptOssWithHead

log = logging.getLogger(__name__)

# Expert weights are `[E, in, out]` in the Hugging Face float layout and `[E, out, in]` in ours.
_TRANSPOSED = ("gate_up_weight", "down_weight")


def load_model(
    path: str | Path,
    *,
    head: str = "causal-lm",
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> GptOssWithHead:
    """Load a Hugging Face GPT-OSS checkpoint (bf16/fp32 or MXFP4 experts) as an eval-mode module.

    `head` is one of `causal-lm`, `sequence-classification`, `token-classification`. MXFP4 experts stay
    packed in memory and are dequantized on the fly by the `gptoss::moe` op.
    """
    if head not in HEADS:
        raise ConfigError(f"unknown head {head!r}, expected one of {', '.join(HEADS)}")
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ConfigError(f"unsupported dtype {dtype}, expected torch.float32, torch.bfloat16 or torch.float16")
    config = load_config(path)
    if head != "causal-lm" and not config.num_labels:
        raise ConfigError(f"{Path(path) / 'config.json'}: head {head!r} needs id2label or num_labels")
    model = MODEL_CLASSES[head](config, dtype=dtype, device=device)
    checkpoint = Checkpoint(path)
    try:
        _fill(model, config, head, checkpoint)
    finally:
        checkpoint.close()
    return model.eval()


def _fill(model: GptOssWithHead, config: GptOssConfig, head: str, checkpoint: Checkpoint) -> None:
    parameters = dict(model.named_parameters())
    for name, spec in head_specs(config, head).items():
        _copy(parameters[name], checkpoint.read(spec))
    for index, layer in enumerate(model.model.layers):
        log.debug("loading layer %d/%d", index + 1, config.num_hidden_layers)
        layer_parameters = dict(layer.named_parameters())
        for name, spec in layer_specs(config, index).items():
            _copy(layer_parameters[name], checkpoint.read(spec))
        _fill_experts(layer.mlp.experts, expert_specs(config, index), checkpoint, config.is_mxfp4)


def _fill_experts(experts: nn.Module, specs: dict[str, TensorSpec], checkpoint: Checkpoint, packed: bool) -> None:
    for role, spec in specs.items():
        tensor = checkpoint.read(spec)
        if role in _TRANSPOSED and not packed:
            tensor = tensor.transpose(1, 2)
        _copy(getattr(experts, role), tensor)


def _copy(parameter: nn.Parameter, tensor: torch.Tensor) -> None:
    with torch.no_grad():
        parameter.copy_(tensor)
