"""Backends run one cache step of an engine; each implements the same narrow interface, `Backend`."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from .. import contract
from ..errors import GptOssError
from ..manifest import Manifest

BACKENDS = ("tensorrt", "tensorrt-rtx", "onnxruntime", "torch", "cuda", "cpu")
MODEL_BACKENDS = ("torch", "cuda", "cpu")  # run the PyTorch model: they take a checkpoint directory too
CPU_PRECISIONS = ("fp32", "bf16")  # what the native CPU kernels compute in
# Where `make cpu-kernels` puts the native CPU kernels (plugins/cpu).
CPU_KERNELS_LIBRARY = Path(__file__).resolve().parents[2] / "build" / "cpu" / "libgptoss_cpu_kernels.so"


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


def has_nvidia_gpu() -> bool:
    """Whether this machine has an NVIDIA driver with a device (without importing any CUDA library)."""
    return Path("/dev/nvidiactl").exists()


def default_backend(manifest: Manifest) -> str:
    """The backend for a directory when none is named. TensorRT plans: their own runtime. On a machine without an
    NVIDIA GPU, an ONNX engine in fp32 or bf16, or a checkpoint: the native CPU kernels when built. Otherwise ONNX
    Runtime for an ONNX engine (on the GPU when there is one), the PyTorch model for a checkpoint."""
    if manifest.target != "onnx":
        return manifest.target
    if manifest.precision in CPU_PRECISIONS and not has_nvidia_gpu() and CPU_KERNELS_LIBRARY.is_file():
        return "cpu"
    return "onnxruntime" if "onnx" in manifest.files else "torch"


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
