"""`gptoss-export build`: checkpoint -> engine directory (model.onnx + data, manifest, tokenizer)."""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import torch

from gptoss.runtime import contract
from gptoss.runtime.manifest import TARGETS, Manifest, read_manifest
from gptoss.runtime.op_signatures import DOMAIN, PLUGIN_NAMESPACE, PLUGIN_VERSION, VERSION
from gptoss.runtime.tokenizer import Tokenizer

from .config import GptOssConfig, load_config
from .engine_dir import write_manifest
from .errors import ConfigError
from .external_data import attach_weights, plan_weights, write_weights
from .loading import empty_model
from .onnx_export import export_step_graph, save_onnx
from .onnx_functions import ONNX_OPSET
from .progress import stage
from .publish import staged_engine_dir


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    """What to build; mirrors the `gptoss-export build` options."""

    target: str = "onnx"
    head: str = "causal-lm"
    precision: str = "fp32"
    max_batch: int = 8
    max_seq_len: int = 4096
    all_positions: bool = False
    accuracy_outputs: tuple[str, ...] = ()  # per-layer outputs for accuracy work: contract.ACCURACY_OUTPUTS
    compute_capability: str | None = None
    bind_weights: str = "all"  # TensorRT targets: weights taken as engine inputs, "all" or "experts"
    plugin_library: Path | None = None  # TensorRT targets; default: trt_build.default_plugin_library()
    timing_cache: Path | None = None  # TensorRT targets; default: ~/.cache/gptoss-export/<target>.timing-cache

    def validate(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError(f"--target {self.target!r} is not supported, expected one of {', '.join(TARGETS)}")
        if self.head not in contract.HEADS:
            raise ConfigError(f"--head {self.head!r} is unknown, expected one of {', '.join(contract.HEADS)}")
        contract.precision(self.precision)
        from .trt_build import BIND_WEIGHTS

        if self.bind_weights not in BIND_WEIGHTS:
            raise ConfigError(f"--bind-weights {self.bind_weights!r}, expected one of {', '.join(BIND_WEIGHTS)}")
        contract.accuracy_kinds(self.accuracy_outputs)
        if self.accuracy_outputs and self.target != "onnx":
            raise ConfigError(
                f"--accuracy-outputs applies to the onnx target: the {self.target} backend binds only the head's "
                "output and the caches"
            )
        if self.compute_capability and self.target == "onnx":
            raise ConfigError("--compute-capability applies to the tensorrt and tensorrt-rtx targets, not onnx")
        if self.max_batch < 1 or self.max_seq_len < 1:
            raise ConfigError(
                f"--max-batch and --max-seq-len must be positive, got {self.max_batch}, {self.max_seq_len}"
            )


def build(model_dir: str | Path, out_dir: str | Path, options: BuildOptions | None = None) -> Manifest:
    """Export `model_dir` into the engine directory `out_dir` and return its manifest."""
    options = options or BuildOptions()
    options.validate()
    model_dir = Path(model_dir)
    config = load_config(model_dir)
    if options.max_seq_len > config.max_position_embeddings:
        raise ConfigError(
            f"--max-seq-len {options.max_seq_len} exceeds the model's max_position_embeddings "
            f"{config.max_position_embeddings}"
        )
    tokenizer = model_dir / "tokenizer.json"
    if tokenizer.is_file():
        Tokenizer(tokenizer)  # one the runtime cannot read fails the build now, not the first `generate`
    dtype = getattr(torch, contract.precision(options.precision).name)
    accuracy = contract.accuracy_kinds(options.accuracy_outputs)
    if options.target != "onnx":
        from . import trt_build

        trt_build.preflight(options.target, options.plugin_library or trt_build.default_plugin_library(), config)
    with staged_engine_dir(out_dir) as staging:
        files = {"onnx": staging / "model.onnx"}
        data_path = staging / "model.onnx.data"
        model = empty_model(config, options.head, dtype, source=model_dir / "config.json")
        description = f"tracing the cache step ({config.num_hidden_layers} layers, {options.precision}) while streaming"
        plan = plan_weights(model, model_dir)
        with stage(f"{description} the weights of {model_dir} into {data_path.name}"), ThreadPoolExecutor(1) as pool:
            cancel = threading.Event()
            writing = pool.submit(write_weights, plan, data_path, cancel)
            try:
                onnx_model = export_step_graph(model, options.all_positions, options.precision, accuracy)
            except BaseException:
                cancel.set()  # the trace failed or was interrupted: stop the writer, report the trace's error
                wait([writing])
                raise
            weights = writing.result()
        attach_weights(onnx_model, weights)
        save_onnx(onnx_model, files["onnx"], data_path.name)
        hashed = {"onnx_data": weights.entry}
        del onnx_model, model
        if tokenizer.is_file():
            files["tokenizer"] = Path(shutil.copyfile(tokenizer, staging / "tokenizer.json"))
        io = contract.graph_io(config, options.head, options.all_positions, options.precision, accuracy)
        target_info = {}
        if options.target != "onnx":
            target_info = _build_engine(staging, files, hashed, options, config, io)
        manifest = Manifest(
            engine_dir=Path(out_dir),
            target=options.target,
            head=options.head,
            precision=options.precision,
            config=config,
            io=io,
            files={},
            max_batch=options.max_batch,
            max_seq_len=options.max_seq_len,
            all_positions=options.all_positions,
            accuracy_outputs=list(accuracy),
            tokenizer="tokenizer.json" if "tokenizer" in files else None,
            chat_format="harmony",
            ops={
                "domain": DOMAIN,
                "version": VERSION,
                "onnx_opset": ONNX_OPSET,
                "plugin_version": PLUGIN_VERSION,
                "plugin_namespace": PLUGIN_NAMESPACE,
            },  # fmt: skip
            target_info=target_info,
            source_checkpoint=str(model_dir.resolve()),
            contract_version=contract.CONTRACT_VERSION,
        )
        with stage("hashing files and writing manifest.json"):
            write_manifest(staging, manifest, files, hashed)
    return read_manifest(out_dir)


def _build_engine(
    staging: Path,
    files: dict[str, Path],
    hashed: dict[str, dict],
    options: BuildOptions,
    config: GptOssConfig,
    io: contract.GraphIO,
) -> dict:
    """Build `engine.plan` next to the ONNX file (the plan is hashed as it is written) and ship the plugin library
    with it."""
    from . import trt_build

    library = options.plugin_library or trt_build.default_plugin_library()
    timing_cache = options.timing_cache or Path.home() / ".cache" / "gptoss-export" / f"{options.target}.timing-cache"
    with stage(f"building the {options.target} engine"):
        info, hashed["engine"] = trt_build.build_engine(
            files["onnx"],
            staging / "engine.plan",
            target=options.target,
            config=config,
            io=io,
            max_batch=options.max_batch,
            max_seq_len=options.max_seq_len,
            plugin_library=library,
            bind_weights=options.bind_weights,
            compute_capability=options.compute_capability,
            timing_cache=timing_cache,
        )
    files["plugin_library"] = Path(shutil.copyfile(library, staging / trt_build.PLUGIN_LIBRARY_NAME))
    return info | {"plugin_library_source": str(Path(library).resolve())}
