"""Export benchmark at the real gpt-oss-20b layer dimensions (hidden 2880, 32 MXFP4 experts, vocabulary
201088, 64/8 heads) with only 2 layers so it fits this machine. Prints export time and peak resident
memory against the checkpoint size, per precision; each export runs in a fresh process so its peak RSS is
its own.

Run as `python -m gptoss.tools.bench_export [--workdir DIR] [--precisions bf16 fp32] [--layers 2]`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gptoss.tools.demo_model import DEMO_CONFIG, write_demo_model

GPT_OSS_20B_LAYER = {
    "vocab_size": 201088,
    "hidden_size": 2880,
    "intermediate_size": 2880,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "num_local_experts": 32,
    "num_experts_per_tok": 4,
    "sliding_window": 128,
    "max_position_embeddings": 131072,
    "rope_scaling": {**DEMO_CONFIG["rope_scaling"], "original_max_position_embeddings": 4096},
    "pad_token_id": 199999,
    "eos_token_id": 200002,
    "bos_token_id": 199998,
}


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def _write_checkpoint(path: Path, layers: int) -> None:
    write_demo_model(path, expert_format="mxfp4", num_hidden_layers=layers, **GPT_OSS_20B_LAYER)


def _export_once(checkpoint: Path, out: Path, precision: str) -> dict:
    """Child process: build the ONNX engine directory and report time and peak RSS."""
    from gptoss.exporter.build import BuildOptions, build

    start = time.perf_counter()
    build(checkpoint, out, BuildOptions(precision=precision, max_seq_len=4096))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"precision": precision, "seconds": seconds, "peak_rss": peak, "engine_bytes": _size(out)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--precisions", nargs="+", default=["bf16", "fp32"])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--child", nargs=3, metavar=("CHECKPOINT", "OUT", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        checkpoint, out, precision = args.child
        print(json.dumps(_export_once(Path(checkpoint), Path(out), precision)))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gptoss-bench-export-"))
    checkpoint = workdir / "checkpoint"
    start = time.perf_counter()
    _write_checkpoint(checkpoint, args.layers)
    checkpoint_bytes = _size(checkpoint)
    print(f"checkpoint: {args.layers} layers at gpt-oss-20b dimensions, MXFP4 experts, "
          f"{checkpoint_bytes / 2**30:.2f} GiB, written in {time.perf_counter() - start:.0f} s")  # fmt: skip
    print(f"{'precision':<10} {'export s':>9} {'peak RSS GiB':>13} {'RSS / ckpt':>11} {'engine GiB':>11}")
    for precision in args.precisions:
        out = workdir / f"engine-{precision}"
        child = [sys.executable, "-m", "gptoss.tools.bench_export", "--child", str(checkpoint), str(out), precision]
        result = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout)
        print(
            f"{precision:<10} {result['seconds']:9.1f} {result['peak_rss'] / 2**30:13.2f} "
            f"{result['peak_rss'] / checkpoint_bytes:11.2f} {result['engine_bytes'] / 2**30:11.2f}"
        )


if __name__ == "__main__":
    main()
