"""ctypes binding of the CUDA kernels in libgptoss_kernels.so (C ABI: plugins/include/gptoss_kernels.h).

The functions take torch CUDA tensors, run the kernels on the current CUDA stream and return the outputs; their
arguments mirror the reference ops in `gptoss.exporter.ops`. The library is `$GPTOSS_KERNELS_LIB` when set, else
`<repo>/build/plugins/libgptoss_kernels.so`, which `cmake -S plugins -B build/plugins && cmake --build build/plugins
--target gptoss_kernels` builds. torch is imported only when a kernel is called.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
LIBRARY_ENV = "GPTOSS_KERNELS_LIB"
DEFAULT_LIBRARY = REPO_ROOT / "build" / "plugins" / "libgptoss_kernels.so"

# gptoss_dtype and gptoss_weight_format
FLOAT32, FLOAT16, BFLOAT16, UINT8 = 0, 1, 2, 3
WEIGHTS_FLOAT, WEIGHTS_MXFP4 = 0, 1

# Names of the CUDA errors the kernels are likely to return.
_CUDA_ERRORS = {
    1: "cudaErrorInvalidValue",
    2: "cudaErrorMemoryAllocation",
    98: "cudaErrorInvalidDeviceFunction",
    209: "cudaErrorNoKernelImageForDevice",
    700: "cudaErrorIllegalAddress",
    701: "cudaErrorLaunchOutOfResources",
}


class KernelError(RuntimeError):
    """A kernel call returned a CUDA error, or the kernel library could not be loaded."""


class AttentionDesc(ctypes.Structure):
    """`gptoss_attention_desc`."""

    _fields_ = [
        ("batch", ctypes.c_int32),
        ("seq_len", ctypes.c_int32),
        ("num_heads", ctypes.c_int32),
        ("num_kv_heads", ctypes.c_int32),
        ("head_dim", ctypes.c_int32),
        ("capacity", ctypes.c_int32),
        ("sliding_window", ctypes.c_int32),
        ("scale", ctypes.c_float),
        ("dtype", ctypes.c_int),
    ]


class MoeDesc(ctypes.Structure):
    """`gptoss_moe_desc`."""

    _fields_ = [
        ("num_tokens", ctypes.c_int32),
        ("hidden_size", ctypes.c_int32),
        ("intermediate_size", ctypes.c_int32),
        ("num_experts", ctypes.c_int32),
        ("top_k", ctypes.c_int32),
        ("swiglu_alpha", ctypes.c_float),
        ("swiglu_limit", ctypes.c_float),
        ("dtype", ctypes.c_int),
        ("weight_format", ctypes.c_int),
        ("weight_dtype", ctypes.c_int),
    ]


def library_path() -> Path:
    """Path of the kernel library that `library()` loads."""
    return Path(os.environ.get(LIBRARY_ENV) or DEFAULT_LIBRARY)


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL:
    """The loaded kernel library with its function signatures declared."""
    path = library_path()
    if not path.is_file():
        raise KernelError(
            f"kernel library {path} not found: build it with `cmake -S plugins -B build/plugins && "
            f"cmake --build build/plugins --target gptoss_kernels`, or point {LIBRARY_ENV} at it"
        )
    lib = ctypes.CDLL(str(path))
    ptr, size_t = ctypes.c_void_p, ctypes.c_size_t
    lib.gptoss_sink_attention_workspace_size.argtypes = [ctypes.POINTER(AttentionDesc)]
    lib.gptoss_sink_attention_workspace_size.restype = size_t
    lib.gptoss_sink_attention.argtypes = [ctypes.POINTER(AttentionDesc)] + [ptr] * 11
    lib.gptoss_sink_attention.restype = ctypes.c_int
    lib.gptoss_moe_workspace_size.argtypes = [ctypes.POINTER(MoeDesc)]
    lib.gptoss_moe_workspace_size.restype = size_t
    lib.gptoss_moe.argtypes = [ctypes.POINTER(MoeDesc)] + [ptr] * 12
    lib.gptoss_moe.restype = ctypes.c_int
    lib.gptoss_kernels_version.argtypes = []
    lib.gptoss_kernels_version.restype = ctypes.c_char_p
    return lib


def version() -> str:
    """`gptoss_kernels_version()` of the loaded library."""
    return library().gptoss_kernels_version().decode()


def _dtype_code(dtype: torch.dtype) -> int:
    import torch

    codes = {torch.float32: FLOAT32, torch.float16: FLOAT16, torch.bfloat16: BFLOAT16, torch.uint8: UINT8}
    if dtype not in codes:
        raise TypeError(f"unsupported dtype {dtype}")
    return codes[dtype]


def _require_cuda(function: str, **tensors: torch.Tensor | None) -> None:
    """Checks that every given tensor is a contiguous CUDA tensor on one device."""
    devices = set()
    for name, tensor in tensors.items():
        if tensor is None:
            continue
        if not tensor.is_cuda:
            raise ValueError(f"{function}: {name} must be a CUDA tensor, got device {tensor.device}")
        if not tensor.is_contiguous():
            raise ValueError(f"{function}: {name} must be contiguous")
        devices.add(tensor.device)
    if len(devices) > 1:
        raise ValueError(f"{function}: tensors on several devices {sorted(map(str, devices))}")


def _stream(tensor: torch.Tensor) -> int:
    """Handle of the current CUDA stream of the tensor's device."""
    import torch

    return torch.cuda.current_stream(tensor.device).cuda_stream


