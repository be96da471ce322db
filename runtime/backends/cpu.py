"""CPU backend: the PyTorch model on the CPU with its two ops, and its bf16 linears of a few tokens, run by the
native CPU kernels (`libgptoss_cpu_kernels.so`, `make cpu-kernels`).

Only this backend's own model is routed (routing.py), so the reference ops stay what every other user of the
PyTorch model runs. The caches are updated in place. Linears of a few tokens (decode) are
memory-bound, where ours reads the weights at the machine's bandwidth; larger ones (prefill) stay with torch, whose
matrix multiply is faster there. It takes an engine directory or a checkpoint.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from ..errors import GptOssError
from ..manifest import Manifest
from .routing import route_ops
from .torch import TorchBackend

# Up to this many tokens our linear beats torch's matrix multiply (measured on a 2-core Sapphire Rapids class VM,
# lm_head at gpt-oss-20b dimensions): with AMX tiles, 64 (torch wins from 128); with vector dot products, 4.
SMALL_LINEAR_TOKENS = {True: 64, False: 4}


class CpuBackend(TorchBackend):
    """`Backend` over the PyTorch model with kernel-backed ops on the CPU."""

    name = "cpu"

    def __init__(self, manifest: Manifest, device: str = "cpu", model: Any = None) -> None:
        import torch

        from gptoss.exporter.model import GptOssModel
        from gptoss.tools.cpu_kernels import BUILD_DIR, LIBRARY_NAME, CpuKernels

        from .cpu_decode import NativeDecode

        library = BUILD_DIR / LIBRARY_NAME
        if not library.is_file():
            raise GptOssError(f"{library}: not built; the cpu backend needs `make cpu-kernels`")
        super().__init__(manifest, device="cpu", model=model)
        kernels = CpuKernels(library)
        small = SMALL_LINEAR_TOKENS[kernels.linear_tiles()]
        route_ops(self.graph, kernels.sink_attention, kernels.moe, partial(_linear, kernels, small))
        model = next(m for m in self.graph.modules() if isinstance(m, GptOssModel))
        if model.embed_tokens.weight.dtype == torch.bfloat16:
            NativeDecode(kernels, model)


def _linear(kernels: Any, small: int, x: Any, weight: Any, bias: Any) -> Any:
    import torch

    if x.numel() // x.shape[-1] > small:
        return torch.nn.functional.linear(x, weight, bias)
    return kernels.linear(x.contiguous(), weight, bias)
