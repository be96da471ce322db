"""ONNX Runtime backend: runs `model.onnx` (the gptoss ops run as its ONNX functions) on CPU or the CUDA EP.

Caches live in ONNX Runtime `OrtValue`s bound through I/O binding: each step reads one set and writes the
other, then the two swap, so no cache passes through Python.
"""

from __future__ import annotations

import numpy as np

from ..contract import ELEMENT_TYPES, INDEX_DTYPE, STEP_INPUTS, cache_input, cache_output
from ..errors import GptOssError
from ..manifest import Manifest
from . import cache_shapes, has_nvidia_gpu


def default_providers(onnxruntime) -> list[str]:
    """The CUDA execution provider when this build has it and an NVIDIA device is present, else the CPU."""
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers() and has_nvidia_gpu():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxRuntimeBackend:
    """`Backend` over an `onnxruntime.InferenceSession`."""

    name = "onnxruntime"

    def __init__(self, manifest: Manifest, providers: list[str] | None = None) -> None:
        import onnxruntime

        self.manifest = manifest
        element_type = ELEMENT_TYPES[manifest.io.cache_specs()[0].dtype]
        if element_type.numpy is None:
            raise GptOssError(
                f"{manifest.engine_dir}: the ONNX Runtime backend cannot run {element_type.name} graphs (build with "
                "--precision fp32 or fp16)"
            )
        self._dtype = np.dtype(element_type.numpy)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self._ort = onnxruntime
        self.session = onnxruntime.InferenceSession(
            str(manifest.path("onnx")), options, providers=providers or default_providers(onnxruntime)
        )
        self._device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self._output = manifest.io.output
        self._reading: list = []
        self._writing: list = []

    def allocate(self, batch: int, max_seq_len: int) -> None:
        def zeros(shape):
            return self._ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, self._dtype), self._device, 0)

        shapes = cache_shapes(self.manifest, batch, max_seq_len)
        self._reading = [zeros(shape) for shape in shapes]
        self._writing = [zeros(shape) for shape in shapes]

    def step(self, input_ids: np.ndarray, past_len: np.ndarray, new_len: np.ndarray) -> np.ndarray:
        binding = self.session.io_binding()
        binding.bind_output(self._output, "cpu")  # first, so it is get_outputs()[0]
        for name, array in zip(STEP_INPUTS, (input_ids, past_len, new_len), strict=True):
            binding.bind_cpu_input(name, np.ascontiguousarray(array, dtype=INDEX_DTYPE))
        for i, (source, target) in enumerate(zip(self._reading, self._writing, strict=True)):
            binding.bind_ortvalue_input(cache_input(i), source)
            binding.bind_ortvalue_output(cache_output(i), target)
        self.session.run_with_iobinding(binding)
        self._reading, self._writing = self._writing, self._reading
        return binding.get_outputs()[0].numpy().astype(np.float32, copy=False)
