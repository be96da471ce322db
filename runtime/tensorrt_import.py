"""Importing the TensorRT Python module of a target (shared by the engine builder and the runtime)."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import GptOssError

# Module names per target, in order of preference. The PyPI wheels of TensorRT-RTX
# (tensorrt_rtx_cu13_libs + tensorrt_rtx_cu13_bindings) import as `tensorrt_rtx_bindings`; a full
# install as `tensorrt_rtx`.
MODULES = {"tensorrt": ("tensorrt",), "tensorrt-rtx": ("tensorrt_rtx", "tensorrt_rtx_bindings")}
INSTALL_HINTS = {
    "tensorrt": "install TensorRT 10/11 (`pip install tensorrt` from NVIDIA's package index)",
    "tensorrt-rtx": "`pip install tensorrt_rtx_cu13_libs tensorrt_rtx_cu13_bindings`",
}


def import_tensorrt(target: str) -> ModuleType:
    """The TensorRT module for `target` ('tensorrt' or 'tensorrt-rtx'), or a clear error."""
    if target not in MODULES:
        raise GptOssError(f"target {target!r} has no TensorRT module; expected one of {', '.join(MODULES)}")
    for name in MODULES[target]:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise GptOssError(
        f"target {target} needs the Python module {' or '.join(MODULES[target])}: {INSTALL_HINTS[target]}"
    )
