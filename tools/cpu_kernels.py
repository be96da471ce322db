"""ctypes binding of libgptoss_cpu_kernels.so (plugins/cpu), called with contiguous CPU torch tensors.

`sink_attention` and `moe` take the arguments of the PyTorch ops (exporter/ops.py) and pass the very descriptors that
`gptoss.tools.kernels` derives from runtime/op_signatures.py, so they also check that this library reads those
descriptors as the CUDA one does. `linear` and the rest follow gptoss_cpu_kernels.h. `build()` builds the library
with CMake. Used by tests/test_cpu_kernels.py and tools/bench_cpu_kernels.py.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gptoss.runtime.backends import CPU_KERNELS_LIBRARY
from gptoss.tools import kernels

SOURCE_DIR = kernels.REPO_ROOT / "plugins" / "cpu"
BUILD_DIR, LIBRARY_NAME = CPU_KERNELS_LIBRARY.parent, CPU_KERNELS_LIBRARY.name


def build(build_dir: Path = BUILD_DIR) -> Path:
    """Configure and build the library (and its C++ tests) into `build_dir`; returns the library's path."""
    steps = (
        ["cmake", "-S", str(SOURCE_DIR), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release"],
        ["cmake", "--build", str(build_dir), "-j", str(os.cpu_count() or 1)],
    )
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(step)} failed:\n{done.stdout}{done.stderr}")
    return build_dir / LIBRARY_NAME


class LinearDesc(ctypes.Structure):
    _fields_ = [("num_tokens", ctypes.c_int32), ("in_features", ctypes.c_int32), ("out_features", ctypes.c_int32),
                ("x_dtype", ctypes.c_int), ("weight_dtype", ctypes.c_int), ("bias_dtype", ctypes.c_int),
                ("y_dtype", ctypes.c_int)]  # fmt: skip


class DecodeAttentionDesc(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int32) for name in ("batch", "hidden_size", "num_heads", "num_kv_heads", "head_dim",
                                                    "capacity", "sliding_window", "num_experts")] + [
        ("rms_norm_eps", ctypes.c_float), ("scale", ctypes.c_float), ("dtype", ctypes.c_int)]  # fmt: skip


class DecodeAttentionWeights(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in (
        "input_norm", "post_norm", "sinks", "q", "q_bias", "k", "k_bias", "v", "v_bias", "o", "o_bias", "router",
        "router_bias")]  # fmt: skip


_DTYPE_CODES = {getattr(torch, name): code for name, code in kernels.DTYPE_CODES.items()}


def dtype_code(tensor: torch.Tensor) -> int:
    return _DTYPE_CODES[tensor.dtype]


def pointer(tensor: torch.Tensor | None) -> int | None:
    if tensor is None:
        return None
    if tensor.device.type != "cpu" or not tensor.is_contiguous():
        raise ValueError(f"expected a contiguous CPU tensor, got {tensor.device} with strides {tensor.stride()}")
    return tensor.data_ptr()


