"""Build a TensorRT or TensorRT-RTX engine from an exported `model.onnx` with the gptoss plugins.

One code path serves both targets; only the Python module differs (`tensorrt` for data-center
TensorRT, `tensorrt_rtx` / `tensorrt_rtx_bindings` for TensorRT-RTX, which also builds ahead of time
without a GPU through `--compute-capability`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import onnx

from gptoss.runtime import contract
from gptoss.runtime.errors import GptOssError
from gptoss.runtime.mapped_weights import MappedWeights, external_initializers
from gptoss.runtime.op_signatures import DOMAIN, MOE, PLUGIN_NAMESPACE, PLUGIN_VERSION, SIGNATURES
from gptoss.runtime.tensorrt_import import import_tensorrt

from .config import GptOssConfig
from .engine_dir import HashingWriter

log = logging.getLogger(__name__)
progress_log = logging.getLogger("gptoss.progress")

PLUGIN_LIBRARY_NAME = "libgptoss_plugins.so"
# MoE inputs from here on are the experts' weights, scales and biases
_FIRST_EXPERT_INPUT = [t.name for t in MOE.inputs].index("gate_up_weight")
BIND_WEIGHTS = ("all", "experts")  # which weights an engine takes as inputs (see tensorrt_view)
_REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Profile:
    """One optimization profile: min/opt/max of batch, new tokens per step and cache length."""

    name: str
    batch: tuple[int, int, int]
    seq_len: tuple[int, int, int]
    max_seq_len: tuple[int, int, int]


def default_plugin_library() -> Path:
    """`$GPTOSS_PLUGIN_LIB`, else the library `make plugins` builds in `build/plugins/`."""
    return Path(os.environ.get("GPTOSS_PLUGIN_LIB", _REPO_ROOT / "build" / "plugins" / PLUGIN_LIBRARY_NAME))


def profiles_for(max_batch: int, max_seq_len: int) -> list[Profile]:
    """A prefill profile (many new tokens) and a decode profile (one new token per row)."""
    cache = (1, max_seq_len, max_seq_len)
    return [
        Profile("prefill", (1, max(1, max_batch // 2), max_batch), (1, min(512, max_seq_len), max_seq_len), cache),
        Profile("decode", (1, max_batch, max_batch), (1, 1, 1), cache),
    ]


# What TensorRT-RTX reports when it probes for a GPU during an ahead-of-time build on a machine without one.
_NO_GPU_MESSAGES = ("CUDA driver version is insufficient", "cudaError 35", "no CUDA-capable device")


class _Logger:
    """Factory of a TensorRT ILogger that forwards to `logging` (TensorRT's own logger prints to stdout)."""

    @staticmethod
    def create(trt: ModuleType, ahead_of_time: bool) -> Any:
        levels = {
            trt.ILogger.Severity.INTERNAL_ERROR: logging.ERROR,
            trt.ILogger.Severity.ERROR: logging.ERROR,
            trt.ILogger.Severity.WARNING: logging.WARNING,
            trt.ILogger.Severity.INFO: logging.DEBUG,
            trt.ILogger.Severity.VERBOSE: logging.DEBUG,
        }

        class Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity, msg) -> None:
                level = levels.get(severity, logging.INFO)
                if ahead_of_time and any(text in msg for text in _NO_GPU_MESSAGES):
                    level = logging.DEBUG  # expected: no GPU is needed to build for --compute-capability
                log.log(level, "TensorRT: %s", msg)

        return Logger()


