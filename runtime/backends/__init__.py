"""Backends run one cache step of an engine; each implements the same narrow interface, `Backend`."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .. import contract
from ..errors import GptOssError
from ..manifest import Manifest

BACKENDS = ("tensorrt", "tensorrt-rtx", "onnxruntime", "torch", "cuda", "cpu")
MODEL_BACKENDS = ("torch", "cuda", "cpu")  # run the PyTorch model: they take a checkpoint directory too


class Backend(Protocol):
    """Owns the KV caches of `batch` rows; `step` advances them in place and returns the head output."""

    name: str
    manifest: Manifest

    def allocate(self, batch: int, max_seq_len: int) -> None:
        """(Re)allocate zeroed caches: window slots for sliding layers, `max_seq_len` slots for full ones."""

    def step(self, input_ids: np.ndarray, past_len: np.ndarray, new_len: np.ndarray) -> np.ndarray:
        """Run `input_ids [B,S]` (int32, right-padded, `new_len` valid per row) after `past_len` cached tokens.

        Returns the head output as float32 numpy: logits `[B,V]` at each row's last valid token (`[B,S,V]` for
        all-positions builds), or classification scores.
        """


def default_backend(manifest: Manifest) -> str:
    """The backend a manifest's target implies."""
    return {"onnx": "onnxruntime", "tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt-rtx"}[manifest.target]


def open_backend(manifest: Manifest, name: str | None = None) -> Backend:
    """Instantiate backend `name` (default: the one the manifest's target implies) for an engine directory."""
    name = name or default_backend(manifest)
    if name not in BACKENDS:
        raise GptOssError(f"unknown backend {name!r}, expected one of {', '.join(BACKENDS)}")
    if name == "onnxruntime":
        from .onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(manifest)
    if name == "torch":
        from .torch import TorchBackend

        return TorchBackend(manifest)
    if name == "cuda":
        from .cuda import CudaBackend

        return CudaBackend(manifest)
    if name == "cpu":
        from .cpu import CpuBackend

        return CpuBackend(manifest)
    if manifest.target != name:
        raise GptOssError(f"{manifest.engine_dir}: built for target {manifest.target}, cannot run with backend {name}")
    from .tensorrt import TensorRTBackend

    return TensorRTBackend(manifest)


def cache_shapes(manifest: Manifest, batch: int, max_seq_len: int) -> list[tuple[int, ...]]:
    """Concrete shapes of every `kv_cache.{i}` input for `batch` rows of `max_seq_len` tokens."""
    sizes = {contract.BATCH: batch, contract.MAX_SEQ_LEN: max_seq_len}
    return [spec.concrete(**sizes) for spec in manifest.io.cache_specs()]
