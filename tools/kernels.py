"""ctypes binding of the kernels' C ABI (plugins/include/gptoss_kernels.h), on CUDA or on CPU.

Each op's binding is derived from its signature (`gptoss.runtime.op_signatures`): the descriptor struct, the
argument order (descriptor, inputs, outputs, workspace, stream), the element-type and shape checks. A binding is
called like the PyTorch op (`kernels.moe(hidden, expert_ids, ...)`, same arguments and defaults) with torch tensors
and returns the outputs; outputs and the workspace may be passed as keywords (`out=`, `kv_cache_out=`,
`workspace=`) to reuse buffers or update a cache in place.

The tensors' device picks the library: CUDA tensors run the CUDA kernels of `libgptoss_kernels.so` on the current
CUDA stream; CPU tensors run the same kernel sources built for the host, `libgptoss_kernels_host.so`
(docs/kernels-on-cpu.md). The libraries are `$GPTOSS_KERNELS_LIB` and `$GPTOSS_KERNELS_HOST_LIB` when set, else
those in `<repo>/build/plugins`, which `make plugins` builds. torch is imported only when a kernel is called.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptoss.runtime.op_signatures import MOE, SINK_ATTENTION, OpSignature

if TYPE_CHECKING:
    import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
LIBRARY_ENV = "GPTOSS_KERNELS_LIB"
DEFAULT_LIBRARY = REPO_ROOT / "build" / "plugins" / "libgptoss_kernels.so"
HOST_LIBRARY_ENV = "GPTOSS_KERNELS_HOST_LIB"
DEFAULT_HOST_LIBRARY = REPO_ROOT / "build" / "plugins" / "libgptoss_kernels_host.so"
# (environment variable, default path) of the library for each torch device type.
_LIBRARIES = {"cuda": (LIBRARY_ENV, DEFAULT_LIBRARY), "cpu": (HOST_LIBRARY_ENV, DEFAULT_HOST_LIBRARY)}

# gptoss_dtype of the C ABI, by element type name.
DTYPE_CODES = {"float32": 0, "float16": 1, "bfloat16": 2, "uint8": 3}
_CTYPES = {int: ctypes.c_int32, float: ctypes.c_float, str: ctypes.c_int}  # str attributes are C enums

# Names of the CUDA errors the kernels are likely to return.
_CUDA_ERRORS = {
    1: "cudaErrorInvalidValue",
    2: "cudaErrorMemoryAllocation",
    9: "cudaErrorInvalidConfiguration",
    98: "cudaErrorInvalidDeviceFunction",
    209: "cudaErrorNoKernelImageForDevice",
    700: "cudaErrorIllegalAddress",
    701: "cudaErrorLaunchOutOfResources",
    719: "cudaErrorLaunchFailure",
}


class KernelError(RuntimeError):
    """A kernel call returned a CUDA error, or the kernel library could not be loaded."""


def library_path(device: str = "cuda") -> Path:
    """Path of the kernel library that `library(device)` loads (device type "cuda" or "cpu")."""
    if device not in _LIBRARIES:
        raise KernelError(f"no kernel library for {device} tensors: the kernels run on cuda or cpu")
    env, default = _LIBRARIES[device]
    return Path(os.environ.get(env) or default)


@functools.cache
def library(device: str = "cuda") -> ctypes.CDLL:
    """The loaded kernel library for tensors of this device type ("cuda" or "cpu")."""
    path = library_path(device)
    if not path.is_file():
        env = _LIBRARIES[device][0]
        raise KernelError(f"kernel library {path} not found: build it with `make plugins` or set {env}")
    lib = ctypes.CDLL(str(path))
    lib.gptoss_kernels_version.argtypes = []
    lib.gptoss_kernels_version.restype = ctypes.c_char_p
    return lib


def version(device: str = "cuda") -> str:
    """`gptoss_kernels_version()` of the library for this device type."""
    return library(device).gptoss_kernels_version().decode()


def element_type(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


class Kernel:
    """The C function `gptoss_<op>` (and `gptoss_<op>_workspace_size`) of one op, called with torch tensors."""

    def __init__(self, signature: OpSignature) -> None:
        self.signature = signature
        self.symbol = f"gptoss_{signature.torch_name}"
        kinds = {a.name: a.kind for a in signature.attributes}
        fields = [(name, _CTYPES[kinds[name]] if name in kinds else ctypes.c_int32) for name in signature.descriptor]
        self.Descriptor = type(f"{signature.name}Descriptor", (ctypes.Structure,), {"_fields_": fields})
        self._loaded: dict[str, tuple[Any, Any]] = {}

    def _functions(self, device: torch.device) -> tuple[Any, Any]:
        """The op's run and workspace-size functions in the library for this device's type."""
        if device.type not in self._loaded:
            lib = library(device.type)
            run, size = getattr(lib, self.symbol), getattr(lib, f"{self.symbol}_workspace_size")
            pointers = len(self.signature.inputs) + len(self.signature.outputs) + 2  # + workspace and stream
            run.argtypes = [ctypes.POINTER(self.Descriptor)] + [ctypes.c_void_p] * pointers
            run.restype = ctypes.c_int
            size.argtypes = [ctypes.POINTER(self.Descriptor)]
            size.restype = ctypes.c_size_t
            self._loaded[device.type] = run, size
        return self._loaded[device.type]

    def descriptor(self, *args: Any, **kwargs: Any) -> Any:
        """The C descriptor of a call with these arguments (those of the PyTorch op)."""
        return self.descriptor_of(self.signature.bind(args, kwargs))

    def descriptor_of(self, values: Mapping[str, Any]) -> Any:
        """The C descriptor of a call with these bound arguments (`signature.bind`)."""
        return self._descriptor(values, self._attributes(values))

    def workspace_size(self, *args: Any, **kwargs: Any) -> int:
        """Bytes of workspace the kernel needs for calls of at most this shape (arguments of the PyTorch op)."""
        values = self.signature.bind(args, kwargs)
        descriptor = self._descriptor(values, self._attributes(values))
        return self._functions(self._device(values))[1](ctypes.byref(descriptor))

    def __call__(self, *args: Any, workspace: torch.Tensor | None = None, **kwargs: Any) -> Any:
        """Run the kernel; returns its output, or a tuple of its outputs (given ones are written in place)."""
        import torch

        outputs = {t.name: kwargs.pop(t.name, None) for t in self.signature.outputs}
        values = self.signature.bind(args, kwargs)
        for tensor in self.signature.outputs:
            if outputs[tensor.name] is None:
                outputs[tensor.name] = torch.empty_like(values[tensor.like])
        attributes = self._attributes(values)
        descriptor = self._descriptor(values, attributes)
        self._check(values, outputs, attributes, descriptor, workspace)
        device = self._device(values)
        run, size = self._functions(device)
        needed = size(ctypes.byref(descriptor))
        if workspace is None and needed:
            workspace = torch.empty(needed, dtype=torch.uint8, device=device)
        elif workspace is not None and workspace.numel() * workspace.element_size() < needed:
            raise ValueError(f"{self.symbol}: workspace of {workspace.numel() * workspace.element_size()} bytes, "
                             f"{needed} needed")  # fmt: skip
        tensors = [values[t.name] for t in self.signature.inputs] + list(outputs.values()) + [workspace]
        pointers = [None if t is None else t.data_ptr() for t in tensors]
        stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else None
        code = run(ctypes.byref(descriptor), *pointers, stream)
        if code != 0:
            reason = _CUDA_ERRORS.get(code, "see cudaError_t")
            raise KernelError(f"{self.symbol} failed with CUDA error {code} ({reason})")
        result = tuple(outputs.values())
        return result if len(result) > 1 else result[0]

    def _device(self, values: Mapping[str, Any]) -> torch.device:
        """Device of the call: that of its first input."""
        return values[self.signature.inputs[0].name].device

    def _attributes(self, values: Mapping[str, Any]) -> dict[str, Any]:
        tensors = {t.name: values[t.name] for t in self.signature.inputs}
        return self.signature.attribute_values(tensors, values)

    def _field(self, name: str, values: Mapping[str, Any], attributes: Mapping[str, Any]) -> Any:
        """Value of descriptor field `name` for this call (str attributes as the index of their C enum)."""
        if name in self.signature.extents:
            tensor, dim = self.signature.extents[name]
            return values[tensor].shape[dim]
        if name in self.signature.element_types:
            source = self.signature.element_types[name]
            if element_type(values[source]) not in DTYPE_CODES:
                raise ValueError(f"{self.symbol}: {source} has unsupported dtype {values[source].dtype}")
            return DTYPE_CODES[element_type(values[source])]
        choices = next(a.choices for a in self.signature.attributes if a.name == name)
        return choices.index(attributes[name]) if choices else attributes[name]

    def _descriptor(self, values: Mapping[str, Any], attributes: Mapping[str, Any]) -> Any:
        return self.Descriptor(*(self._field(f, values, attributes) for f in self.signature.descriptor))

    def _check(self, values: Mapping[str, Any], outputs: Mapping[str, Any], attributes: Mapping[str, Any],
               descriptor: Any, workspace: torch.Tensor | None) -> None:  # fmt: skip
        """Every tensor a contiguous CUDA or CPU tensor on one device, of its element type and expected shape."""
        given = {t.name: values[t.name] for t in self.signature.inputs} | dict(outputs) | {"workspace": workspace}
        devices = set()
        for name, tensor in given.items():
            if tensor is None:
                continue
            if tensor.device.type not in _LIBRARIES:
                raise ValueError(f"{self.symbol}: {name} must be a CUDA or CPU tensor, got device {tensor.device}")
            if not tensor.is_contiguous():
                raise ValueError(f"{self.symbol}: {name} must be contiguous")
            devices.add(tensor.device)
        if len(devices) > 1:
            raise ValueError(f"{self.symbol}: tensors on several devices {sorted(map(str, devices))}")
        sizes = {f[0]: getattr(descriptor, f[0]) for f in self.Descriptor._fields_} | dict(attributes)
        shapes = self.signature.shapes(sizes)
        chosen: dict[str, str] = {}  # type constraint -> element type of its first tensor
        for arg in (*self.signature.inputs, *self.signature.outputs):
            tensor = given[arg.name]
            shape = shapes.get(arg.like or arg.name)
            if tensor is None or shape is None:
                if (tensor is None) != (shape is None):
                    raise ValueError(f"{self.symbol}: {arg.name} must {'not ' if shape is None else ''}be given "
                                     f"(weight format {attributes.get('weight_format', '')!r})")  # fmt: skip
                continue
            dtype = element_type(tensor)
            allowed = self.signature.type_constraints.get(arg.types, (arg.types,))
            constrained = arg.types in self.signature.type_constraints
            expected = chosen.setdefault(arg.types, dtype) if constrained else arg.types
            if tuple(tensor.shape) != shape or dtype != expected or dtype not in allowed:
                raise ValueError(f"{self.symbol}: {arg.name} must be {expected} {list(shape)}, "
                                 f"got {dtype} {list(tensor.shape)}")  # fmt: skip


sink_attention = Kernel(SINK_ATTENTION)
moe = Kernel(MOE)