def _expect(function: str, name: str, tensor: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    if tuple(tensor.shape) != shape or tensor.dtype != dtype:
        raise ValueError(f"{function}: {name} must be {dtype} {list(shape)}, got {tensor.dtype} {list(tensor.shape)}")


def _ptr(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _workspace(size: int, like: torch.Tensor, workspace: torch.Tensor | None) -> torch.Tensor | None:
    """`workspace` when it is large enough, else a new uint8 buffer of `size` bytes (None when 0)."""
    import torch

    if size == 0:
        return None
    if workspace is not None:
        if workspace.numel() * workspace.element_size() < size:
            raise ValueError(f"workspace of {workspace.numel() * workspace.element_size()} bytes, {size} needed")
        return workspace
    return torch.empty(size, dtype=torch.uint8, device=like.device)


def _check(function: str, code: int) -> None:
    if code != 0:
        raise KernelError(f"{function} failed with CUDA error {code} ({_CUDA_ERRORS.get(code, 'see cudaError_t')})")


def attention_desc(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    sliding_window: int,
    scale: float,
) -> AttentionDesc:
    """`gptoss_attention_desc` of a call with these inputs."""
    batch, seq_len, _ = q.shape
    capacity = kv_cache.shape[3]
    dtype = _dtype_code(q.dtype)
    return AttentionDesc(batch, seq_len, num_heads, num_kv_heads, head_dim, capacity, sliding_window, scale, dtype)


def sink_attention_workspace_size(desc: AttentionDesc) -> int:
    """Bytes of workspace `gptoss_sink_attention` needs for calls of at most this shape."""
    return library().gptoss_sink_attention_workspace_size(ctypes.byref(desc))


def sink_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sinks: torch.Tensor,
    kv_cache_in: torch.Tensor,
    kv_cache_out: torch.Tensor,
    past_len: torch.Tensor,
    new_len: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    sliding_window: int,
    scale: float,
    out: torch.Tensor | None = None,
    workspace: torch.Tensor | None = None,
) -> torch.Tensor:
    """`gptoss_sink_attention`: returns `out [B,S,Hq*D]` and writes the updated cache into `kv_cache_out`.

    `kv_cache_out` may be `kv_cache_in` itself (in-place update). Like `ops.sink_attention`, full layers need
    `past_len + new_len <= capacity`; the kernels do not check lengths (they only clamp them to stay in bounds).
    """
    import torch

    name = "gptoss_sink_attention"
    if out is None:
        out = torch.empty_like(q)
    _require_cuda(name, q=q, k=k, v=v, sinks=sinks, kv_cache_in=kv_cache_in, kv_cache_out=kv_cache_out,
                  past_len=past_len, new_len=new_len, out=out, workspace=workspace)  # fmt: skip
    batch, seq_len, _ = q.shape
    capacity = kv_cache_in.shape[3]
    _expect(name, "q", q, (batch, seq_len, num_heads * head_dim), q.dtype)
    _expect(name, "out", out, tuple(q.shape), q.dtype)
    for label, tensor in (("k", k), ("v", v)):
        _expect(name, label, tensor, (batch, seq_len, num_kv_heads * head_dim), q.dtype)
    _expect(name, "sinks", sinks, (num_heads,), torch.float32)
    for label, tensor in (("kv_cache_in", kv_cache_in), ("kv_cache_out", kv_cache_out)):
        _expect(name, label, tensor, (batch, 2, num_kv_heads, capacity, head_dim), q.dtype)
    for label, tensor in (("past_len", past_len), ("new_len", new_len)):
        _expect(name, label, tensor, (batch,), torch.int32)

    desc = attention_desc(q, kv_cache_in, num_heads, num_kv_heads, head_dim, sliding_window, scale)
    scratch = _workspace(sink_attention_workspace_size(desc), q, workspace)
    tensors = (q, k, v, sinks, kv_cache_in, kv_cache_out, past_len, new_len, out, scratch)
    code = library().gptoss_sink_attention(ctypes.byref(desc), *map(_ptr, tensors), _stream(q))
    _check(name, code)
    return out


def moe_desc(
    hidden: torch.Tensor,
    expert_ids: torch.Tensor,
    gate_up_weight: torch.Tensor,
    gate_up_scales: torch.Tensor | None,
    swiglu_alpha: float,
    swiglu_limit: float,
) -> MoeDesc:
    """`gptoss_moe_desc` of a call with these inputs (MXFP4 when scales are given)."""
    num_tokens, hidden_size = hidden.shape
    num_experts, two_i = gate_up_weight.shape[:2]
    return MoeDesc(
        num_tokens,
        hidden_size,
        two_i // 2,
        num_experts,
        expert_ids.shape[1],
        swiglu_alpha,
        swiglu_limit,
        _dtype_code(hidden.dtype),
        WEIGHTS_FLOAT if gate_up_scales is None else WEIGHTS_MXFP4,
        _dtype_code(gate_up_weight.dtype),
    )


def moe_workspace_size(desc: MoeDesc) -> int:
    """Bytes of workspace `gptoss_moe` needs for calls of at most this shape."""
    return library().gptoss_moe_workspace_size(ctypes.byref(desc))


def moe(
    hidden: torch.Tensor,
    expert_ids: torch.Tensor,
    expert_weights: torch.Tensor,
    gate_up_weight: torch.Tensor,
    gate_up_scales: torch.Tensor | None,
    gate_up_bias: torch.Tensor,
    down_weight: torch.Tensor,
    down_scales: torch.Tensor | None,
    down_bias: torch.Tensor,
    swiglu_alpha: float,
    swiglu_limit: float,
    out: torch.Tensor | None = None,
    workspace: torch.Tensor | None = None,
) -> torch.Tensor:
    """`gptoss_moe`, with the arguments of `ops.moe`: returns `out [T,H]` in the dtype of `hidden`.

    Float weights are `[E,2I,H]` / `[E,H,I]`; MXFP4 weights are uint8 blocks `[E,2I,H/32,16]` / `[E,H,I/32,16]`
    with scales `[E,2I,H/32]` / `[E,H,I/32]`.
    """
    import torch

    name = "gptoss_moe"
    if out is None:
        out = torch.empty_like(hidden)
    _require_cuda(name, hidden=hidden, expert_ids=expert_ids, expert_weights=expert_weights,
                  gate_up_weight=gate_up_weight, gate_up_scales=gate_up_scales, gate_up_bias=gate_up_bias,
                  down_weight=down_weight, down_scales=down_scales, down_bias=down_bias, out=out,
                  workspace=workspace)  # fmt: skip
    if (gate_up_scales is None) != (down_scales is None):
        raise ValueError(f"{name}: give scales for both weights (MXFP4) or for neither (float)")
    desc = moe_desc(hidden, expert_ids, gate_up_weight, gate_up_scales, swiglu_alpha, swiglu_limit)
    tokens, hidden_size, inter, experts, top_k = (
        desc.num_tokens, desc.hidden_size, desc.intermediate_size, desc.num_experts, desc.top_k
    )  # fmt: skip
    _expect(name, "expert_ids", expert_ids, (tokens, top_k), torch.int32)
    _expect(name, "expert_weights", expert_weights, (tokens, top_k), hidden.dtype)
    _expect(name, "out", out, (tokens, hidden_size), hidden.dtype)
    _expect(name, "gate_up_bias", gate_up_bias, (experts, 2 * inter), torch.float32)
    _expect(name, "down_bias", down_bias, (experts, hidden_size), torch.float32)
    if gate_up_scales is None:
        _expect(name, "gate_up_weight", gate_up_weight, (experts, 2 * inter, hidden_size), gate_up_weight.dtype)
        _expect(name, "down_weight", down_weight, (experts, hidden_size, inter), gate_up_weight.dtype)
    else:
        for label, tensor, shape in (
            ("gate_up_weight", gate_up_weight, (experts, 2 * inter, hidden_size // 32, 16)),
            ("gate_up_scales", gate_up_scales, (experts, 2 * inter, hidden_size // 32)),
            ("down_weight", down_weight, (experts, hidden_size, inter // 32, 16)),
            ("down_scales", down_scales, (experts, hidden_size, inter // 32)),
        ):
            _expect(name, label, tensor, shape, torch.uint8)

    scratch = _workspace(moe_workspace_size(desc), hidden, workspace)
    tensors = (hidden, expert_ids, expert_weights, gate_up_weight, gate_up_scales, gate_up_bias, down_weight,
               down_scales, down_bias, out, scratch)  # fmt: skip
    code = library().gptoss_moe(ctypes.byref(desc), *map(_ptr, tensors), _stream(hidden))
    _check(name, code)
    return out
