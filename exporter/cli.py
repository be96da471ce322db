"""The `gptoss-export` command line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from .errors import GptOssError

app = typer.Typer(
    help="Export GPT-OSS checkpoints to ONNX and TensorRT engines, and run them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logs.")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(message)s")


@app.command()
def inspect(path: Annotated[Path, typer.Argument(help="A checkpoint or engine directory.")]) -> None:
    """Print a checkpoint's config, layer types, parameter counts and expert format, or an engine's manifest."""
    from .summary import describe, describe_engine

    typer.echo(describe_engine(path) if (path / "manifest.json").is_file() else describe(path))


@app.command()
def build(
    model_dir: Annotated[
        Path | None, typer.Argument(help="Checkpoint directory; omit it to build the bundled demo model.")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Engine directory to write.")] = Path("build/engine"),
    target: Annotated[str, typer.Option(help="onnx, tensorrt or tensorrt-rtx.")] = "onnx",
    head: Annotated[str, typer.Option(help="causal-lm, sequence-classification or token-classification.")] = (
        "causal-lm"
    ),
    precision: Annotated[str, typer.Option(help="fp32, fp16 or bf16.")] = "fp32",
    max_batch: Annotated[int, typer.Option(help="Largest batch the engine serves.")] = 8,
    max_seq_len: Annotated[int, typer.Option(help="Longest sequence (prompt + generated) per row.")] = 4096,
    all_positions: Annotated[bool, typer.Option(help="Output logits for every position (accuracy work).")] = False,
    compute_capability: Annotated[
        str | None, typer.Option(help="Build ahead of time for this GPU, e.g. sm89 (TensorRT targets).")
    ] = None,
    plugin_lib: Annotated[
        Path | None, typer.Option(help="libgptoss_plugins.so (TensorRT targets; default: build/plugins/).")
    ] = None,
) -> None:
    """Export a checkpoint to an engine directory (model.onnx + data, manifest.json, tokenizer.json)."""
    from .build import BuildOptions
    from .build import build as run_build

    _show_progress()
    if model_dir is None:
        from gptoss.tools.demo_model import write_demo_model

        model_dir = write_demo_model(out.parent / f"{out.name}-checkpoint")
        typer.echo(f"demo checkpoint  {model_dir}")
    options = BuildOptions(
        target, head, precision, max_batch, max_seq_len, all_positions, compute_capability, plugin_lib
    )
    manifest = run_build(model_dir, out, options)
    typer.echo(f"engine directory {manifest.engine_dir}")
    for role, entry in manifest.files.items():
        typer.echo(f"  {entry['name']:<20} {entry['size'] / 2**20:10.2f} MiB  sha256 {entry['sha256'][:16]}  ({role})")


def _show_progress() -> None:
    """Show build progress on stderr unless --verbose already shows everything."""
    progress = logging.getLogger("gptoss.progress")
    if progress.getEffectiveLevel() > logging.INFO:
        progress.setLevel(logging.INFO)


def main() -> None:
    """Entry point: known errors become one line on stderr and exit status 1."""
    try:
        app()
    except GptOssError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
