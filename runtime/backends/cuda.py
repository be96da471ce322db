"""CUDA backend: the PyTorch model on a GPU whose two ops run the project's kernels, without TensorRT.

The model's two ops are routed to `libgptoss_kernels.so` (the library the TensorRT plugins link, through
`gptoss.tools.kernels`), for this model alone and with the caches updated in place (routing.py). A whole model thus
runs on the very kernels an engine runs, and can be compared with Hugging Face and timed where TensorRT is not
installed. On CPU tensors `gptoss.tools.kernels` runs the host build of the same kernels, which is how the tests
check this path. Decode steps (one token per row) replay a CUDA graph captured when the caches are allocated;
prefill steps run eagerly. It takes an engine directory (and loads its source checkpoint) or a checkpoint
directory, like the torch backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import GptOssError
from ..manifest import Manifest
from .routing import route_ops
from .torch import TorchBackend


class CudaBackend(TorchBackend):
    """`Backend` over the PyTorch model with kernel-backed ops; caches stay in place, decode steps are graphs."""

    name = "cuda"

    def __init__(self, manifest: Manifest, device: str = "cuda", model: Any = None) -> None:
        import torch

        from gptoss.tools import kernels

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise GptOssError("the cuda backend needs an NVIDIA GPU, and torch sees none")
        super().__init__(manifest, device=device, model=model)
        route_ops(self.graph, kernels.sink_attention, kernels.moe)
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
        return super().step(input_ids, past_len, new_len)  # the caches, updated in place, keep their addresses


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
        return graph(self._ids, self._past, self._new, caches)[0]  # the caches are updated in place

    def run(self, input_ids: np.ndarray, past_len: np.ndarray, new_len: np.ndarray) -> np.ndarray:
        import torch

        for static, array in ((self._ids, input_ids), (self._past, past_len), (self._new, new_len)):
            static.copy_(torch.from_numpy(np.ascontiguousarray(array)).to(static.dtype))
        self._graph.replay()
        return self._outputs.float().cpu().numpy()
