"""ONNX Runtime backend: runs `model.onnx` of an engine directory (the gptoss ops run as ONNX functions)."""

from __future__ import annotations

import logging

import numpy as np

from ..errors import GptOssError
from ..manifest import Manifest

log = logging.getLogger(__name__)

_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "int32": np.int32}


class OnnxRuntimeBackend:
    """Holds an `onnxruntime.InferenceSession` and runs steps with caches kept as numpy arrays."""

    name = "onnxruntime"

    def __init__(self, manifest: Manifest, providers: list[str] | None = None) -> None:
        import onnxruntime

        self.manifest = manifest
        cache_dtype = manifest.inputs["kv_cache.0"]["dtype"]
        if cache_dtype not in _NUMPY_DTYPES:
            raise GptOssError(f"{manifest.engine_dir}: ONNX Runtime backend cannot hold {cache_dtype} caches")
        self.cache_dtype = _NUMPY_DTYPES[cache_dtype]
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(
            str(manifest.path("onnx")), options, providers=providers or ["CPUExecutionProvider"]
        )
        self.output_names = list(manifest.outputs)
        self.num_layers = sum(1 for name in manifest.inputs if name.startswith("kv_cache."))

    def allocate_caches(self, batch: int, max_seq_len: int | None = None) -> list[np.ndarray]:
        """Zeroed caches with the manifest's shapes: window slots for sliding layers, `max_seq_len` for full."""
        max_seq_len = max_seq_len or self.manifest.max_seq_len
        sizes = {"batch": batch, "max_seq_len": max_seq_len}
        caches = []
        for i in range(self.num_layers):
            shape = [sizes.get(d, d) for d in self.manifest.inputs[f"kv_cache.{i}"]["shape"]]
            caches.append(np.zeros(shape, dtype=self.cache_dtype))
        return caches

    def step(
        self, input_ids: np.ndarray, past_len: np.ndarray, new_len: np.ndarray, caches: list[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Run `input_ids [B,S]` after `past_len` cached tokens; returns the head output and new caches."""
        feeds = {
            "input_ids": np.ascontiguousarray(input_ids, dtype=np.int32),
            "past_len": np.ascontiguousarray(past_len, dtype=np.int32),
            "new_len": np.ascontiguousarray(new_len, dtype=np.int32),
        }
        feeds |= {f"kv_cache.{i}": cache for i, cache in enumerate(caches)}
        outputs = self.session.run(self.output_names, feeds)
        return outputs[0], outputs[1:]
