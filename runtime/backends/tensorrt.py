"""TensorRT / TensorRT-RTX backend: device buffers from torch, caches bound in place, CUDA-graph decode.

The engine has two optimization profiles (see exporter/trt_build.py): `prefill` for steps of many new
tokens and `decode` for one token per row. Each has its own execution context. Every `kv_cache.{i}` input
and its `kv_cache_out.{i}` output are bound to the same device buffer, so the plugin updates the cache in
place. The decode step, whose shapes and addresses never change for a given allocation, is captured once
in a CUDA graph and replayed.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
from typing import Any

import numpy as np

from .. import contract
from ..errors import GptOssError
from ..manifest import Manifest
from ..mapped_weights import MappedWeights, external_initializers
from ..tensorrt_import import import_tensorrt
from . import cache_shapes

log = logging.getLogger(__name__)

PREFILL, DECODE = 0, 1


class TensorRTBackend:
    """`Backend` over a serialized TensorRT or TensorRT-RTX engine (needs an NVIDIA GPU)."""

    def __init__(self, manifest: Manifest, use_cuda_graph: bool = True) -> None:
        import torch

        if not torch.cuda.is_available():
            raise GptOssError(f"{manifest.engine_dir}: the {manifest.target} backend needs an NVIDIA GPU")
        self.name = manifest.target
        self.manifest = manifest
        self._torch = torch
        trt = import_tensorrt(manifest.target)
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        library = manifest.path("plugin_library")
        if runtime.get_plugin_registry().load_library(str(library)) is None:
            raise GptOssError(f"{library}: TensorRT could not load the plugin library")
        path = manifest.path("engine")
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as plan:
            self.engine = runtime.deserialize_cuda_engine(plan)  # from the mapped file, not a copy
        if self.engine is None:
            raise GptOssError(
                f"{manifest.path('engine')}: TensorRT could not deserialize it (built for another GPU or version?)"
            )
        self.stream = torch.cuda.Stream()
        self.contexts = []
        for profile in (PREFILL, DECODE):
            context = self.engine.create_execution_context()
            context.set_optimization_profile_async(profile, self.stream.cuda_stream)
            self.contexts.append(context)
        cache_type = manifest.io.cache_specs()[0].dtype
        self._dtype = getattr(torch, cache_type)
        engine_type = self.engine.get_tensor_dtype(contract.cache_input(0))
        if engine_type != getattr(trt.DataType, contract.ELEMENT_TYPES[cache_type].tensorrt):
            raise GptOssError(
                f"{manifest.path('engine')}: its caches are {engine_type}, the manifest says {cache_type} (rebuild it)"
            )
        self._output = manifest.io.output
        self._use_cuda_graph = use_cuda_graph
        self._graph = None
        self.bound_weights = self._upload_bound_weights()

    def _upload_bound_weights(self) -> dict[str, Any]:
        """Device copies of the weights the engine takes as inputs (`target_info["bound_weights"]`: the experts,
        kept out of the plan), read from the mapped `model.onnx.data`; bound at every step."""
        import onnx

        torch, m = self._torch, self.manifest
        names = set(m.target_info.get("bound_weights", ()))
        if not names:
            return {}
        proto = onnx.load(str(m.path("onnx")), load_external_data=False)
        self._bound_shapes = {t.name: tuple(t.dims) for t in proto.graph.initializer if t.name in names}
        weights = MappedWeights(m.engine_dir, [i for i in external_initializers(proto) if i.name in names])
        try:  # raw bytes on the device: TensorRT reads them by address, with the input's own type and shape
            device = {
                name: torch.frombuffer((ctypes.c_uint8 * size).from_address(address), dtype=torch.uint8).to("cuda")
                for name, address, size in weights.addresses()
            }
        finally:
            weights.close()
        if set(device) != names:
            raise GptOssError(f"{m.path('onnx')}: bound weights {sorted(names - set(device))} are not in its data")
        return device

    def allocate(self, batch: int, max_seq_len: int) -> None:
        torch, m = self._torch, self.manifest
        if batch > m.max_batch or max_seq_len > m.max_seq_len:
            raise GptOssError(
                f"{m.engine_dir}: engine serves batch <= {m.max_batch} and max_seq_len <= {m.max_seq_len}, "
                f"asked for {batch} and {max_seq_len}"
            )
        self.caches = [torch.zeros(s, dtype=self._dtype, device="cuda") for s in cache_shapes(m, batch, max_seq_len)]
        self.input_ids = torch.zeros(batch, max_seq_len, dtype=torch.int32, device="cuda")
        self.past_len = torch.zeros(batch, dtype=torch.int32, device="cuda")
        self.new_len = torch.zeros(batch, dtype=torch.int32, device="cuda")
        sizes = {contract.BATCH: batch, contract.SEQ_LEN: max_seq_len}
        self.output = torch.empty(m.io.outputs[self._output].concrete(**sizes), dtype=self._dtype, device="cuda")
        self._graph = None

    def _bind(self, context, batch: int, seq_len: int) -> None:
        ids = self.input_ids[:, :seq_len]
        for name, tensor in zip(contract.STEP_INPUTS, (ids, self.past_len, self.new_len), strict=True):
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, tensor.data_ptr())
        for name, weight in self.bound_weights.items():
            context.set_input_shape(name, self._bound_shapes[name])
            context.set_tensor_address(name, weight.data_ptr())
        for i, cache in enumerate(self.caches):
            context.set_input_shape(contract.cache_input(i), tuple(cache.shape))
            context.set_tensor_address(contract.cache_input(i), cache.data_ptr())
            context.set_tensor_address(contract.cache_output(i), cache.data_ptr())  # in place
        context.set_tensor_address(self._output, self.output.data_ptr())

    def _run(self, context) -> None:
        if not context.execute_async_v3(self.stream.cuda_stream):
            raise GptOssError(f"{self.manifest.path('engine')}: TensorRT failed to run the step")

    def step(self, input_ids: np.ndarray, past_len: np.ndarray, new_len: np.ndarray) -> np.ndarray:
        torch = self._torch
        batch, seq_len = input_ids.shape
        with torch.cuda.stream(self.stream):
            self.input_ids[:, :seq_len].copy_(torch.from_numpy(np.ascontiguousarray(input_ids, np.int32)))
            self.past_len.copy_(torch.from_numpy(np.ascontiguousarray(past_len, np.int32)))
            self.new_len.copy_(torch.from_numpy(np.ascontiguousarray(new_len, np.int32)))
            if seq_len == 1 and self._use_cuda_graph:
                self._decode_with_graph(batch)
            else:
                context = self.contexts[DECODE if seq_len == 1 else PREFILL]
                self._bind(context, batch, seq_len)
                self._run(context)
            output = self.output[:, :seq_len] if self.manifest.io.every_position else self.output
            result = output.float().cpu()
        return result.numpy()

    def _decode_with_graph(self, batch: int) -> None:
        """Capture the decode step once (after a warm-up run), then replay it."""
        torch = self._torch
        if self._graph is None:
            context = self.contexts[DECODE]
            self._bind(context, batch, 1)
            self._run(context)  # warm-up: TensorRT allocates lazily on the first run
            self.stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream):
                self._run(context)
            self._graph = graph
            log.debug("captured the decode step of batch %d in a CUDA graph", batch)
        self._graph.replay()
