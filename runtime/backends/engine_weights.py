"""The PyTorch model of an ONNX engine directory, its parameters read from the engine's own weights file.

The ONNX export names each initializer after the step graph's parameter it came from, with that parameter's shape
and dtype (bf16 linears of a bf16 engine, MXFP4 experts as packed bytes and scales). So the model is built with
uninitialised storage and every parameter is pointed at its bytes in a private (copy-on-write) mapping of
`model.onnx.data`: nothing is copied, the pages stay file-backed (the kernel can drop and reread them), and the engine
directory is all the PyTorch-model backends need, without the checkpoint it was built from.
"""

from __future__ import annotations

import mmap
from typing import Any

from .. import contract
from ..errors import GptOssError
from ..manifest import Manifest
from ..mapped_weights import MappedWeights, external_initializers

ONNX_TENSOR_TYPES = {1: "float32", 2: "uint8", 10: "float16", 16: "bfloat16"}  # TensorProto data types we store


def has_engine_weights(manifest: Manifest) -> bool:
    """Whether the directory holds an ONNX model with its weights (target onnx), rather than a plan or checkpoint."""
    return manifest.target == "onnx" and "onnx" in manifest.files


def step_graph_from_engine(manifest: Manifest) -> Any:
    """The step graph (`gptoss.exporter.model.StepGraph`) with every parameter a view of the engine's weights."""
    import onnx
    import torch

    from gptoss.exporter.loading import empty_model
    from gptoss.exporter.model import StepGraph

    dtype = getattr(torch, contract.precision(manifest.precision).name)
    model = empty_model(manifest.config, manifest.head, dtype, device="cpu")  # untouched storage: no memory yet
    graph = StepGraph(model, manifest.all_positions)
    onnx_path = manifest.path("onnx")
    initializers = {item.name: item for item in external_initializers(onnx.load(onnx_path, load_external_data=False))}
    data = MappedWeights(manifest.engine_dir, list(initializers.values()), access=mmap.ACCESS_COPY)
    weights = {}
    for name, parameter in graph.named_parameters():
        item = initializers.get(name)
        stored = ONNX_TENSOR_TYPES.get(item.data_type) if item else None
        wanted = str(parameter.dtype).removeprefix("torch.")
        if item is None or stored != wanted or item.length != parameter.nbytes:
            raise GptOssError(
                f"{onnx_path}: initializer {name!r} should hold {list(parameter.shape)} {wanted} "
                f"({parameter.nbytes} bytes); it is {f'{stored}, {item.length} bytes' if item else 'missing'}"
            )
        mapping = data.mapping(item.location)  # the tensors keep it alive; it is never closed
        flat = torch.frombuffer(mapping, dtype=parameter.dtype, count=parameter.numel(), offset=item.offset)
        weights[name] = flat.view(parameter.shape)
    graph.load_state_dict(weights, assign=True)
    return graph.eval()
