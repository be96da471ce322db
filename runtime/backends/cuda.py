"""CUDA backend: the PyTorch model on a GPU whose two ops run the project's kernels, without TensorRT.

`gptoss::sink_attention` and `gptoss::moe` on CUDA tensors are routed to `libgptoss_kernels.so` (the library the
TensorRT plugins link, through `gptoss.tools.kernels`), so a whole model runs on the very kernels an engine runs,
and can be compared with Hugging Face and timed where TensorRT is not installed. Decode steps (one token per
row) replay a CUDA graph captured when the caches are allocated; prefill steps run eagerly. It takes an engine directory
(and loads its source checkpoint) or a checkpoint directory, like the torch backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import GptOssError
from ..manifest import Manifest
from .torch import TorchBackend

_ROUTED: set[str] = set()


def use_kernels(device_type: str = "cuda") -> None:
    """From now on, in this process, the two gptoss ops on `device_type` tensors run the kernel library ("cpu"
    with the host build of the kernels, for tests); the reference implementation stays for other devices."""
    if device_type in _ROUTED:
        return
    from gptoss.exporter import ops
    from gptoss.tools import kernels

    for op, kernel in ((ops.sink_attention, kernels.sink_attention), (ops.moe, kernels.moe)):
        op.register_kernel(device_type)(_contiguous_call(kernel))
    _ROUTED.add(device_type)


def _contiguous_call(kernel: Any) -> Any:
    """The kernel called like the op, with its tensor arguments made contiguous (the C ABI takes dense arrays)."""

    def call(*args: Any) -> Any:
        return kernel(*(a.contiguous() if hasattr(a, "contiguous") else a for a in args))

    return call


class CudaBackend(TorchBackend):
    """`Backend` over the PyTorch model with kernel-backed ops; caches stay in place, decode steps are graphs."""

    name = "cuda"

    def __init__(self, manifest: Manifest, device: str = "cuda", model: Any = None) -> None:
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise GptOssError("the cuda backend needs an NVIDIA GPU, and torch sees none")
        use_kernels(torch.device(device).type)
        super().__init__(manifest, device=device, model=model)
        self._decode: _DecodeGraph | None = None

    def allocate(self, batch: int, max_seq_len: int) -> None:
        """Allocate the caches and capture the decode step over them (on a GPU, for last-position outputs)."""
        super().allocate(batch, max_seq_len)
        self._decode = None
        if self._device.startswith("cuda") and not self.manifest.all_positions:
            self._decode = _DecodeGraph(self.graph, self._caches, batch, self._device)

    def step(self, input_ids: np.ndarray, past_len: np.ndarray, new_len: np.ndarray) -> np.ndarray:
        if input_ids.shape[1] == 1 and self._decode is not None:
            return self._decode.run(input_ids, past_len, new_len)
        torch = self._torch
        ids, past, new = self._inputs(input_ids, past_len, new_len)
        with torch.no_grad():
            outputs, *caches = self.graph(ids, past, new, self._caches)
            for cache, updated in zip(self._caches, caches, strict=True):
                cache.copy_(updated)  # in place: a captured graph holds these addresses
        return outputs.float().cpu().numpy()


class _DecodeGraph:
    """One decode step for `batch` rows, captured as a CUDA graph over static inputs and the backend's caches."""

    def __init__(self, graph: Any, caches: list, batch: int, device: str) -> None:
        import torch

        self._ids = torch.zeros(batch, 1, dtype=torch.int64, device=device)
        self._past = torch.zeros(batch, dtype=torch.int32, device=device)
        self._new = torch.zeros(batch, dtype=torch.int32, device=device)  # 0 while capturing: no cache is written
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            self._run_once(graph, caches)  # warm-up, as torch requires before capture
        torch.cuda.current_stream().wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self._graph):
            self._outputs = self._run_once(graph, caches)

    def _run_once(self, graph: Any, caches: list) -> Any:
        outputs, *updated = graph(self._ids, self._past, self._new, caches)
        for cache, new in zip(caches, updated, strict=True):
            cache.copy_(new)
        return outputs

    def run(self, input_ids: np.ndarray, past_len: np.ndarray, new_len: np.ndarray) -> np.ndarray:
        import torch

        for static, array in ((self._ids, input_ids), (self._past, past_len), (self._new, new_len)):
            static.copy_(torch.from_numpy(np.ascontiguousarray(array)).to(static.dtype))
        self._graph.replay()
        return self._outputs.float().cpu().numpy()