class CpuKernels:
    """The library at `path`; one instance per process is enough (the library keeps one thread pool)."""

    def __init__(self, path: Path | str) -> None:
        lib = self.lib = ctypes.CDLL(str(path))
        signatures = {
            "gptoss_kernels_version": ([], ctypes.c_char_p),
            "gptoss_cpu_isa": ([], ctypes.c_char_p),
            "gptoss_cpu_set_isa": ([ctypes.c_char_p], ctypes.c_int),
            "gptoss_cpu_num_threads": ([], ctypes.c_int),
            "gptoss_cpu_set_num_threads": ([ctypes.c_int], None),
            "gptoss_cpu_read": ([ctypes.c_void_p, ctypes.c_size_t], ctypes.c_float),
            "gptoss_cpu_linear": ([ctypes.POINTER(LinearDesc)] + [ctypes.c_void_p] * 4, ctypes.c_int),
            "gptoss_cpu_linear_tiles": ([], ctypes.c_int),
            "gptoss_cpu_decode_attention": (
                [ctypes.POINTER(DecodeAttentionDesc), ctypes.POINTER(DecodeAttentionWeights)] + [ctypes.c_void_p] * 10,
                ctypes.c_int),
            "gptoss_cpu_decode_attention_workspace_size": ([ctypes.POINTER(DecodeAttentionDesc)], ctypes.c_size_t),
        }
        for kernel in (kernels.sink_attention, kernels.moe):
            desc = ctypes.POINTER(kernel.Descriptor)
            pointers = len(kernel.signature.inputs) + len(kernel.signature.outputs) + 2  # + workspace, stream
            signatures[kernel.symbol] = ([desc] + [ctypes.c_void_p] * pointers, ctypes.c_int)
            signatures[f"{kernel.symbol}_workspace_size"] = ([desc], ctypes.c_size_t)
        for name, (argtypes, restype) in signatures.items():
            function = getattr(lib, name)
            function.argtypes, function.restype = argtypes, restype

    def version(self) -> str:
        return self.lib.gptoss_kernels_version().decode()

    def isa(self) -> str:
        return self.lib.gptoss_cpu_isa().decode()

    def linear_tiles(self) -> bool:
        """Whether bf16 x bf16 linears run on AMX tiles."""
        return bool(self.lib.gptoss_cpu_linear_tiles())

    def set_isa(self, name: str) -> None:
        if self.lib.gptoss_cpu_set_isa(name.encode()):
            raise ValueError(f"ISA {name!r} unknown or not supported by this CPU")

    def num_threads(self) -> int:
        return self.lib.gptoss_cpu_num_threads()

    def set_num_threads(self, threads: int) -> None:
        self.lib.gptoss_cpu_set_num_threads(threads)

    def read(self, data: torch.Tensor) -> float:
        """Sum of a float32 tensor, read at full bandwidth (gptoss_cpu_read)."""
        return self.lib.gptoss_cpu_read(pointer(data), data.numel())

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
               out_dtype: torch.dtype | None = None) -> torch.Tensor:  # fmt: skip
        """`x @ weight.T + bias` over the last dimension of x, as `out_dtype` (default: that of x)."""
        y = torch.empty(*x.shape[:-1], weight.shape[0], dtype=out_dtype or x.dtype)
        self.prepared_linear(x, weight, bias, y)()
        return y

    def prepared_linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                        y: torch.Tensor) -> Callable[[], None]:  # fmt: skip
        """`linear` into `y`, as a call with its descriptor and pointers fixed (see `prepared`)."""
        bias_code = dtype_code(bias) if bias is not None else 0
        desc = LinearDesc(x.numel() // x.shape[-1], weight.shape[1], weight.shape[0], dtype_code(x),
                          dtype_code(weight), bias_code, dtype_code(y))  # fmt: skip
        return self._bound("gptoss_cpu_linear", [ctypes.byref(desc), *map(pointer, (x, weight, bias, y))],
                           (desc, x, weight, bias, y))  # fmt: skip

    def sink_attention(self, *args, kv_cache_out: torch.Tensor | None = None,
                       **kwargs) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """`ops.sink_attention`'s arguments; `kv_cache_out=kv_cache` updates the cache in place."""
        values = kernels.sink_attention.signature.bind(args, kwargs)
        out = torch.empty_like(values["q"])
        cache = torch.empty_like(values["kv_cache"]) if kv_cache_out is None else kv_cache_out
        self._prepared(kernels.sink_attention, values, [out, cache])()
        return out, cache

    def moe(self, *args, **kwargs) -> torch.Tensor:
        """`ops.moe`'s arguments."""
        values = kernels.moe.signature.bind(args, kwargs)
        out = torch.empty_like(values["hidden"])
        self._prepared(kernels.moe, values, [out])()
        return out

    def prepared(self, kernel: kernels.Kernel, *args, **kwargs) -> Callable[[], None]:
        """A call of `kernel` (kernels.sink_attention or kernels.moe) with the PyTorch op's arguments and its outputs
        as keywords, with descriptor, workspace and pointers fixed: calling it repeats the kernel call alone."""
        outputs = [kwargs.pop(t.name) for t in kernel.signature.outputs]
        return self._prepared(kernel, kernel.signature.bind(args, kwargs), outputs)

    def _prepared(self, kernel: kernels.Kernel, values: dict[str, Any],
                  outputs: list[torch.Tensor]) -> Callable[[], None]:  # fmt: skip
        """`prepared` from the bound arguments (`signature.bind`) and the output tensors in signature order."""
        desc = kernel.descriptor_of(values)
        workspace = torch.empty(getattr(self.lib, f"{kernel.symbol}_workspace_size")(ctypes.byref(desc)),
                                dtype=torch.uint8)  # fmt: skip
        tensors = [values[t.name] for t in kernel.signature.inputs] + outputs + [workspace]
        return self._bound(kernel.symbol, [ctypes.byref(desc), *map(pointer, tensors), None], (desc, tensors))

    def _bound(self, symbol: str, arguments: list, keep: tuple) -> Callable[[], None]:
        """The C function `symbol` bound to `arguments`; `keep` (what they point into) lives as long as the call."""
        function = getattr(self.lib, symbol)

        def call() -> None:
            if code := function(*arguments):
                raise kernels.KernelError(f"{symbol} failed with error {code}")

        call.keep = keep
        return call