def _progress_monitor(trt: ModuleType) -> Any:
    """A TensorRT progress monitor that draws a bar for each top-level build phase through `gptoss.progress`."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.top_level: dict[str, int] = {}  # phase -> number of steps

        def phase_start(self, phase_name, parent_phase, num_steps) -> None:
            if parent_phase is None:
                self.top_level[phase_name] = num_steps
                self._draw(phase_name, 0)

        def step_complete(self, phase_name, step) -> bool:
            if phase_name in self.top_level:
                self._draw(phase_name, step + 1)
            return True  # never cancel

        def phase_finish(self, phase_name) -> None:
            if phase_name in self.top_level:
                self._draw(phase_name, self.top_level.pop(phase_name))

        def _draw(self, phase_name: str, done: int) -> None:
            total = max(self.top_level.get(phase_name, done), 1)
            filled = 20 * min(done, total) // total
            progress_log.info("  TensorRT %s [%s%s] %d/%d", phase_name, "#" * filled, "." * (20 - filled), done, total)

    return Monitor()


def ensure_parser_finds_library(trt: ModuleType) -> None:
    """TensorRT-RTX's ONNX parser dlopens the unversioned `libtensorrt_rtx.so`, which the PyPI wheel lacks
    (it ships `.so.1`): without it the process aborts at the first plugin node. Add the symlink beside the
    parser, whose RPATH is `$ORIGIN`."""
    try:
        import tensorrt_rtx_libs
    except ImportError:
        return  # a full TensorRT-RTX install ships the unversioned name itself
    libs = Path(tensorrt_rtx_libs.__file__).parent
    link, target = libs / "libtensorrt_rtx.so", libs / "libtensorrt_rtx.so.1"
    if link.exists() or not target.exists():
        return
    try:
        link.symlink_to(target.name)
    except OSError as exc:
        raise GptOssError(
            f"{link}: missing, and it cannot be created ({exc.strerror}); the TensorRT-RTX ONNX parser needs it "
            f"(create it as a symlink to {target.name})"
        ) from None


def preflight(target: str, library: Path, config: GptOssConfig) -> None:
    """Fail before any export work when the TensorRT module or the plugin library is missing, or the model
    has dimensions the CUDA kernels do not take (plugins/include/gptoss_kernels.h, "Limits")."""
    import_tensorrt(target)
    if not library.is_file():
        raise GptOssError(
            f"{library}: plugin library not found (run `make plugins` with TENSORRT_ROOT set, or pass --plugin-lib)"
        )
    c = config
    if c.head_dim % 8 or c.head_dim > 128:
        raise GptOssError(f"head_dim {c.head_dim}: the plugins need a multiple of 8 no larger than 128")
    if c.hidden_size % 32 or c.intermediate_size % 32:
        raise GptOssError(
            f"hidden_size {c.hidden_size} and intermediate_size {c.intermediate_size}: the plugins need multiples of 32"
        )
    if c.num_local_experts > 1024:
        raise GptOssError(f"num_local_experts {c.num_local_experts}: the plugins take at most 1024 experts")


def load_plugins(trt: ModuleType, builder: Any, library: Path) -> None:
    """Load the plugin library through the builder's registry and check both plugins are there."""
    registry = builder.get_plugin_registry()
    if registry.load_library(str(library)) is None:
        raise GptOssError(f"{library}: TensorRT could not load it as a plugin library (see the log with -v)")
    for signature in SIGNATURES:
        if registry.get_creator(signature.name, PLUGIN_VERSION, PLUGIN_NAMESPACE) is None:
            raise GptOssError(
                f"{library}: no plugin {signature.name!r} version {PLUGIN_VERSION!r} (the ONNX file needs that "
                "version; rebuild the plugins from this checkout)"
            )


def tensorrt_view(onnx_path: Path, bind_weights: str = "all") -> tuple[onnx.ModelProto, list[str]]:
    """The exported graph as TensorRT's ONNX parser must see it (weights stay in the external file), and the names
    of the weights it takes as inputs:

    - no model-local `gptoss` functions: a missing plugin is then an error, not a silent expansion;
    - MXFP4 blocks and scales typed INT8 instead of UINT8: the parser widens uint8 initializers to int32,
      while the plugin reads either as raw bytes (the bytes on disk are the same);
    - float-format MoE nodes without their empty optional scale inputs: the parser turns empty inputs into
      null tensors, which TensorRT rejects for plugins;
    - weights as graph inputs rather than initializers (`bind_weights`): "all" of them, or only the "experts"
      (MoE inputs from gate_up_weight on: blocks, scales, biases, most of the model's bytes, which feed only the
      plugin, so TensorRT loses nothing by not seeing them). Bound weights stay out of the builder's memory and
      the plan; the runtime binds them from model.onnx.data (`bound_weights` in the manifest). Binding all makes
      the build's memory flat in the model's depth and the engine directory hold each weight once; keeping the
      dense weights in the plan lets TensorRT treat them as constants.
    """
    model = onnx.load(str(onnx_path), load_external_data=False)
    kept = [f for f in model.functions if f.domain != DOMAIN]
    del model.functions[:]
    model.functions.extend(kept)
    expert_inputs = set()
    for node in model.graph.node:
        if node.domain == DOMAIN and node.op_type == MOE.name:
            expert_inputs.update(node.input[_FIRST_EXPERT_INPUT:])
            present = [name for name in node.input if name]
            del node.input[:]
            node.input.extend(present)
    if bind_weights not in BIND_WEIGHTS:
        raise GptOssError(f"--bind-weights {bind_weights!r}, expected one of {', '.join(BIND_WEIGHTS)}")
    bound, kept = [], []
    for initializer in model.graph.initializer:
        if initializer.data_type == onnx.TensorProto.UINT8 and initializer.name in expert_inputs:
            initializer.data_type = onnx.TensorProto.INT8
        external = initializer.data_location == onnx.TensorProto.EXTERNAL
        if initializer.name in expert_inputs or (bind_weights == "all" and external):
            bound.append(initializer.name)
            model.graph.input.append(
                onnx.helper.make_tensor_value_info(initializer.name, initializer.data_type, initializer.dims)
            )
        else:
            kept.append(initializer)
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return model, bound


