"""Routing one PyTorch model's ops to a kernel library: its modules' `sink_attention`, `moe` and `matmul` attributes
(exporter/model.py) are set on that model alone, so every other user of the model code keeps the reference ops."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any


def route_ops(model: Any, sink_attention: Callable, moe: Callable, bf16_linear: Callable | None = None) -> None:
    """Make `model`'s attention call `sink_attention` (updating each cache in place), its experts `moe`, and, when
    given, its bf16 linears `bf16_linear`. The kernels take the ops' arguments, as dense tensors."""
    import torch

    from gptoss.exporter.model import Attention, Experts, Linear

    for module in model.modules():
        if isinstance(module, Attention):
            module.sink_attention = partial(_attention_in_place, sink_attention)
        elif isinstance(module, Experts):
            module.moe = partial(_dense_arguments, moe)
        elif bf16_linear is not None and isinstance(module, Linear) and module.weight.dtype == torch.bfloat16:
            module.matmul = bf16_linear


def _dense_arguments(kernel: Callable, *args: Any) -> Any:
    return kernel(*(a.contiguous() if hasattr(a, "contiguous") else a for a in args))


def _attention_in_place(kernel: Callable, *args: Any) -> tuple:
    kv_cache = args[4]
    return _dense_arguments(partial(kernel, kv_cache_out=kv_cache), *args)
