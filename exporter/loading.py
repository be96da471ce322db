"""`load_model`: a checkpoint directory to a ready PyTorch GPT-OSS module."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from gptoss.runtime.contract import BARE_MODEL, HEADS

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

    `head` is one of `causal-lm`, `sequence-classification`, `token-classification`, or `model` (no head: the last
    hidden states, from any GPT-OSS checkpoint's `model.*` tensors). MXFP4 experts stay packed in memory and are
    dequantized on the fly by the `gptoss::moe` op.
    """
    model = empty_model(load_config(path), head, dtype, device, source=Path(path) / "config.json")
    checkpoint = Checkpoint(path)
    try:
        _fill(model, model.config, head, checkpoint)
    finally:
        checkpoint.close()
    return model.eval()


@dataclass(frozen=True)
class WeightSource:
    """Where a parameter's value comes from: a checkpoint tensor, transposed from Hugging Face's float expert
    layout `[E, in, out]` to ours `[E, out, in]` when `transpose` is set. The dtype is the parameter's."""

    spec: TensorSpec
    transpose: bool = False

    def read(self, checkpoint: Checkpoint, dtype: torch.dtype) -> torch.Tensor:
        """The parameter's value, read and converted one tensor at a time."""
        tensor = checkpoint.read(self.spec)
        if self.transpose:
            tensor = tensor.transpose(1, 2)
        return tensor.to(dtype).contiguous()


def weight_sources(config: GptOssConfig, head: str) -> dict[str, WeightSource]:
    """The source of every parameter of the model with `head`, keyed by parameter name, in checkpoint order."""
    sources = {name: WeightSource(spec) for name, spec in head_specs(config, head).items()}
    for layer in range(config.num_hidden_layers):
        prefix = f"model.layers.{layer}."
        sources |= {prefix + name: WeightSource(spec) for name, spec in layer_specs(config, layer).items()}
        for role, spec in expert_specs(config, layer).items():
            transpose = role in _TRANSPOSED and not config.is_mxfp4
            sources[f"{prefix}mlp.experts.{role}"] = WeightSource(spec, transpose)
    return sources


def empty_model(
    config: GptOssConfig,
    head: str,
    dtype: torch.dtype,
    device: str | torch.device = "meta",
    source: str | Path = "config",
) -> GptOssWithHead:
    """The model with `head` and uninitialised parameters on `device` (on "meta" it holds no memory: the ONNX
    export traces it and streams the weights from the checkpoint instead)."""
    if head not in HEADS:
        raise ConfigError(f"unknown head {head!r}, expected one of {', '.join(HEADS)}")
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ConfigError(f"unsupported dtype {dtype}, expected torch.float32, torch.bfloat16 or torch.float16")
    if head not in ("causal-lm", BARE_MODEL) and not config.num_labels:
        raise ConfigError(f"{source}: head {head!r} needs id2label or num_labels")
    return MODEL_CLASSES[head](config, dtype=dtype, device=device).eval()


def _fill(model: GptOssWithHead, config: GptOssConfig, head: str, checkpoint: Checkpoint) -> None:
    parameters = dict(model.named_parameters())
    for name, source in weight_sources(config, head).items():
        parameter = parameters[name]
        with torch.no_grad():
            parameter.copy_(source.read(checkpoint, parameter.dtype))