class _PlanWriter:
    """Factory of a TensorRT IStreamWriter that writes the serialized plan to a file as TensorRT produces it,
    hashing on the way (no copy of the whole plan in memory, no second read)."""

    @staticmethod
    def create(trt: ModuleType, path: Path) -> Any:
        class Writer(trt.IStreamWriter):
            def __init__(self) -> None:
                trt.IStreamWriter.__init__(self)
                self.file = HashingWriter(path)

            def write(self, data: bytes) -> int:
                self.file.write(data)
                return len(data)

        return Writer()


def _parse(trt: ModuleType, network: Any, logger: Any, view: onnx.ModelProto, onnx_path: Path) -> MappedWeights:
    """Parse the TensorRT view of `onnx_path` into `network`, handing TensorRT the weights as pages of a read-only
    mapping of the data file (user-provided initializers) rather than letting it read a copy; returns the mapping,
    which must stay open until the engine is built."""
    parser = trt.OnnxParser(network, logger)
    weights = MappedWeights(onnx_path.parent, external_initializers(view))
    loaded = parser.load_model_proto(view.SerializeToString(), str(onnx_path))
    if loaded:
        weights.load_into(parser, str(onnx_path))
    if not (loaded and parser.parse_model_proto()):
        weights.close()
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise GptOssError(f"{onnx_path}: TensorRT could not parse it: {errors}")
    return weights


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    *,
    target: str,
    config: GptOssConfig,
    io: contract.GraphIO,
    max_batch: int,
    max_seq_len: int,
    plugin_library: Path,
    bind_weights: str,
    compute_capability: str | None,
    timing_cache: Path | None,
) -> dict[str, Any]:
    """Parse the TensorRT view of `onnx_path` and stream the serialized engine into `plan_path`; returns the
    manifest's target info and the plan's file entry."""
    trt = import_tensorrt(target)
    if target == "tensorrt-rtx":
        ensure_parser_finds_library(trt)
    logger = _Logger.create(trt, ahead_of_time=compute_capability is not None)
    builder = trt.Builder(logger)
    load_plugins(trt, builder, plugin_library)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    view, bound = tensorrt_view(onnx_path, bind_weights)
    weights = _parse(trt, network, logger, view, onnx_path)
    del view

    builder_config = builder.create_builder_config()
    builder_config.progress_monitor = _progress_monitor(trt)
    profiles = profiles_for(max_batch, max_seq_len)
    for profile in profiles:
        optimization_profile = builder.create_optimization_profile()
        for name, spec in io.inputs.items():
            shapes = [
                spec.concrete(**{contract.BATCH: b, contract.SEQ_LEN: s, contract.MAX_SEQ_LEN: m})
                for b, s, m in zip(profile.batch, profile.seq_len, profile.max_seq_len, strict=True)
            ]
            optimization_profile.set_shape(name, *shapes)
        builder_config.add_optimization_profile(optimization_profile)
    if compute_capability:
        _set_compute_capability(trt, builder_config, compute_capability)
    # An ahead-of-time build times nothing (there may be no GPU), so it neither reads nor writes the cache.
    cache = None if compute_capability else _timing_cache(builder_config, timing_cache)

    writer = _PlanWriter.create(trt, plan_path)
    try:
        built = builder.build_serialized_network_to_stream(network, builder_config, writer)
    finally:
        plan_entry = writer.file.close()
        weights.close()
    if not built:
        raise GptOssError(f"{onnx_path}: TensorRT failed to build the engine (run with -v for its log)")
    if timing_cache is not None and cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        timing_cache.write_bytes(bytes(cache.serialize()))
    info = {
        "module": trt.__name__,
        "version": trt.__version__,
        "compute_capability": compute_capability,
        "strongly_typed": True,
        "profiles": [profile.__dict__ for profile in profiles],
        "plugin_version": PLUGIN_VERSION,
        "bound_weights": bound,
        "num_layers": network.num_layers,
        "plugin_layers": sum(
            1 for i in range(network.num_layers) if network.get_layer(i).type == trt.LayerType.PLUGIN_V3
        ),
    }
    return info, plan_entry


def _set_compute_capability(trt: ModuleType, builder_config: Any, value: str) -> None:
    if not hasattr(trt, "ComputeCapability"):
        raise GptOssError(f"--compute-capability {value}: {trt.__name__} builds only for the GPU it runs on")
    members = trt.ComputeCapability.__members__
    key = value.upper()
    if not key.startswith("SM") or key not in members or key in ("NONE", "CURRENT"):
        offered = ", ".join(k.lower() for k in members if k.startswith("SM"))
        raise GptOssError(f"--compute-capability {value!r} is not offered by {trt.__name__}; choose one of {offered}")
    builder_config.num_compute_capabilities = 1
    builder_config.set_compute_capability(members[key], 0)


def _timing_cache(builder_config: Any, path: Path | None) -> Any:
    """Attach a timing cache, seeded from `path` when it exists (TensorRT-RTX may not time at all)."""
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = builder_config.create_timing_cache(data)
    if cache is not None:
        builder_config.set_timing_cache(cache, ignore_mismatch=True)
    return cache
